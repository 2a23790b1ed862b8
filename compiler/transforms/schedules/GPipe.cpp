//===- GPipe.cpp - all forwards, then all backwards -----------------------===//

#include "compiler/transforms/schedules/Schedules.h"

namespace heiretsu::schedules {

std::vector<Step> gpipe(int64_t /*pp*/, int64_t /*stage*/, int64_t microbatches) {
  std::vector<Step> steps;
  for (int64_t m = 0; m < microbatches; ++m)
    steps.push_back({Pass::forward, m});
  for (int64_t m = 0; m < microbatches; ++m)
    steps.push_back({Pass::backward, m});
  return steps;
}

} // namespace heiretsu::schedules
