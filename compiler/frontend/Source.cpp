//===- Source.cpp - reading and validating spec files ---------------------===//

#include "compiler/frontend/Source.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

namespace heiretsu::frontend {

static std::string formatDiagnostic(const std::string &file, const Error &err,
                                    const char *kind) {
  std::string out = file;
  if (err.loc.line != 0)
    out += ":" + std::to_string(err.loc.line) + ":" + std::to_string(err.loc.col);
  return out + ": " + kind + ": " + err.message;
}

std::string formatError(const std::string &file, const Error &err) {
  return formatDiagnostic(file, err, "error");
}

std::string formatWarning(const std::string &file, const Error &warning) {
  return formatDiagnostic(file, warning, "warning");
}

/// Length of the UTF-8 sequence starting at s[i], or 0 if it is malformed
/// (overlong forms, surrogates and code points above U+10FFFF are malformed).
static size_t utf8SequenceLength(const std::string &s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = byte(i);
  if (c < 0x80)
    return 1;
  size_t n;
  uint32_t cp;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  static const uint32_t minForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < minForLength[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return n;
}

std::optional<Error> readSpecFile(const std::string &path, std::string &text) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0)
    return Error{{}, std::string("cannot open spec: ") + std::strerror(errno)};
  if (S_ISDIR(st.st_mode))
    return Error{{}, "is a directory, expected a model spec file"};
  if (!S_ISREG(st.st_mode))
    return Error{{}, "is not a regular file"};
  if (static_cast<uint64_t>(st.st_size) > kMaxSpecBytes)
    return Error{{}, "spec is " + std::to_string(st.st_size) +
                         " bytes; the limit is " + std::to_string(kMaxSpecBytes)};
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return Error{{}, std::string("cannot open spec: ") + std::strerror(errno)};
  std::ostringstream buf;
  buf << in.rdbuf();
  text = buf.str();
  return validateSpecText(text);
}

std::optional<Error> validateSpecText(const std::string &text) {
  Loc loc{1, 1};
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '\0')
      return Error{loc, "NUL byte in spec"};
    size_t n = utf8SequenceLength(text, i);
    if (n == 0) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(text[i]));
      return Error{loc, std::string("invalid UTF-8 (byte ") + hex + ")"};
    }
    if (text[i] == '\n') {
      ++loc.line;
      loc.col = 1;
    } else {
      loc.col += n;
    }
    i += n;
  }
  return std::nullopt;
}

} // namespace heiretsu::frontend
