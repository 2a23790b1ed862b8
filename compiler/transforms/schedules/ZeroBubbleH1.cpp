//===- ZeroBubbleH1.cpp - 1F1B with weight gradients filling the bubble ---===//

#include "compiler/transforms/schedules/Schedules.h"

#include <algorithm>

namespace heiretsu::schedules {

std::vector<Step> zeroBubbleH1(int64_t pp, int64_t stage, int64_t microbatches) {
  const int64_t warmup = std::min(pp - stage - 1, microbatches);
  const int64_t lag = stage; // W passes run this many microbatches behind B passes
  std::vector<Step> steps;
  int64_t weight = 0;
  for (int64_t m = 0; m < warmup; ++m)
    steps.push_back({Pass::forward, m});
  // Steady state: a forward, the oldest B, and (once `lag` B passes are ahead)
  // the oldest W.
  for (int64_t b = 0; b < microbatches - warmup; ++b) {
    steps.push_back({Pass::forward, warmup + b});
    steps.push_back({Pass::backward, b});
    if (b >= lag)
      steps.push_back({Pass::weight, weight++});
  }
  // Cool-down: the remaining B passes, each followed by a W while W lags by more
  // than `lag`; then the W passes left.
  for (int64_t b = microbatches - warmup; b < microbatches; ++b) {
    steps.push_back({Pass::backward, b});
    if (b - lag >= weight)
      steps.push_back({Pass::weight, weight++});
  }
  while (weight < microbatches)
    steps.push_back({Pass::weight, weight++});
  return steps;
}

} // namespace heiretsu::schedules
