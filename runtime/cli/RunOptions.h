// Options of `heiretsu run` and of the per-rank worker heiretsu-rank (docs/architecture.md §1),
// parsed and validated without MLIR so that the driver can check the run flags of
// `heiretsu train` before it spends time compiling. Every refusal names the flag and
// the value.
#ifndef HEIRETSU_RUNTIME_CLI_RUNOPTIONS_H_
#define HEIRETSU_RUNTIME_CLI_RUNOPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace heiretsu::cli {

struct RunOptions {
  std::string plan_dir;
  std::string data;      // a shard file or a directory of shards; empty: default corpus
  // Validation: the mean loss over val_batches fixed global batches of val_data (a
  // shard or a directory; empty: the *_val_* shards of a --data directory, if any),
  // every val_every steps and at the last step; val_every 0: never.
  std::string val_data;
  int64_t val_every = 100;
  int64_t val_batches = 20;
  // A sample of sample_tokens tokens, drawn like `heiretsu sample` (temperature 1, the
  // step as the seed) from the start of text (GPT-2's end-of-text token; a newline for
  // a byte model), printed every sample_every steps and at the last; 0: never.
  int64_t sample_every = 0;
  int64_t sample_tokens = 64;
  int64_t steps = 100;   // the step the run ends at (steps count from 1)
  double lr = 1e-3;      // peak learning rate, reached at the end of warmup
  double min_lr = 1e-4;  // reached at the last step; lr / 10 unless given
  int64_t warmup = 10;   // steps of linear warmup; 0: none
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // 0: no clipping
  uint64_t seed = 1337;
  bool seed_given = false;  // a resumed run takes the checkpoint's seed unless given
  std::string backend = "cpu";
  std::string metrics;     // JSON lines, one per step; empty: none
  std::string save_dir;    // checkpoints; empty: none
  int64_t save_every = 0;  // 0: only at the end
  std::string resume;      // a checkpoint directory to continue from; empty: start fresh
  int64_t log_every = 10;
  // heiretsu's cache (the default corpus goes to DIR/corpus-byte); empty:
  // $XDG_CACHE_HOME/heiretsu or ~/.cache/heiretsu.
  std::string cache_dir;
  // A step whose loss or global gradient norm is not finite never updates the
  // model. "fail" (the default): the run stops there, exit 1. "skip": the step is
  // skipped (counted and reported) and the run goes on, unless more than
  // max_consecutive_skips steps in a row are skipped (then it fails as above).
  std::string on_nonfinite = "fail";
  int64_t max_consecutive_skips = 5;
  // Loss scaling (runtime/exec/loss_scale.h): "auto" (dynamic for a plan that stores
  // float16, none for any other), "dynamic", "fixed" (--loss-scale N) or "none".
  // loss_scale_init: dynamic's first scale, or the fixed one; a power of two.
  std::string loss_scale = "auto";
  double loss_scale_init = 65536;
  bool loss_scale_init_given = false;
  int64_t loss_scale_growth_interval = 2000;
  // A Chrome / Perfetto trace of some steps (runtime/exec/trace.h); empty: none.
  std::string trace;
  // The steps it traces (--trace-steps A:B, or A); 0: the default, TraceSteps.
  int64_t trace_first = 0, trace_last = 0;
};

// Parses `args` (the words after `run`: PLAN_DIR and flags). On a bad flag or value
// returns the message (the caller prints it and exits 2).
std::optional<std::string> ParseRunOptions(const std::vector<std::string>& args, RunOptions* out);

// The learning rate of step s (from 1), for peak lr, floor min_lr, W = warmup and
// N = steps:
//   s <= W:  lr * s / W                                                  linear warmup
//   s >  W:  min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (N - W))) / 2    cosine
// It reaches lr at step W and min_lr at step N, and depends on nothing but s and the
// options, so a resumed run follows the same schedule.
double LearningRate(const RunOptions& options, int64_t step);

// The steps --trace traces in a run whose first step is `first_step` (1, or the
// resumed checkpoint's step + 1): --trace-steps A:B from `first_step` on, else the
// run's second to fourth steps (the first includes warm-up), [first_step + 1,
// min(steps, first_step + 3)], or its only step. Sets *first > *last when not
// tracing. On --trace-steps that all lie before `first_step` returns the message.
std::optional<std::string> TraceSteps(const RunOptions& options, int64_t first_step,
                                      int64_t* first, int64_t* last);

// Whether `flag` is one of the run flags. Every run flag takes a value.
bool IsRunFlag(const std::string& flag);

// The usage text of `heiretsu run` / heiretsu-rank.
const char* RunUsage();

}  // namespace heiretsu::cli

#endif  // HEIRETSU_RUNTIME_CLI_RUNOPTIONS_H_
