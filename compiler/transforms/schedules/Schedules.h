//===- Schedules.h - pipeline schedules: the order of a stage's microbatches ===//
//
// Each pipeline schedule is one function, in its own file, giving the order in
// which stage `stage` of `pp` runs the forward and backward passes of the step's
// `microbatches` microbatches. heiretsu-schedule (Schedule.cpp) turns that order
// into the program's plan.schedule: each step into runs of the program's units of
// that kind, each microbatch on an activation slot, then the units of the step.
// A schedule only orders; whether the stages' orders fit together (every recv's
// send is posted, no stage waits forever) is heiretsu-check-collectives' to prove.
//
//===----------------------------------------------------------------------===//

#ifndef HEIRETSU_COMPILER_TRANSFORMS_SCHEDULES_SCHEDULES_H
#define HEIRETSU_COMPILER_TRANSFORMS_SCHEDULES_SCHEDULES_H

#include <cstdint>
#include <vector>

namespace heiretsu::schedules {

/// backward: the whole backward pass, or (a split backward) its input-gradient
/// part; weight: the weight-gradient part of a split backward.
enum class Pass { forward, backward, weight };

struct Step {
  Pass pass;
  int64_t microbatch;
  int64_t chunk = 0; // the stage's virtual chunk (interleaved placement)
  bool operator==(const Step &) const = default;
};

/// GPipe (Huang et al., 2019): every microbatch's forward, then every backward in
/// the same order. A stage keeps all `microbatches` microbatches' activations.
std::vector<Step> gpipe(int64_t pp, int64_t stage, int64_t microbatches);

/// 1F1B (Narayanan et al., PipeDream-Flush, 2021; Megatron-LM's default): stage s
/// runs min(pp - s - 1, M) warm-up forwards, then alternates one forward and one
/// backward, then drains the remaining backwards. Stage s keeps at most
/// min(pp - s, M) microbatches' activations; the bubble is GPipe's.
std::vector<Step> oneFOneB(int64_t pp, int64_t stage, int64_t microbatches);

/// Interleaved 1F1B (Narayanan et al. 2021, Section 2.2; Megatron-LM's virtual
/// pipeline): each stage holds `chunks` model chunks (stage s: chunks s, s + pp,
/// ...), and microbatches go through them in groups of pp: the k-th forward of the
/// stage is microbatch (k / (pp chunks)) pp + k mod pp of local chunk
/// (k / pp) mod chunks, the k-th backward the same microbatch of the chunks in
/// reverse. Stage s runs (pp - s - 1) 2 + (chunks - 1) pp warm-up forwards (all of
/// them when M = pp), then one forward and one backward alternately, then the
/// remaining backwards. The bubble shrinks by the number of chunks:
/// (pp - 1) / (chunks M + pp - 1). Needs M a multiple of pp.
std::vector<Step> interleaved(int64_t pp, int64_t stage, int64_t microbatches, int64_t chunks);

/// ZB-H1 (Qi et al., "Zero Bubble Pipeline Parallelism", ICLR 2024): 1F1B with the
/// backward split into its input-gradient pass B, which the previous stage waits
/// for, and its weight-gradient pass W, which nobody waits for. Stage s runs 1F1B's
/// forwards and B passes, and lets its W passes lag s microbatches behind its B
/// passes, so the cool-down's waits are filled with W passes: with equal F, B and
/// W times the bubble is (pp - 1) / (3 M + pp - 1), a third of 1F1B's. Every stage
/// keeps at most pp microbatches between their forward and their W (1F1B's first
/// stage's peak).
std::vector<Step> zeroBubbleH1(int64_t pp, int64_t stage, int64_t microbatches);

} // namespace heiretsu::schedules

#endif // HEIRETSU_COMPILER_TRANSFORMS_SCHEDULES_SCHEDULES_H
