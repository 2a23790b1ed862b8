//===- Parser.h - model language parser ------------------------------------===//

#ifndef HEIRETSU_COMPILER_FRONTEND_PARSER_H
#define HEIRETSU_COMPILER_FRONTEND_PARSER_H

#include "compiler/frontend/AST.h"

namespace heiretsu::frontend {

/// Deepest nesting of blocks, parentheses, calls and operators the parser accepts;
/// deeper input is an error, never a stack overflow.
inline constexpr int kMaxNesting = 256;

/// Parses a whole spec. Returns the first syntax error.
std::optional<Error> parseSpec(const std::string &text, Spec &spec);

} // namespace heiretsu::frontend

#endif // HEIRETSU_COMPILER_FRONTEND_PARSER_H
