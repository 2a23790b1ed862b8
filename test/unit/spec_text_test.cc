// Unit tests of the spec file's content checks (UTF-8, NUL) and the lexer's
// numbers, which every error position depends on.
#include "compiler/frontend/Lexer.h"
#include "compiler/frontend/Source.h"

#include <gtest/gtest.h>

namespace heiretsu::frontend {
namespace {

TEST(SpecText, AcceptsAsciiAndWellFormedUtf8) {
  EXPECT_EQ(validateSpecText("model \"t\" {}\n"), std::nullopt);
  // 2-, 3- and 4-byte sequences: e-acute, check mark, an emoji.
  EXPECT_EQ(validateSpecText("# caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80\n"), std::nullopt);
}

TEST(SpecText, RejectsMalformedUtf8AtItsPosition) {
  struct Case {
    std::string text;
    uint32_t line, col;
  };
  const Case cases[] = {
      {"ab\xff", 1, 3},                 // invalid lead byte
      {"\n\n  \xc3", 3, 3},             // truncated 2-byte sequence
      {"x\xc0\xaf", 1, 2},              // overlong '/'
      {"\xed\xa0\x80", 1, 1},           // UTF-16 surrogate
      {"\xf4\x90\x80\x80", 1, 1},       // above U+10FFFF
      {"\xe2\x9c", 1, 1},               // truncated 3-byte sequence
  };
  for (const Case& c : cases) {
    auto err = validateSpecText(c.text);
    ASSERT_TRUE(err.has_value());
    EXPECT_EQ(err->loc.line, c.line);
    EXPECT_EQ(err->loc.col, c.col);
    EXPECT_NE(err->message.find("invalid UTF-8"), std::string::npos);
  }
}

TEST(SpecText, RejectsNul) {
  auto err = validateSpecText(std::string("ab\ncd\0", 6));
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->loc.line, 2u);
  EXPECT_EQ(err->loc.col, 3u);
  EXPECT_EQ(err->message, "NUL byte in spec");
}

TEST(Lexer, NumbersAndOperators) {
  std::vector<Token> t;
  ASSERT_EQ(lex("a = 1e-5 + 42 // 3 % .5", t), std::nullopt);
  ASSERT_EQ(t.size(), 10u);
  EXPECT_EQ(t[2].kind, Tok::Float);
  EXPECT_DOUBLE_EQ(t[2].floatValue, 1e-5);
  EXPECT_EQ(t[4].kind, Tok::Int);
  EXPECT_EQ(t[4].intValue, 42);
  EXPECT_EQ(t[5].kind, Tok::SlashSlash);
  EXPECT_EQ(t[7].kind, Tok::Percent);
  EXPECT_EQ(t[8].kind, Tok::Float);
  EXPECT_EQ(t[9].kind, Tok::Eof);
}

TEST(Lexer, ColumnsCountBytesAndCommentsAreSkipped) {
  std::vector<Token> t;
  ASSERT_EQ(lex("# comment\n  x\t= 1 # trailing\n", t), std::nullopt);
  ASSERT_EQ(t.size(), 4u);
  EXPECT_EQ(t[0].loc.line, 2u);
  EXPECT_EQ(t[0].loc.col, 3u);
  EXPECT_EQ(t[1].loc.col, 5u);
}

TEST(Lexer, RejectsOutOfRangeNumbers) {
  std::vector<Token> t;
  auto err = lex("x = 18446744073709551616", t);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message, "integer 18446744073709551616 does not fit in 64 bits");
  t.clear();
  err = lex("x = 1e400", t);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message, "number 1e400 is out of range");
  t.clear();
  err = lex("x = 12abc", t);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message, "unexpected character 'a' after number");
}

}  // namespace
}  // namespace heiretsu::frontend
