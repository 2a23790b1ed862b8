// Checkpoint saving, discovery and loading; the format and its guarantees are in
// checkpoint.h.
#include "runtime/checkpoint/checkpoint.h"

#include "runtime/exec/loss_scale.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>

namespace heiretsu::checkpoint {
namespace {

// A one-line word of the manifest: no blank, newline or NUL (empty allowed).
bool IsWord(const std::string& text) {
  return text.find_first_of(std::string(" \n\r\0", 4)) == std::string::npos;
}

// A spec's file name as a checkpoint stores it: a word, no '/', not "." or ".."
// (empty: none).
bool IsSpecFileName(const std::string& name) {
  return IsWord(name) && name.find('/') == std::string::npos && name != "." && name != "..";
}

namespace fs = std::filesystem;
namespace fb = plan::fb;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "tensors.bin holds the host's float32 bytes, which must be little-endian");

using data::DataError;

constexpr int64_t kAlign = 64;
constexpr int64_t kMaxDim = (int64_t{1} << 31) - 1;
// A manifest line is about 100 bytes; this allows hundreds of thousands of tensors
// while refusing to read a huge file that cannot be one.
constexpr int64_t kMaxManifestBytes = int64_t{64} << 20;
constexpr int64_t kChunkBytes = int64_t{1} << 20;
constexpr char kChecksumName[] = "fnv1a64w";
constexpr char kManifestChecksumKey[] = "manifest_checksum";

DataError BadInput(std::string message) {
  return DataError{DataError::Kind::kBadInput, std::move(message)};
}

DataError Failure(std::string message) {
  return DataError{DataError::Kind::kFailure, std::move(message)};
}

std::string Join(const std::string& dir, const char* name) {
  return (fs::path(dir) / name).string();
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

int64_t RoundUp(int64_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// How many of `n` floats are NaN or infinite; `*first` is the index of the first one.
// Exponent bits all ones is exactly "not finite"; the loop vectorizes.
int64_t CountNonFinite(const float* data, int64_t n, int64_t* first) {
  int64_t count = 0;
  *first = -1;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, data + i, 4);
    const bool bad = (bits & 0x7f800000u) == 0x7f800000u;
    if (bad && *first < 0) *first = i;
    count += bad;
  }
  return count;
}

// The streaming form of the checksum in checkpoint.h. Updates may split words anywhere;
// the bytes of an incomplete word wait in `carry_`.
class Checksum {
 public:
  void Update(const void* data, int64_t size) {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    if (filled_ > 0) {
      const int64_t take = std::min<int64_t>(8 - filled_, size);
      std::memcpy(carry_ + filled_, p, take);
      filled_ += take;
      p += take;
      size -= take;
      if (filled_ < 8) return;
      MixWord(carry_);
      filled_ = 0;
    }
    for (; size >= 8; p += 8, size -= 8) MixWord(p);
    std::memcpy(carry_, p, size);
    filled_ = size;
  }

  uint64_t Finish() {
    if (filled_ > 0) {
      std::memset(carry_ + filled_, 0, 8 - filled_);
      MixWord(carry_);
      filled_ = 0;
    }
    return hash_;
  }

 private:
  void MixWord(const unsigned char* p) {
    uint64_t word;
    std::memcpy(&word, p, 8);  // little-endian: see the static_assert above
    hash_ = (hash_ ^ word) * 0x100000001b3ull;
  }

  uint64_t hash_ = 0xcbf29ce484222325ull;
  unsigned char carry_[8];
  int64_t filled_ = 0;
};

// A name the manifest's space-separated lines can hold unambiguously.
bool IsStorableName(const std::string& name) {
  if (name.empty()) return false;
  for (unsigned char c : name)
    if (c <= ' ' || c == 0x7f) return false;
  return true;
}

// Flushes a directory's entries (a rename or a new file in it) to disk.
std::optional<DataError> SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Failure(dir + ": cannot open to sync: " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Failure(dir + ": cannot sync: " + std::strerror(err));
  return std::nullopt;
}

//===----------------------------------------------------------------------===//
// The manifest
//===----------------------------------------------------------------------===//

struct Entry {
  std::string name;
  TensorKind kind;
  std::vector<int64_t> shape;
  size_t file = 0;  // index into Manifest::files
  int64_t offset = 0;
  int64_t length = 0;
  int line = 0;
};

struct Manifest {
  std::string path;
  Header header;
  std::vector<TensorFile> files;
  std::vector<Entry> entries;  // sorted by (file, offset)
};

bool ParseKind(const std::string& text, TensorKind* kind) {
  for (TensorKind k : {TensorKind::kValue, TensorKind::kExpAvg, TensorKind::kExpAvgSq}) {
    if (text == TensorKindName(k)) {
      *kind = k;
      return true;
    }
  }
  return false;
}

// A decimal integer in [0, max], digits only.
bool ParseInt(const std::string& text, uint64_t max, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    if (v > (max - (c - '0')) / 10) return false;
    v = v * 10 + (c - '0');
  }
  *out = v;
  return true;
}

bool ParseI64(const std::string& text, int64_t* out) {
  uint64_t v;
  if (!ParseInt(text, INT64_MAX, &v)) return false;
  *out = static_cast<int64_t>(v);
  return true;
}

// "[16,8]" or "[]"; every dimension in [1, kMaxDim] and the element count within int64
// bytes of float32.
bool ParseShape(const std::string& text, std::vector<int64_t>* shape, int64_t* numel) {
  if (text.size() < 2 || text.front() != '[' || text.back() != ']') return false;
  shape->clear();
  *numel = 1;
  const std::string inner = text.substr(1, text.size() - 2);
  if (inner.empty()) return true;
  size_t begin = 0;
  for (;;) {
    const size_t comma = inner.find(',', begin);
    uint64_t d;
    if (!ParseInt(inner.substr(begin, comma - begin), kMaxDim, &d) || d == 0) return false;
    if (__builtin_mul_overflow(*numel, static_cast<int64_t>(d), numel) || *numel > INT64_MAX / 4)
      return false;
    shape->push_back(static_cast<int64_t>(d));
    if (comma == std::string::npos) return true;
    begin = comma + 1;
  }
}

// `prefix` followed by 16 lowercase hex digits.
bool ParseHexLine(const std::string& line, const std::string& prefix, uint64_t* out) {
  if (line.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string hex = line.substr(prefix.size());
  if (hex.size() != 16 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
    return false;
  *out = std::strtoull(hex.c_str(), nullptr, 16);
  return true;
}

std::vector<std::string> Split(const std::string& line) {
  std::vector<std::string> words;
  size_t begin = 0;
  for (;;) {
    const size_t space = line.find(' ', begin);
    words.push_back(line.substr(begin, space - begin));
    if (space == std::string::npos) return words;
    begin = space + 1;
  }
}

std::optional<DataError> ReadManifestText(const std::string& path, std::string* text) {
  data::InputFile in;
  if (auto err = in.Open(path)) return err;
  if (in.size() > kMaxManifestBytes)
    return BadInput(path + ": " + std::to_string(in.size()) +
                    " bytes is too large for a checkpoint manifest");
  return in.ReadAll(text);
}

// Reads and checks `dir`'s manifest: its syntax, and that its tensors have byte lengths
// matching their shapes and lie inside tensors.bin without overlapping. It does not
// touch tensors.bin.
std::optional<DataError> ReadManifest(const std::string& dir, Manifest* m) {
  m->path = Join(dir, kManifestName);
  struct stat st;
  if (::stat(m->path.c_str(), &st) != 0 && errno == ENOENT) {
    if (::stat(dir.c_str(), &st) != 0)
      return BadInput(dir + ": cannot open checkpoint directory: " + std::strerror(errno));
    return BadInput(dir + ": no " + kManifestName +
                    ": an incomplete checkpoint (its save did not finish)");
  }
  std::string text;
  if (auto err = ReadManifestText(m->path, &text)) return err;
  if (text.empty() || text.back() != '\n')
    return BadInput(m->path + ": truncated (does not end with a newline)");
  // The last line checks all the others, before anything in them is believed.
  const size_t newline = text.size() < 2 ? std::string::npos : text.rfind('\n', text.size() - 2);
  const size_t last = newline == std::string::npos ? 0 : newline + 1;
  const std::string body = text.substr(0, last);
  const std::string last_line = text.substr(last, text.size() - 1 - last);
  const std::string checksum_prefix = std::string(kManifestChecksumKey) + " " + kChecksumName + " ";
  uint64_t stated = 0;
  if (!ParseHexLine(last_line, checksum_prefix, &stated))
    return BadInput(m->path + ": truncated or not a checkpoint manifest (its last line is not '" +
                    checksum_prefix + "HEX')");
  Checksum body_sum;
  body_sum.Update(body.data(), static_cast<int64_t>(body.size()));
  const uint64_t computed = body_sum.Finish();
  if (computed != stated)
    return BadInput(m->path + ": checksum " + Hex(computed) + " of its lines does not match " +
                    Hex(stated) + " on its last line (the manifest is corrupt or was edited)");

  std::vector<std::string> lines;
  for (size_t begin = 0; begin < body.size();) {
    const size_t nl = body.find('\n', begin);
    lines.push_back(body.substr(begin, nl - begin));
    begin = nl + 1;
  }
  size_t at = 0;
  auto fail = [&](const std::string& what) {
    return BadInput(m->path + ":" + std::to_string(at) + ": " + what);
  };
  // The next line, which must be `key VALUE`; `*value` is the rest of the line.
  auto field = [&](const char* key, std::string* value) -> std::optional<DataError> {
    const std::string prefix = std::string(key) + " ";
    if (at >= lines.size()) {
      ++at;
      return fail("missing '" + std::string(key) + "' line");
    }
    const std::string& line = lines[at++];
    if (line.compare(0, prefix.size(), prefix) != 0)
      return fail("expected '" + prefix + "...', got '" + line + "'");
    *value = line.substr(prefix.size());
    return std::nullopt;
  };
  auto int_field = [&](const char* key, int64_t* out) -> std::optional<DataError> {
    std::string v;
    if (auto err = field(key, &v)) return err;
    if (!ParseI64(v, out))
      return fail(std::string(key) + ": expected a non-negative integer, got '" + v + "'");
    return std::nullopt;
  };

  std::string v;
  if (auto err = field("heiretsu-checkpoint", &v)) return err;
  if (v != std::to_string(kFormatVersion) && v != "3" && v != "2")
    return fail("format version " + v + ", this runtime reads versions 2 to " +
                std::to_string(kFormatVersion));
  const bool has_card = v != "2", has_scaler = v != "2" && v != "3";
  if (auto err = field("model", &m->header.model)) return err;
  if (auto err = int_field("step", &m->header.step)) return err;
  int64_t data_position = 0;
  if (auto err = int_field("data_position", &data_position)) return err;
  if (m->header.step == INT64_MAX || data_position != m->header.step + 1)
    return fail("data_position " + std::to_string(data_position) +
                " is not step + 1 = " + std::to_string(m->header.step) + " + 1");
  if (auto err = field("seed", &v)) return err;
  if (!ParseInt(v, UINT64_MAX, &m->header.seed))
    return fail("seed: expected an integer in [0, 2^64), got '" + v + "'");
  if (auto err = int_field("global_batch", &m->header.global_batch)) return err;
  if (auto err = int_field("seq", &m->header.seq)) return err;
  if (has_card) {
    auto double_field = [&](const char* key, double* out) -> std::optional<DataError> {
      std::string text;
      if (auto err = field(key, &text)) return err;
      char* end = nullptr;
      errno = 0;
      *out = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || errno != 0 || !std::isfinite(*out) || *out < 0)
        return fail(std::string(key) + ": expected a non-negative number, got '" + text + "'");
      return std::nullopt;
    };
    if (auto err = field("tokenizer", &m->header.tokenizer)) return err;
    if (m->header.tokenizer != "byte" && m->header.tokenizer != "gpt2" &&
        m->header.tokenizer != "none")
      return fail("tokenizer: expected byte, gpt2 or none, got '" + m->header.tokenizer + "'");
    if (m->header.tokenizer == "none") m->header.tokenizer.clear();
    if (auto err = double_field("lr", &m->header.lr)) return err;
    if (auto err = double_field("min_lr", &m->header.min_lr)) return err;
    if (auto err = int_field("warmup", &m->header.warmup)) return err;
    if (auto err = int_field("total_steps", &m->header.total_steps)) return err;
    if (has_scaler) {
      if (auto err = field("loss_scaling", &m->header.loss_scaling)) return err;
      if (m->header.loss_scaling != "none" && m->header.loss_scaling != "fixed" &&
          m->header.loss_scaling != "dynamic")
        return fail("loss_scaling: expected none, fixed or dynamic, got '" +
                    m->header.loss_scaling + "'");
      if (auto err = double_field("loss_scale", &m->header.loss_scale)) return err;
      if (!exec::LossScaler::IsPowerOfTwoScale(m->header.loss_scale))
        return fail("loss_scale: " + std::to_string(m->header.loss_scale) +
                    " is not a power of two in [1, 2^24]");
      if (auto err = int_field("loss_scale_clean_steps", &m->header.loss_scale_clean_steps))
        return err;
      if (auto err = int_field("loss_scale_overflows", &m->header.loss_scale_overflows))
        return err;
      if (auto err = int_field("updates", &m->header.updates)) return err;
      if (m->header.updates > m->header.step)
        return fail("updates " + std::to_string(m->header.updates) + " exceeds step " +
                    std::to_string(m->header.step));
    }
    if (auto err = field("spec_file", &m->header.spec_file)) return err;
    if (m->header.spec_file == "-") m->header.spec_file.clear();
    // A plain file name, never a path: `sample` and `export` write the spec under it.
    if (!IsSpecFileName(m->header.spec_file))
      return fail("spec_file: '" + m->header.spec_file + "' is not a plain file name");
    int64_t spec_lines = 0;
    if (auto err = int_field("spec_lines", &spec_lines)) return err;
    if (spec_lines > static_cast<int64_t>(lines.size() - at))
      return fail("spec_lines " + std::to_string(spec_lines) + ": the manifest has only " +
                  std::to_string(lines.size() - at) + " more lines");
    for (int64_t i = 0; i < spec_lines; ++i) {
      const std::string& line = lines[at++];
      if (line.compare(0, 2, "| ") != 0)
        return fail("expected a spec line '| ...', got '" + line + "'");
      m->header.spec += line.substr(2) + "\n";
    }
  }
  const std::string algo = std::string(kChecksumName) + " ";
  int64_t file_count = 0;
  if (auto err = int_field("files", &file_count)) return err;
  if (file_count < 1 || file_count > static_cast<int64_t>(lines.size()))
    return fail("files: expected at least 1, got " + std::to_string(file_count));
  std::map<std::string, size_t> file_index;
  for (int64_t f = 0; f < file_count; ++f) {
    if (at >= lines.size()) {
      ++at;
      return fail("missing 'file' line");
    }
    const std::vector<std::string> w = Split(lines[at++]);
    TensorFile file;
    if (w.size() != 5 || w[0] != "file")
      return fail("expected 'file FILE BYTES " + algo + "HEX', got '" + lines[at - 1] + "'");
    file.name = w[1];
    // A plain name in the checkpoint's directory, never a path out of it.
    if (!IsStorableName(file.name) || file.name.find('/') != std::string::npos ||
        file.name[0] == '.' || file.name == kManifestName)
      return fail("file '" + file.name + "': not a tensor file's name");
    if (!ParseI64(w[2], &file.bytes))
      return fail("file '" + file.name + "': invalid size '" + w[2] + "'");
    if (w[3] + " " != algo || !ParseHexLine(w[4], "", &file.checksum))
      return fail("file '" + file.name + "': expected '" + algo + "' and 16 hex digits, got '" +
                  w[3] + " " + w[4] + "'");
    if (!file_index.emplace(file.name, m->files.size()).second)
      return fail("file '" + file.name + "' listed twice");
    m->files.push_back(std::move(file));
  }
  int64_t count = 0;
  if (auto err = int_field("tensors", &count)) return err;
  if (count != static_cast<int64_t>(lines.size() - at))
    return fail("says " + std::to_string(count) + " tensors, the manifest lists " +
                std::to_string(lines.size() - at));

  std::map<std::pair<std::string, TensorKind>, int> seen;
  while (at < lines.size()) {
    const std::vector<std::string> w = Split(lines[at++]);
    Entry e;
    e.line = static_cast<int>(at);
    int64_t numel = 0;
    if (w.size() != 8 || w[0] != "tensor")
      return fail("expected 'tensor NAME KIND f32 [SHAPE] FILE OFFSET LENGTH', got '" +
                  lines[at - 1] + "'");
    e.name = w[1];
    if (!ParseKind(w[2], &e.kind))
      return fail("tensor '" + e.name + "': unknown kind '" + w[2] +
                  "' (expected value, exp_avg or exp_avg_sq)");
    if (w[3] != "f32") return fail("tensor '" + e.name + "': unknown dtype '" + w[3] + "'");
    if (!ParseShape(w[4], &e.shape, &numel))
      return fail("tensor '" + e.name + "': invalid shape '" + w[4] + "'");
    auto file = file_index.find(w[5]);
    if (file == file_index.end())
      return fail("tensor '" + e.name + "' (" + w[2] + "): file '" + w[5] +
                  "' is not among the manifest's files");
    e.file = file->second;
    const int64_t bytes = m->files[e.file].bytes;
    if (!ParseI64(w[6], &e.offset) || !ParseI64(w[7], &e.length))
      return fail("tensor '" + e.name + "': invalid offset or length '" + w[6] + " " + w[7] + "'");
    if (e.length != 4 * numel)
      return fail("tensor '" + e.name + "' (" + w[2] + "): length " + w[7] +
                  " does not match shape " + w[4] + " of f32 (" + std::to_string(4 * numel) +
                  " bytes)");
    if (e.offset > bytes || e.length > bytes - e.offset)
      return fail("tensor '" + e.name + "' (" + w[2] + "): bytes [" + w[6] + ", +" + w[7] +
                  ") lie outside " + w[5] + " of " + std::to_string(bytes) + " bytes");
    if (!seen.emplace(std::make_pair(e.name, e.kind), e.line).second)
      return fail("tensor '" + e.name + "' (" + w[2] + ") listed twice");
    m->entries.push_back(std::move(e));
  }
  std::sort(m->entries.begin(), m->entries.end(), [](const Entry& a, const Entry& b) {
    return std::make_pair(a.file, a.offset) < std::make_pair(b.file, b.offset);
  });
  for (size_t i = 1; i < m->entries.size(); ++i) {
    const Entry& a = m->entries[i - 1];
    const Entry& b = m->entries[i];
    if (a.file == b.file && b.offset < a.offset + a.length) {
      at = b.line;
      return fail("tensor '" + b.name + "' overlaps tensor '" + a.name + "'");
    }
  }
  return std::nullopt;
}

// Opens file `f` of `m` in `dir`, sets `*path` to it and checks its size.
std::optional<DataError> OpenTensorFile(const std::string& dir, const Manifest& m, size_t f,
                                        data::InputFile* in, std::string* path) {
  *path = (fs::path(dir) / m.files[f].name).string();
  if (auto err = in->Open(*path)) return err;
  if (in->size() != m.files[f].bytes)
    return BadInput(*path + ": " + std::to_string(in->size()) + " bytes, but " + m.path +
                    " says " + std::to_string(m.files[f].bytes));
  return std::nullopt;
}

// Reads `size` bytes into `out`; the size was checked, so a short read means the file
// changed under us.
std::optional<DataError> ReadExactly(data::InputFile* in, const std::string& path, void* out,
                                     int64_t size, Checksum* sum) {
  int64_t got = 0;
  if (auto err = in->Read(out, size, &got)) return err;
  if (got != size) return BadInput(path + ": ends early (changed while being read?)");
  sum->Update(out, size);
  return std::nullopt;
}

std::optional<DataError> CheckSum(const std::string& path, const Manifest& m, size_t f,
                                  Checksum* sum) {
  const uint64_t got = sum->Finish();
  if (got != m.files[f].checksum)
    return BadInput(path + ": checksum " + Hex(got) + " does not match " +
                    Hex(m.files[f].checksum) + " in " + m.path + " (the checkpoint is corrupt)");
  return std::nullopt;
}

// Streams the first `bytes` bytes of `in` (at `path`): their checksum, and how many
// of them, read as floats, are not finite. Every tensor starts at a multiple of 64
// and the padding between them is zeros, so a whole tensor file reads as floats.
std::optional<DataError> ScanFloats(data::InputFile* in, const std::string& path, int64_t bytes,
                                    Checksum* sum, int64_t* nonfinite) {
  std::vector<float> buf(std::min(kChunkBytes, std::max<int64_t>(bytes, 4)) / 4);
  *nonfinite = 0;
  for (int64_t done = 0; done < bytes;) {
    const int64_t n = std::min<int64_t>(buf.size() * 4, bytes - done);
    if (auto err = ReadExactly(in, path, buf.data(), n, sum)) return err;
    int64_t first;
    *nonfinite += CountNonFinite(buf.data(), n / 4, &first);
    done += n;
  }
  return std::nullopt;
}

// The whole of the check FindLatestCheckpoint makes of one candidate: every file.
std::optional<DataError> VerifyComplete(const std::string& dir, int64_t dir_step) {
  Manifest m;
  if (auto err = ReadManifest(dir, &m)) return err;
  if (dir_step >= 0 && m.header.step != dir_step)
    return BadInput(m.path + ": says step " + std::to_string(m.header.step) +
                    ", but the directory is " + CheckpointDirName(dir_step));
  for (size_t f = 0; f < m.files.size(); ++f) {
    data::InputFile in;
    std::string path;
    if (auto err = OpenTensorFile(dir, m, f, &in, &path)) return err;
    Checksum sum;
    int64_t nonfinite = 0;
    if (auto err = ScanFloats(&in, path, m.files[f].bytes, &sum, &nonfinite)) return err;
    if (auto err = CheckSum(path, m, f, &sum)) return err;
    if (nonfinite > 0)
      return BadInput(path + ": " + std::to_string(nonfinite) +
                      " of its values are not finite (NaN or infinity): the checkpoint of a "
                      "diverged run is never resumed");
  }
  return std::nullopt;
}

int64_t NumElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Where each of `tensors` starts in its tensor file, and the file's size.
std::vector<int64_t> Layout(const std::vector<Tensor>& tensors, int64_t* bytes) {
  std::vector<int64_t> offsets;
  int64_t offset = 0;
  for (const Tensor& t : tensors) {
    offset = RoundUp(offset);
    offsets.push_back(offset);
    offset += 4 * NumElements(t.shape);
  }
  *bytes = offset;
  return offsets;
}

// A writer's tensor file of the checkpoint in `dir`: tensors.bin or tensors.W.bin.
bool IsTensorFileName(const std::string& name) {
  if (name == kTensorsName) return true;
  const std::string prefix = "tensors.", suffix = ".bin";
  if (name.size() <= prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  int64_t w;
  return ParseI64(name.substr(prefix.size(), name.size() - prefix.size() - suffix.size()), &w) &&
         w > 0 && w <= INT32_MAX && TensorFileName(static_cast<int>(w)) == name;
}

// The pid of a writer's temporary file NAME.tmp.PID.N (data::AtomicFile), or -1.
pid_t TemporaryOwner(const std::string& name) {
  const size_t tmp = name.rfind(".tmp.");
  if (tmp == std::string::npos) return -1;
  const std::string rest = name.substr(tmp + 5);
  const size_t dot = rest.find('.');
  int64_t pid, n;
  if (dot == std::string::npos || !ParseI64(rest.substr(0, dot), &pid) ||
      !ParseI64(rest.substr(dot + 1), &n) || pid < 1 || pid > INT32_MAX)
    return -1;
  return static_cast<pid_t>(pid);
}

bool ProcessAlive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

void RemoveStaleTemporaries(const std::string& root) {
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code dir_ec;
    if (StepOfName(it->path().filename().string()) < 0 || !it->is_directory(dir_ec)) continue;
    for (fs::directory_iterator f(it->path(), dir_ec), fend; !dir_ec && f != fend;
         f.increment(dir_ec)) {
      const pid_t owner = TemporaryOwner(f->path().filename().string());
      if (owner > 0 && !ProcessAlive(owner)) ::unlink(f->path().c_str());
    }
    ::rmdir(it->path().c_str());  // only if nothing is left in it
  }
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
}

const char* TensorKindName(TensorKind kind) {
  switch (kind) {
    case TensorKind::kValue:
      return "value";
    case TensorKind::kExpAvg:
      return "exp_avg";
    case TensorKind::kExpAvgSq:
      return "exp_avg_sq";
  }
  return "?";
}

std::vector<Tensor> TrainingState(exec::Executor* executor) {
  std::vector<Tensor> tensors;
  for (const fb::Param* p : *executor->plan().params()) {
    std::vector<int64_t> shape(p->shape()->begin(), p->shape()->end());
    tensors.push_back({p->name()->str(), TensorKind::kValue, shape, executor->F32(p->value())});
    tensors.push_back({p->name()->str(), TensorKind::kExpAvg, shape, executor->F32(p->exp_avg())});
    tensors.push_back(
        {p->name()->str(), TensorKind::kExpAvgSq, shape, executor->F32(p->exp_avg_sq())});
  }
  return tensors;
}

std::string CheckpointDirName(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  return name;
}

int64_t StepOfName(const std::string& name) {
  const std::string prefix = "step_";
  if (name.size() < prefix.size() + 8 || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t step;
  return ParseI64(name.substr(prefix.size()), &step) && CheckpointDirName(step) == name ? step : -1;
}

std::vector<Tensor> PlanState(const plan::fb::Plan& plan) {
  std::vector<Tensor> tensors;
  for (const fb::Param* p : *plan.params()) {
    std::vector<int64_t> shape(p->shape()->begin(), p->shape()->end());
    for (TensorKind kind : {TensorKind::kValue, TensorKind::kExpAvg, TensorKind::kExpAvgSq})
      tensors.push_back({p->name()->str(), kind, shape, nullptr});
  }
  return tensors;
}

std::string TensorFileName(int writer) {
  return writer == 0 ? std::string(kTensorsName) : "tensors." + std::to_string(writer) + ".bin";
}

namespace {

// The lines from tokenizer to the spec's last (Header's model card, schedule and loss
// scaler).
std::string CardText(const Header& header) {
  auto number = [](double x) {
    char text[64];
    std::snprintf(text, sizeof text, "%.17g", x);
    return std::string(text);
  };
  std::string spec_lines;
  int64_t count = 0;
  for (size_t begin = 0; begin < header.spec.size(); ++count) {
    size_t nl = header.spec.find('\n', begin);
    if (nl == std::string::npos) nl = header.spec.size();
    spec_lines += "| " + header.spec.substr(begin, nl - begin) + "\n";
    begin = nl + 1;
  }
  return "tokenizer " + (header.tokenizer.empty() ? std::string("none") : header.tokenizer) +
         "\nlr " + number(header.lr) + "\nmin_lr " + number(header.min_lr) + "\nwarmup " +
         std::to_string(header.warmup) + "\ntotal_steps " + std::to_string(header.total_steps) +
         "\nloss_scaling " + header.loss_scaling + "\nloss_scale " + number(header.loss_scale) + "\nloss_scale_clean_steps " +
         std::to_string(header.loss_scale_clean_steps) + "\nloss_scale_overflows " +
         std::to_string(header.loss_scale_overflows) + "\nupdates " +
         std::to_string(header.updates < 0 ? header.step : header.updates) +
         "\nspec_file " + (header.spec_file.empty() ? std::string("-") : header.spec_file) +
         "\nspec_lines " + std::to_string(count) + "\n" + spec_lines;
}


}  // namespace

Status CheckSavable(const std::string& root, const Header& header,
                    const std::vector<Tensor>& tensors) {
  if (header.model.find('\n') != std::string::npos)
    return BadInput("model name '" + header.model + "' cannot be stored in a checkpoint");
  if (header.tokenizer != "" && header.tokenizer != "byte" && header.tokenizer != "gpt2")
    return BadInput("tokenizer '" + header.tokenizer + "' cannot be stored in a checkpoint "
                    "(byte, gpt2 or none)");
  if (!IsSpecFileName(header.spec_file) || header.spec_file == "-")
    return BadInput("spec file name '" + header.spec_file +
                    "' cannot be stored in a checkpoint (a plain file name without blanks)");
  if (!std::isfinite(header.lr) || !std::isfinite(header.min_lr) || header.lr < 0 ||
      header.min_lr < 0)
    return BadInput("lr " + std::to_string(header.lr) + " / min_lr " +
                    std::to_string(header.min_lr) + " cannot be stored in a checkpoint");
  if ((header.loss_scaling != "none" && header.loss_scaling != "fixed" &&
       header.loss_scaling != "dynamic") ||
      !exec::LossScaler::IsPowerOfTwoScale(header.loss_scale) ||
      header.loss_scale_clean_steps < 0 || header.loss_scale_overflows < 0 ||
      header.updates > header.step)
    return BadInput("loss scaling '" + header.loss_scaling + "' at " +
                    std::to_string(header.loss_scale) +
                    " cannot be stored in a checkpoint (none, fixed or dynamic; a power of "
                    "two in [1, 2^24])");
  for (const Tensor& t : tensors)
    if (!IsStorableName(t.name))
      return BadInput("parameter name '" + t.name +
                      "' cannot be stored in a checkpoint (it is empty or has blanks)");
  const std::string dir = (fs::path(root) / CheckpointDirName(header.step)).string();
  for (const Tensor& t : tensors) {
    int64_t first;
    if (const int64_t bad = CountNonFinite(t.data, NumElements(t.shape), &first))
      return Failure("not saving checkpoint " + dir + ": tensor '" + t.name + "' (" +
                     TensorKindName(t.kind) + ") holds " + std::to_string(bad) +
                     " values that are not finite (the first at index " + std::to_string(first) +
                     "); a checkpoint is never written from non-finite state");
  }
  return std::nullopt;
}

Status PrepareCheckpoint(const std::string& root, const Header& header, std::string* dir) {
  *dir = (fs::path(root) / CheckpointDirName(header.step)).string();
  RemoveStaleTemporaries(root);
  std::error_code ec;
  fs::create_directories(*dir, ec);
  if (ec) return Failure(*dir + ": cannot create directory: " + ec.message());
  // An older checkpoint of this step loses its manifest before any of its files
  // changes, so that no crash can leave an old manifest beside new tensors; its tensor
  // files go too, so that none of another layout's is left behind.
  const std::string manifest_path = Join(*dir, kManifestName);
  if (::unlink(manifest_path.c_str()) != 0 && errno != ENOENT)
    return Failure(manifest_path + ": cannot replace: " + std::strerror(errno));
  for (fs::directory_iterator it(*dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (IsTensorFileName(name) && ::unlink(it->path().c_str()) != 0 && errno != ENOENT)
      return Failure(it->path().string() + ": cannot replace: " + std::strerror(errno));
  }
  if (ec) return Failure(*dir + ": cannot list: " + ec.message());
  return std::nullopt;
}

Status WriteTensorFile(const std::string& dir, const std::string& file,
                       const std::vector<Tensor>& tensors, TensorFile* written) {
  data::AtomicFile bin;
  if (auto err = bin.Open(Join(dir, file.c_str()))) return err;
  int64_t bytes = 0;
  const std::vector<int64_t> offsets = Layout(tensors, &bytes);
  Checksum sum;
  static const unsigned char kZeros[kAlign] = {};
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t pad = offsets[i] - offset;
    if (auto err = bin.Write(kZeros, pad)) return err;
    sum.Update(kZeros, pad);
    const int64_t length = 4 * NumElements(tensors[i].shape);
    if (auto err = bin.Write(tensors[i].data, length)) return err;
    sum.Update(tensors[i].data, length);
    offset = offsets[i] + length;
  }
  if (auto err = bin.Commit()) return err;
  if (auto err = SyncDir(dir)) return err;
  *written = {file, bytes, sum.Finish()};
  return std::nullopt;
}

Status CommitCheckpoint(const std::string& root, const Header& header,
                        const std::vector<Part>& parts, std::string* dir) {
  *dir = (fs::path(root) / CheckpointDirName(header.step)).string();
  std::string files, lines;
  size_t count = 0;
  std::map<std::pair<std::string, TensorKind>, const Part*> owner;
  for (const Part& part : parts)
    for (const Tensor& t : part.tensors)
      if (!owner.emplace(std::make_pair(t.name, t.kind), &part).second)
        return Failure("not saving checkpoint " + *dir + ": tensor '" + t.name + "' (" +
                       TensorKindName(t.kind) + ") is in two parts, " +
                       owner[{t.name, t.kind}]->file + " and " + part.file);
  for (const Part& part : parts) {
    int64_t bytes = 0;
    const std::vector<int64_t> offsets = Layout(part.tensors, &bytes);
    TensorFile file;
    if (part.written) {
      file = *part.written;
      if (file.name != part.file || file.bytes != bytes)
        return Failure(Join(*dir, part.file.c_str()) + ": written as " + file.name + " of " +
                       std::to_string(file.bytes) + " bytes, but its tensors take " +
                       std::to_string(bytes));
    } else {
      // Another writer's file: read back, so that the manifest vouches only for what is
      // on disk.
      const std::string path = Join(*dir, part.file.c_str());
      data::InputFile in;
      if (auto err = in.Open(path)) return Failure(err->message);
      if (in.size() != bytes)
        return Failure(path + ": " + std::to_string(in.size()) + " bytes, but its writer's " +
                       std::to_string(part.tensors.size()) + " tensors take " +
                       std::to_string(bytes));
      Checksum sum;
      int64_t nonfinite = 0;
      if (auto err = ScanFloats(&in, path, bytes, &sum, &nonfinite)) return Failure(err->message);
      if (nonfinite > 0)
        return Failure("not saving checkpoint " + *dir + ": " + path + " holds " +
                       std::to_string(nonfinite) + " values that are not finite");
      file = {part.file, bytes, sum.Finish()};
    }
    files += "file " + file.name + " " + std::to_string(file.bytes) + " " + kChecksumName + " " +
             Hex(file.checksum) + "\n";
    for (size_t i = 0; i < part.tensors.size(); ++i) {
      const Tensor& t = part.tensors[i];
      lines += "tensor " + t.name + " " + TensorKindName(t.kind) + " f32 " + ShapeText(t.shape) +
               " " + file.name + " " + std::to_string(offsets[i]) + " " +
               std::to_string(4 * NumElements(t.shape)) + "\n";
    }
    count += part.tensors.size();
  }
  std::string text = "heiretsu-checkpoint " + std::to_string(kFormatVersion) + "\nmodel " +
                     header.model + "\nstep " + std::to_string(header.step) + "\ndata_position " +
                     std::to_string(header.step + 1) + "\nseed " + std::to_string(header.seed) +
                     "\nglobal_batch " + std::to_string(header.global_batch) + "\nseq " +
                     std::to_string(header.seq) + "\n" + CardText(header) + "files " +
                     std::to_string(parts.size()) + "\n" + files + "tensors " +
                     std::to_string(count) + "\n" + lines;
  Checksum text_sum;
  text_sum.Update(text.data(), static_cast<int64_t>(text.size()));
  text +=
      std::string(kManifestChecksumKey) + " " + kChecksumName + " " + Hex(text_sum.Finish()) + "\n";
  data::AtomicFile manifest;
  if (auto err = manifest.Open(Join(*dir, kManifestName))) return err;
  if (auto err = manifest.Write(text.data(), static_cast<int64_t>(text.size()))) return err;
  if (auto err = manifest.Commit()) return err;
  // The commit is durable once the directory entries are; the root gains a new
  // directory the first time a step is saved.
  if (auto err = SyncDir(*dir)) return err;
  return SyncDir(root);
}

std::optional<DataError> SaveCheckpoint(const std::string& root, const Header& header,
                                        const std::vector<Tensor>& tensors, std::string* dir) {
  *dir = (fs::path(root) / CheckpointDirName(header.step)).string();
  // Nothing is written from non-finite state: not even a directory, and an older
  // checkpoint of this step stays as it is.
  if (auto err = CheckSavable(root, header, tensors)) return err;
  if (auto err = PrepareCheckpoint(root, header, dir)) return err;
  TensorFile written;
  if (auto err = WriteTensorFile(*dir, kTensorsName, tensors, &written)) return err;
  return CommitCheckpoint(root, header, {Part{kTensorsName, tensors, written}}, dir);
}

namespace {

// The checkpoints `root` names, newest first: `root` itself when it holds a manifest or
// is named like one (step_NNNNNNNN), else its step_NNNNNNNN subdirectories. Each comes
// with the step its name says (-1 for a root of another name).
std::optional<DataError> Candidates(const std::string& root,
                                    std::vector<std::pair<int64_t, std::string>>* out) {
  struct stat st;
  fs::path name = fs::path(root).lexically_normal();
  if (name.filename().empty()) name = name.parent_path();  // "ROOT/step_N/"
  const int64_t root_step = StepOfName(name.filename().string());
  const bool has_manifest = ::stat(Join(root, kManifestName).c_str(), &st) == 0;
  if (::stat(root.c_str(), &st) != 0)
    return BadInput(root + ": cannot open checkpoint directory: " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return BadInput(root + ": not a directory");
  if (has_manifest || root_step >= 0) {
    out->emplace_back(root_step, root);
    return std::nullopt;
  }
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const int64_t step = StepOfName(it->path().filename().string());
    std::error_code dir_ec;
    if (step >= 0 && it->is_directory(dir_ec)) out->emplace_back(step, it->path().string());
  }
  if (ec) return BadInput(root + ": cannot list: " + ec.message());
  if (out->empty()) return BadInput(root + ": no checkpoint in it (no step_NNNNNNNN directory)");
  std::sort(out->rbegin(), out->rend());
  return std::nullopt;
}

}  // namespace

std::optional<DataError> ReadHeader(const std::string& dir, Header* header) {
  Manifest m;
  if (auto err = ReadManifest(dir, &m)) return err;
  *header = m.header;
  return std::nullopt;
}

std::optional<DataError> FindLatestCheckpoint(const std::string& root, std::string* dir,
                                              std::vector<std::string>* warnings) {
  std::vector<std::pair<int64_t, std::string>> candidates;
  if (auto err = Candidates(root, &candidates)) return err;
  if (candidates.size() == 1 && candidates[0].second == root) {
    if (auto err = VerifyComplete(root, candidates[0].first)) return err;
    *dir = root;
    return std::nullopt;
  }
  for (const auto& [step, path] : candidates) {
    std::optional<DataError> err = VerifyComplete(path, step);
    if (!err) {
      *dir = path;
      return std::nullopt;
    }
    warnings->push_back("skipping " + err->message);
  }
  return BadInput(root + ": no complete checkpoint in it (" + std::to_string(candidates.size()) +
                  " incomplete or corrupt)");
}

Status ResumeNewest(const std::string& root, const std::string& model,
                    const std::vector<Tensor>& tensors, const AcceptCheckpoint& accept,
                    std::string* dir, Header* header, std::vector<std::string>* skipped) {
  std::vector<std::pair<int64_t, std::string>> candidates;
  if (auto err = Candidates(root, &candidates)) return err;
  for (const auto& [step, path] : candidates) {
    Status err = VerifyComplete(path, step);
    if (!err) err = LoadCheckpoint(path, model, tensors, header);
    if (!err && accept) err = accept(path, *header);
    if (!err) {
      *dir = path;
      return std::nullopt;
    }
    if (candidates.size() == 1 && path == root) return err;  // the one named: its reason
    skipped->push_back("skipping " + err->message);
  }
  return BadInput(root + ": none of its " + std::to_string(candidates.size()) +
                  " checkpoints can be resumed by this run (each is named above with the "
                  "reason)");
}

std::optional<DataError> LoadCheckpoint(const std::string& dir, const std::string& model,
                                        const std::vector<Tensor>& tensors, Header* header) {
  Manifest m;
  if (auto err = ReadManifest(dir, &m)) return err;
  if (m.header.model != model)
    return BadInput(m.path + ": model '" + m.header.model + "', but the plan's model is '" + model +
                    "'");
  std::map<std::pair<std::string, TensorKind>, const Tensor*> wanted;
  for (const Tensor& t : tensors) wanted[{t.name, t.kind}] = &t;
  std::vector<const Tensor*> destination;  // per manifest entry
  for (const Entry& e : m.entries) {
    const std::string what = "tensor '" + e.name + "' (" + TensorKindName(e.kind) + ")";
    auto it = wanted.find({e.name, e.kind});
    if (it == wanted.end())
      return BadInput(m.path + ":" + std::to_string(e.line) + ": " + what +
                      " is not in the plan (model '" + model + "')");
    if (it->second->shape != e.shape)
      return BadInput(m.path + ":" + std::to_string(e.line) + ": " + what + " has shape " +
                      ShapeText(e.shape) + ", the plan's is " + ShapeText(it->second->shape));
    destination.push_back(it->second);
    wanted.erase(it);
  }
  if (!wanted.empty()) {
    const Tensor& t = *wanted.begin()->second;
    return BadInput(m.path + ": has no tensor '" + t.name + "' (" + TensorKindName(t.kind) +
                    "), which the plan needs");
  }

  // Each file holding a tensor this process loads, read whole and in order: padding,
  // gaps and tensors it does not load through a scratch buffer, its tensors straight
  // into their memory.
  std::vector<unsigned char> scratch(kChunkBytes);
  for (size_t f = 0; f < m.files.size(); ++f) {
    bool needed = false;
    for (size_t i = 0; i < m.entries.size(); ++i)
      needed = needed || (m.entries[i].file == f && destination[i]->data != nullptr);
    if (!needed) continue;
    data::InputFile in;
    std::string path;
    if (auto err = OpenTensorFile(dir, m, f, &in, &path)) return err;
    Checksum sum;
    int64_t done = 0;
    auto skip_to = [&](int64_t target) -> std::optional<DataError> {
      while (done < target) {
        const int64_t n = std::min<int64_t>(scratch.size(), target - done);
        if (auto err = ReadExactly(&in, path, scratch.data(), n, &sum)) return err;
        done += n;
      }
      return std::nullopt;
    };
    for (size_t i = 0; i < m.entries.size(); ++i) {
      const Entry& e = m.entries[i];
      float* data = destination[i]->data;
      if (e.file != f || data == nullptr) continue;
      if (auto err = skip_to(e.offset)) return err;
      if (auto err = ReadExactly(&in, path, data, e.length, &sum)) return err;
      done += e.length;
      int64_t first;
      if (const int64_t bad = CountNonFinite(data, e.length / 4, &first))
        return BadInput(path + ": tensor '" + e.name + "' (" + TensorKindName(e.kind) +
                        ") holds " + std::to_string(bad) +
                        " values that are not finite (the first at index " +
                        std::to_string(first) +
                        "): the checkpoint of a diverged run is never resumed");
    }
    if (auto err = skip_to(m.files[f].bytes)) return err;
    if (auto err = CheckSum(path, m, f, &sum)) return err;
  }
  *header = m.header;
  return std::nullopt;
}

}  // namespace heiretsu::checkpoint
