// Parsing and validation of `heiretsu compile` options.
#include "runtime/cli/CompileOptions.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace heiretsu::cli {
namespace {

struct FlagSpec {
  const char* name;
  bool takes_value;
};

constexpr FlagSpec kFlags[] = {
    {"--dp", true},          {"--tp", true},
    {"--pp", true},          {"--ep", true},
    {"--micro-batch-size", true}, {"--seq", true},
    {"--microbatches", true}, {"--global-batch", true},
    {"--schedule", true},    {"--virtual-stages", true},
    {"--stage-layers", true}, {"--zero", true},
    {"--precision", true},   {"--recompute", true},
    {"--sequence-parallel", false}, {"--strict", false},
    {"--emit", true},        {"--bucket-mb", true},
    {"-o", true},
};

constexpr int64_t kMaxCount = (int64_t{1} << 31) - 1;

// Parses a positive decimal integer no larger than kMaxCount.
std::optional<std::string> ParsePositive(const std::string& flag, const std::string& text,
                                         int64_t* out) {
  const std::string bad = flag + ": expected a positive integer, got '" + text + "'";
  if (text.empty() || text.size() > 19) return bad;
  for (char c : text)
    if (c < '0' || c > '9') return bad;
  errno = 0;
  long long v = std::strtoll(text.c_str(), nullptr, 10);
  if (errno == ERANGE || v <= 0) return bad;
  if (v > kMaxCount)
    return flag + ": " + text + " is larger than the limit " + std::to_string(kMaxCount);
  *out = v;
  return std::nullopt;
}

std::optional<std::string> ParseChoice(const std::string& flag, const std::string& text,
                                       std::initializer_list<const char*> choices,
                                       std::string* out) {
  std::string list;
  for (const char* c : choices) {
    if (text == c) {
      *out = text;
      return std::nullopt;
    }
    list += std::string(list.empty() ? "" : "|") + c;
  }
  return flag + ": expected " + list + ", got '" + text + "'";
}

// The value `flag` maps to in `table`, or T() when it is not there.
template <class T, size_t N>
T Lookup(const std::pair<const char*, T> (&table)[N], const std::string& flag) {
  for (const auto& [name, value] : table)
    if (flag == name) return value;
  return T();
}

}  // namespace

bool IsCompileFlag(const std::string& flag, bool* takes_value) {
  for (const FlagSpec& f : kFlags) {
    if (flag == f.name) {
      *takes_value = f.takes_value;
      return true;
    }
  }
  return false;
}

const char* CompileUsage() {
  return "usage: heiretsu compile SPEC [--dp N] [--tp N] [--pp N] [--ep N]\n"
         "           [--micro-batch-size B] [--seq T] [--microbatches M] [--global-batch G]\n"
         "           [--schedule gpipe|1f1b|interleaved|zb-h1] [--virtual-stages V]\n"
         "           [--stage-layers N,N,...] [--zero 0|1]\n"
         "           [--precision fp32|bf16|fp16] [--recompute none|selective|full]\n"
         "           [--sequence-parallel] [--bucket-mb MB] [--strict]\n"
         "           [--emit mlir|plan-text|plan|summary] [-o OUT]\n";
}

std::optional<std::string> ParseCompileOptions(const std::vector<std::string>& args,
                                               CompileOptions* out) {
  std::optional<int64_t> batch, micro, global;
  bool emit_given = false;
  // The flags whose value is a positive count: where it goes.
  const std::pair<const char*, int64_t*> counts[] = {
      {"--dp", &out->dp},   {"--tp", &out->tp},
      {"--pp", &out->pp},   {"--ep", &out->ep},
      {"--seq", &out->seq}, {"--virtual-stages", &out->virtual_stages},
      {"--bucket-mb", &out->bucket_mb}};
  // Those of the batch geometry, resolved once every flag is read.
  const std::pair<const char*, std::optional<int64_t>*> geometry[] = {
      {"--micro-batch-size", &batch}, {"--microbatches", &micro}, {"--global-batch", &global}};
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool takes_value = false;
    if (!IsCompileFlag(a, &takes_value)) {
      if (!a.empty() && a[0] == '-') return "unknown flag '" + a + "'";
      if (!out->spec.empty())
        return "more than one spec given: '" + out->spec + "' and '" + a + "'";
      out->spec = a;
      continue;
    }
    if (!takes_value) {
      (a == "--strict" ? out->strict : out->sequence_parallel) = true;
      continue;
    }
    if (i + 1 >= args.size()) return a + ": missing value";
    const std::string& v = args[++i];
    std::optional<std::string> err;
    int64_t n = 0;
    if (int64_t* count = Lookup(counts, a)) {
      err = ParsePositive(a, v, count);
    } else if (std::optional<int64_t>* given = Lookup(geometry, a)) {
      if (!(err = ParsePositive(a, v, &n))) *given = n;
    } else if (a == "--stage-layers") {
      out->stage_layers.clear();
      size_t begin = 0;
      while (!err) {
        size_t comma = v.find(',', begin);
        std::string part = v.substr(begin, comma == std::string::npos ? std::string::npos
                                                                       : comma - begin);
        if (!(err = ParsePositive(a, part, &n))) out->stage_layers.push_back(n);
        if (comma == std::string::npos) break;
        begin = comma + 1;
      }
      if (err) err = a + ": expected layer counts N,N,... (positive integers), got '" + v + "'";
    } else if (a == "--schedule") {
      err = ParseChoice(a, v, {"gpipe", "1f1b", "interleaved", "zb-h1"}, &out->schedule);
    } else if (a == "--zero") {
      std::string z;
      if (!(err = ParseChoice(a, v, {"0", "1"}, &z))) out->zero = z == "1";
    } else if (a == "--precision") {
      err = ParseChoice(a, v, {"fp32", "bf16", "fp16"}, &out->precision);
    } else if (a == "--recompute") {
      err = ParseChoice(a, v, {"none", "selective", "full"}, &out->recompute);
    } else if (a == "--emit") {
      err = ParseChoice(a, v, {"mlir", "plan-text", "plan", "summary"}, &out->emit);
      emit_given = true;
    } else if (a == "-o") {
      if (v.empty()) err = std::string("-o: empty path");
      out->output = v;
    }
    if (err) return err;
  }
  if (out->spec.empty()) return std::string("no model spec given");

  int64_t world = 1;
  for (int64_t d : {out->dp, out->tp, out->pp, out->ep}) {
    if (__builtin_mul_overflow(world, d, &world) || world > kMaxCount)
      return "world size dp*tp*pp*ep = " + std::to_string(out->dp) + "*" +
             std::to_string(out->tp) + "*" + std::to_string(out->pp) + "*" +
             std::to_string(out->ep) + " is too large";
  }

  // G = B * M * dp * ep (the data ranks, DESIGN.md §3): any two of G, B, M determine
  // the third; defaults B = 1, M = 1.
  const int64_t dp = out->dp * out->ep;
  const std::string ranks = "--dp " + std::to_string(out->dp) +
                            (out->ep > 1 ? " x --ep " + std::to_string(out->ep) : "");
  auto product = [&](int64_t b, int64_t m, int64_t* g) {
    return !__builtin_mul_overflow(b, m, g) && !__builtin_mul_overflow(*g, dp, g) &&
           *g <= kMaxCount;
  };
  int64_t b = batch.value_or(1), m = micro.value_or(1), g = 0;
  if (global) {
    g = *global;
    if (batch && micro) {
      int64_t want = 0;
      if (!product(b, m, &want) || want != g)
        return "--global-batch " + std::to_string(g) + " must equal --micro-batch-size " +
               std::to_string(b) + " x --microbatches " + std::to_string(m) + " x " + ranks;
    } else if (micro) {
      if (g % (m * dp) != 0)
        return "--global-batch " + std::to_string(g) + " is not divisible by --microbatches " +
               std::to_string(m) + " x " + ranks;
      b = g / (m * dp);
    } else {
      if (g % (b * dp) != 0)
        return "--global-batch " + std::to_string(g) + " is not divisible by " + ranks +
               " x --micro-batch-size " + std::to_string(b);
      m = g / (b * dp);
    }
  } else if (!product(b, m, &g)) {
    return "global batch --micro-batch-size " + std::to_string(b) + " x --microbatches " +
           std::to_string(m) + " x " + ranks + " is too large";
  }
  if (m > 65536)  // plan::kMaxMicrobatches; the runtime refuses more
    return "--microbatches " + std::to_string(m) + " is more than the limit 65536";
  out->micro_batch_size = b;
  out->microbatches = m;
  out->global_batch = g;
  if (out->sequence_parallel && out->tp == 1)
    return std::string("--sequence-parallel splits tokens over tensor-parallel ranks: it needs --tp > 1");
  if (!emit_given) out->emit = out->output.empty() ? "mlir" : "plan";
  if (out->virtual_stages > 1 && out->schedule != "interleaved")
    return "--virtual-stages " + std::to_string(out->virtual_stages) +
           " needs --schedule interleaved (virtual stages are its model chunks)";
  if (out->schedule == "interleaved") {
    if (out->virtual_stages < 2 || out->pp < 2)
      return "--schedule interleaved runs several model chunks per stage: it needs --pp > 1 and "
             "--virtual-stages > 1 (got --pp " + std::to_string(out->pp) + " --virtual-stages " +
             std::to_string(out->virtual_stages) + ")";
    if (out->microbatches % out->pp != 0)
      return "--schedule interleaved needs --microbatches (" + std::to_string(out->microbatches) +
             ") to be a multiple of --pp (" + std::to_string(out->pp) + ")";
  }
  if (!out->stage_layers.empty() && out->pp == 1)
    return std::string("--stage-layers cuts the layers into pipeline stages: it needs --pp > 1");
  if (const int64_t chunks = out->pp * out->virtual_stages;
      !out->stage_layers.empty() && static_cast<int64_t>(out->stage_layers.size()) != chunks)
    return "--stage-layers gives " + std::to_string(out->stage_layers.size()) +
           " stages but --pp is " + std::to_string(out->pp) +
           (out->virtual_stages > 1
                ? " with --virtual-stages " + std::to_string(out->virtual_stages) +
                      ": give one layer count per model chunk (" + std::to_string(chunks) + ")"
                : std::string(": give one layer count per stage"));
  if (out->emit == "plan" && out->output.empty())
    return std::string("--emit plan needs -o PLAN_DIR");
  return std::nullopt;
}

std::optional<std::string> CheckBuilt(const CompileOptions& o) {
  const std::string built = " is not built yet";
  if (o.recompute != "none") return "--recompute " + o.recompute + built + "; none is";
  return std::nullopt;
}

}  // namespace heiretsu::cli
