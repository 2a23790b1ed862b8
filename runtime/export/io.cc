#include "runtime/export/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace heiretsu::weights {

RandomFile::~RandomFile() {
  if (fd_ >= 0) ::close(fd_);
}

Status RandomFile::Open(const std::string& path) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) return Error::BadInput(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Error::BadInput(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Error::BadInput(path + ": not a regular file");
  size_ = st.st_size;
  return std::nullopt;
}

Status RandomFile::ReadAt(int64_t offset, int64_t n, void* out) const {
  char* p = static_cast<char*>(out);
  while (n > 0) {
    const ssize_t got = ::pread(fd_, p, static_cast<size_t>(std::min<int64_t>(n, int64_t{1} << 30)),
                                static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Error::Failure(path_ + ": cannot read: " + std::strerror(errno));
    }
    if (got == 0)
      return Error::BadInput(path_ + ": truncated: ends at byte " + std::to_string(offset) +
                             ", " + std::to_string(n) + " more bytes expected");
    p += got;
    offset += got;
    n -= got;
  }
  return std::nullopt;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // infinity or NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // normal: rebias 15 -> 127
  } else if (mant == 0) {
    bits = sign;  // zero
  } else {
    // Subnormal half: mant x 2^-24, normalized for float.
    int shift = 0;
    uint32_t m = mant;
    while (!(m & 0x400u)) {
      m <<= 1;
      ++shift;
    }
    bits = sign | (static_cast<uint32_t>(113 - shift) << 23) | ((m & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

}  // namespace heiretsu::weights
