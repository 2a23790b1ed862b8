// Checkpoint saving, discovery and loading; the format and its guarantees are in
// checkpoint.h.
#include "runtime/checkpoint/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
  return text + "]";
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
  int64_t offset = 0;
  int64_t length = 0;
  int line = 0;
};

struct Manifest {
  std::string path;
  Header header;
  int64_t bytes = 0;
  uint64_t checksum = 0;
  std::vector<Entry> entries;  // sorted by offset
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
  text->resize(in.size());
  int64_t got = 0;
  if (auto err = in.Read(text->data(), in.size(), &got)) return err;
  text->resize(got);
  return std::nullopt;
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
    return BadInput(m->path + ": last line is not '" + checksum_prefix +
                    "HEX' (truncated or not a checkpoint manifest)");
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
  if (v != std::to_string(kFormatVersion))
    return fail("format version " + v + ", this runtime reads version " +
                std::to_string(kFormatVersion));
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
  if (auto err = int_field("bytes", &m->bytes)) return err;
  if (auto err = field("checksum", &v)) return err;
  const std::string algo = std::string(kChecksumName) + " ";
  if (!ParseHexLine(v, algo, &m->checksum))
    return fail("checksum: expected '" + algo + "' and 16 hex digits, got '" + v + "'");
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
    if (w.size() != 7 || w[0] != "tensor")
      return fail("expected 'tensor NAME KIND f32 [SHAPE] OFFSET LENGTH', got '" + lines[at - 1] +
                  "'");
    e.name = w[1];
    if (!ParseKind(w[2], &e.kind))
      return fail("tensor '" + e.name + "': unknown kind '" + w[2] +
                  "' (expected value, exp_avg or exp_avg_sq)");
    if (w[3] != "f32") return fail("tensor '" + e.name + "': unknown dtype '" + w[3] + "'");
    if (!ParseShape(w[4], &e.shape, &numel))
      return fail("tensor '" + e.name + "': invalid shape '" + w[4] + "'");
    if (!ParseI64(w[5], &e.offset) || !ParseI64(w[6], &e.length))
      return fail("tensor '" + e.name + "': invalid offset or length '" + w[5] + " " + w[6] + "'");
    if (e.length != 4 * numel)
      return fail("tensor '" + e.name + "' (" + w[2] + "): length " + w[6] +
                  " does not match shape " + w[4] + " of f32 (" + std::to_string(4 * numel) +
                  " bytes)");
    if (e.offset > m->bytes || e.length > m->bytes - e.offset)
      return fail("tensor '" + e.name + "' (" + w[2] + "): bytes [" + w[5] + ", +" + w[6] +
                  ") lie outside " + kTensorsName + " of " + std::to_string(m->bytes) + " bytes");
    if (!seen.emplace(std::make_pair(e.name, e.kind), e.line).second)
      return fail("tensor '" + e.name + "' (" + w[2] + ") listed twice");
    m->entries.push_back(std::move(e));
  }
  std::sort(m->entries.begin(), m->entries.end(),
            [](const Entry& a, const Entry& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < m->entries.size(); ++i) {
    const Entry& a = m->entries[i - 1];
    const Entry& b = m->entries[i];
    if (b.offset < a.offset + a.length) {
      at = b.line;
      return fail("tensor '" + b.name + "' overlaps tensor '" + a.name + "'");
    }
  }
  return std::nullopt;
}

std::optional<DataError> OpenTensors(const std::string& dir, const Manifest& m,
                                     data::InputFile* in) {
  const std::string path = Join(dir, kTensorsName);
  if (auto err = in->Open(path)) return err;
  if (in->size() != m.bytes)
    return BadInput(path + ": " + std::to_string(in->size()) + " bytes, but " + m.path + " says " +
                    std::to_string(m.bytes));
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

std::optional<DataError> CheckSum(const std::string& path, const Manifest& m, Checksum* sum) {
  const uint64_t got = sum->Finish();
  if (got != m.checksum)
    return BadInput(path + ": checksum " + Hex(got) + " does not match " + Hex(m.checksum) +
                    " in " + m.path + " (the checkpoint is corrupt)");
  return std::nullopt;
}

// The whole of the check FindLatestCheckpoint makes of one candidate.
std::optional<DataError> VerifyComplete(const std::string& dir, int64_t dir_step) {
  Manifest m;
  if (auto err = ReadManifest(dir, &m)) return err;
  if (dir_step >= 0 && m.header.step != dir_step)
    return BadInput(m.path + ": says step " + std::to_string(m.header.step) +
                    ", but the directory is " + CheckpointDirName(dir_step));
  data::InputFile in;
  if (auto err = OpenTensors(dir, m, &in)) return err;
  const std::string path = Join(dir, kTensorsName);
  // float-aligned chunks: every tensor starts at a multiple of 64 and the padding
  // between them is zeros, so the whole file reads as floats for the finite check.
  std::vector<float> buf(std::min(kChunkBytes, std::max<int64_t>(m.bytes, 4)) / 4);
  Checksum sum;
  int64_t nonfinite = 0;
  for (int64_t done = 0; done < m.bytes;) {
    const int64_t n = std::min<int64_t>(buf.size() * 4, m.bytes - done);
    if (auto err = ReadExactly(&in, path, buf.data(), n, &sum)) return err;
    int64_t first;
    nonfinite += CountNonFinite(buf.data(), n / 4, &first);
    done += n;
  }
  if (auto err = CheckSum(path, m, &sum)) return err;
  if (nonfinite > 0)
    return BadInput(path + ": " + std::to_string(nonfinite) +
                    " of its values are not finite (NaN or infinity): the checkpoint of a diverged "
                    "run is never resumed");
  return std::nullopt;
}

// The step of a directory named "step_" + at least 8 digits, or -1.
int64_t StepOfName(const std::string& name) {
  const std::string prefix = "step_";
  if (name.size() < prefix.size() + 8 || name.compare(0, prefix.size(), prefix) != 0) return -1;
  int64_t step;
  return ParseI64(name.substr(prefix.size()), &step) && CheckpointDirName(step) == name ? step : -1;
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

std::optional<DataError> SaveCheckpoint(const std::string& root, const Header& header,
                                        const std::vector<Tensor>& tensors, std::string* dir) {
  if (header.model.find('\n') != std::string::npos)
    return BadInput("model name '" + header.model + "' cannot be stored in a checkpoint");
  for (const Tensor& t : tensors)
    if (!IsStorableName(t.name))
      return BadInput("parameter name '" + t.name +
                      "' cannot be stored in a checkpoint (it is empty or has blanks)");
  *dir = (fs::path(root) / CheckpointDirName(header.step)).string();
  // Nothing is written from non-finite state: not even a directory, and an older
  // checkpoint of this step stays as it is.
  for (const Tensor& t : tensors) {
    int64_t numel = 1, first;
    for (int64_t d : t.shape) numel *= d;
    if (const int64_t bad = CountNonFinite(t.data, numel, &first))
      return Failure("not saving checkpoint " + *dir + ": tensor '" + t.name + "' (" +
                     TensorKindName(t.kind) + ") holds " + std::to_string(bad) +
                     " values that are not finite (the first at index " + std::to_string(first) +
                     "); a checkpoint is never written from non-finite state");
  }
  RemoveStaleTemporaries(root);
  std::error_code ec;
  fs::create_directories(*dir, ec);
  if (ec) return Failure(*dir + ": cannot create directory: " + ec.message());
  const std::string manifest_path = Join(*dir, kManifestName);

  data::AtomicFile bin;
  if (auto err = bin.Open(Join(*dir, kTensorsName))) return err;
  Checksum sum;
  std::string lines;
  static const unsigned char kZeros[kAlign] = {};
  int64_t offset = 0;
  for (const Tensor& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    const int64_t length = 4 * numel;
    const int64_t pad = RoundUp(offset) - offset;
    if (auto err = bin.Write(kZeros, pad)) return err;
    sum.Update(kZeros, pad);
    offset += pad;
    if (auto err = bin.Write(t.data, length)) return err;
    sum.Update(t.data, length);

    lines += "tensor " + t.name + " " + TensorKindName(t.kind) + " f32 " + ShapeText(t.shape) +
             " " + std::to_string(offset) + " " + std::to_string(length) + "\n";
    offset += length;
  }
  // An older checkpoint of this step loses its manifest before its tensors change, so
  // that no crash can leave an old manifest beside new tensors.
  if (::unlink(manifest_path.c_str()) != 0 && errno != ENOENT)
    return Failure(manifest_path + ": cannot replace: " + std::strerror(errno));
  if (auto err = bin.Commit()) return err;

  std::string text = "heiretsu-checkpoint " + std::to_string(kFormatVersion) + "\nmodel " +
                     header.model + "\nstep " + std::to_string(header.step) + "\ndata_position " +
                     std::to_string(header.step + 1) + "\nseed " + std::to_string(header.seed) +
                     "\nglobal_batch " + std::to_string(header.global_batch) + "\nseq " +
                     std::to_string(header.seq) + "\nbytes " + std::to_string(offset) +
                     "\nchecksum " + kChecksumName + " " + Hex(sum.Finish()) + "\ntensors " +
                     std::to_string(tensors.size()) + "\n" + lines;
  Checksum text_sum;
  text_sum.Update(text.data(), static_cast<int64_t>(text.size()));
  text +=
      std::string(kManifestChecksumKey) + " " + kChecksumName + " " + Hex(text_sum.Finish()) + "\n";
  data::AtomicFile manifest;
  if (auto err = manifest.Open(manifest_path)) return err;
  if (auto err = manifest.Write(text.data(), static_cast<int64_t>(text.size()))) return err;
  if (auto err = manifest.Commit()) return err;
  // The commit is durable once the directory entries are; the root gains a new
  // directory the first time a step is saved.
  if (auto err = SyncDir(*dir)) return err;
  return SyncDir(root);
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

  data::InputFile in;
  if (auto err = OpenTensors(dir, m, &in)) return err;
  const std::string path = Join(dir, kTensorsName);
  // Streams the file in order: padding and gaps through a scratch buffer, tensors straight
  // into their memory.
  std::vector<unsigned char> scratch(kChunkBytes);
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
    if (auto err = skip_to(e.offset)) return err;
    if (auto err = ReadExactly(&in, path, destination[i]->data, e.length, &sum)) return err;
    done += e.length;
    int64_t first;
    if (const int64_t bad = CountNonFinite(destination[i]->data, e.length / 4, &first))
      return BadInput(path + ": tensor '" + e.name + "' (" + TensorKindName(e.kind) + ") holds " +
                      std::to_string(bad) + " values that are not finite (the first at index " +
                      std::to_string(first) + "): the checkpoint of a diverged run is never "
                      "resumed");
  }
  if (auto err = skip_to(m.bytes)) return err;
  if (auto err = CheckSum(path, m, &sum)) return err;
  *header = m.header;
  return std::nullopt;
}

}  // namespace heiretsu::checkpoint
