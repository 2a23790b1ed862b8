// See loss_scale.h.
#include "runtime/exec/loss_scale.h"

#include <cmath>
#include <cstdio>

#include "runtime/exec/executor.h"

namespace heiretsu::exec {

LossScaler::LossScaler(Mode mode, State state, int64_t growth_interval)
    : mode_(mode), state_(state), growth_interval_(growth_interval < 1 ? 1 : growth_interval) {
  if (mode_ == Mode::kNone) state_.scale = 1;
}

bool LossScaler::Observe(const StepResult& r) {
  if (mode_ != Mode::kDynamic) return false;
  if (!r.nonfinite) {
    if (++state_.clean_steps >= growth_interval_) {
      if (state_.scale < kMaxScale) state_.scale *= 2;
      state_.clean_steps = 0;
    }
    return false;
  }
  state_.clean_steps = 0;
  if (!std::isfinite(r.loss) || state_.scale <= 1) return false;  // the policy's
  state_.scale /= 2;
  ++state_.overflows;
  return true;
}

std::string LossScaler::Describe() const {
  char text[128];
  switch (mode_) {
    case Mode::kNone:
      return "none";
    case Mode::kFixed:
      std::snprintf(text, sizeof text, "fixed, %.0f", state_.scale);
      return text;
    case Mode::kDynamic:
      std::snprintf(text, sizeof text,
                    "dynamic, %.0f (halves on an overflow, doubles after %lld clean steps)",
                    state_.scale, static_cast<long long>(growth_interval_));
      return text;
  }
  return "";
}

}  // namespace heiretsu::exec
