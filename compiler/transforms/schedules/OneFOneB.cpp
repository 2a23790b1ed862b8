//===- OneFOneB.cpp - one forward, one backward ---------------------------===//

#include "compiler/transforms/schedules/Schedules.h"

#include <algorithm>

namespace heiretsu::schedules {

std::vector<Step> oneFOneB(int64_t pp, int64_t stage, int64_t microbatches) {
  const int64_t warmup = std::min(pp - stage - 1, microbatches);
  std::vector<Step> steps;
  int64_t forward = 0, backward = 0;
  for (; forward < warmup; ++forward)
    steps.push_back({Pass::forward, forward});
  // Steady state: the next forward, then the oldest backward.
  for (; forward < microbatches; ++forward, ++backward) {
    steps.push_back({Pass::forward, forward});
    steps.push_back({Pass::backward, backward});
  }
  for (; backward < microbatches; ++backward) // cool-down
    steps.push_back({Pass::backward, backward});
  return steps;
}

} // namespace heiretsu::schedules
