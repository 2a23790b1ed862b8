// Loss scaling for 16-bit activations (issue #13; docs/architecture.md, "Mixed
// precision"). float16 ends at 65504 and its smallest subnormal is 2^-24, so the
// gradients of a small loss underflow in an fp16 plan's activation gradients. The
// step's backward runs on scale x the loss (StepOptions::loss_scale: the loss's
// gradient seeds are multiplied by it); the gradient norm and the update divide it
// back out (exec::StepScalars). The scale is always a power of two in [1, kMaxScale],
// so scaling and unscaling are exact.
//
// Three modes:
//   none     the scale is 1 (fp32 and bf16 plans by default: bf16 has fp32's range);
//   fixed    the scale never changes;
//   dynamic  (fp16 plans by default) after each step, with the executor's verdict,
//            which is the same on every rank (its loss and norm are global):
//     - an overflow, a step whose loss is finite and whose gradient norm is not, at a
//       scale above 1: the executor did not apply it; the scale halves, the run of
//       clean steps restarts at 0 and the overflow is counted. The run goes on.
//     - a clean step (applied): counted; after growth_interval clean steps in a row
//       the scale doubles (up to kMaxScale) and the count restarts.
//   Anything else that was not applied (a non-finite loss: the forward overflowed,
//   which no scale cures; an overflow at scale 1) is the non-finite policy's
//   (nonfinite.h) in every mode.
// The state (scale, clean steps, overflows) is saved in checkpoints, so a resumed run
// scales every step exactly as the uninterrupted one.
#ifndef HEIRETSU_RUNTIME_EXEC_LOSS_SCALE_H_
#define HEIRETSU_RUNTIME_EXEC_LOSS_SCALE_H_

#include <cmath>
#include <cstdint>
#include <string>

// Header-only apart from LossScaler's members (loss_scale.cc), so that option parsing
// (runtime/cli) can check a scale without linking the executor.
namespace heiretsu::exec {

struct StepResult;  // executor.h

class LossScaler {
 public:
  static constexpr double kMaxScale = 16777216.0;  // 2^24
  enum class Mode { kNone, kFixed, kDynamic };
  struct State {
    double scale = 1;
    int64_t clean_steps = 0;  // applied steps since the scale last changed
    int64_t overflows = 0;    // steps skipped for an overflow, in the whole run
  };

  LossScaler() = default;
  // `state.scale` must be a power of two in [1, kMaxScale] (IsPowerOfTwoScale);
  // kNone takes 1 whatever it says. growth_interval >= 1.
  LossScaler(Mode mode, State state, int64_t growth_interval);

  double scale() const { return state_.scale; }
  Mode mode() const { return mode_; }
  const State& state() const { return state_; }

  // After every step. Returns true when the step was an overflow this scaler took
  // (dynamic mode): not applied, and not the non-finite policy's to judge.
  bool Observe(const StepResult& result);

  // Whether `x` may be a scale: a power of two in [1, kMaxScale].
  static bool IsPowerOfTwoScale(double x) {
    int exponent = 0;
    return x >= 1 && x <= kMaxScale && std::frexp(x, &exponent) == 0.5;
  }
  // "dynamic, 65536 (halves on an overflow, doubles after 2000 clean steps)",
  // "fixed, 1024", "none".
  std::string Describe() const;

 private:
  Mode mode_ = Mode::kNone;
  State state_;
  int64_t growth_interval_ = 1;
};

}  // namespace heiretsu::exec

#endif  // HEIRETSU_RUNTIME_EXEC_LOSS_SCALE_H_
