// Metrics lines; see metrics.h.
#include "runtime/rank/metrics.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>

namespace heiretsu::rank {
namespace {

// JSON has no NaN or infinity; a gradient norm can overflow.
std::string JsonNumber(double v, const char* format) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string Throughput(double tokens_per_s) {
  char buf[32];
  if (tokens_per_s >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM", tokens_per_s / 1e6);
  } else if (tokens_per_s >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1fk", tokens_per_s / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", tokens_per_s);
  }
  return buf;
}

}  // namespace

Status MetricsWriter::Open(const std::string& path, bool append) {
  path_ = path;
  if (path.empty()) return std::nullopt;
  file_.reset(std::fopen(path.c_str(), append ? "a" : "w"));
  if (!file_)
    return Error::BadInput(path + ": cannot open metrics file: " + std::strerror(errno));
  return std::nullopt;
}

Status MetricsWriter::Write(const StepLine& line) {
  if (!file_) return std::nullopt;
  const exec::StepResult& r = line.result;
  char loss_hex[40];
  std::snprintf(loss_hex, sizeof loss_hex, "%a", r.loss);
  // A validation step's loss; MoE models: the dropped fraction and the range of
  // slots an expert kept.
  std::string moe;
  if (!std::isnan(r.val_loss)) moe += ",\"val_loss\":" + JsonNumber(r.val_loss, "%.17g");
  if (!std::isnan(r.moe_dropped))
    moe += ",\"moe_dropped\":" + JsonNumber(r.moe_dropped, "%.6g") +
          ",\"moe_tokens_min\":" + JsonNumber(r.moe_tokens_min, "%.9g") +
          ",\"moe_tokens_max\":" + JsonNumber(r.moe_tokens_max, "%.9g");
  if (!std::isnan(r.loss_scale))
    moe += ",\"loss_scale\":" + JsonNumber(r.loss_scale, "%.17g") +
           ",\"overflows\":" + std::to_string(r.overflows);
  std::fprintf(file_.get(),
               "{\"step\":%lld,\"loss\":%s,\"loss_hex\":\"%s\",\"lr\":%s,\"grad_norm\":%s,"
               "\"tokens_per_s\":%s,\"step_ms\":%s%s%s}\n",
               static_cast<long long>(line.options.step), JsonNumber(r.loss, "%.17g").c_str(),
               loss_hex, JsonNumber(line.options.lr, "%.9g").c_str(),
               JsonNumber(r.grad_norm, "%.9g").c_str(), JsonNumber(line.tokens_per_s(), "%.6g").c_str(),
               JsonNumber(line.seconds * 1e3, "%.6g").c_str(), moe.c_str(),
               r.nonfinite ? ",\"skipped\":true" : "");
  if (std::fflush(file_.get()) != 0 || std::ferror(file_.get()))
    return Error::Failure(path_ + ": cannot write: " + std::strerror(errno));
  return std::nullopt;
}

std::string Duration(double seconds) {
  char text[32];
  if (!(seconds >= 0)) seconds = 0;
  if (seconds < 9.95) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
    return text;
  }
  const long long s = std::llround(seconds);
  if (s < 60) {
    std::snprintf(text, sizeof text, "%llds", s);
  } else if (s < 3600) {
    std::snprintf(text, sizeof text, "%lldm%02llds", s / 60, s % 60);
  } else {
    const long long m = (s + 30) / 60;  // to the nearest minute
    std::snprintf(text, sizeof text, "%lldh%02lldm", m / 60, m % 60);
  }
  return text;
}

std::string ProgressLine(const StepLine& line, int64_t steps, const Progress& progress) {
  const int width = static_cast<int>(std::to_string(steps).size());
  char text[320];
  std::snprintf(text, sizeof text,
                "step %*lld/%lld | loss %.4f | lr %.2e | grad norm %.4f | %s tok/s | %.1f ms | "
                "elapsed %s | ETA %s",
                width, static_cast<long long>(line.options.step), static_cast<long long>(steps),
                line.result.loss, line.options.lr, line.result.grad_norm,
                Throughput(line.tokens_per_s()).c_str(), line.seconds * 1e3,
                Duration(progress.elapsed_seconds).c_str(), Duration(progress.eta_seconds).c_str());
  if (!std::isnan(line.result.val_loss)) {
    char val[64];
    std::snprintf(val, sizeof val, " | val loss %.4f", line.result.val_loss);
    return std::string(text) + val;
  }
  return text;
}

namespace {

// The fewest significant digits that read back as `v`; an exponent without '+' or
// leading zeros below 1e-2 and from 1e5 on: 3e-4, 0.05, 2.5e-5, 100.
std::string ShortNumber(double v) {
  char text[40];
  const double a = std::fabs(v);
  const bool exponent_form = v != 0 && (a < 1e-2 || a >= 1e5);
  for (int digits = 1; digits <= 17; ++digits) {
    if (exponent_form) {
      std::snprintf(text, sizeof text, "%.*e", digits - 1, v);
    } else {
      std::snprintf(text, sizeof text, "%.*g", digits, v);
    }
    if (std::strtod(text, nullptr) == v) break;
  }
  std::string out = text;
  const size_t e = out.find('e');
  if (e == std::string::npos) return out;
  std::string exponent = out.substr(e + 1);
  const bool negative = exponent[0] == '-';
  if (exponent[0] == '-' || exponent[0] == '+') exponent.erase(0, 1);
  exponent.erase(0, std::min(exponent.find_first_not_of('0'), exponent.size() - 1));
  return out.substr(0, e) + "e" + (negative ? "-" : "") + exponent;
}

}  // namespace

std::string ScheduleChanges(const LrSchedule& now, const LrSchedule& saved) {
  std::string out;
  auto differs = [&out](const char* name, const std::string& a, const std::string& b) {
    if (a == b) return;
    out += (out.empty() ? "" : ", ") + std::string(name) + " " + a + " (checkpoint: " + b + ")";
  };
  if (now.lr != saved.lr) differs("lr", ShortNumber(now.lr), ShortNumber(saved.lr));
  if (now.min_lr != saved.min_lr)
    differs("min_lr", ShortNumber(now.min_lr), ShortNumber(saved.min_lr));
  differs("warmup", std::to_string(now.warmup), std::to_string(saved.warmup));
  differs("steps", std::to_string(now.total_steps), std::to_string(saved.total_steps));
  return out;
}

void RunSummary::Add(const StepLine& line) {
  const exec::StepResult& r = line.result;
  ++steps;
  tokens += line.tokens;
  step_seconds += line.seconds;
  if (r.nonfinite) {
    ++skipped;
    if (r.overflow) ++overflowed;
  } else if (std::isfinite(r.loss)) {
    if (std::isnan(first_loss)) {
      first_loss = r.loss;
      first_loss_step = line.options.step;
    }
    last_loss = r.loss;
    last_loss_step = line.options.step;
  }
  if (!std::isnan(r.val_loss)) {
    ++evaluations;
    if (std::isnan(best_val_loss) || r.val_loss < best_val_loss) {
      best_val_loss = r.val_loss;
      best_val_step = line.options.step;
    }
  }
}

namespace {

// 1234567 -> "1,234,567".
std::string Grouped(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (n < 0 ? "-" : "") + out;
}

std::string Plural(int64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

}  // namespace

std::string SummaryText(const RunSummary& s) {
  std::string out = "summary:\n";
  auto item = [&out](const char* label, const std::string& value) {
    char head[32];
    std::snprintf(head, sizeof head, "  %-12s ", label);
    out += head + value + "\n";
  };
  char text[160];
  std::string steps = std::to_string(s.first_step) + "-" + std::to_string(s.last_step) + " (" +
                      Plural(s.steps, "step");
  if (!s.resumed.empty()) steps += ", resumed from " + s.resumed;
  if (s.overflowed > 0)
    steps += "; " + std::to_string(s.overflowed) + " skipped, a gradient overflowed";
  if (s.skipped > s.overflowed)
    steps += "; " + std::to_string(s.skipped - s.overflowed) + " skipped, not finite";
  item("steps", steps + ")");
  if (std::isnan(s.first_loss)) {
    item("loss", "none: no step was applied");
  } else {
    std::snprintf(text, sizeof text, "%.4f -> %.4f (step %lld -> %lld)", s.first_loss, s.last_loss,
                  static_cast<long long>(s.first_loss_step),
                  static_cast<long long>(s.last_loss_step));
    item("loss", text);
  }
  if (s.evaluations > 0) {
    std::snprintf(text, sizeof text, "best %.4f at step %lld (%s)", s.best_val_loss,
                  static_cast<long long>(s.best_val_step),
                  Plural(s.evaluations, "evaluation").c_str());
    item("val loss", text);
  } else if (s.validating) {
    item("val loss", "none measured (no applied step was a validation step)");
  } else {
    item("val loss", "none: no validation data (--val-data PATH, or *_val_* shards in --data DIR)");
  }
  item("tokens", Grouped(s.tokens) + " (" + Grouped(s.tokens_per_step) + " per step)");
  std::string wall = Duration(s.wall_seconds) + " (steps " + Duration(s.step_seconds);
  if (s.val_seconds > 0) wall += ", validation " + Duration(s.val_seconds);
  if (s.checkpoint_seconds > 0) wall += ", checkpoints " + Duration(s.checkpoint_seconds);
  const double rest = s.wall_seconds - s.step_seconds - s.val_seconds - s.checkpoint_seconds;
  item("wall time", wall + ", loading and setup " + Duration(rest > 0 ? rest : 0) + ")");
  item("throughput", (s.step_seconds > 0 ? Throughput(static_cast<double>(s.tokens) / s.step_seconds)
                                         : std::string("-")) +
                         " tok/s (the mean over the steps' own time)");
  item("checkpoint", s.checkpoint.empty() ? "none saved (--save-dir DIR saves one at the end)"
                                          : s.checkpoint);
  item("metrics", s.metrics.empty() ? "not written (--metrics FILE.jsonl writes one line per step)"
                                    : s.metrics);
  return out;
}

}  // namespace heiretsu::rank
