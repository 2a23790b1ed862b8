// See env.h.
#include "runtime/base/env.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace heiretsu::env {
namespace {

// NAME='VALUE', with the value cut short if it is long and control characters shown
// as '?', so the message stays one readable line.
std::string Quoted(const char* name, const char* value) {
  std::string v;
  for (const char* p = value; *p != '\0' && v.size() < 80; ++p)
    v += static_cast<unsigned char>(*p) < ' ' || *p == 0x7f ? '?' : *p;
  if (std::strlen(value) > 80) v += "...";
  return std::string(name) + "='" + v + "'";
}

}  // namespace

Status Integer(const char* name, int64_t min, int64_t max, const char* unit, int64_t* out) {
  const char* text = std::getenv(name);
  if (text == nullptr) return std::nullopt;
  const std::string expected = " is not an integer in [" + std::to_string(min) + ", " +
                               std::to_string(max) + "]" +
                               (unit && *unit ? std::string(" (") + unit + ")" : "") +
                               " (set it to one, or unset it for the default " +
                               std::to_string(*out) + ")";
  if (*text == '\0') return Error::BadInput(Quoted(name, text) + expected);
  int64_t v = 0;
  for (const char* p = text; *p != '\0'; ++p) {
    // v * 10 + digit > max, without overflowing (a digit above max is checked first:
    // the division rounds a negative max - digit toward zero).
    if (*p < '0' || *p > '9' || *p - '0' > max || v > (max - (*p - '0')) / 10)
      return Error::BadInput(Quoted(name, text) + expected);
    v = v * 10 + (*p - '0');
  }
  if (v < min) return Error::BadInput(Quoted(name, text) + expected);
  *out = v;
  return std::nullopt;
}

Status Directory(const char* name, std::string* out) {
  const char* text = std::getenv(name);
  if (text == nullptr) return std::nullopt;
  if (*text == '\0')
    return Error::BadInput(Quoted(name, text) + " is empty (set it to a directory, or unset it)");
  struct stat st;
  if (::stat(text, &st) != 0)
    return Error::BadInput(Quoted(name, text) + " is not a directory: " + std::strerror(errno) +
                           " (set it to an existing directory, or unset it)");
  if (!S_ISDIR(st.st_mode))
    return Error::BadInput(Quoted(name, text) +
                           " is not a directory (set it to an existing directory, or unset it)");
  *out = text;
  return std::nullopt;
}

Status Host(const char* name, std::string* out) {
  const char* text = std::getenv(name);
  if (text == nullptr) return std::nullopt;
  const std::string hint = " (set it to this machine's address that the other ranks can reach, "
                           "e.g. 10.0.0.5, or unset it for 127.0.0.1)";
  if (*text == '\0') return Error::BadInput(Quoted(name, text) + " is empty" + hint);
  for (const char* p = text; *p != '\0'; ++p)
    if (static_cast<unsigned char>(*p) <= ' ' || *p == 0x7f)
      return Error::BadInput(Quoted(name, text) + " holds a blank or control character" + hint);
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(text, nullptr, &hints, &found);
  if (rc != 0) return Error::BadInput(Quoted(name, text) + " does not resolve: " + gai_strerror(rc) + hint);
  ::freeaddrinfo(found);
  *out = text;
  return std::nullopt;
}

}  // namespace heiretsu::env
