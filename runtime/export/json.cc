#include "runtime/export/json.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace heiretsu::weights {

const JsonValue* JsonValue::Find(const std::string& key) const {
  for (const auto& [name, value] : members)
    if (name == key) return &value;
  return nullptr;
}

const char* JsonValue::KindName() const {
  switch (kind) {
    case Kind::kNull:
      return "null";
    case Kind::kBool:
      return "a boolean";
    case Kind::kNumber:
      return "a number";
    case Kind::kString:
      return "a string";
    case Kind::kArray:
      return "an array";
    case Kind::kObject:
      return "an object";
  }
  return "?";
}

namespace {

constexpr int kMaxDepth = 64;

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text) {}

  Status Parse(JsonValue* out) {
    if (Status err = Value(out, 0)) return err;
    SkipSpace();
    if (pos_ != s_.size()) return Fail("the end of the JSON text");
    return std::nullopt;
  }

 private:
  Error Fail(const std::string& expected) {
    std::string found = pos_ < s_.size() ? "'" + std::string(1, s_[pos_]) + "'" : "the end";
    if (pos_ < s_.size() && (static_cast<unsigned char>(s_[pos_]) < 0x20 ||
                             static_cast<unsigned char>(s_[pos_]) >= 0x7f)) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "byte 0x%02x", static_cast<unsigned char>(s_[pos_]));
      found = hex;
    }
    return Error::BadInput("JSON at byte " + std::to_string(pos_) + ": expected " + expected +
                           ", found " + found);
  }

  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
      ++pos_;
  }

  bool Literal(const char* word) {
    const size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }

  Status Value(JsonValue* out, int depth) {
    if (depth > kMaxDepth) return Error::BadInput("JSON nested deeper than 64 levels");
    SkipSpace();
    if (pos_ >= s_.size()) return Fail("a value");
    const char c = s_[pos_];
    if (c == '{') return Object(out, depth);
    if (c == '[') return Array(out, depth);
    if (c == '"') {
      out->kind = JsonValue::Kind::kString;
      return String(&out->text);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return Number(out);
    if (Literal("true") || Literal("false")) {
      out->kind = JsonValue::Kind::kBool;
      out->boolean = c == 't';
      return std::nullopt;
    }
    if (Literal("null")) {
      out->kind = JsonValue::Kind::kNull;
      return std::nullopt;
    }
    return Fail("a value");
  }

  Status Object(JsonValue* out, int depth) {
    out->kind = JsonValue::Kind::kObject;
    ++pos_;  // '{'
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return std::nullopt;
    }
    while (true) {
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '"') return Fail("a member name (a string)");
      const size_t key_at = pos_;
      std::string key;
      if (Status err = String(&key)) return err;
      if (out->Find(key))
        return Error::BadInput("JSON at byte " + std::to_string(key_at) + ": key " +
                               JsonQuote(key) + " appears twice in one object");
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != ':') return Fail("':'");
      ++pos_;
      JsonValue value;
      if (Status err = Value(&value, depth + 1)) return err;
      out->members.emplace_back(std::move(key), std::move(value));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return std::nullopt;
      }
      return Fail("',' or '}'");
    }
  }

  Status Array(JsonValue* out, int depth) {
    out->kind = JsonValue::Kind::kArray;
    ++pos_;  // '['
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return std::nullopt;
    }
    while (true) {
      JsonValue item;
      if (Status err = Value(&item, depth + 1)) return err;
      out->items.push_back(std::move(item));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return std::nullopt;
      }
      return Fail("',' or ']'");
    }
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }

  bool Hex4(uint32_t* cp) {
    if (pos_ + 4 > s_.size()) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = s_[pos_ + i];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= h - '0';
      else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
      else return false;
    }
    pos_ += 4;
    *cp = v;
    return true;
  }

  Status String(std::string* out) {
    ++pos_;  // '"'
    out->clear();
    while (true) {
      if (pos_ >= s_.size()) return Fail("'\"' closing the string");
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return std::nullopt;
      }
      if (c < 0x20) return Fail("a string character (control characters must be escaped)");
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++pos_;
        continue;
      }
      ++pos_;
      if (pos_ >= s_.size()) return Fail("an escape");
      const char e = s_[pos_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(&cp)) return Fail("4 hex digits after \\u");
          if (cp >= 0xdc00 && cp < 0xe000) return Fail("a high surrogate before a low one");
          if (cp >= 0xd800 && cp < 0xdc00) {
            uint32_t low;
            if (s_.compare(pos_, 2, "\\u") != 0) return Fail("a low surrogate (\\uDC00-\\uDFFF)");
            pos_ += 2;
            if (!Hex4(&low) || low < 0xdc00 || low >= 0xe000)
              return Fail("a low surrogate (\\uDC00-\\uDFFF)");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          AppendUtf8(cp, out);
          break;
        }
        default:
          --pos_;
          return Fail("an escape (one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u)");
      }
    }
  }

  Status Number(JsonValue* out) {
    const size_t begin = pos_;
    if (s_[pos_] == '-') ++pos_;
    auto digits = [&] {
      const size_t from = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ - from;
    };
    if (pos_ < s_.size() && s_[pos_] == '0') {
      ++pos_;
    } else if (digits() == 0) {
      return Fail("a digit");
    }
    bool fraction = false;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      fraction = true;
      if (digits() == 0) return Fail("a digit after '.'");
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      fraction = true;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) return Fail("a digit in the exponent");
    }
    const std::string text = s_.substr(begin, pos_ - begin);
    out->kind = JsonValue::Kind::kNumber;
    out->number = std::strtod(text.c_str(), nullptr);
    if (!std::isfinite(out->number)) {
      pos_ = begin;
      return Fail("a number within the range of a double");
    }
    if (!fraction && text.size() <= 17) {  // at most 16 digits and a sign: < 2^53 or near
      errno = 0;
      const long long v = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == 0 && v <= (1LL << 53) && v >= -(1LL << 53)) {
        out->integral = true;
        out->integer = v;
      }
    }
    return std::nullopt;
  }

  const std::string& s_;
  size_t pos_ = 0;
};

}  // namespace

Status ParseJson(const std::string& text, JsonValue* out) {
  *out = JsonValue();
  return Parser(text).Parse(out);
}

std::string JsonQuote(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", c);
      out += esc;
    } else {
      out.push_back(ch);
    }
  }
  return out + "\"";
}

std::string JsonNumber(double x) {
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  // The fewest significant digits that read back as x, then Python's repr layout of
  // them: positional for decimal exponents in [-4, 16), else d.ddde+XX.
  char text[48];
  int precision = 0;
  for (; precision < 17; ++precision) {
    std::snprintf(text, sizeof text, "%.*e", precision, x);
    if (std::strtod(text, nullptr) == x) break;
  }
  std::string s = text;
  const bool negative = s[0] == '-';
  if (negative) s.erase(0, 1);
  const size_t e = s.find('e');
  const int exponent = std::atoi(s.c_str() + e + 1);
  std::string digits = s.substr(0, 1) + (e > 2 ? s.substr(2, e - 2) : "");
  std::string out;
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      if (digits.size() < static_cast<size_t>(exponent) + 1) digits.append(exponent + 1 - digits.size(), '0');
      const std::string whole = digits.substr(0, exponent + 1), frac = digits.substr(exponent + 1);
      out = whole + "." + (frac.empty() ? "0" : frac);
    } else {
      out = "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    }
  } else {
    char exp_text[8];
    std::snprintf(exp_text, sizeof exp_text, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out = digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "") + exp_text;
  }
  return (negative ? "-" : "") + out;
}

}  // namespace heiretsu::weights
