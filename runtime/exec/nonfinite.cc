// See nonfinite.h.
#include "runtime/exec/nonfinite.h"

#include <cmath>
#include <cstdio>

namespace heiretsu::exec {

namespace {
// "nan" whatever its sign bit; "inf", "-inf"; else %g.
std::string Value(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}
}  // namespace

std::string NonfinitePolicy::Describe(int64_t step, const StepResult& r) {
  char buf[160];
  if (!std::isfinite(r.loss))
    std::snprintf(buf, sizeof buf, "step %lld: the loss is %s", static_cast<long long>(step),
                  Value(r.loss).c_str());
  else
    std::snprintf(buf, sizeof buf, "step %lld: the gradient norm is %s (loss %.4f)",
                  static_cast<long long>(step), Value(r.grad_norm).c_str(), r.loss);
  return buf;
}

Status NonfinitePolicy::Observe(int64_t step, const StepResult& r) {
  if (!r.nonfinite) {
    consecutive_ = 0;
    return std::nullopt;
  }
  if (!skip_)
    return Error::Failure(Describe(step, r) +
                          ": the update was not applied and no checkpoint is written from it "
                          "(lower --lr, or give --on-nonfinite skip to skip such steps)");
  ++skipped_;
  ++consecutive_;
  if (consecutive_ > max_consecutive_)
    return Error::Failure(Describe(step, r) + ": " + std::to_string(consecutive_) +
                          " steps in a row were not finite, more than --max-consecutive-skips " +
                          std::to_string(max_consecutive_) +
                          "; the training has diverged (lower --lr)");
  return std::nullopt;
}

}  // namespace heiretsu::exec
