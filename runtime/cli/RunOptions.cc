// Parsing and validation of `heiretsu run` options.
#include "runtime/cli/RunOptions.h"

#include "runtime/exec/loss_scale.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace heiretsu::cli {
namespace {

constexpr const char* kFlags[] = {
    "--data",         "--steps",      "--lr",     "--min-lr",    "--warmup",
    "--weight-decay", "--grad-clip",  "--seed",   "--backend",   "--metrics",
    "--save-dir",     "--save-every", "--resume", "--log-every", "--cache-dir",
    "--on-nonfinite", "--max-consecutive-skips", "--trace",   "--trace-steps",
    "--val-data",     "--val-every",  "--val-batches",
    "--sample-every", "--sample-tokens",
    "--loss-scale",   "--loss-scale-init", "--loss-scale-growth-interval",
};

constexpr int64_t kMaxCount = (int64_t{1} << 31) - 1;

bool AllDigits(const std::string& text) {
  if (text.empty()) return false;
  for (char c : text)
    if (c < '0' || c > '9') return false;
  return true;
}

// A decimal integer in [min, kMaxCount].
std::optional<std::string> ParseCount(const std::string& flag, const std::string& text, int64_t min,
                                      int64_t* out) {
  const std::string bad = flag + ": expected " +
                          (min > 0 ? "a positive integer" : "a non-negative integer") + ", got '" +
                          text + "'";
  if (!AllDigits(text) || text.size() > 19) return bad;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), nullptr, 10);
  if (errno == ERANGE || v < min) return bad;
  if (v > kMaxCount)
    return flag + ": " + text + " is larger than the limit " + std::to_string(kMaxCount);
  *out = v;
  return std::nullopt;
}

std::optional<std::string> ParseSeed(const std::string& text, uint64_t* out) {
  const std::string bad = "--seed: expected an integer in [0, 2^64), got '" + text + "'";
  if (!AllDigits(text) || text.size() > 20) return bad;
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
  if (errno == ERANGE) return bad;
  *out = v;
  return std::nullopt;
}

// A finite decimal number, > 0 when `positive`, else >= 0. strtod alone would also take
// "inf", "nan", hexadecimal and leading blanks; a number a user types starts with a
// digit or a point.
std::optional<std::string> ParseNumber(const std::string& flag, const std::string& text,
                                       bool positive, double* out) {
  const std::string bad = flag + ": expected " +
                          (positive ? "a positive number" : "a non-negative number") + ", got '" +
                          text + "'";
  if (text.empty() || !((text[0] >= '0' && text[0] <= '9') || text[0] == '.')) return bad;
  if (text.find_first_of("xXpP") != std::string::npos) return bad;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text.c_str(), &end);
  if (*end != '\0' || errno == ERANGE || !std::isfinite(v) || (positive && !(v > 0))) return bad;
  *out = v;
  return std::nullopt;
}

// --trace-steps A:B (or A): 1 <= A <= B.
std::optional<std::string> ParseTraceSteps(const std::string& text, int64_t* first,
                                           int64_t* last) {
  const std::string bad =
      "--trace-steps: expected A:B (steps, 1 <= A <= B) or A, got '" + text + "'";
  const size_t colon = text.find(':');
  const std::string a = text.substr(0, colon);
  const std::string b = colon == std::string::npos ? a : text.substr(colon + 1);
  if (!AllDigits(a) || !AllDigits(b) || a.size() > 10 || b.size() > 10) return bad;
  *first = std::strtoll(a.c_str(), nullptr, 10);
  *last = std::strtoll(b.c_str(), nullptr, 10);
  if (*first < 1 || *last < *first || *last > kMaxCount) return bad;
  return std::nullopt;
}

std::string Number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// A loss scale: a power of two in [1, 2^24] (exec::LossScaler), so that scaling and
// unscaling are exact.
std::optional<std::string> ParseScale(const std::string& flag, const std::string& text,
                                      double* out) {
  if (ParseNumber(flag, text, true, out))
    return flag + ": expected " + (flag == "--loss-scale" ? "auto, dynamic, none or " : "") +
           "a power of two, got '" + text + "'";
  if (!exec::LossScaler::IsPowerOfTwoScale(*out))
    return flag + ": " + text + " is not a power of two in [1, 2^24] (e.g. 1024 or 65536; " +
           "unscaling by a power of two is exact)";
  return std::nullopt;
}

}  // namespace

double LearningRate(const RunOptions& o, int64_t step) {
  if (step <= o.warmup) return o.lr * static_cast<double>(step) / static_cast<double>(o.warmup);
  constexpr double kPi = 3.14159265358979323846;
  const double progress =
      static_cast<double>(step - o.warmup) / static_cast<double>(o.steps - o.warmup);
  return o.min_lr + (o.lr - o.min_lr) * (1 + std::cos(kPi * progress)) / 2;
}

std::optional<std::string> TraceSteps(const RunOptions& o, int64_t first_step, int64_t* first,
                                      int64_t* last) {
  *first = 1;
  *last = 0;
  if (o.trace.empty()) return std::nullopt;
  if (o.trace_first == 0) {
    *first = std::min(first_step + 1, o.steps);
    *last = std::min(first_step + 3, o.steps);
    return std::nullopt;
  }
  if (o.trace_last < first_step)
    return "--trace-steps " + std::to_string(o.trace_first) + ":" + std::to_string(o.trace_last) +
           ": this run starts at step " + std::to_string(first_step) + ", after them";
  *first = std::max(o.trace_first, first_step);
  *last = o.trace_last;
  return std::nullopt;
}

bool IsRunFlag(const std::string& flag) {
  for (const char* f : kFlags)
    if (flag == f) return true;
  return false;
}

const char* RunUsage() {
  return "usage: heiretsu run PLAN_DIR [--data PATH] [--val-data PATH] [--val-every N]\n"
         "           [--val-batches K] [--steps N] [--lr X] [--min-lr X]\n"
         "           [--warmup N] [--weight-decay X] [--grad-clip X] [--seed S]\n"
         "           [--backend cpu|cuda] [--metrics FILE.jsonl] [--save-dir DIR]\n"
         "           [--save-every N] [--resume DIR] [--log-every N] [--cache-dir DIR]\n"
         "           [--on-nonfinite fail|skip] [--max-consecutive-skips N]\n"
         "           [--trace FILE.json] [--trace-steps A:B]\n"
         "           [--sample-every N] [--sample-tokens N]\n"
         "           [--loss-scale auto|dynamic|none|N] [--loss-scale-init N]\n"
         "           [--loss-scale-growth-interval N]\n"
         "\n"
         "  --data PATH        a token shard or a directory of shards (*.bin, llm.c format);\n"
         "                     default: the byte-tokenized licence texts, cached; in a\n"
         "                     directory, shards named *_val_* are validation data, not\n"
         "                     trained on\n"
         "  --val-data PATH    validation shards (default: those *_val_* shards)\n"
         "  --val-every N      the validation loss every N steps and at the last; 0: never\n"
         "                     (default 100)\n"
         "  --val-batches K    global batches of validation data it averages (default 20)\n"
         "  --steps N          the step the run ends at (default 100)\n"
         "  --lr X             peak learning rate after linear warmup (default 1e-3)\n"
         "  --min-lr X         reached by cosine decay at the last step (default lr/10)\n"
         "  --warmup N         warmup steps (default 10)\n"
         "  --weight-decay X   AdamW decoupled weight decay (default 0.1)\n"
         "  --grad-clip X      clip the global gradient norm to X; 0: off (default 1.0)\n"
         "  --seed S           parameter initialization and data order (default 1337)\n"
         "  --metrics FILE     one JSON object per step (appended to when resuming)\n"
         "  --save-dir DIR     write checkpoints DIR/step_NNNNNNNN at the end of the run\n"
         "  --save-every N     ... and every N steps\n"
         "  --resume DIR       continue from the newest complete checkpoint in DIR\n"
         "  --log-every N      print a progress line every N steps (default 10)\n"
         "  --cache-dir DIR    heiretsu's cache; the default corpus goes to DIR/corpus-byte\n"
         "                     (default $XDG_CACHE_HOME/heiretsu or ~/.cache/heiretsu)\n"
         "  --on-nonfinite fail|skip\n"
         "                     a step whose loss or gradient norm is not finite is never\n"
         "                     applied; fail: stop the run (exit 1, the default); skip:\n"
         "                     skip the step, count it and go on\n"
         "  --max-consecutive-skips N\n"
         "                     with skip, fail after more than N skipped steps in a row\n"
         "                     (default 5)\n"
         "  --trace FILE.json  write a Chrome/Perfetto trace of steps 2-4 (one track per\n"
         "                     rank: steps, schedule runs, instructions, waits) and print\n"
         "                     the measured pipeline bubble per stage\n"
         "  --trace-steps A:B  trace steps A to B instead (or A alone)\n"
         "  --sample-every N   print a sample of the model every N steps and at the last\n"
         "                     (the plan's decode program; pp = 1); 0: never (default)\n"
         "  --sample-tokens N  tokens each sample draws (default 64)\n"
         "  --loss-scale auto|dynamic|none|N\n"
         "                     the backward runs on the loss times a power of two, divided\n"
         "                     out of the gradients; dynamic: it halves when a gradient\n"
         "                     overflows (the step is skipped) and doubles after a run of\n"
         "                     clean steps; N: a fixed scale; auto (default): dynamic for\n"
         "                     an fp16 plan, none otherwise\n"
         "  --loss-scale-init N\n"
         "                     dynamic's first scale, a power of two (default 65536)\n"
         "  --loss-scale-growth-interval N\n"
         "                     clean steps after which dynamic doubles it (default 2000)\n";
}

std::optional<std::string> ParseRunOptions(const std::vector<std::string>& args, RunOptions* out) {
  bool min_lr_given = false;
  double fixed_scale = 0;  // --loss-scale N
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (!IsRunFlag(a)) {
      if (!a.empty() && a[0] == '-') return "unknown flag '" + a + "'";
      if (!out->plan_dir.empty())
        return "more than one plan directory given: '" + out->plan_dir + "' and '" + a + "'";
      out->plan_dir = a;
      continue;
    }
    if (i + 1 >= args.size()) return a + ": missing value";
    const std::string& v = args[++i];
    std::optional<std::string> err;
    if (a == "--steps") {
      err = ParseCount(a, v, 1, &out->steps);
    } else if (a == "--lr") {
      err = ParseNumber(a, v, true, &out->lr);
    } else if (a == "--min-lr") {
      err = ParseNumber(a, v, false, &out->min_lr);
      min_lr_given = true;
    } else if (a == "--warmup") {
      err = ParseCount(a, v, 0, &out->warmup);
    } else if (a == "--weight-decay") {
      err = ParseNumber(a, v, false, &out->weight_decay);
    } else if (a == "--grad-clip") {
      err = ParseNumber(a, v, false, &out->grad_clip);
    } else if (a == "--seed") {
      err = ParseSeed(v, &out->seed);
      out->seed_given = true;
    } else if (a == "--backend") {
      if (v != "cpu" && v != "cuda") err = "--backend: expected cpu|cuda, got '" + v + "'";
      out->backend = v;
    } else if (a == "--on-nonfinite") {
      if (v != "fail" && v != "skip") err = "--on-nonfinite: expected fail|skip, got '" + v + "'";
      out->on_nonfinite = v;
    } else if (a == "--max-consecutive-skips") {
      err = ParseCount(a, v, 0, &out->max_consecutive_skips);
    } else if (a == "--save-every") {
      err = ParseCount(a, v, 1, &out->save_every);
    } else if (a == "--val-every") {
      err = ParseCount(a, v, 0, &out->val_every);
    } else if (a == "--sample-every") {
      err = ParseCount(a, v, 0, &out->sample_every);
    } else if (a == "--sample-tokens") {
      err = ParseCount(a, v, 1, &out->sample_tokens);
    } else if (a == "--val-batches") {
      err = ParseCount(a, v, 1, &out->val_batches);
    } else if (a == "--log-every") {
      err = ParseCount(a, v, 1, &out->log_every);
    } else if (a == "--loss-scale") {
      if (v == "auto" || v == "dynamic" || v == "none") {
        out->loss_scale = v;
      } else {
        err = ParseScale(a, v, &fixed_scale);
        out->loss_scale = "fixed";
      }
    } else if (a == "--loss-scale-init") {
      err = ParseScale(a, v, &out->loss_scale_init);
      out->loss_scale_init_given = true;
    } else if (a == "--loss-scale-growth-interval") {
      err = ParseCount(a, v, 1, &out->loss_scale_growth_interval);
    } else if (a == "--trace-steps") {
      err = ParseTraceSteps(v, &out->trace_first, &out->trace_last);
    } else {
      if (v.empty()) err = a + ": empty path";
      std::string* path = a == "--data"       ? &out->data
                          : a == "--val-data" ? &out->val_data
                          : a == "--metrics"  ? &out->metrics
                          : a == "--save-dir" ? &out->save_dir
                          : a == "--resume"   ? &out->resume
                          : a == "--trace"    ? &out->trace
                                              : &out->cache_dir;
      *path = v;
    }
    if (err) return err;
  }
  if (out->plan_dir.empty()) return std::string("no plan directory given");
  if (!min_lr_given) out->min_lr = out->lr / 10;
  if (out->min_lr > out->lr)
    return "--min-lr " + Number(out->min_lr) + " is larger than --lr " + Number(out->lr);
  if (out->save_every > 0 && out->save_dir.empty())
    return std::string("--save-every needs --save-dir DIR");
  if (out->loss_scale == "fixed") {
    if (out->loss_scale_init_given)
      return "--loss-scale " + Number(fixed_scale) +
             " is a fixed scale: --loss-scale-init is for --loss-scale dynamic";
    out->loss_scale_init = fixed_scale;
  }
  if (out->trace_first > 0 && out->trace.empty())
    return std::string("--trace-steps needs --trace FILE.json");
  if (out->trace_last > out->steps)
    return "--trace-steps " + std::to_string(out->trace_first) + ":" +
           std::to_string(out->trace_last) + ": past --steps " + std::to_string(out->steps);
  return std::nullopt;
}

}  // namespace heiretsu::cli
