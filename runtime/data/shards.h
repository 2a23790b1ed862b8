// Token data of a training run (docs/architecture.md §3, §4): llm.c token shards on disk, the dataset
// they form in memory, and the sampler that decides which sequences make up the global
// batch of every step. Nothing here knows the parallel layout, which is what lets every
// layout train on the same tokens.
//
// Errors are returned, never printed or thrown, and each names the file and, where there
// is one, the position and the value at fault.
#ifndef HEIRETSU_RUNTIME_DATA_SHARDS_H_
#define HEIRETSU_RUNTIME_DATA_SHARDS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"

namespace heiretsu::data {

// The llm.c shard format: a header of 256 little-endian int32 (magic, version, token
// count, then zeros), then `count` little-endian uint16 tokens, and nothing after them.
inline constexpr int32_t kShardMagic = 20240520;
inline constexpr int32_t kShardVersion = 1;  // llm.c's version 2 holds uint32 tokens
inline constexpr int64_t kShardHeaderBytes = 256 * 4;

// The runtime's one error type (runtime/base/error.h), under the name data code uses.
using DataError = ::heiretsu::Error;

// A regular file opened for reading. Open refuses directories, FIFOs and devices, so a
// wrong path is a clear error and never a hang.
class InputFile {
 public:
  InputFile() = default;
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  std::optional<DataError> Open(const std::string& path);
  int64_t size() const { return size_; }
  // Reads up to `size` bytes into `data`; `*got` < `size` only at the end of the file.
  std::optional<DataError> Read(void* data, int64_t size, int64_t* got);
  // The rest of the file (all of it, after Open) into `text`.
  std::optional<DataError> ReadAll(std::string* text);

 private:
  std::string path_;
  int fd_ = -1;
  int64_t size_ = 0;
};

// Writes a file under a temporary name in the destination's directory and renames it
// into place on Commit, so no reader ever sees a partial file. Without Commit (an error
// on the way, an early return) the temporary file is removed.
class AtomicFile {
 public:
  AtomicFile() = default;
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  std::optional<DataError> Open(const std::string& path);
  std::optional<DataError> Write(const void* data, int64_t size);
  // Flushes the data to disk, then renames the file to the path given to Open.
  std::optional<DataError> Commit();

 private:
  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
};

// Writes `tokens` as one shard at `path` (atomically; see AtomicFile).
std::optional<DataError> WriteShard(const std::string& path, const std::vector<uint16_t>& tokens);

// Reads the shard at `path` into `*tokens` after checking that it is a regular file, that
// its header is complete with the right magic and version, that its size is exactly the
// header plus 2 bytes per token, and that every token is < `vocab`.
std::optional<DataError> ReadShard(const std::string& path, int64_t vocab,
                                   std::vector<uint16_t>* tokens);

// The shard files a `--data PATH` names: PATH itself when it is a file; when it is a
// directory, the regular files in it whose names end in ".bin", sorted by name.
std::optional<DataError> ListShardFiles(const std::string& path, std::vector<std::string>* files);

// The token stream of a run: the concatenation of its shards, in order, held in memory.
class Dataset {
 public:
  // Adds a shard's tokens at the end of the stream; `name` is used in messages.
  void Append(std::string name, std::vector<uint16_t> tokens);

  int64_t num_tokens() const { return ends_.empty() ? 0 : ends_.back(); }
  const std::vector<std::string>& names() const { return names_; }
  // The dataset as messages name it: its one shard, or its first and last shards.
  std::string Describe() const;
  // A 64-bit FNV-1a hash of the token stream, over 8-byte words (a last partial word
  // zero-padded): ranks of one job must train on the same tokens.
  uint64_t Fingerprint() const;
  // Copies stream positions [begin, begin + count), across shard boundaries if need be.
  // Requires 0 <= begin and begin + count <= num_tokens().
  void CopyTokens(int64_t begin, int64_t count, int32_t* out) const;
  // Splits off the stream's last `count` tokens (0 < count < num_tokens()) into
  // `*tail` (which must be empty) as one shard named `tail_name`; this dataset keeps the
  // rest, as one shard named `head_name`.
  void SplitTail(int64_t count, const std::string& head_name, const std::string& tail_name,
                 Dataset* tail);

 private:
  std::vector<std::string> names_;
  // Shards are kept apart rather than concatenated, so loading never holds two copies.
  std::vector<std::vector<uint16_t>> shards_;
  std::vector<int64_t> ends_;  // ends_[k]: stream position just past shard k
};

// Reads `files` with ReadShard and appends them, in the order given, to `*out`.
std::optional<DataError> LoadDataset(const std::vector<std::string>& files, int64_t vocab,
                                     Dataset* out);

// Which token sequences form each step's global batch. The contract, on which loss
// parity across layouts and bit-identical resumption rest, depends only on the dataset's
// token stream, seed, seq and global_batch; never on dp, tp, pp, ep or the rank:
//
//  - The stream of N tokens is cut into W = (N - 1) / seq windows of seq + 1 tokens;
//    window w starts at position w * seq (consecutive windows overlap by one token, so
//    no token is wasted as a target). A sequence's inputs are window[0, seq) and its
//    targets window[1, seq + 1).
//  - Sequences of the run are numbered g = 0, 1, 2, ...; step s's global batch is rows
//    i = 0 .. global_batch - 1 with g = s * global_batch + i. Sequence g lies in epoch
//    e = g / W and is window perm_e[g % W], so every window is seen once per epoch.
//  - perm_e is a Fisher-Yates shuffle of 0 .. W-1: for i = W-1 down to 1, swap entries i
//    and j, with j uniform in [0, i] drawn by rejection (r drawn until r >= 2^64 mod
//    (i + 1), then j = r mod (i + 1)) from a splitmix64 stream (state += 0x9E3779B97F4A7C15,
//    output mix(state)) whose initial state is mix(mix(seed) + e); mix is splitmix64's
//    finalizer.
//
// A dp rank takes its disjoint slice of rows with FillBatchRows; pipeline microbatches are
// slices of that. The sampler caches one epoch's permutation (8 bytes per window), so it
// is not thread-safe; give each thread its own.
class Sampler {
 public:
  // Refuses seq < 1 and a dataset too small for one window (fewer than seq + 1 tokens).
  // `data` must outlive the sampler.
  static std::optional<DataError> Create(const Dataset& data, uint64_t seed, int64_t seq,
                                         std::optional<Sampler>* out);

  int64_t num_windows() const { return num_windows_; }
  int64_t seq() const { return seq_; }

  // Writes sequence `global_index` (>= 0): `seq` inputs and `seq` targets.
  void FillSequence(int64_t global_index, int32_t* inputs, int32_t* targets);
  // Writes rows [row_begin, row_end) of step `step`'s global batch, row-major, seq tokens
  // per row. Requires step >= 0 and 0 <= row_begin <= row_end <= global_batch.
  void FillBatchRows(int64_t step, int64_t global_batch, int64_t row_begin, int64_t row_end,
                     int32_t* inputs, int32_t* targets);

 private:
  Sampler(const Dataset& data, uint64_t seed, int64_t seq);

  const Dataset* data_;
  uint64_t seed_;
  int64_t seq_;
  int64_t num_windows_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> permutation_;  // of cached_epoch_
};

}  // namespace heiretsu::data

#endif  // HEIRETSU_RUNTIME_DATA_SHARDS_H_
