// The pipeline timeline a plan directory's schedules imply, before anything runs:
// every stage's runs placed in time under a cost model (a forward takes `forward`
// time units, a backward `backward`, each half of a split backward half of that;
// the units of the step take none) and the
// dependencies the stages' sends and recvs stand for (a microbatch's forward on
// stage s starts after its forward on stage s - 1 ends, its backward (or a split
// backward's input part) after that on stage s + 1 ends, a weight part waits for
// nobody; a stage runs its schedule in order). From it:
// the step's length, each stage's idle time (the bubble) and the text grid and
// Mermaid chart `heiretsu explain` prints. The measured counterpart is the trace
// (`heiretsu run --trace`).
#ifndef HEIRETSU_RUNTIME_PLAN_TIMELINE_H_
#define HEIRETSU_RUNTIME_PLAN_TIMELINE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/base/error.h"
#include "runtime/plan/plan.h"

namespace heiretsu::plan {

struct TimedRun {
  const fb::Unit* unit;
  int64_t microbatch;  // -1: a unit of the step
  double start, end;
};

struct Timeline {
  std::vector<std::vector<TimedRun>> stages;  // per stage, in schedule order
  double length = 0;                          // the step: the last run's end
  // Idle time over the stages' busy-or-idle time: 1 - busy / (stages x length).
  double bubble = 0;
  int64_t chunks = 1;  // virtual chunks per stage (interleaved placement)
  bool split = false;  // a split backward (backward_weight units: zero-bubble)
};

// Places the programs' (indexed by stage) microbatch runs in time. Fails when the
// schedules cannot all run (a dependency cycle: the collective check refuses
// such plans at compile time).
Status SimulateTimeline(const std::vector<LoadedPlan>& programs, double forward, double backward,
                        Timeline* out);

// The published bubble with pp stages and m microbatches, for comparison: GPipe's
// and 1F1B's (pp - 1) / (m + pp - 1); interleaved 1F1B's over v chunks per stage
// (Narayanan et al. 2021) (pp - 1) / (v m + pp - 1); with a split backward
// (`split`: ZB-H1, Qi et al. 2024, with F, B and W of equal time)
// (pp - 1) / (3 m + pp - 1).
double FormulaBubble(int64_t pp, int64_t microbatches, bool split, int64_t chunks = 1);

// The timeline as a stage x time grid, one column per `unit` of time: "F3" and
// "B3" for microbatch 3's forward and backward ("W3" a split backward's weight
// part, "F3.1" chunk 1's forward), "." idle.
std::string TimelineGrid(const Timeline& timeline, double unit);

// The timeline as a Mermaid gantt chart (for docs).
std::string TimelineMermaid(const Timeline& timeline);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_TIMELINE_H_
