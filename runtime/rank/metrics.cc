// Metrics lines; see metrics.h.
#include "runtime/rank/metrics.h"

#include <cerrno>
#include <cmath>
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

std::string ProgressLine(const StepLine& line, int64_t steps) {
  const int width = static_cast<int>(std::to_string(steps).size());
  char text[256];
  std::snprintf(text, sizeof text,
                "step %*lld/%lld | loss %.4f | lr %.2e | grad norm %.4f | %s tok/s | %.1f ms",
                width, static_cast<long long>(line.options.step), static_cast<long long>(steps),
                line.result.loss, line.options.lr, line.result.grad_norm,
                Throughput(line.tokens_per_s()).c_str(), line.seconds * 1e3);
  if (!std::isnan(line.result.val_loss)) {
    char val[64];
    std::snprintf(val, sizeof val, " | val loss %.4f", line.result.val_loss);
    return std::string(text) + val;
  }
  return text;
}

}  // namespace heiretsu::rank
