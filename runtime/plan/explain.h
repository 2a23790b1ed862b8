// `heiretsu explain PLAN_DIR`: what a compiled job will use, per rank, before it
// runs: for each program (pipeline stage) the ranks that run it, its inputs, its
// schedule, memory by kind (from the memory plan) and communication per step by
// group, all read from the plan's units and schedule.
#ifndef HEIRETSU_RUNTIME_PLAN_EXPLAIN_H_
#define HEIRETSU_RUNTIME_PLAN_EXPLAIN_H_

#include <functional>
#include <string>
#include <vector>

#include "runtime/plan/plan.h"

namespace heiretsu::plan {

// The report for a loaded plan directory (LoadPlanDirectory), indexed by stage.
// With several pipeline stages it ends with the schedules placed in time as a
// stage x time grid (runtime/plan/timeline.h: a forward takes 1 unit, a backward
// 2), the bubble that implies beside (p - 1) / (m + p - 1), and each stage's
// activation peak.
// `backend_memory` (when set) adds lines to each program's memory section: what a
// backend takes beyond the arena (the driver passes the CUDA backend's,
// runtime/cuda/device_memory.h).
using BackendMemory = std::function<std::string(const fb::Plan&, const MeshCoordinates&)>;
std::string Explain(const std::vector<LoadedPlan>& programs,
                    const BackendMemory& backend_memory = {});

// "N (x.xx MiB)": bytes as explain prints them.
std::string FormatBytes(uint64_t bytes);

// The same timeline as a Mermaid gantt chart (`heiretsu explain --format mermaid`).
std::string ExplainMermaid(const std::vector<LoadedPlan>& programs);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_EXPLAIN_H_
