// Environment variables read like flags (issue #10): a variable that is set must hold
// a valid value, or the program exits 2 with one message naming the variable and the
// value and saying what it should be. An unset variable leaves the default in place;
// a variable set to the empty string is a value like any other (refused where empty
// makes no sense).
#ifndef HEIRETSU_RUNTIME_BASE_ENV_H_
#define HEIRETSU_RUNTIME_BASE_ENV_H_

#include <cstdint>
#include <string>

#include "runtime/base/error.h"

namespace heiretsu::env {

// A decimal integer in [min, max]: digits only (no sign, blanks, suffix or
// exponent). `unit` (e.g. "milliseconds") goes into the message. Unset: *out is
// left as it is.
Status Integer(const char* name, int64_t min, int64_t max, const char* unit, int64_t* out);

// A directory that exists. Unset: *out is left as it is.
Status Directory(const char* name, std::string* out);

// A host name or address this machine can resolve (getaddrinfo), without blanks or
// control characters. Unset: *out is left as it is.
Status Host(const char* name, std::string* out);

}  // namespace heiretsu::env

#endif  // HEIRETSU_RUNTIME_BASE_ENV_H_
