// The metrics of a run (docs/architecture.md): one JSON object per step, written by
// rank 0, with step, loss, loss_hex (the loss's exact bits, for bit-identity
// checks), lr, grad_norm, tokens_per_s and step_ms, val_loss on a validation step,
// MoE models moe_dropped,
// moe_tokens_min and moe_tokens_max (exec::StepResult), and "skipped": true on a
// step not applied because its loss or gradient norm was not finite; and the human
// progress line.
#ifndef HEIRETSU_RUNTIME_RANK_METRICS_H_
#define HEIRETSU_RUNTIME_RANK_METRICS_H_

#include <cstdint>
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

// "step  3/10 | loss 4.1234 | lr 3.00e-03 | grad norm 1.2345 | 5.8k tok/s | 22.0 ms"
std::string ProgressLine(const StepLine& line, int64_t steps);

}  // namespace heiretsu::rank

#endif  // HEIRETSU_RUNTIME_RANK_METRICS_H_
