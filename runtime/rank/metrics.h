// The metrics of a run (docs/architecture.md): one JSON object per step, written by
// rank 0, with step, loss, loss_hex (the loss's exact bits, for bit-identity
// checks), lr, grad_norm, tokens_per_s and step_ms, val_loss on a validation step,
// MoE models moe_dropped,
// moe_tokens_min and moe_tokens_max (exec::StepResult), with loss scaling
// loss_scale (the scale the step ran at) and overflows (the steps the scaler skipped
// so far), and "skipped": true on a
// step not applied because its loss or gradient norm was not finite; the human
// progress line with the elapsed time and an estimate of the time left; and the
// summary that ends a run.
#ifndef HEIRETSU_RUNTIME_RANK_METRICS_H_
#define HEIRETSU_RUNTIME_RANK_METRICS_H_

#include <cstdint>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include "runtime/base/error.h"
#include "runtime/exec/executor.h"

namespace heiretsu::rank {

// What a line says of one step: its number and learning rate (options), its loss,
// gradient norm and whether it was applied (result), and its throughput.
struct StepLine {
  const exec::StepOptions& options;
  const exec::StepResult& result;
  double seconds;  // the step's wall time
  int64_t tokens;  // tokens of the global batch
  double tokens_per_s() const { return static_cast<double>(tokens) / seconds; }
};

class MetricsWriter {
 public:
  // Opens `path` (truncating, or appending for a resumed run, so the file holds the
  // whole run; steps an interrupted run had logged after its checkpoint appear
  // again, the later line winning). An empty path writes nothing.
  Status Open(const std::string& path, bool append);
  // Writes one line and flushes it, so a crash leaves only whole lines behind.
  Status Write(const StepLine& line);

 private:
  std::string path_;
  std::unique_ptr<FILE, int (*)(FILE*)> file_{nullptr, &std::fclose};
};

// A duration for people: "0.4s", "42s", "4m05s", "2h07m" (tenths below 10 s, then
// whole seconds, then minutes and hours; rounded).
std::string Duration(double seconds);

// Where the run stands after a step: the wall time since its first step began
// (validations and checkpoints included) and the estimate of what is left, the mean
// wall time per step so far times the steps to go (0 at the last step).
struct Progress {
  double elapsed_seconds;
  double eta_seconds;
  // After `done` of the run's `total` steps (done >= 1) in `elapsed` seconds.
  static Progress After(double elapsed, int64_t done, int64_t total) {
    return {elapsed, elapsed / static_cast<double>(done) * static_cast<double>(total - done)};
  }
};

// "step  3/10 | loss 4.1234 | lr 3.00e-03 | grad norm 1.2345 | 5.8k tok/s | 22.0 ms |
//  elapsed 0.1s | ETA 0.2s", then " | val loss 4.2345" on a validation step.
std::string ProgressLine(const StepLine& line, int64_t steps, const Progress& progress);

// A learning-rate schedule (cli::LearningRate's parameters), as a checkpoint records
// the one that saved it (checkpoint::Header).
struct LrSchedule {
  double lr = 0, min_lr = 0;
  int64_t warmup = 0, total_steps = 0;  // total_steps: --steps, where it reaches min_lr
};

// What a resumed run changes of its checkpoint's schedule: each value that differs,
// "lr 3e-4 (checkpoint: 6e-4), warmup 100 (checkpoint: 50)", in the order lr, min_lr,
// warmup, steps; empty when none does. Numbers are written in the fewest digits that
// read back as the same double.
std::string ScheduleChanges(const LrSchedule& now, const LrSchedule& saved);

// The account of a run for the summary that ends it: Add every step's line (after
// its validation), set the rest, and print SummaryText.
struct RunSummary {
  int64_t first_step = 1, last_step = 0;  // the steps of this run (a resumed run's first
                                           // is its checkpoint's step + 1)
  std::string resumed;     // the checkpoint it resumed; empty: it started at step 0
  int64_t steps = 0;       // steps run
  int64_t skipped = 0;     // of them not applied (a loss or gradient norm not finite)
  int64_t overflowed = 0;  // of those, the loss scaler's overflows
  double first_loss = std::nan(""), last_loss = std::nan("");  // of applied steps
  int64_t first_loss_step = 0, last_loss_step = 0;
  bool validating = false;  // the run had validation data and --val-every > 0
  double best_val_loss = std::nan("");
  int64_t best_val_step = 0, evaluations = 0;
  int64_t tokens = 0;            // of the global batches of the steps run
  int64_t tokens_per_step = 0;
  double step_seconds = 0;       // the steps' own wall time (StepLine::seconds)
  double val_seconds = 0;        // spent on validation
  double checkpoint_seconds = 0;  // spent saving checkpoints
  double wall_seconds = 0;       // of the whole run, loading included
  std::string checkpoint;        // the last checkpoint saved; empty: none
  std::string metrics;           // the metrics file; empty: none

  void Add(const StepLine& line);
};

// The block, one "  label  value" line each after a "summary:" line: the steps, first
// -> last loss, the best validation loss, tokens, wall time (and where it went), the
// mean tokens/s over the steps' own time, the checkpoint and the metrics file.
std::string SummaryText(const RunSummary& summary);

}  // namespace heiretsu::rank

#endif  // HEIRETSU_RUNTIME_RANK_METRICS_H_
