//===- AST.h - syntax tree of the model language ---------------------------===//
//
// A spec is `model NAME { statement* }`. Statements assign a name, open a `block`
// (repeated `layers` times) or choose by layer with `every K { } else { }`.
// Expressions are numbers, strings, names, calls with positional and keyword
// arguments, and the operators + - * / // %. The tree is plain data; meaning is
// given by ModelBuilder.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_FRONTEND_AST_H
#define HEIRETSU_COMPILER_FRONTEND_AST_H

#include "compiler/frontend/Source.h"

#include <memory>
#include <string>
#include <vector>

namespace heiretsu::frontend {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Arg {
  Loc loc;
  std::string keyword; // empty for a positional argument
  ExprPtr value;
};

struct Expr {
  enum class Kind { Int, Float, String, Name, Neg, Binary, Call };
  Kind kind;
  Loc loc;
  int64_t intValue = 0;
  double floatValue = 0;
  std::string text; // Name, String, Call (callee)
  char op = 0;      // Binary: + - * / % and 'f' for floor division //
  ExprPtr lhs, rhs; // Binary; Neg uses lhs
  std::vector<Arg> args; // Call
  int height = 1;        // longest path to a leaf, bounded by kMaxNesting
};

struct Stmt;
using StmtList = std::vector<Stmt>;

struct Stmt {
  enum class Kind { Assign, Block, Every };
  Kind kind;
  Loc loc;
  std::string name; // Assign target
  Loc nameLoc;
  ExprPtr value;    // Assign value; Every period
  StmtList body;    // Block, Every (then)
  StmtList otherwise; // Every (else)
};

struct Spec {
  std::string name;
  Loc nameLoc;
  StmtList body;
};

} // namespace heiretsu::frontend

#endif // HEIRETSU_COMPILER_FRONTEND_AST_H
