//===- Parser.cpp - recursive-descent parser for the model language -------===//
//
// Grammar (docs/language.md has it with examples):
//   spec   := 'model' (NAME | STRING) '{' stmt* '}' EOF
//   stmt   := NAME '=' expr ';'?
//           | 'block' '{' stmt* '}'
//           | 'every' expr '{' stmt* '}' ('else' '{' stmt* '}')?
//   expr   := term (('+' | '-') term)*
//   term   := unary (('*' | '/' | '//' | '%') unary)*
//   unary  := '-' unary | primary
//   primary:= INT | FLOAT | STRING | NAME | NAME '(' args? ')' | '(' expr ')'
//   args   := arg (',' arg)* ','?
//   arg    := NAME '=' expr | expr
//
// Recursion is bounded by kMaxNesting, both in parser frames and in tree height,
// so hostile input is an error and never a stack overflow.
//
//===----------------------------------------------------------------------===//

#include "compiler/frontend/Parser.h"

#include "compiler/frontend/Lexer.h"

#include <algorithm>

namespace heiretsu::frontend {

namespace {
class Parser {
public:
  explicit Parser(std::vector<Token> tokens) : toks(std::move(tokens)) {}

  std::optional<Error> spec(Spec &out) {
    if (!isKeyword("model"))
      return expected("'model'");
    next();
    if (peek().kind != Tok::Ident && peek().kind != Tok::String)
      return expected("a model name");
    out.nameLoc = peek().loc;
    out.name = next().text;
    if (out.name.empty())
      return Error{out.nameLoc, "model name must not be empty"};
    if (auto err = braced(out.body))
      return err;
    if (peek().kind != Tok::Eof)
      return expected("end of file after the model's closing '}'");
    return std::nullopt;
  }

private:
  const Token &peek(size_t ahead = 0) const {
    return toks[std::min(pos + ahead, toks.size() - 1)];
  }
  const Token &next() {
    const Token &t = toks[pos];
    if (pos + 1 < toks.size())
      ++pos;
    return t;
  }
  bool isKeyword(const char *kw) const {
    return peek().kind == Tok::Ident && peek().text == kw;
  }

  Error expected(const std::string &what) const {
    const Token &t = peek();
    std::string got;
    if (t.kind == Tok::Ident)
      got = "'" + t.text + "'";
    else
      got = tokName(t.kind);
    return Error{t.loc, "expected " + what + ", got " + got};
  }

  /// RAII depth counter for recursive productions.
  struct Nest {
    Parser &p;
    explicit Nest(Parser &p) : p(p) { ++p.depth; }
    ~Nest() { --p.depth; }
  };
  /// The error at `loc` when `levels` is past kMaxNesting ("<what> deeper than").
  static std::optional<Error> tooDeep(int levels, Loc loc, const char *what) {
    if (levels <= kMaxNesting)
      return std::nullopt;
    return Error{loc, std::string(what) + " deeper than " + std::to_string(kMaxNesting) +
                          " levels"};
  }
  std::optional<Error> checkDepth() const { return tooDeep(depth, peek().loc, "nesting"); }

  std::optional<Error> braced(StmtList &out) {
    Nest nest(*this);
    if (auto err = checkDepth())
      return err;
    if (peek().kind != Tok::LBrace)
      return expected("'{'");
    next();
    while (peek().kind != Tok::RBrace) {
      if (peek().kind == Tok::Eof)
        return expected("'}'");
      if (peek().kind == Tok::Semi) {
        next();
        continue;
      }
      Stmt stmt;
      if (auto err = statement(stmt))
        return err;
      out.push_back(std::move(stmt));
    }
    next();
    return std::nullopt;
  }

  std::optional<Error> statement(Stmt &out) {
    out.loc = peek().loc;
    if (isKeyword("block") && peek(1).kind == Tok::LBrace) {
      next();
      out.kind = Stmt::Kind::Block;
      return braced(out.body);
    }
    if (isKeyword("every") && peek(1).kind != Tok::Assign) {
      next();
      out.kind = Stmt::Kind::Every;
      if (auto err = expr(out.value))
        return err;
      if (auto err = braced(out.body))
        return err;
      if (isKeyword("else")) {
        next();
        return braced(out.otherwise);
      }
      return std::nullopt;
    }
    if (peek().kind != Tok::Ident)
      return expected("a statement (NAME = ..., 'block' or 'every')");
    out.kind = Stmt::Kind::Assign;
    out.nameLoc = peek().loc;
    out.name = next().text;
    if (peek().kind != Tok::Assign)
      return expected("'=' after '" + out.name + "'");
    next();
    return expr(out.value);
  }

  static ExprPtr binary(char op, Loc loc, ExprPtr lhs, ExprPtr rhs) {
    auto e = std::make_unique<Expr>();
    e->kind = Expr::Kind::Binary;
    e->op = op;
    e->loc = loc;
    e->height = std::max(lhs->height, rhs->height) + 1;
    e->lhs = std::move(lhs);
    e->rhs = std::move(rhs);
    return e;
  }

  static std::optional<Error> checkHeight(const Expr &e) {
    return tooDeep(e.height, e.loc, "expression nested");
  }

  /// Parses the right operand of `op` with `operand`; `out` becomes `out op rhs`.
  std::optional<Error> binaryWith(std::optional<Error> (Parser::*operand)(ExprPtr &), char op,
                                  Loc loc, ExprPtr &out) {
    ExprPtr rhs;
    if (auto err = (this->*operand)(rhs))
      return err;
    out = binary(op, loc, std::move(out), std::move(rhs));
    return checkHeight(*out);
  }

  std::optional<Error> expr(ExprPtr &out) {
    Nest nest(*this);
    if (auto err = checkDepth())
      return err;
    if (auto err = term(out))
      return err;
    while (peek().kind == Tok::Plus || peek().kind == Tok::Minus) {
      Loc loc = peek().loc;
      char op = next().kind == Tok::Plus ? '+' : '-';
      if (auto err = binaryWith(&Parser::term, op, loc, out))
        return err;
    }
    return std::nullopt;
  }

  std::optional<Error> term(ExprPtr &out) {
    if (auto err = unary(out))
      return err;
    while (true) {
      char op;
      switch (peek().kind) {
      case Tok::Star: op = '*'; break;
      case Tok::Slash: op = '/'; break;
      case Tok::SlashSlash: op = 'f'; break;
      case Tok::Percent: op = '%'; break;
      default: return std::nullopt;
      }
      Loc loc = next().loc;
      if (auto err = binaryWith(&Parser::unary, op, loc, out))
        return err;
    }
  }

  /// Unary minus is a loop, not recursion: a run of '-' costs no parser frames,
  /// only tree height.
  std::optional<Error> unary(ExprPtr &out) {
    std::vector<Loc> minus;
    while (peek().kind == Tok::Minus) {
      minus.push_back(next().loc);
      if (auto err = tooDeep(static_cast<int>(minus.size()), minus.back(), "expression nested"))
        return err;
    }
    if (auto err = primary(out))
      return err;
    for (auto it = minus.rbegin(); it != minus.rend(); ++it) {
      auto e = std::make_unique<Expr>();
      e->kind = Expr::Kind::Neg;
      e->loc = *it;
      e->height = out->height + 1;
      e->lhs = std::move(out);
      out = std::move(e);
      if (auto err = checkHeight(*out))
        return err;
    }
    return std::nullopt;
  }

  std::optional<Error> primary(ExprPtr &out) {
    const Token &t = peek();
    auto e = std::make_unique<Expr>();
    e->loc = t.loc;
    switch (t.kind) {
    case Tok::Int:
      e->kind = Expr::Kind::Int;
      e->intValue = next().intValue;
      break;
    case Tok::Float:
      e->kind = Expr::Kind::Float;
      e->floatValue = next().floatValue;
      break;
    case Tok::String:
      e->kind = Expr::Kind::String;
      e->text = next().text;
      break;
    case Tok::LParen: {
      next();
      if (auto err = expr(out))
        return err;
      if (peek().kind != Tok::RParen)
        return expected("')'");
      next();
      return std::nullopt;
    }
    case Tok::Ident:
      e->text = next().text;
      e->kind = Expr::Kind::Name;
      if (peek().kind == Tok::LParen) {
        e->kind = Expr::Kind::Call;
        next();
        if (auto err = callArgs(*e))
          return err;
      }
      break;
    default:
      return expected("an expression");
    }
    out = std::move(e);
    return std::nullopt;
  }

  std::optional<Error> callArgs(Expr &call) {
    while (peek().kind != Tok::RParen) {
      Arg arg;
      arg.loc = peek().loc;
      if (peek().kind == Tok::Ident && peek(1).kind == Tok::Assign) {
        arg.keyword = next().text;
        next();
        for (const Arg &prev : call.args)
          if (prev.keyword == arg.keyword)
            return Error{arg.loc, "argument '" + arg.keyword + "' given twice"};
      } else if (!call.args.empty() && !call.args.back().keyword.empty()) {
        return Error{arg.loc, "positional argument after keyword arguments"};
      }
      if (auto err = expr(arg.value))
        return err;
      call.height = std::max(call.height, arg.value->height + 1);
      call.args.push_back(std::move(arg));
      if (peek().kind == Tok::Comma) {
        next();
        continue;
      }
      if (peek().kind != Tok::RParen)
        return expected("',' or ')' in the arguments of '" + call.text + "'");
    }
    next();
    return checkHeight(call);
  }

  std::vector<Token> toks;
  size_t pos = 0;
  int depth = 0;
};
} // namespace

std::optional<Error> parseSpec(const std::string &text, Spec &spec) {
  std::vector<Token> tokens;
  if (auto err = lex(text, tokens))
    return err;
  return Parser(std::move(tokens)).spec(spec);
}

} // namespace heiretsu::frontend
