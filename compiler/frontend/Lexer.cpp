//===- Lexer.cpp - tokens of the model language ----------------------------===//

#include "compiler/frontend/Lexer.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace heiretsu::frontend {

const char *tokName(Tok kind) {
  switch (kind) {
  case Tok::Ident:
    return "a name";
  case Tok::Int:
  case Tok::Float:
    return "a number";
  case Tok::String:
    return "a string";
  case Tok::LBrace:
    return "'{'";
  case Tok::RBrace:
    return "'}'";
  case Tok::LParen:
    return "'('";
  case Tok::RParen:
    return "')'";
  case Tok::Comma:
    return "','";
  case Tok::Semi:
    return "';'";
  case Tok::Assign:
    return "'='";
  case Tok::Plus:
    return "'+'";
  case Tok::Minus:
    return "'-'";
  case Tok::Star:
    return "'*'";
  case Tok::Slash:
    return "'/'";
  case Tok::SlashSlash:
    return "'//'";
  case Tok::Percent:
    return "'%'";
  case Tok::Eof:
    return "end of file";
  }
  return "?";
}

namespace {
class Lexer {
public:
  explicit Lexer(const std::string &text) : s(text) {}

  std::optional<Error> run(std::vector<Token> &out) {
    while (true) {
      skipSpaceAndComments();
      Token t;
      t.loc = loc;
      if (i >= s.size()) {
        t.kind = Tok::Eof;
        out.push_back(t);
        return std::nullopt;
      }
      char c = s[i];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t start = i;
        while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_'))
          advance();
        t.kind = Tok::Ident;
        t.text = s.substr(start, i - start);
        if (t.text.size() > kMaxName)
          return Error{t.loc, "name is " + std::to_string(t.text.size()) +
                                  " characters long; the limit is " +
                                  std::to_string(kMaxName)};
      } else if (std::isdigit(static_cast<unsigned char>(c)) ||
                 (c == '.' && i + 1 < s.size() &&
                  std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
        if (auto err = number(t))
          return err;
      } else if (c == '"') {
        if (auto err = string(t))
          return err;
      } else {
        advance();
        switch (c) {
        case '{': t.kind = Tok::LBrace; break;
        case '}': t.kind = Tok::RBrace; break;
        case '(': t.kind = Tok::LParen; break;
        case ')': t.kind = Tok::RParen; break;
        case ',': t.kind = Tok::Comma; break;
        case ';': t.kind = Tok::Semi; break;
        case '=': t.kind = Tok::Assign; break;
        case '+': t.kind = Tok::Plus; break;
        case '-': t.kind = Tok::Minus; break;
        case '*': t.kind = Tok::Star; break;
        case '%': t.kind = Tok::Percent; break;
        case '/':
          t.kind = Tok::Slash;
          if (i < s.size() && s[i] == '/') {
            advance();
            t.kind = Tok::SlashSlash;
          }
          break;
        default:
          return Error{t.loc, unexpectedChar(c)};
        }
      }
      out.push_back(std::move(t));
      if (out.size() > kMaxTokens)
        return Error{out.back().loc, "spec has more than " +
                                         std::to_string(kMaxTokens) + " tokens"};
    }
  }

private:
  static constexpr size_t kMaxName = 256;
  // Real specs have a few hundred tokens; the cap bounds memory on hostile input.
  static constexpr size_t kMaxTokens = 1000000;

  void advance() {
    if (s[i] == '\n') {
      ++loc.line;
      loc.col = 1;
    } else {
      ++loc.col;
    }
    ++i;
  }

  void skipSpaceAndComments() {
    while (i < s.size()) {
      char c = s[i];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else if (c == '#') {
        while (i < s.size() && s[i] != '\n')
          advance();
      } else {
        return;
      }
    }
  }

  static std::string unexpectedChar(char c) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F)
      return std::string("unexpected character '") + c + "'";
    char buf[48];
    std::snprintf(buf, sizeof buf, "unexpected character (byte 0x%02X)", u);
    return buf;
  }

  std::optional<Error> number(Token &t) {
    size_t start = i;
    bool isFloat = false;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
      advance();
    if (i < s.size() && s[i] == '.') {
      isFloat = true;
      advance();
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
        advance();
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      size_t j = i + 1;
      if (j < s.size() && (s[j] == '+' || s[j] == '-'))
        ++j;
      if (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) {
        isFloat = true;
        while (i < j)
          advance();
        while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])))
          advance();
      }
    }
    if (i < s.size() && (std::isalpha(static_cast<unsigned char>(s[i])) || s[i] == '_'))
      return Error{loc, unexpectedChar(s[i]) + " after number"};
    std::string text = s.substr(start, i - start);
    errno = 0;
    if (isFloat) {
      t.kind = Tok::Float;
      t.floatValue = std::strtod(text.c_str(), nullptr);
      if (errno == ERANGE || !std::isfinite(t.floatValue))
        return Error{t.loc, "number " + clip(text) + " is out of range"};
    } else {
      t.kind = Tok::Int;
      t.intValue = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE)
        return Error{t.loc, "integer " + clip(text) +
                                " does not fit in 64 bits"};
    }
    return std::nullopt;
  }

  std::optional<Error> string(Token &t) {
    advance(); // opening quote
    size_t start = i;
    while (i < s.size() && s[i] != '"' && s[i] != '\n')
      advance();
    if (i >= s.size() || s[i] != '"')
      return Error{t.loc, "unterminated string"};
    t.kind = Tok::String;
    t.text = s.substr(start, i - start);
    advance(); // closing quote
    return std::nullopt;
  }

  /// Long literals are shortened in messages so one error stays one line.
  static std::string clip(const std::string &text) {
    return text.size() <= 40 ? text : text.substr(0, 20) + "..." +
                                          text.substr(text.size() - 10);
  }

  const std::string &s;
  size_t i = 0;
  Loc loc{1, 1};
};
} // namespace

std::optional<Error> lex(const std::string &text, std::vector<Token> &tokens) {
  return Lexer(text).run(tokens);
}

} // namespace heiretsu::frontend
