#include "runtime/export/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/data/shards.h"
#include "runtime/export/json.h"

namespace heiretsu::weights {

int64_t SafetensorsDtypeBytes(const std::string& dtype) {
  static const std::pair<const char*, int64_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2},
      {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},    {"U32", 4},     {"F32", 4},
      {"F64", 8},  {"I64", 8}, {"U64", 8}};
  for (const auto& [name, bytes] : kSizes)
    if (dtype == name) return bytes;
  return 0;
}

Status WriteSafetensors(const std::string& path, const FileLayout& layout, const Values& values,
                        int64_t* bytes) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
  int64_t offset = 0;
  for (const FileTensor& t : layout.tensors) {
    header += "," + JsonQuote(t.name) + ":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    const int64_t end = offset + 4 * t.numel();
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(end) + "]}";
    offset = end;
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  data::AtomicFile out;
  if (Status err = out.Open(path)) return err;
  const uint64_t n = header.size();
  if (Status err = out.Write(&n, 8)) return err;
  if (Status err = out.Write(header.data(), static_cast<int64_t>(header.size()))) return err;
  std::vector<float> buffer;
  for (const FileTensor& t : layout.tensors) {
    buffer.assign(static_cast<size_t>(t.numel()), 0.f);
    Gather(t, values, buffer.data());
    if (Status err = out.Write(buffer.data(), 4 * t.numel())) return err;
  }
  if (Status err = out.Commit()) return err;
  *bytes = 8 + static_cast<int64_t>(header.size()) + offset;
  return std::nullopt;
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  for (const SafetensorsEntry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

Status OpenSafetensors(const std::string& path, SafetensorsFile* out) {
  if (Status err = out->file.Open(path)) return err;
  auto bad = [&](const std::string& what) {
    return Error::BadInput(path + ": not a valid safetensors file: " + what);
  };
  const int64_t size = out->file.size();
  if (size < 8)
    return bad("truncated: " + std::to_string(size) + " bytes, less than the 8-byte header length");
  uint64_t n = 0;
  if (Status err = out->file.ReadAt(0, 8, &n)) return err;
  if (n > static_cast<uint64_t>(kSafetensorsMaxHeader))
    return bad("the header length is " + std::to_string(n) + " bytes, more than safetensors' limit of " +
               std::to_string(kSafetensorsMaxHeader));
  if (static_cast<int64_t>(n) > size - 8)
    return bad("truncated: the header length is " + std::to_string(n) + " bytes, the file has " +
               std::to_string(size - 8) + " after it");
  std::string text(n, '\0');
  if (Status err = out->file.ReadAt(8, static_cast<int64_t>(n), text.data())) return err;
  if (text.empty() || text[0] != '{') return bad("the header does not start with '{'");
  JsonValue header;
  if (Status err = ParseJson(text, &header)) return bad("header: " + err->message);
  if (header.kind != JsonValue::Kind::kObject) return bad("the header is not a JSON object");
  out->data_start = 8 + static_cast<int64_t>(n);
  const int64_t data_size = size - out->data_start;
  for (const auto& [name, v] : header.members) {
    if (name == "__metadata__") {
      if (v.kind != JsonValue::Kind::kObject) return bad("__metadata__ is not an object");
      for (const auto& [key, value] : v.members) {
        if (value.kind != JsonValue::Kind::kString)
          return bad("__metadata__ value " + JsonQuote(key) + " is " + value.KindName() +
                     ", not a string");
        out->metadata.emplace_back(key, value.text);
      }
      continue;
    }
    const std::string where = "tensor " + JsonQuote(name) + ": ";
    if (v.kind != JsonValue::Kind::kObject) return bad(where + "not an object");
    SafetensorsEntry e;
    e.name = name;
    const JsonValue* dtype = v.Find("dtype");
    const JsonValue* shape = v.Find("shape");
    const JsonValue* offsets = v.Find("data_offsets");
    if (!dtype || dtype->kind != JsonValue::Kind::kString) return bad(where + "no \"dtype\" string");
    e.dtype = dtype->text;
    const int64_t elem = SafetensorsDtypeBytes(e.dtype);
    if (elem == 0) return bad(where + "unknown dtype " + JsonQuote(e.dtype));
    if (!shape || shape->kind != JsonValue::Kind::kArray) return bad(where + "no \"shape\" list");
    int64_t numel = 1;
    for (const JsonValue& d : shape->items) {
      if (d.kind != JsonValue::Kind::kNumber || !d.integral || d.integer < 0)
        return bad(where + "shape holds " + (d.kind == JsonValue::Kind::kNumber ? "a number that is not a non-negative integer" : d.KindName()));
      e.shape.push_back(d.integer);
      if (d.integer != 0 && numel > (int64_t{1} << 53) / d.integer) return bad(where + "shape too large");
      numel *= d.integer;
    }
    if (!offsets || offsets->kind != JsonValue::Kind::kArray || offsets->items.size() != 2 ||
        !offsets->items[0].integral || !offsets->items[1].integral ||
        offsets->items[0].integer < 0 || offsets->items[1].integer < offsets->items[0].integer)
      return bad(where + "\"data_offsets\" must be [BEGIN, END] with 0 <= BEGIN <= END");
    for (const auto& [key, unused] : v.members)
      if (key != "dtype" && key != "shape" && key != "data_offsets")
        return bad(where + "unknown field " + JsonQuote(key));
    e.begin = offsets->items[0].integer;
    e.end = offsets->items[1].integer;
    if (e.end - e.begin != numel * elem)
      return bad(where + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 ") hold " + std::to_string(e.end - e.begin) + " bytes, its shape " +
                 ShapeString(e.shape) + " of " + e.dtype + " takes " + std::to_string(numel * elem));
    out->entries.push_back(std::move(e));
  }
  // The tensors tile the data section: sorted by offset, each starts where the one
  // before ended, and the last ends where the file does.
  std::vector<const SafetensorsEntry*> sorted;
  for (const SafetensorsEntry& e : out->entries) sorted.push_back(&e);
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const SafetensorsEntry* a, const SafetensorsEntry* b) { return a->begin < b->begin; });
  int64_t at = 0;
  for (const SafetensorsEntry* e : sorted) {
    if (e->begin != at)
      return bad("tensor " + JsonQuote(e->name) + " starts at data byte " + std::to_string(e->begin) +
                 ", the tensor before it ends at " + std::to_string(at) +
                 (e->begin < at ? " (overlap)" : " (a hole)"));
    at = e->end;
  }
  if (at > data_size) {
    const SafetensorsEntry* last = sorted.back();
    return bad("truncated: tensor " + JsonQuote(last->name) + " ends at data byte " +
               std::to_string(last->end) + ", the file's data section has " +
               std::to_string(data_size) + " bytes (the file is " + std::to_string(size) +
               " bytes, expected " + std::to_string(out->data_start + at) + ")");
  }
  if (at < data_size)
    return bad(std::to_string(data_size - at) + " bytes after the last tensor (the file is " +
               std::to_string(size) + " bytes, its tensors end at " +
               std::to_string(out->data_start + at) + ")");
  return std::nullopt;
}

Status ReadSafetensorsTensor(const SafetensorsFile& f, const SafetensorsEntry& e,
                             std::vector<float>* out) {
  const int64_t elem = SafetensorsDtypeBytes(e.dtype);
  const int64_t n = elem ? (e.end - e.begin) / elem : 0;
  if (e.dtype != "F32" && e.dtype != "F16" && e.dtype != "BF16" && e.dtype != "F64")
    return Error::BadInput(f.file.path() + ": tensor " + JsonQuote(e.name) + " is " + e.dtype +
                           "; heiretsu reads F32, F16, BF16 and F64 weights");
  std::vector<char> raw(static_cast<size_t>(e.end - e.begin));
  if (Status err = f.file.ReadAt(f.data_start + e.begin, e.end - e.begin, raw.data())) return err;
  out->resize(static_cast<size_t>(n));
  float* v = out->data();
  if (e.dtype == "F32") {
    std::memcpy(v, raw.data(), raw.size());
  } else if (e.dtype == "F64") {
    for (int64_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, raw.data() + 8 * i, 8);
      v[i] = static_cast<float>(d);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      v[i] = e.dtype == "F16" ? HalfToFloat(h) : BFloat16ToFloat(h);
    }
  }
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i]))
      return Error::BadInput(f.file.path() + ": tensor " + JsonQuote(e.name) + " holds " +
                             (std::isnan(v[i]) ? "NaN" : "an infinity") + " at index " +
                             std::to_string(i) + " (as float32)");
  return std::nullopt;
}

}  // namespace heiretsu::weights
