// The one error type of the runtime and the one mapping from errors to exit codes
// (docs/architecture.md, "Errors"). Functions that can fail return `Status`
// (std::nullopt on success) or take an out-parameter and return `Status`; nothing
// below the binaries' main() prints an error or picks an exit code itself.
//
//   exit 0  success
//   exit 2  bad input: the user's spec, flags, environment, data, plan or checkpoint
//           is wrong; the message names the file, position or value
//   exit 1  any other failure (a peer died, a write failed, an internal error)
#ifndef HEIRETSU_RUNTIME_BASE_ERROR_H_
#define HEIRETSU_RUNTIME_BASE_ERROR_H_

#include <optional>
#include <ostream>
#include <string>
#include <utility>

namespace heiretsu {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitBadInput = 2;

struct Error {
  enum class Kind {
    kBadInput,  // the user's input is wrong: exit 2
    kFailure,   // the system failed us (a write, a peer, a full disk): exit 1
  };
  Kind kind;
  std::string message;

  static Error BadInput(std::string message) { return {Kind::kBadInput, std::move(message)}; }
  static Error Failure(std::string message) { return {Kind::kFailure, std::move(message)}; }

  bool bad_input() const { return kind == Kind::kBadInput; }
  int exit_code() const { return kind == Kind::kBadInput ? kExitBadInput : kExitFailure; }
  // The same error with `context + ": "` before its message.
  Error Within(const std::string& context) const { return {kind, context + ": " + message}; }
};

// std::nullopt: success.
using Status = std::optional<Error>;

// The message (for logs and test failures).
inline std::ostream& operator<<(std::ostream& os, const Error& e) { return os << e.message; }

}  // namespace heiretsu

#endif  // HEIRETSU_RUNTIME_BASE_ERROR_H_
