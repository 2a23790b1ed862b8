// What a run does with a step whose loss or global gradient norm is not finite
// (issue #10). The executor never applies such a step (StepResult::nonfinite);
// this policy decides whether the run goes on:
//   fail  the first such step ends the run: exit 1, naming the step and values;
//   skip  the step is skipped (the model stays as it was before it) and counted;
//         more than `max_consecutive` skipped steps in a row end the run as above.
// Every rank sees the same loss and gradient norm, so every rank decides alike.
#ifndef HEIRETSU_RUNTIME_EXEC_NONFINITE_H_
#define HEIRETSU_RUNTIME_EXEC_NONFINITE_H_

#include <cstdint>
#include <string>

#include "runtime/base/error.h"
#include "runtime/exec/executor.h"

namespace heiretsu::exec {

class NonfinitePolicy {
 public:
  // `skip`: the skip policy (else fail).
  NonfinitePolicy(bool skip, int64_t max_consecutive)
      : skip_(skip), max_consecutive_(max_consecutive) {}

  // Called after every step. Returns the error that ends the run, or nullopt (the
  // step was applied, or skipped under the skip policy).
  Status Observe(int64_t step, const StepResult& result);

  int64_t skipped() const { return skipped_; }
  int64_t consecutive() const { return consecutive_; }
  // "step 7: loss 5.2 and gradient norm nan": what was not finite.
  static std::string Describe(int64_t step, const StepResult& result);

 private:
  bool skip_;
  int64_t max_consecutive_;
  int64_t skipped_ = 0;
  int64_t consecutive_ = 0;
};

}  // namespace heiretsu::exec

#endif  // HEIRETSU_RUNTIME_EXEC_NONFINITE_H_
