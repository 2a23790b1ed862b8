// File access and number formats shared by the weight-file readers and writers
// (runtime/export): positioned reads of a regular file, and the conversions of
// IEEE half (F16) and bfloat16 (BF16) values to float32. Little-endian hosts only
// (every format here is little-endian, and so is x86-64).
#ifndef HEIRETSU_RUNTIME_EXPORT_IO_H_
#define HEIRETSU_RUNTIME_EXPORT_IO_H_

#include <bit>
#include <cstdint>
#include <string>

#include "runtime/base/error.h"

namespace heiretsu::weights {

static_assert(std::endian::native == std::endian::little,
              "the weight formats are little-endian and read by memcpy");

// A regular file opened for reading at any offset. Open refuses directories, FIFOs
// and devices (kBadInput naming the path).
class RandomFile {
 public:
  RandomFile() = default;
  ~RandomFile();
  RandomFile(const RandomFile&) = delete;
  RandomFile& operator=(const RandomFile&) = delete;

  Status Open(const std::string& path);
  const std::string& path() const { return path_; }
  int64_t size() const { return size_; }
  // Reads exactly `n` bytes at `offset` (a short file: kBadInput, "truncated").
  Status ReadAt(int64_t offset, int64_t n, void* out) const;

 private:
  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
};

// IEEE 754 binary16 bits to float (exact: every half is a float).
float HalfToFloat(uint16_t h);
// bfloat16 bits to float (exact: the upper half of a float).
inline float BFloat16ToFloat(uint16_t b) { return std::bit_cast<float>(uint32_t{b} << 16); }

}  // namespace heiretsu::weights

#endif  // HEIRETSU_RUNTIME_EXPORT_IO_H_
