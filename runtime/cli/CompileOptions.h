// Options of `heiretsu compile` (docs/architecture.md §1), parsed and validated without MLIR so
// the driver and the compiler agree on them. Every refusal names the flag and value.
#ifndef HEIRETSU_RUNTIME_CLI_COMPILEOPTIONS_H_
#define HEIRETSU_RUNTIME_CLI_COMPILEOPTIONS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace heiretsu::cli {

struct CompileOptions {
  std::string spec;  // path of the model spec
  int64_t dp = 1, tp = 1, pp = 1, ep = 1;
  // Batch geometry: global_batch = micro_batch_size * microbatches * dp.
  int64_t micro_batch_size = 1;
  int64_t microbatches = 1;
  int64_t global_batch = 1;
  int64_t seq = 0;  // 0 = the model's context
  std::string schedule = "1f1b";
  int64_t virtual_stages = 1;
  std::vector<int64_t> stage_layers;  // --stage-layers N,N,...; empty = balanced
  int zero = 0;
  std::string precision = "fp32";
  std::string recompute = "none";
  bool sequence_parallel = false;
  // --strict: the spec's warnings (a hyperparameter nothing reads) are errors.
  bool strict = false;
  // Data-parallel gradient buckets: each is all-reduced as soon as the backward
  // pass has finished its gradients (PyTorch DDP's default size).
  int64_t bucket_mb = 25;
  // mlir | plan-text | plan | summary. Without --emit: plan when -o is given (the
  // plan directory `heiretsu run` takes), else mlir on stdout.
  std::string emit = "mlir";
  // -o: the plan directory (plan) or the file for the others; empty = stdout.
  std::string output;

  int64_t world_size() const { return dp * tp * pp * ep; }
};

// Parses `args` (the words after `compile`). On a bad flag or value returns the
// message (the caller prints it and exits 2).
std::optional<std::string> ParseCompileOptions(const std::vector<std::string>& args,
                                               CompileOptions* out);

// Refuses what is parsed but not built yet (pipeline and expert parallelism, a
// --schedule other than the default, virtual stages, --stage-layers, bf16/fp16,
// recompute): the message names the flag and value. `heiretsu compile` calls it at
// every --emit, after the model's own checks (a --pp above its layer count).
std::optional<std::string> CheckBuilt(const CompileOptions& options);

// Whether `flag` is one of `heiretsu compile`'s flags (`heiretsu train` splits its
// arguments with it); `*takes_value` says whether a value follows it.
bool IsCompileFlag(const std::string& flag, bool* takes_value);

// The usage text of `heiretsu compile`.
const char* CompileUsage();

}  // namespace heiretsu::cli

#endif  // HEIRETSU_RUNTIME_CLI_COMPILEOPTIONS_H_
