// The executor of one rank program, in the three phases of DESIGN.md §2:
//   prepare     allocate the arena the plan sized and resolve every buffer;
//   initialize  fill parameters from (seed, name, index), zero optimizer state;
//   execute     one optimizer step: zero gradients, run the microbatch stream once
//               per microbatch (its inputs supplied by the caller), then the update
//               stream (gradient norm, clipping, AdamW).
// It allocates nothing after prepare.
#ifndef HEIRETSU_RUNTIME_EXEC_EXECUTOR_H_
#define HEIRETSU_RUNTIME_EXEC_EXECUTOR_H_

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/comm/comm.h"
#include "runtime/exec/backend.h"
#include "runtime/plan/plan.h"

namespace heiretsu::exec {

struct StepOptions {
  double lr = 0;
  double weight_decay = 0;
  double grad_clip = 0;  // <= 0: no clipping
  int64_t step = 1;      // optimizer step number, from 1 (bias correction)
};

struct StepResult {
  double loss = 0;       // mean over microbatches (and data-parallel ranks)
  double grad_norm = 0;  // global L2 norm before clipping (NaN when not computed)
  // The loss or the global gradient norm was not finite, so the update was not
  // applied: parameters and AdamW moments are those before the step. Both values
  // are global (averaged or summed over the groups), so every rank of the job
  // reaches the same verdict and skips the same collectives.
  bool nonfinite = false;
};

// Fills the token and target ids (micro_batch_size x seq each) of microbatch `m`.
using FillMicrobatch = std::function<void(int64_t m, int32_t* tokens, int32_t* targets)>;

class Executor {
 public:
  // Prepare: allocates the arena on `backend` (the CPU backend when null).
  // `plan` must outlive the executor.
  explicit Executor(const plan::LoadedPlan& plan, std::unique_ptr<Backend> backend = nullptr);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Initialize: parameters from `seed`, gradients and optimizer state zero.
  void InitializeParameters(uint64_t seed);

  // Execute one optimizer step. Returns an error message for bad data (a token id
  // outside the vocabulary) or a failed collective. A non-finite loss or gradient
  // norm is not an error: it is caught before the first AdamW update runs, the
  // update stream stops there, and `result->nonfinite` says so (the caller's
  // policy decides what follows).
  std::optional<std::string> Step(const FillMicrobatch& fill, const StepOptions& options,
                                  StepResult* result);

  // The communicator of mesh axis `axis` (plan::MeshAxis) for this rank's group on
  // it. Needed for every axis of size > 1 the plan's collectives use.
  // The communicator's rank and size are this rank's mesh coordinate on the axis.
  void set_communicator(int axis, comm::Communicator* communicator) {
    comms_[axis] = communicator;
    SetCoordinates(scalars_);
  }

  // The first half of Step: zero the gradients and run the microbatch stream for
  // every microbatch, leaving the gradients of the mean loss in the grad buffers.
  std::optional<std::string> ComputeGradients(const FillMicrobatch& fill, double* loss);

  // Per-opcode wall time, accumulated while profiling is on (off by default; it
  // costs two clock reads per instruction).
  void set_profiling(bool on) { profiling_ = on; }
  std::string ProfileReport() const;

  // A buffer's host view (tests, checkpoints): the arena itself when the backend
  // is host-visible, else the executor's host copy, which Pull fills from the
  // arena and Push writes back (both no-ops for a host-visible backend).
  float* F32(uint32_t buffer);
  int32_t* I32(uint32_t buffer);
  void Pull(uint32_t buffer);
  void Push(uint32_t buffer);
  // Pull / Push of every parameter's value, gradient and moments.
  void PullState();
  void PushState();
  const plan::fb::Plan& plan() const { return *plan_.plan; }

 private:
  std::optional<std::string> Run(const plan::fb::Instr& instr, StepScalars& scalars);
  std::optional<std::string> ShardCollective(const plan::fb::Instr& instr);
  std::optional<std::string> BlockCollective(const plan::fb::Instr& instr);
  std::optional<std::string> AllReduce(const plan::fb::Instr& instr);
  // bucket_all_reduce: queued behind the previous bucket on a background thread.
  void StartBucket(const plan::fb::Instr& instr);
  std::optional<std::string> FinishBuckets();
  void SetCoordinates(StepScalars& s) const;

  const plan::LoadedPlan& plan_;
  std::unique_ptr<Backend> backend_;
  comm::Communicator* comms_[4] = {nullptr, nullptr, nullptr, nullptr};
  std::vector<float> scratch_, scratch_out_;  // reduce_scatter / all_gather staging
  // The step's gradient buckets in flight, each waiting for the one before it (a
  // communicator runs one collective at a time, in the same order on every rank).
  std::future<std::optional<std::string>> buckets_;
  StepScalars scalars_;
  bool profiling_ = false;
  std::vector<double> op_seconds_ = std::vector<double>(plan::fb::Op_MAX + 1, 0.0);
  uint8_t* arena_ = nullptr;
  std::vector<uint8_t> host_;  // the host copy of the arena (device backends only)
  uint8_t* view_ = nullptr;    // what F32 / I32 point into: arena_ or host_
};

}  // namespace heiretsu::exec

#endif  // HEIRETSU_RUNTIME_EXEC_EXECUTOR_H_
