//===- Interleaved.cpp - 1F1B over virtual chunks --------------------------===//

#include "compiler/transforms/schedules/Schedules.h"

#include <algorithm>

namespace heiretsu::schedules {

std::vector<Step> interleaved(int64_t pp, int64_t stage, int64_t microbatches, int64_t chunks) {
  const int64_t total = microbatches * chunks, group = pp * chunks;
  const int64_t warmup = microbatches == pp
                             ? total
                             : std::min((pp - stage - 1) * 2 + (chunks - 1) * pp, total);
  auto step = [&](int64_t k, bool forward) {
    const int64_t chunk = (k % group) / pp;
    return Step{forward ? Pass::forward : Pass::backward, (k / group) * pp + k % pp,
                forward ? chunk : chunks - 1 - chunk};
  };
  std::vector<Step> steps;
  for (int64_t k = 0; k < warmup; ++k)
    steps.push_back(step(k, true));
  for (int64_t k = 0; k < total - warmup; ++k) { // steady state
    steps.push_back(step(warmup + k, true));
    steps.push_back(step(k, false));
  }
  for (int64_t k = std::max<int64_t>(total - warmup, 0); k < total; ++k) // cool-down
    steps.push_back(step(k, false));
  return steps;
}

} // namespace heiretsu::schedules
