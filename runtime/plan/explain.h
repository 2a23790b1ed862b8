// `heiretsu explain PLAN_DIR`: what a compiled job will use, per rank, before it
// runs: memory by kind (from the memory plan) and communication per step by group.
#ifndef HEIRETSU_RUNTIME_PLAN_EXPLAIN_H_
#define HEIRETSU_RUNTIME_PLAN_EXPLAIN_H_

#include <string>

#include "runtime/plan/plan.h"

namespace heiretsu::plan {

// The report for one loaded program (all ranks that run it share the numbers).
std::string Explain(const LoadedPlan& plan);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_EXPLAIN_H_
