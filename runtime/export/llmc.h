// llm.c's GPT-2 model file (karpathy/llm.c: train_gpt2.py's write_model, train_gpt2.c's
// gpt2_build_from_checkpoint): a header of 256 little-endian int32, [0] = 20240326,
// [1] = 3 (float32 tensors; 5: bfloat16), [2] = maxT (context), [3] = V (vocabulary),
// [4] = L (layers), [5] = NH (heads), [6] = C (d_model), [7] = Vp (the padded
// vocabulary), the rest zero; then the 16 tensors of fill_in_parameter_sizes, back to
// back, in their order (runtime/export/layout.h, LlmcLayout), and nothing after them.
//
// Writing: version 3, Vp = V rounded up to a multiple of 128 as llm.c pads, the padding
// rows zero; written beside itself and renamed into place. Reading: version 3 or 5; the
// header's maxT, V, L, NH and C must be the spec's, Vp >= V (its padding rows are not
// read), and the file exactly the header plus the tensors. Errors are kBadInput naming
// the file, the header word or tensor, and both values.
#ifndef HEIRETSU_RUNTIME_EXPORT_LLMC_H_
#define HEIRETSU_RUNTIME_EXPORT_LLMC_H_

#include <cstdint>
#include <string>

#include "runtime/base/error.h"
#include "runtime/export/layout.h"

namespace heiretsu::weights {

inline constexpr int32_t kLlmcMagic = 20240326;
inline constexpr int32_t kLlmcVersionF32 = 3;
inline constexpr int32_t kLlmcVersionBF16 = 5;
inline constexpr int64_t kLlmcHeaderBytes = 256 * 4;

// Writes `layout` (LlmcLayout) from `values` to `path`; `*bytes`: the file's size.
Status WriteLlmc(const std::string& path, const FileLayout& layout, const Values& values,
                 int64_t* bytes);

// Reads `path` into `values` (sized by ZeroValues) by `layout` (LlmcLayout of the
// spec's card): `*version` is the file's version (3 or 5).
Status ReadLlmc(const std::string& path, const FileLayout& layout, Values* values, int32_t* version);

// Whether `path` starts with llm.c's model magic (for telling formats apart).
bool LooksLikeLlmc(const std::string& path);

}  // namespace heiretsu::weights

#endif  // HEIRETSU_RUNTIME_EXPORT_LLMC_H_
