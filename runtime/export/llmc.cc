#include "runtime/export/llmc.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/data/shards.h"
#include "runtime/export/io.h"

namespace heiretsu::weights {

Status WriteLlmc(const std::string& path, const FileLayout& layout, const Values& values,
                 int64_t* bytes) {
  int32_t header[256] = {};
  header[0] = kLlmcMagic;
  header[1] = kLlmcVersionF32;
  for (int i = 0; i < 6; ++i) header[2 + i] = layout.llmc_header[i];
  data::AtomicFile out;
  if (Status err = out.Open(path)) return err;
  if (Status err = out.Write(header, sizeof header)) return err;
  int64_t total = kLlmcHeaderBytes;
  std::vector<float> buffer;
  for (const FileTensor& t : layout.tensors) {
    buffer.assign(static_cast<size_t>(t.numel()), 0.f);
    Gather(t, values, buffer.data());
    if (Status err = out.Write(buffer.data(), 4 * t.numel())) return err;
    total += 4 * t.numel();
  }
  if (Status err = out.Commit()) return err;
  *bytes = total;
  return std::nullopt;
}

bool LooksLikeLlmc(const std::string& path) {
  RandomFile f;
  int32_t magic = 0;
  return !f.Open(path) && f.size() >= 4 && !f.ReadAt(0, 4, &magic) && magic == kLlmcMagic;
}

Status ReadLlmc(const std::string& path, const FileLayout& spec_layout, Values* values,
                int32_t* version) {
  RandomFile f;
  if (Status err = f.Open(path)) return err;
  auto bad = [&](const std::string& what) {
    return Error::BadInput(path + ": not an llm.c GPT-2 model file for this spec: " + what);
  };
  if (f.size() < kLlmcHeaderBytes)
    return bad("truncated: " + std::to_string(f.size()) + " bytes, less than the " +
               std::to_string(kLlmcHeaderBytes) + "-byte header");
  int32_t header[256];
  if (Status err = f.ReadAt(0, kLlmcHeaderBytes, header)) return err;
  if (header[0] != kLlmcMagic)
    return bad("bad magic " + std::to_string(header[0]) + " (expected " + std::to_string(kLlmcMagic) + ")");
  if (header[1] != kLlmcVersionF32 && header[1] != kLlmcVersionBF16)
    return bad("version " + std::to_string(header[1]) + " (expected 3, float32, or 5, bfloat16)");
  *version = header[1];
  static const char* kWords[] = {"maxT (context)", "V (vocab)", "L (layers)", "NH (heads)", "C (d_model)"};
  for (int i = 0; i < 5; ++i)
    if (header[2 + i] != spec_layout.llmc_header[i])
      return bad("header[" + std::to_string(2 + i) + "] " + kWords[i] + " is " +
                 std::to_string(header[2 + i]) + ", the spec has " +
                 std::to_string(spec_layout.llmc_header[i]));
  const int32_t V = header[3], Vp = header[7];
  if (Vp < V) return bad("header[7] Vp (padded vocab) is " + std::to_string(Vp) + ", less than V " + std::to_string(V));
  // The spec's layout with the file's padding.
  FileLayout layout = spec_layout;
  FileTensor& wte = layout.tensors[0];
  wte.shape[0] = Vp;
  wte.pieces.resize(1);
  if (Vp > V) wte.pieces.push_back({"", Vp - V, 0});
  const int64_t elem = *version == kLlmcVersionF32 ? 4 : 2;
  int64_t expected = kLlmcHeaderBytes;
  for (const FileTensor& t : layout.tensors) expected += elem * t.numel();
  if (f.size() != expected)
    return bad(std::string(f.size() < expected ? "truncated: " : "") + "the file has " +
               std::to_string(f.size()) + " bytes, the header and its 16 tensors take " +
               std::to_string(expected) + (f.size() < expected ? "" : " (bytes after the last tensor)"));
  int64_t at = kLlmcHeaderBytes;
  std::vector<char> raw;
  std::vector<float> buffer;
  for (const FileTensor& t : layout.tensors) {
    raw.resize(static_cast<size_t>(elem * t.numel()));
    if (Status err = f.ReadAt(at, elem * t.numel(), raw.data())) return err;
    at += elem * t.numel();
    buffer.resize(static_cast<size_t>(t.numel()));
    if (elem == 4) {
      std::memcpy(buffer.data(), raw.data(), raw.size());
    } else {
      for (int64_t i = 0; i < t.numel(); ++i) {
        uint16_t b;
        std::memcpy(&b, raw.data() + 2 * i, 2);
        buffer[static_cast<size_t>(i)] = BFloat16ToFloat(b);
      }
    }
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(buffer[static_cast<size_t>(i)]))
        return bad("tensor " + t.name + " holds a NaN or an infinity at index " + std::to_string(i));
    Scatter(t, buffer.data(), values);
  }
  return std::nullopt;
}

}  // namespace heiretsu::weights
