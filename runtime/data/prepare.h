// Turning text into token shards: `heiretsu data prepare` (docs/architecture.md §1, §4),
// with the byte tokenizer or GPT-2's BPE (runtime/data/bpe.h), and the default corpus
// every Debian/Ubuntu machine ships, the licence texts under /usr/share/common-licenses,
// byte-tokenized on first use and cached (docs/architecture.md §4).
#ifndef HEIRETSU_RUNTIME_DATA_PREPARE_H_
#define HEIRETSU_RUNTIME_DATA_PREPARE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/data/shards.h"

namespace heiretsu::data {

inline constexpr int64_t kDefaultShardTokens = 100'000'000;
inline constexpr int64_t kByteVocab = 256;  // the byte tokenizer's token ids: 0..255
inline constexpr char kDefaultCorpusDir[] = "/usr/share/common-licenses";
// Written last (atomically) into a corpus cache directory: its presence means the
// shards it lists are complete.
inline constexpr char kCorpusManifestName[] = "corpus.manifest";

struct PrepareSummary {
  int64_t files = 0;                // input files tokenized
  int64_t tokens = 0;               // tokens over all shards
  std::vector<std::string> shards;  // paths of the shards, in stream order
  bool reused = false;              // the corpus cache was complete; nothing was written
  int64_t replaced = 0;             // gpt2: ill-formed UTF-8 sequences read as U+FFFD
  std::string first_replaced;       // gpt2: the first file that had one
};

// Tokenizes `files` and writes shards of at most `shard_tokens` tokens into `out_dir`,
// creating it. Tokenizers:
//  - "byte": every byte of every file is one token (0..255). The files are concatenated
//    in the order given with no separator, as one token stream cut into shards named
//    train_000000.bin, train_000001.bin, ...
//  - "gpt2": GPT-2's BPE (bpe.h), with the vocabulary in `vocab_dir` (empty:
//    DefaultGpt2VocabDir()). Each file is a document and starts with the end-of-text
//    token 50256, as in llm.c's FineWeb script; so does its shard naming: the first
//    shard is the validation shard, gpt2_val_000000.bin, then gpt2_train_000001.bin,
//    gpt2_train_000002.bin, ... (a document may span two shards). Ill-formed UTF-8 is
//    read as U+FFFD and counted in `summary->replaced`.
// Every input is checked (exists, is a regular file, is readable), and the vocabulary
// loaded, before anything is written. An `out_dir` that already holds .bin files is
// refused, so nothing is lost; on a failure midway the shards written so far are
// removed again.
std::optional<DataError> PrepareShards(const std::vector<std::string>& files,
                                       const std::string& tokenizer, const std::string& out_dir,
                                       int64_t shard_tokens, PrepareSummary* summary,
                                       const std::string& vocab_dir = "");

// The regular files directly under `dir`, sorted by name. Symlinks are skipped: in
// /usr/share/common-licenses they are aliases (GPL -> GPL-3) of files listed anyway, and
// one pointing elsewhere would make the corpus depend on files outside it. Hard links to
// one file are listed once. Empty when `dir` cannot be read.
std::vector<std::string> CorpusFilesIn(const std::string& dir);

// CorpusFilesIn(kDefaultCorpusDir).
std::vector<std::string> DefaultCorpusFiles();

// heiretsu's cache when no directory is given: $XDG_CACHE_HOME/heiretsu (the XDG base
// directory specification says a relative XDG_CACHE_HOME is to be ignored), else
// ~/.cache/heiretsu; empty when neither variable is set.
std::string DefaultCacheDir();

// Byte-tokenizes `files` into `cache_dir` unless it already holds a complete corpus of
// exactly these files (same paths, sizes and modification times) whose shards are all
// present with the right sizes; then `summary->reused` is set and nothing is written.
// Safe when several processes (the ranks of one job) call it at once: each prepares in a
// private directory and renames whole files into place, then writes the manifest.
// Use `summary->shards` rather than listing the directory.
std::optional<DataError> EnsureCorpus(const std::vector<std::string>& files,
                                      const std::string& cache_dir, int64_t shard_tokens,
                                      PrepareSummary* summary);

// EnsureCorpus(DefaultCorpusFiles(), cache_dir, kDefaultShardTokens, summary); refuses a
// machine without the licence texts, pointing at --data.
std::optional<DataError> EnsureDefaultCorpus(const std::string& cache_dir, PrepareSummary* summary);

}  // namespace heiretsu::data

#endif  // HEIRETSU_RUNTIME_DATA_PREPARE_H_
