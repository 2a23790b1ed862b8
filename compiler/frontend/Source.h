//===- Source.h - reading a spec file and reporting positioned errors ----===//
//
// The frontend stops at the first error and reports it as
// `file:line:col: error: message` (or `file: error: message` when the problem has
// no position, like a missing file). Lines and columns are 1-based; columns count
// bytes.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_FRONTEND_SOURCE_H
#define HEIRETSU_COMPILER_FRONTEND_SOURCE_H

#include <cstdint>
#include <optional>
#include <string>

namespace heiretsu::frontend {

struct Loc {
  uint32_t line = 0; // 0 = no position
  uint32_t col = 0;
};

struct Error {
  Loc loc;
  std::string message;
};

/// Formats `err` as `file:line:col: error: message`.
std::string formatError(const std::string &file, const Error &err);

/// Formats `warning` as `file:line:col: warning: message`.
std::string formatWarning(const std::string &file, const Error &warning);

/// Upper bound on a spec file's size; larger files are rejected unread.
inline constexpr uint64_t kMaxSpecBytes = 64ull << 20;

/// Reads `path` and checks it is a regular file of at most kMaxSpecBytes holding
/// valid UTF-8 without NUL bytes. On failure returns the error (positioned at the
/// first offending byte where there is one).
std::optional<Error> readSpecFile(const std::string &path, std::string &text);

/// The content checks of readSpecFile: valid UTF-8, no NUL byte.
std::optional<Error> validateSpecText(const std::string &text);

} // namespace heiretsu::frontend

#endif // HEIRETSU_COMPILER_FRONTEND_SOURCE_H
