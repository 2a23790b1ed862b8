// The safetensors format (Hugging Face; the format's own specification): an 8-byte
// little-endian unsigned header length N, N bytes of JSON, then the data section.
// The JSON is one object: "__metadata__" (optional, string values) and, for each
// tensor, {"dtype": "F32", "shape": [..], "data_offsets": [BEGIN, END]}, offsets into
// the data section, little-endian, row-major.
//
// Writing (export): dtype F32 only, tensors laid out and listed in the layout's order
// (runtime/export/layout.h: name order, as safetensors' own writer does), the
// header compact JSON with "__metadata__": {"format": "pt"} first, padded with spaces
// so the data starts at a multiple of 8. The same parameters always give the same
// bytes. The file is written beside itself and renamed into place.
//
// Reading (import), checked as safetensors' own reader checks it: N at most 100 MB and
// within the file, the header a JSON object, each tensor's dtype known, shape a list
// of non-negative integers, data_offsets two integers with END - BEGIN the shape's
// bytes; the tensors cover the data section exactly, back to back in offset order (no
// hole, no overlap, nothing after the last). F32, F16, BF16 and F64 tensors are read
// (converted to float32; F64 rounds); other dtypes are refused when read. Errors are
// kBadInput naming the file and the tensor.
#ifndef HEIRETSU_RUNTIME_EXPORT_SAFETENSORS_H_
#define HEIRETSU_RUNTIME_EXPORT_SAFETENSORS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/export/io.h"
#include "runtime/export/layout.h"

namespace heiretsu::weights {

inline constexpr int64_t kSafetensorsMaxHeader = 100'000'000;  // safetensors' own limit

// Writes `layout`'s tensors from `values` to `path`; `*bytes`: the file's size.
Status WriteSafetensors(const std::string& path, const FileLayout& layout, const Values& values,
                        int64_t* bytes);

struct SafetensorsEntry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  int64_t begin = 0, end = 0;  // within the data section
};

struct SafetensorsFile {
  RandomFile file;
  int64_t data_start = 0;  // 8 + N
  std::vector<std::pair<std::string, std::string>> metadata;
  std::vector<SafetensorsEntry> entries;  // in header order
  const SafetensorsEntry* Find(const std::string& name) const;
};

// Opens `path` and reads and checks its header (the data is not read).
Status OpenSafetensors(const std::string& path, SafetensorsFile* out);

// Reads tensor `e` as float32 into `out` (numel(shape) values): F32 as it is, F16,
// BF16 and F64 converted; a NaN or infinity is refused, naming the tensor and index.
Status ReadSafetensorsTensor(const SafetensorsFile& f, const SafetensorsEntry& e,
                             std::vector<float>* out);

// Bytes per element of a safetensors dtype name, or 0 for an unknown one.
int64_t SafetensorsDtypeBytes(const std::string& dtype);

}  // namespace heiretsu::weights

#endif  // HEIRETSU_RUNTIME_EXPORT_SAFETENSORS_H_
