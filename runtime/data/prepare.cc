// Tokenization of text files into llm.c shards (`heiretsu data prepare`: bytes or GPT-2
// BPE) and the cached, byte-tokenized default corpus. The contracts are in prepare.h.
#include "runtime/data/prepare.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

#include "runtime/data/bpe.h"

namespace heiretsu::data {
namespace {

namespace fs = std::filesystem;

// Local spellings of the two error kinds and of errno's text.
constexpr auto BadInput = DataError::BadInput;
constexpr auto Failure = DataError::Failure;
inline std::string Errno(int err) { return std::strerror(err); }

bool IsShardName(const std::string& name) {
  return name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0;
}

std::string ShardName(int64_t index) {
  char name[32];
  std::snprintf(name, sizeof name, "train_%06lld.bin", static_cast<long long>(index));
  return name;
}

// llm.c's FineWeb naming: the first shard is the validation shard.
std::string Gpt2ShardName(int64_t index) {
  char name[40];
  std::snprintf(name, sizeof name, "gpt2_%s_%06lld.bin", index == 0 ? "val" : "train",
                static_cast<long long>(index));
  return name;
}

std::string Join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// Cuts a token stream into shards in `out_dir`. Each shard's path is added to
// `summary->shards` as soon as the shard exists, so that the caller can remove exactly
// what was written if a later file fails.
class ShardSink {
 public:
  ShardSink(const std::string& out_dir, int64_t shard_tokens, int64_t expected_tokens,
            std::string (*name)(int64_t), PrepareSummary* summary)
      : out_dir_(out_dir), shard_tokens_(shard_tokens), name_(name), summary_(summary) {
    shard_.reserve(std::min(shard_tokens, expected_tokens));
  }

  template <typename T>
  std::optional<DataError> Append(const T* tokens, int64_t count) {
    for (int64_t i = 0; i < count;) {
      const int64_t n = std::min(count - i, shard_tokens_ - static_cast<int64_t>(shard_.size()));
      shard_.insert(shard_.end(), tokens + i, tokens + i + n);
      i += n;
      if (static_cast<int64_t>(shard_.size()) == shard_tokens_) {
        if (auto err = Flush()) return err;
      }
    }
    return std::nullopt;
  }

  std::optional<DataError> Finish() {
    if (!shard_.empty()) return Flush();
    return std::nullopt;
  }

 private:
  std::optional<DataError> Flush() {
    const std::string path = Join(out_dir_, name_(summary_->shards.size()));
    if (auto err = WriteShard(path, shard_)) return err;
    summary_->shards.push_back(path);
    summary_->tokens += static_cast<int64_t>(shard_.size());
    shard_.clear();
    return std::nullopt;
  }

  std::string out_dir_;
  int64_t shard_tokens_;
  std::string (*name_)(int64_t);
  PrepareSummary* summary_;
  std::vector<uint16_t> shard_;
};

// The bytes of `files`, one token each, as one stream.
std::optional<DataError> WriteByteShards(const std::vector<std::string>& files,
                                         const std::string& out_dir, int64_t shard_tokens,
                                         int64_t total_bytes, PrepareSummary* summary) {
  ShardSink sink(out_dir, shard_tokens, total_bytes, ShardName, summary);
  std::vector<unsigned char> chunk(1 << 20);
  const int64_t chunk_size = static_cast<int64_t>(chunk.size());
  for (const std::string& path : files) {
    InputFile in;
    if (auto err = in.Open(path)) return err;
    int64_t got = chunk_size;
    while (got == chunk_size) {
      if (auto err = in.Read(chunk.data(), chunk_size, &got)) return err;
      if (auto err = sink.Append(chunk.data(), got)) return err;
    }
    ++summary->files;
  }
  return sink.Finish();
}

// Each file is a document: GPT-2's end-of-text token, then the file's BPE tokens. A file
// is read and encoded in pieces cut where the encoding cannot change (SafePrefix), so a
// large one is never held whole as code points.
std::optional<DataError> WriteGpt2Shards(const std::vector<std::string>& files, Gpt2Bpe* bpe,
                                         const std::string& out_dir, int64_t shard_tokens,
                                         int64_t total_bytes, PrepareSummary* summary) {
  ShardSink sink(out_dir, shard_tokens, total_bytes / 3, Gpt2ShardName, summary);
  constexpr int64_t kChunk = 1 << 20;
  std::string pending;
  std::vector<int32_t> ids;
  for (const std::string& path : files) {
    InputFile in;
    if (auto err = in.Open(path)) return err;
    ids.assign(1, bpe->eot());
    int64_t replaced = 0;
    int64_t got = kChunk;
    pending.clear();
    while (got == kChunk) {
      const size_t old = pending.size();
      pending.resize(old + kChunk);
      if (auto err = in.Read(pending.data() + old, kChunk, &got)) return err;
      pending.resize(old + got);
      // The last read (short) encodes whatever is left.
      const size_t cut = got == kChunk ? SafePrefix(pending) : pending.size();
      replaced += bpe->Encode(std::string_view(pending).substr(0, cut), &ids);
      pending.erase(0, cut);
      if (auto err = sink.Append(ids.data(), static_cast<int64_t>(ids.size()))) return err;
      ids.clear();
    }
    if (replaced > 0 && summary->replaced == 0) summary->first_replaced = path;
    summary->replaced += replaced;
    ++summary->files;
  }
  return sink.Finish();
}

// What a corpus cache was prepared from: a source whose size or modification time
// differs makes the cache stale.
struct SourceStamp {
  std::string path;
  int64_t size;
  int64_t mtime_ns;
  bool operator==(const SourceStamp& o) const {
    return path == o.path && size == o.size && mtime_ns == o.mtime_ns;
  }
};

struct ManifestShard {
  std::string name;  // relative to the cache directory, so the cache can be moved
  int64_t tokens;
};

struct Manifest {
  std::vector<SourceStamp> sources;
  std::vector<ManifestShard> shards;
  int64_t tokens = 0;
};

constexpr char kManifestHeader[] = "heiretsu-corpus 1";

std::optional<DataError> StampSources(const std::vector<std::string>& files,
                                      std::vector<SourceStamp>* stamps) {
  for (const std::string& path : files) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return BadInput(path + ": cannot open: " + Errno(errno));
    stamps->push_back(
        {path, st.st_size, int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec});
  }
  return std::nullopt;
}

// One entry per line; the free-form field (a path or name) comes last, so spaces in it
// need no quoting.
std::string RenderManifest(const Manifest& m) {
  std::string text = std::string(kManifestHeader) + "\ntokenizer byte\n";
  for (const SourceStamp& s : m.sources)
    text +=
        "source " + std::to_string(s.size) + " " + std::to_string(s.mtime_ns) + " " + s.path + "\n";
  for (const ManifestShard& s : m.shards)
    text += "shard " + std::to_string(s.tokens) + " " + s.name + "\n";
  text += "tokens " + std::to_string(m.tokens) + "\n";
  return text;
}

// Parses what RenderManifest wrote. Anything else (damaged, foreign, from another
// version) gives nullopt, which means: prepare the corpus again.
std::optional<Manifest> ParseManifest(const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  if (!std::getline(lines, line) || line != kManifestHeader) return std::nullopt;
  if (!std::getline(lines, line) || line != "tokenizer byte") return std::nullopt;
  Manifest m;
  bool have_total = false;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string key;
    fields >> key;
    if (key == "source") {
      SourceStamp s;
      if (!(fields >> s.size >> s.mtime_ns) || fields.get() != ' ' || !std::getline(fields, s.path))
        return std::nullopt;
      m.sources.push_back(std::move(s));
    } else if (key == "shard") {
      ManifestShard s;
      if (!(fields >> s.tokens) || fields.get() != ' ' || !std::getline(fields, s.name))
        return std::nullopt;
      m.shards.push_back(std::move(s));
    } else if (key == "tokens" && !have_total && (fields >> m.tokens)) {
      have_total = true;
    } else {
      return std::nullopt;
    }
  }
  if (!have_total) return std::nullopt;
  return m;
}

// The manifest in `cache_dir`, if there is one that describes exactly `sources` and whose
// shards are all present with the sizes it records.
std::optional<Manifest> CompleteCorpus(const std::string& cache_dir,
                                       const std::vector<SourceStamp>& sources) {
  InputFile file;
  if (file.Open(Join(cache_dir, kCorpusManifestName))) return std::nullopt;
  std::string text(file.size(), '\0');
  int64_t got = 0;
  if (file.Read(text.data(), file.size(), &got)) return std::nullopt;
  text.resize(got);
  std::optional<Manifest> m = ParseManifest(text);
  if (!m || m->sources != sources || m->shards.empty()) return std::nullopt;
  int64_t total = 0;
  for (const ManifestShard& s : m->shards) {
    if (s.name.empty() || s.name.find('/') != std::string::npos || s.tokens < 0)
      return std::nullopt;
    struct stat st;
    if (::stat(Join(cache_dir, s.name).c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
        st.st_size != kShardHeaderBytes + 2 * s.tokens)
      return std::nullopt;
    total += s.tokens;
  }
  if (total != m->tokens) return std::nullopt;
  return m;
}

// Prepares `files` in the private directory `temp_dir`, renames the shards into
// `cache_dir`, then commits the manifest: until that last step, the cache is not complete.
std::optional<DataError> PrepareAndPublish(const std::vector<std::string>& files,
                                           std::vector<SourceStamp> stamps,
                                           const std::string& cache_dir,
                                           const std::string& temp_dir, int64_t shard_tokens,
                                           PrepareSummary* summary) {
  PrepareSummary prepared;
  if (auto err = PrepareShards(files, "byte", temp_dir, shard_tokens, &prepared)) return err;
  Manifest m;
  m.sources = std::move(stamps);
  m.tokens = prepared.tokens;
  std::set<std::string> names;
  for (size_t k = 0; k < prepared.shards.size(); ++k) {
    const std::string name = fs::path(prepared.shards[k]).filename().string();
    const std::string path = Join(cache_dir, name);
    if (std::rename(prepared.shards[k].c_str(), path.c_str()) != 0)
      return Failure(path + ": cannot rename into place: " + Errno(errno));
    // Every shard is full but the last.
    m.shards.push_back(
        {name, std::min(shard_tokens, prepared.tokens - static_cast<int64_t>(k) * shard_tokens)});
    names.insert(name);
    summary->shards.push_back(path);
  }
  AtomicFile manifest;
  const std::string text = RenderManifest(m);
  if (auto err = manifest.Open(Join(cache_dir, kCorpusManifestName))) return err;
  if (auto err = manifest.Write(text.data(), static_cast<int64_t>(text.size()))) return err;
  if (auto err = manifest.Commit()) return err;
  // Shards of an earlier, longer corpus would otherwise join the stream of anyone who
  // passes the cache directory to --data.
  std::error_code ec;
  for (fs::directory_iterator it(cache_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code remove_ec;
    if (IsShardName(name) && names.count(name) == 0) fs::remove(it->path(), remove_ec);
  }
  summary->files = prepared.files;
  summary->tokens = prepared.tokens;
  return std::nullopt;
}

}  // namespace

std::optional<DataError> PrepareShards(const std::vector<std::string>& files,
                                       const std::string& tokenizer, const std::string& out_dir,
                                       int64_t shard_tokens, PrepareSummary* summary,
                                       const std::string& vocab_dir) {
  *summary = PrepareSummary{};
  if (tokenizer != "byte" && tokenizer != "gpt2")
    return BadInput("--tokenizer: expected byte|gpt2, got '" + tokenizer + "'");
  constexpr int64_t kMaxShardTokens = std::numeric_limits<int32_t>::max();
  if (shard_tokens < 1 || shard_tokens > kMaxShardTokens)
    return BadInput("shard size " + std::to_string(shard_tokens) + " is outside [1, " +
                    std::to_string(kMaxShardTokens) + "] tokens");
  if (files.empty()) return BadInput("no input files to prepare");

  // Check every input before creating anything, so a typo in the last name leaves no
  // half-made output behind.
  int64_t total_bytes = 0;
  for (const std::string& path : files) {
    InputFile in;
    if (auto err = in.Open(path)) return err;
    total_bytes += in.size();
  }
  if (total_bytes == 0) return BadInput("the input files are empty: there is nothing to tokenize");
  std::unique_ptr<Gpt2Bpe> bpe;
  if (tokenizer == "gpt2") {
    std::string dir = vocab_dir;
    if (dir.empty()) {
      if (auto err = DefaultGpt2VocabDir(&dir)) return err;
    }
    if (auto err = Gpt2Bpe::Load(dir, &bpe)) return err;
  }

  struct stat st;
  if (::stat(out_dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) return BadInput(out_dir + ": exists and is not a directory");
    std::error_code ec;
    for (fs::directory_iterator it(out_dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (IsShardName(name))
        return BadInput(out_dir + ": already holds token shards (" + name +
                        "); refusing to overwrite them: give a new or empty directory");
    }
    if (ec) return BadInput(out_dir + ": cannot list: " + ec.message());
  } else {
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    if (ec) return Failure(out_dir + ": cannot create directory: " + ec.message());
  }

  std::optional<DataError> err =
      bpe ? WriteGpt2Shards(files, bpe.get(), out_dir, shard_tokens, total_bytes, summary)
          : WriteByteShards(files, out_dir, shard_tokens, total_bytes, summary);
  if (err) {
    for (const std::string& path : summary->shards) ::unlink(path.c_str());
    *summary = PrepareSummary{};
    return err;
  }
  return std::nullopt;
}

std::vector<std::string> CorpusFilesIn(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    names.push_back(it->path().filename().string());
  std::sort(names.begin(), names.end());
  std::vector<std::string> files;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const std::string& name : names) {
    const std::string path = Join(dir, name);
    struct stat st;
    // lstat: a symlink is not S_ISREG, so aliases and links out of `dir` drop out here.
    if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
        ::access(path.c_str(), R_OK) != 0)
      continue;
    if (seen.insert({st.st_dev, st.st_ino}).second) files.push_back(path);
  }
  return files;
}

std::string DefaultCacheDir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && xdg[0] == '/') return std::string(xdg) + "/heiretsu";
  const char* home = std::getenv("HOME");
  if (home && home[0] != '\0') return std::string(home) + "/.cache/heiretsu";
  return "";
}

std::vector<std::string> DefaultCorpusFiles() { return CorpusFilesIn(kDefaultCorpusDir); }

std::optional<DataError> EnsureCorpus(const std::vector<std::string>& files,
                                      const std::string& cache_dir, int64_t shard_tokens,
                                      PrepareSummary* summary) {
  *summary = PrepareSummary{};
  std::vector<SourceStamp> stamps;
  if (auto err = StampSources(files, &stamps)) return err;
  if (std::optional<Manifest> m = CompleteCorpus(cache_dir, stamps)) {
    summary->files = static_cast<int64_t>(m->sources.size());
    summary->tokens = m->tokens;
    for (const ManifestShard& s : m->shards) summary->shards.push_back(Join(cache_dir, s.name));
    summary->reused = true;
    return std::nullopt;
  }

  std::error_code ec;
  fs::create_directories(cache_dir, ec);
  if (ec) return Failure(cache_dir + ": cannot create directory: " + ec.message());
  // A private directory per caller: concurrent callers never see each other's partial
  // shards, and they publish identical files under identical names.
  std::string temp_dir = Join(cache_dir, ".prepare-XXXXXX");
  if (::mkdtemp(temp_dir.data()) == nullptr)
    return Failure(cache_dir + ": cannot create a directory in it: " + Errno(errno));
  std::optional<DataError> err =
      PrepareAndPublish(files, std::move(stamps), cache_dir, temp_dir, shard_tokens, summary);
  fs::remove_all(temp_dir, ec);
  if (err) *summary = PrepareSummary{};
  return err;
}

std::optional<DataError> EnsureDefaultCorpus(const std::string& cache_dir,
                                             PrepareSummary* summary) {
  const std::vector<std::string> files = DefaultCorpusFiles();
  if (files.empty()) {
    *summary = PrepareSummary{};
    return BadInput(std::string(kDefaultCorpusDir) +
                    ": no licence texts here to build the default corpus from; pass token "
                    "shards with --data");
  }
  return EnsureCorpus(files, cache_dir, kDefaultShardTokens, summary);
}

}  // namespace heiretsu::data
