// A small JSON reader and the writing helpers the weight files need (runtime/export):
// safetensors' header, Hugging Face's config.json. RFC 8259 values: objects keep their
// keys in file order (a repeated key is an error, as safetensors' own reader refuses
// it), numbers are read as double (and, when they are integers of at most 2^53 in
// magnitude, also exactly as int64), strings are decoded from UTF-8 with \u escapes
// (surrogate pairs joined; a lone surrogate is an error).
//
// Errors name the byte offset and what was expected there; the caller adds the file.
#ifndef HEIRETSU_RUNTIME_EXPORT_JSON_H_
#define HEIRETSU_RUNTIME_EXPORT_JSON_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/base/error.h"

namespace heiretsu::weights {

struct JsonValue {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  bool integral = false;  // the number is an integer, exactly `integer`
  int64_t integer = 0;
  std::string text;                                      // kString
  std::vector<JsonValue> items;                          // kArray
  std::vector<std::pair<std::string, JsonValue>> members;  // kObject, in file order

  // The member named `key` of an object, or null when there is none.
  const JsonValue* Find(const std::string& key) const;
  // "null", "a boolean", "a number", "a string", "an array" or "an object".
  const char* KindName() const;
};

// Parses `text` as one JSON value with nothing after it but whitespace. Nesting deeper
// than 64 is refused (a header needs 3), so hostile input cannot exhaust the stack.
Status ParseJson(const std::string& text, JsonValue* out);

// `s` as a JSON string literal, quotes included (control characters, '"' and '\' escaped;
// other bytes as they are).
std::string JsonQuote(const std::string& s);

// The shortest decimal text that reads back as `x` (a double), as Python's repr writes
// it where it can: "1e-05", "10000.0", "0.02".
std::string JsonNumber(double x);

}  // namespace heiretsu::weights

#endif  // HEIRETSU_RUNTIME_EXPORT_JSON_H_
