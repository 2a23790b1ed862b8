//===- Lexer.h - tokens of the model language ------------------------------===//
//
// The language is free-form: newlines are whitespace, `#` starts a comment that
// runs to the end of the line, and `;` may separate statements. See
// docs/language.md for the grammar.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_FRONTEND_LEXER_H
#define HEIRETSU_COMPILER_FRONTEND_LEXER_H

#include "compiler/frontend/Source.h"

#include <string>
#include <vector>

namespace heiretsu::frontend {

enum class Tok {
  Ident,
  Int,
  Float,
  String,
  LBrace,
  RBrace,
  LParen,
  RParen,
  Comma,
  Semi,
  Assign,
  Plus,
  Minus,
  Star,
  Slash,
  SlashSlash,
  Percent,
  Eof,
};

/// Printable name of a token kind for messages ("'{'", "a number").
const char *tokName(Tok kind);

struct Token {
  Tok kind;
  Loc loc;
  std::string text;  // identifier name or string contents
  int64_t intValue = 0;
  double floatValue = 0;
};

/// Splits `text` into tokens ending with Eof. Returns the first lexical error.
std::optional<Error> lex(const std::string &text, std::vector<Token> &tokens);

} // namespace heiretsu::frontend

#endif // HEIRETSU_COMPILER_FRONTEND_LEXER_H
