// llm.c token shards: reading with full validation, atomic writing; the in-memory dataset
// stream and the layout-independent sampler over it. The contracts are in shards.h.
#include "runtime/data/shards.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

namespace heiretsu::data {
namespace {

namespace fs = std::filesystem;

// Local spellings of the two error kinds and of errno's text.
constexpr auto BadInput = DataError::BadInput;
constexpr auto Failure = DataError::Failure;
inline std::string Errno(int err) { return std::strerror(err); }

// Byte-wise so the on-disk format is little-endian whatever the host.
int32_t LoadLe32(const unsigned char* p) {
  return static_cast<int32_t>(uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 |
                              uint32_t{p[3]} << 24);
}

void StoreLe32(int32_t value, unsigned char* p) {
  const uint32_t v = static_cast<uint32_t>(value);
  for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

// The message tail shared by the two size errors: what the header promises and what the
// file holds after it.
std::string SizeClaim(int64_t count, int64_t payload_bytes) {
  return "header says " + std::to_string(count) + " tokens (" + std::to_string(2 * count) +
         " bytes) but the file has " + std::to_string(payload_bytes) + " bytes after the header";
}

// splitmix64 (Steele, Lea, Flood 2014): the finalizer and the stream. Chosen because it is
// a few lines any reimplementation of the sampling contract can reproduce exactly.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t Next() {
    state_ += 0x9E3779B97F4A7C15ull;
    return Mix64(state_);
  }
  // Uniform in [0, n) for n >= 1: rejecting r < 2^64 mod n leaves a range whose size is a
  // multiple of n, so r mod n has no bias.
  uint64_t Below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
      const uint64_t r = Next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

std::optional<DataError> InputFile::Open(const std::string& path) {
  path_ = path;
  // O_NONBLOCK so that opening a FIFO returns at once (and is refused below) instead of
  // waiting for a writer; it changes nothing for regular files.
  fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd_ < 0) return BadInput(path + ": cannot open: " + Errno(errno));
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Failure(path + ": cannot stat: " + Errno(errno));
  if (S_ISDIR(st.st_mode)) return BadInput(path + ": is a directory, not a file");
  if (!S_ISREG(st.st_mode)) return BadInput(path + ": not a regular file");
  size_ = st.st_size;
  return std::nullopt;
}

std::optional<DataError> InputFile::Read(void* data, int64_t size, int64_t* got) {
  char* p = static_cast<char*>(data);
  int64_t done = 0;
  while (done < size) {
    // Single reads are capped because Linux transfers at most about 2 GiB per call.
    const ssize_t n = ::read(fd_, p + done, std::min<int64_t>(size - done, int64_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Failure(path_ + ": read failed: " + Errno(errno));
    }
    if (n == 0) break;
    done += n;
  }
  *got = done;
  return std::nullopt;
}

std::optional<DataError> InputFile::ReadAll(std::string* text) {
  text->assign(static_cast<size_t>(size_), '\0');
  int64_t got = 0;
  if (auto err = Read(text->data(), size_, &got)) return err;
  text->resize(static_cast<size_t>(got));
  return std::nullopt;
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

std::optional<DataError> AtomicFile::Open(const std::string& path) {
  path_ = path;
  // The temporary name is unique per process and call, so concurrent writers of the same
  // file (ranks preparing one cache) never share a temporary file. O_EXCL with a retry
  // skips a name left behind by a crashed process that had the same pid.
  static std::atomic<uint64_t> counter{0};
  for (;;) {
    temp_path_ = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) return std::nullopt;
    if (errno != EEXIST) return Failure(path + ": cannot create: " + Errno(errno));
  }
}

std::optional<DataError> AtomicFile::Write(const void* data, int64_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, std::min<int64_t>(size, int64_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Failure(path_ + ": cannot write: " + Errno(errno));
    }
    p += n;
    size -= n;
  }
  return std::nullopt;
}

std::optional<DataError> AtomicFile::Commit() {
  // fsync first: a rename that reaches the disk before the data would, after a crash,
  // expose exactly the partial file this class exists to hide.
  if (::fsync(fd_) != 0) return Failure(path_ + ": cannot write: " + Errno(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp_path_.c_str());
    return Failure(path_ + ": cannot write: " + Errno(err));
  }
  if (std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp_path_.c_str());
    return Failure(path_ + ": cannot rename into place: " + Errno(err));
  }
  return std::nullopt;
}

std::optional<DataError> WriteShard(const std::string& path, const std::vector<uint16_t>& tokens) {
  const int64_t count = static_cast<int64_t>(tokens.size());
  if (count > std::numeric_limits<int32_t>::max())
    return BadInput(path + ": " + std::to_string(count) +
                    " tokens do not fit one shard (the header's count is an int32)");
  AtomicFile file;
  if (auto err = file.Open(path)) return err;
  unsigned char header[kShardHeaderBytes] = {};
  StoreLe32(kShardMagic, header);
  StoreLe32(kShardVersion, header + 4);
  StoreLe32(static_cast<int32_t>(count), header + 8);
  if (auto err = file.Write(header, kShardHeaderBytes)) return err;
  // Encoded in chunks rather than all at once, so a large shard is not copied whole.
  constexpr int64_t kChunkTokens = 1 << 16;
  std::vector<unsigned char> bytes(2 * kChunkTokens);
  for (int64_t begin = 0; begin < count; begin += kChunkTokens) {
    const int64_t n = std::min(kChunkTokens, count - begin);
    for (int64_t i = 0; i < n; ++i) {
      const uint16_t t = tokens[begin + i];
      bytes[2 * i] = static_cast<unsigned char>(t);
      bytes[2 * i + 1] = static_cast<unsigned char>(t >> 8);
    }
    if (auto err = file.Write(bytes.data(), 2 * n)) return err;
  }
  return file.Commit();
}

std::optional<DataError> ReadShard(const std::string& path, int64_t vocab,
                                   std::vector<uint16_t>* tokens) {
  if (vocab < 1) return BadInput(path + ": vocab " + std::to_string(vocab) + " is not positive");
  InputFile file;
  if (auto err = file.Open(path)) return err;
  const std::string truncated_header = path + ": truncated header: the file has ";
  const std::string header_size =
      " bytes but the header is " + std::to_string(kShardHeaderBytes) + " bytes";
  if (file.size() < kShardHeaderBytes)
    return BadInput(truncated_header + std::to_string(file.size()) + header_size);
  unsigned char header[kShardHeaderBytes];
  int64_t got = 0;
  if (auto err = file.Read(header, kShardHeaderBytes, &got)) return err;
  // The file may shrink between the size check and the read (another process rewriting
  // it); the read's own count is the truth.
  if (got < kShardHeaderBytes)
    return BadInput(truncated_header + std::to_string(got) + header_size);

  const int32_t magic = LoadLe32(header);
  if (magic != kShardMagic)
    return BadInput(path + ": bad magic " + std::to_string(magic) + " (expected " +
                    std::to_string(kShardMagic) + ")");
  const int32_t version = LoadLe32(header + 4);
  if (version != kShardVersion)
    return BadInput(path + ": unsupported version " + std::to_string(version) + " (expected " +
                    std::to_string(kShardVersion) + ", uint16 tokens)");
  const int64_t count = LoadLe32(header + 8);
  if (count < 0)
    return BadInput(path + ": negative token count " + std::to_string(count) + " in the header");
  const int64_t payload = file.size() - kShardHeaderBytes;
  if (payload < 2 * count) return BadInput(path + ": truncated: " + SizeClaim(count, payload));
  if (payload > 2 * count)
    return BadInput(path + ": " + std::to_string(payload - 2 * count) +
                    " trailing bytes: " + SizeClaim(count, payload));

  std::vector<uint16_t> loaded(count);
  if (auto err = file.Read(loaded.data(), 2 * count, &got)) return err;
  if (got < 2 * count) return BadInput(path + ": truncated: " + SizeClaim(count, got));
  // Decode in place: the bytes are little-endian whatever the host's order is.
  for (int64_t i = 0; i < count; ++i) {
    unsigned char b[2];
    std::memcpy(b, &loaded[i], 2);
    const uint16_t token = static_cast<uint16_t>(b[0] | b[1] << 8);
    if (token >= vocab)
      return BadInput(path + ": token " + std::to_string(token) + " at index " + std::to_string(i) +
                      " (byte offset " + std::to_string(kShardHeaderBytes + 2 * i) +
                      ") is >= vocab " + std::to_string(vocab));
    loaded[i] = token;
  }
  *tokens = std::move(loaded);
  return std::nullopt;
}

std::optional<DataError> ListShardFiles(const std::string& path, std::vector<std::string>* files) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return BadInput(path + ": cannot open: " + Errno(errno));
  if (S_ISREG(st.st_mode)) {
    *files = {path};
    return std::nullopt;
  }
  if (!S_ISDIR(st.st_mode)) return BadInput(path + ": not a shard file or a directory of them");
  std::error_code ec;
  std::vector<std::string> found;
  for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code type_ec;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".bin") == 0 &&
        it->is_regular_file(type_ec))
      found.push_back(it->path().string());
  }
  if (ec) return BadInput(path + ": cannot list: " + ec.message());
  if (found.empty()) return BadInput(path + ": no .bin shard files in this directory");
  std::sort(found.begin(), found.end());
  *files = std::move(found);
  return std::nullopt;
}

void Dataset::Append(std::string name, std::vector<uint16_t> tokens) {
  ends_.push_back(num_tokens() + static_cast<int64_t>(tokens.size()));
  names_.push_back(std::move(name));
  shards_.push_back(std::move(tokens));
}

std::string Dataset::Describe() const {
  if (names_.empty()) return "(no shards)";
  if (names_.size() == 1) return names_[0];
  return names_.front() + " .. " + names_.back() + " (" + std::to_string(names_.size()) +
         " shards)";
}

uint64_t Dataset::Fingerprint() const {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const std::vector<uint16_t>& shard : shards_) {
    const size_t n = shard.size();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
      uint64_t word;
      std::memcpy(&word, shard.data() + i, sizeof word);
      h = (h ^ word) * 0x100000001b3ull;
    }
    uint64_t last = 0;
    if (i < n) {
      std::memcpy(&last, shard.data() + i, (n - i) * sizeof(uint16_t));
      h = (h ^ last) * 0x100000001b3ull;
    }
  }
  return h;
}

void Dataset::SplitTail(int64_t count, const std::string& head_name,
                        const std::string& tail_name, Dataset* tail) {
  assert(count > 0 && count < num_tokens() && tail->num_tokens() == 0);
  const int64_t head = num_tokens() - count;
  std::vector<int32_t> ids(static_cast<size_t>(num_tokens()));
  CopyTokens(0, num_tokens(), ids.data());
  Dataset front;
  front.Append(head_name, std::vector<uint16_t>(ids.begin(), ids.begin() + head));
  tail->Append(tail_name, std::vector<uint16_t>(ids.begin() + head, ids.end()));
  *this = std::move(front);
}

void Dataset::CopyTokens(int64_t begin, int64_t count, int32_t* out) const {
  assert(begin >= 0 && count >= 0 && begin + count <= num_tokens());
  // The shard holding `begin` is the first whose end lies beyond it.
  size_t k = std::upper_bound(ends_.begin(), ends_.end(), begin) - ends_.begin();
  while (count > 0) {
    const int64_t shard_begin = k == 0 ? 0 : ends_[k - 1];
    const int64_t n = std::min(count, ends_[k] - begin);
    const uint16_t* src = shards_[k].data() + (begin - shard_begin);
    for (int64_t i = 0; i < n; ++i) out[i] = src[i];
    out += n;
    begin += n;
    count -= n;
    ++k;
  }
}

std::optional<DataError> LoadDataset(const std::vector<std::string>& files, int64_t vocab,
                                     Dataset* out) {
  if (files.empty()) return BadInput("no shard files given");
  for (const std::string& file : files) {
    std::vector<uint16_t> tokens;
    if (auto err = ReadShard(file, vocab, &tokens)) return err;
    out->Append(file, std::move(tokens));
  }
  return std::nullopt;
}

Sampler::Sampler(const Dataset& data, uint64_t seed, int64_t seq)
    : data_(&data), seed_(seed), seq_(seq), num_windows_((data.num_tokens() - 1) / seq) {}

std::optional<DataError> Sampler::Create(const Dataset& data, uint64_t seed, int64_t seq,
                                         std::optional<Sampler>* out) {
  if (seq < 1) return BadInput("sequence length " + std::to_string(seq) + " is not positive");
  if (data.num_tokens() < seq + 1)
    return BadInput(data.Describe() + ": " + std::to_string(data.num_tokens()) +
                    " tokens are too few for one sequence of length " + std::to_string(seq) +
                    " (it needs " + std::to_string(seq + 1) + ": inputs plus the next token)");
  *out = Sampler(data, seed, seq);
  return std::nullopt;
}

void Sampler::FillSequence(int64_t global_index, int32_t* inputs, int32_t* targets) {
  assert(global_index >= 0);
  const int64_t epoch = global_index / num_windows_;
  if (epoch != cached_epoch_) {
    permutation_.resize(num_windows_);
    for (int64_t i = 0; i < num_windows_; ++i) permutation_[i] = i;
    SplitMix64 rng(Mix64(Mix64(seed_) + static_cast<uint64_t>(epoch)));
    for (int64_t i = num_windows_ - 1; i > 0; --i)
      std::swap(permutation_[i], permutation_[rng.Below(static_cast<uint64_t>(i) + 1)]);
    cached_epoch_ = epoch;
  }
  const int64_t start = permutation_[global_index % num_windows_] * seq_;
  data_->CopyTokens(start, seq_, inputs);
  data_->CopyTokens(start + 1, seq_, targets);
}

void Sampler::FillBatchRows(int64_t step, int64_t global_batch, int64_t row_begin, int64_t row_end,
                            int32_t* inputs, int32_t* targets) {
  assert(step >= 0 && 0 <= row_begin && row_begin <= row_end && row_end <= global_batch);
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t offset = (row - row_begin) * seq_;
    FillSequence(step * global_batch + row, inputs + offset, targets + offset);
  }
}

}  // namespace heiretsu::data
