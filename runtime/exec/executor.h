// The executor of one rank program, in the three phases of docs/architecture.md:
//   prepare     allocate the arena the plan sized, resolve every buffer (one
//               offset table per activation slot: offsets[slot][buffer], a slotted
//               buffer's copy `slot`, plan.fbs), and prepare every instruction for
//               this rank's mesh coordinates (runtime/plan/prepare.h);
//   initialize  fill parameters from (seed, name, logical index), zero optimizer
//               state;
//   execute     one optimizer step: zero the gradients (those whose first writer
//               in the step cannot overwrite them: PlanFirstWrites), then run the program's
//               schedule, the ordered (unit, microbatch, chunk, slot) list of
//               plan.fbs, exactly: every instruction of a run resolves its buffers
//               through the table of the run's slot; each forward run takes its
//               microbatch's inputs from the caller into its slot's tokens and
//               targets, and its loss is read from its slot's copy; before the
//               first unit that is not a microbatch's (comm, update) the background
//               gradient buckets are joined and the loss is averaged over the data
//               ranks and summed over the stages that have one.
//
// Point to point (send / recv, op_table.h), exactly what the compiler's static
// check simulates:
//   - a `send` posts its send and does not block (comm::Communicator::StartSend);
//     the buffer's copy it reads stays untouched until the send completes;
//   - a `recv` blocks until its data has arrived;
//   - before a run on slot k of virtual chunk c starts, the sends posted from
//     slot k of chunk c by earlier runs are waited for (that copy of the chunk's
//     slotted buffers is about to be reused; each chunk has slots of its own);
//   - every pending send is waited for once the microbatch runs are over, before
//     the loss is reduced and the first unit of the step (comm, update) runs;
//   - a unit of the step (a tied embedding's gradient exchange between the first
//     and the last stage: send, recv, accumulate) waits for its own sends at its
//     end;
//   - and in any case before Step (or ComputeGradients) returns, also when it
//     fails (then for at most the group's timeout), so no send reads the arena
//     afterwards.
// Sends and recvs between two ranks match in the order each posts them.
// It allocates nothing after prepare (a tracer, when set, keeps its events).
#ifndef HEIRETSU_RUNTIME_EXEC_EXECUTOR_H_
#define HEIRETSU_RUNTIME_EXEC_EXECUTOR_H_

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runtime/comm/comm.h"
#include "runtime/exec/backend.h"
#include "runtime/exec/trace.h"
#include "runtime/plan/plan.h"
#include "runtime/plan/prepare.h"

namespace heiretsu::exec {

struct StepOptions {
  double lr = 0;
  double weight_decay = 0;
  double grad_clip = 0;  // <= 0: no clipping
  int64_t step = 1;      // optimizer step number, from 1 (bias correction)
  // AdamW's step count for its bias correction: the updates applied before this one
  // plus 1, which falls behind `step` when steps are skipped (an overflow, a
  // non-finite step); 0: `step`.
  int64_t update = 0;
  // The loss scale of dynamic loss scaling (StepScalars::loss_scale): the backward
  // runs on loss_scale x the loss, the norm and the update see the true gradients.
  double loss_scale = 1;
};

struct StepResult {
  double loss = 0;       // mean over microbatches (and data-parallel ranks)
  double grad_norm = 0;  // global L2 norm before clipping (NaN when not computed), unscaled
  // The loss or the global gradient norm was not finite, so the update was not
  // applied: parameters and AdamW moments are those before the step. Both values
  // are global (averaged or summed over the groups), so every rank of the job
  // reaches the same verdict and skips the same collectives.
  bool nonfinite = false;
  // MoE models (any stage with a moe_route): of the step's routed slots, summed over
  // every layer, microbatch and data rank, the fraction dropped past capacity, and
  // the fewest and most slots any expert of any layer kept. NaN otherwise.
  double moe_dropped = std::nan("");
  double moe_tokens_min = std::nan(""), moe_tokens_max = std::nan("");
  // Set by the caller on a validation step (Evaluate); NaN otherwise.
  double val_loss = std::nan("");
  // Set by the caller when it scales the loss (loss_scale.h): the scale the step ran
  // at and the overflow steps skipped so far; NaN and 0 otherwise.
  double loss_scale = std::nan("");
  int64_t overflows = 0;
  bool overflow = false;  // this step was skipped as an overflow (nonfinite is set too)
};

// Fills the token and target ids (micro_batch_size x seq each) of microbatch `m`;
// either pointer is null where the run's unit reads no such input (a pipeline
// stage without the embedding has no tokens, one without the loss no targets; of
// a stage's virtual chunks only the first reads the tokens, the last the targets).
using FillMicrobatch = std::function<void(int64_t m, int32_t* tokens, int32_t* targets)>;

class Executor {
 public:
  // Prepare: allocates the arena on `backend` (the CPU backend when null) for the
  // rank `rank` of the plan's mesh. `plan` must outlive the executor.
  explicit Executor(const plan::LoadedPlan& plan, std::unique_ptr<Backend> backend = nullptr,
                    int rank = 0);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Initialize: parameters from `seed`, gradients and optimizer state zero. (On a
  // device backend a failed copy to the arena is returned by the next Step.)
  void InitializeParameters(uint64_t seed);

  // Execute one optimizer step. Returns an error message for bad data (a token id
  // outside the vocabulary) or a failed collective. A non-finite loss or gradient
  // norm is not an error: it is caught before the first AdamW update runs, the
  // update stream stops there, and `result->nonfinite` says so (the caller's
  // policy decides what follows).
  Status Step(const FillMicrobatch& fill, const StepOptions& options,
                                  StepResult* result);

  // The communicator of mesh axis `axis` (plan::MeshAxis) for this rank's group on
  // it, whose rank and size are this rank's coordinate on the axis and the axis'
  // size. Needed for every axis of size > 1 the plan's instructions use.
  void set_communicator(int axis, comm::Communicator* communicator) { comms_[axis] = communicator; }
  // Offers the arena to `communicator`'s group (Communicator::ShareArena: a
  // host-visible arena in a memory file lets the members' collectives work on
  // each other's buffers directly). Every member of the group calls it together.
  Status ShareArena(comm::Communicator& communicator, std::string* why_not);
  // What the executor does itself over `axis` between the members' shared arenas,
  // for the run's first lines: "" (nothing), or e.g. "ZeRO-1 between the arenas:
  // reduce_scatter of 196 gradients (with their norm), all_gather of 196
  // parameters written by the update" (PlanDirectReduceScatters, PlanMirroredUpdates),
  // or for plain dp "each member's part of the all_reduce of 196 gradients ...;
  // the AdamW of 196 parameters split over the group, ..." (PlanSplitReduces,
  // PlanSplitUpdates, PlanSplitNorms).
  std::string DirectSummary(int axis) const;

  // The first half of Step: zero the gradients and run the schedule's microbatch
  // units, leaving the gradients of the mean loss in the grad buffers, and wait for
  // every send they posted; `*loss` is this rank's mean loss (0 on a stage without
  // the loss).
  Status ComputeGradients(const FillMicrobatch& fill, double* loss);

  // Validation: the schedule's forward runs alone (every microbatch of one step,
  // each stage's in its schedule's order; no backward, no update, the parameters
  // untouched), `fill` giving each microbatch's rows; `*loss` is the mean loss over
  // the global batch as Step reports it (the model's loss: the cross-entropy plus
  // any MoE auxiliary losses), the same on every rank. Every rank of the job calls it
  // together.
  Status Evaluate(const FillMicrobatch& fill, double* loss);

  // A decode program's run (docs/architecture.md, "Sampling"; the plan has a
  // position and logits): `tokens` (micro_batch_size x seq ids) at positions
  // `position` .. position + seq - 1, whose keys and values join the KV caches;
  // sets `*logits` to the logits buffer (rows x padded vocabulary, host memory,
  // valid until the next call). Positions must be fed in order from 0: a cache row is
  // read only after a run wrote it. A position past the context is bad input.
  Status Decode(const int32_t* tokens, int32_t position, const float** logits);

  // Per-opcode wall time, accumulated while profiling is on (off by default; it
  // costs two clock reads per instruction).
  void set_profiling(bool on) { profiling_ = on; }
  std::string ProfileReport() const;

  // While `tracer` is set (not null), Step records into it the events trace.h
  // describes: the step, each schedule run, each instruction, the waits and the
  // collectives. Null (the default): nothing is recorded and the clock is not read.
  // Set between steps only; it must outlive the steps it traces. On a device
  // backend an instruction's event is the host's time in it (kernels run
  // asynchronously; their time shows where the host next waits for the stream).
  void set_tracer(Tracer* tracer) { tracer_ = tracer; }

  // A buffer's host view (tests, checkpoints): the arena itself when the backend
  // is host-visible (for a parameter the dp group keeps one copy of,
  // PlanSharedParameters, member 0's arena: what it writes the group sees), else
  // the executor's host copy, which Pull fills from the arena and Push writes back
  // (both no-ops for a host-visible backend). `slot`
  // (< plan().slots()) picks a slotted buffer's copy; parameters have one. A
  // failed copy is the backend's sticky error (Backend::error()): the next Step,
  // ComputeGradients, PullState or PushState returns it.
  float* F32(uint32_t buffer, uint32_t slot = 0);
  int32_t* I32(uint32_t buffer, uint32_t slot = 0);
  void Pull(uint32_t buffer, uint32_t slot = 0);
  void Push(uint32_t buffer, uint32_t slot = 0);
  // Pull / Push of every parameter's value, gradient and moments; an error when a
  // copy of the backend failed (this one or any earlier). After Step the
  // gradients may hold only this rank's part of the sum (plain dp over shared
  // arenas: PlanSplitReduces); PullState completes the moments, which such a rank
  // updates only in its part, from the other ranks' arenas.
  Status PullState();
  Status PushState();
  // Whether `data` is a parameter this rank reads from another rank's arena (the
  // dp group's one copy, PlanSharedParameters, on a member other than 0): that
  // rank writes it, and a checkpoint loads it there only (this rank's load would
  // race with that rank's reading of the same memory).
  bool Borrowed(const float* data) const {
    return std::find(borrowed_.begin(), borrowed_.end(), data) != borrowed_.end();
  }
  const plan::fb::Plan& plan() const { return *plan_.plan; }
  const plan::MeshCoordinates& coordinates() const { return coords_; }

 private:
  // Runs the instructions of schedule entry `run` (buckets, plan::IsBucket, only in
  // its unit's last run) on its slot, after the sends posted from that slot.
  Status RunUnit(const plan::ScheduledRun& run, const FillMicrobatch* fill,
                                     double* loss_sum);
  Status RunUnitBody(const plan::ScheduledRun& run, const FillMicrobatch* fill, double* loss_sum);
  Status MicrobatchRuns(const FillMicrobatch& fill, double* loss);
  Status StepRuns(const FillMicrobatch& fill, const StepOptions& options, StepResult* result);
  // The mean over the data ranks of this rank's loss, summed over the stages (with
  // `moe`'s two counts, when given).
  Status ReduceLoss(double* loss, float* moe);
  // One instruction of a run on `slot` (its buffers: that slot's offset table).
  Status Run(const plan::Instruction& instr, uint32_t slot, StepScalars& scalars);
  // Run, recorded as an event of tracer_ (not null).
  Status TracedRun(const plan::Instruction& instr, uint32_t slot);
  Status CompleteGradNorm();
  // The executor's instructions, on the communicator of their axis.
  Status ShardCollective(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c);
  Status BlockCollective(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c);
  Status Exchange(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c);
  Status ExchangeRows(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c);
  Status AllReduce(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c);
  Status PointToPoint(const plan::Instruction& instr, uint32_t slot, comm::Communicator& c);
  // Waits for the sends posted from `slot` (WaitAllSends: from every slot); the
  // first failure is returned, every send is waited for regardless.
  Status WaitSends(uint32_t key);
  Status WaitAllSends();
  // The same, recorded as a "wait_sends" event when tracing and a send was pending
  // (`all`: WaitAllSends).
  Status TracedWaitSends(bool all, uint32_t key, const char* name);
  // A bucket (plan::IsBucket): queued behind the previous one on a background thread.
  void StartBucket(const plan::Instruction& instr, uint32_t slot);
  Status FinishBuckets();

  const plan::LoadedPlan& plan_;
  std::unique_ptr<Backend> backend_;
  plan::MeshCoordinates coords_;
  std::vector<plan::ScheduledRun> schedule_;
  std::vector<std::vector<plan::Instruction>> units_;  // prepared, like plan.units()
  // The gradients' first writes (PlanFirstWrites): first_units_[u] is unit u's
  // instructions for its first run of the step, those that first touch gradients
  // they can overwrite marked (empty when none is: the run uses units_[u]);
  // zeroed_grads_ the (offset, bytes) of every other gradient, zeroed before the
  // step.
  void PlanFirstWrites();
  std::vector<std::vector<plan::Instruction>> first_units_;
  // ZeRO-1's all_gathers over `axis` done by the updates when the group's members
  // share their arenas (Instruction::mirrors; the units of the step, which
  // first_units_ never copies). mirror_synced_: this step's barrier before the
  // first mirrored update ran.
  Status PlanMirroredUpdates(int axis);
  Status MapBuffers(comm::Communicator& c, const std::vector<uint32_t>& buffers,
                    std::vector<std::vector<float*>>* copies, bool* mapped);
  Status AgreeAndMap(comm::Communicator& c, bool ok, const std::vector<uint32_t>& buffers,
                     std::vector<std::vector<float*>>* copies, bool* agreed);
  Status MirrorBarrier(int axis);
  int mirrored_params_[plan::kNumAxes] = {};
  // Plain dp's updates split over the group; moment_syncs_: the other members'
  // parts of their moments, which PullState copies into this member's.
  Status PlanSplitUpdates(int axis);
  plan::Shard UpdatePart(const plan::Instruction& update, int member) const;
  struct MomentSync {
    const float* from;
    float* to;
    int64_t n;
  };
  std::vector<MomentSync> moment_syncs_;
  int split_params_[plan::kNumAxes] = {};
  // The dp group's one copy of the parameters: member 0's, which every member's
  // offset tables point to (the parameters' count in shared_params_).
  Status PlanSharedParameters(int axis);
  int shared_params_[plan::kNumAxes] = {};
  std::vector<const float*> borrowed_;  // Borrowed
  // Plain dp's gradient norms split over the group (Instruction::split_norm_axis);
  // norm_mine_: this member's partial sums; norm_parts_: every member's, gathered
  // (all_gather moves them as pairs of floats, bytes unchanged). split_part_of_[b]:
  // the one split norm over all of buffer b and b's index in it (split -1: none),
  // whose run of b is member m's split part of b (SplitPart; nullopt: none).
  Status PlanSplitNorms(int axis);
  Status SplitNorm(const plan::Instruction& instr, StepScalars& scalars);
  // norm_splits_: every split norm's chunks of square_chunk() elements divided
  // among the members (SplitOf): members[m][i], member m's run of buffer i, its
  // chunks [first, first + count) whose sums go to m's partial sums from `partial`
  // on; `share`: the most partial sums of any member, as many as the all_gather
  // moves for each.
  struct ChunkShare {
    int64_t first = 0, count = 0, partial = 0;
  };
  struct NormSplit {
    const plan::Instruction* norm = nullptr;
    int64_t share = 0;
    std::vector<std::vector<ChunkShare>> members;
  };
  static NormSplit SplitOf(const plan::Instruction& instr, int64_t chunk, int members);
  std::vector<NormSplit> norm_splits_;
  struct SplitPartOf {
    int32_t split = -1;  // in norm_splits_
    size_t index = 0;
  };
  std::vector<SplitPartOf> split_part_of_;
  std::optional<plan::Shard> SplitPart(uint32_t buffer, int member) const;
  int split_norms_[plan::kNumAxes] = {};
  std::vector<double> norm_mine_, norm_parts_;
  // Plain dp's all-reduces of gradients as each member's part (Instruction::copies
  // of a bucket_all_reduce); split_sums_[b]: this member's part of b and the sums
  // of squares of its chunks, written in the step numbered `serial`;
  // chunk_copies_: the members' copies of one chunk (the buckets' thread's).
  // full_gradients_: while ComputeGradients runs, whose result is the whole
  // gradients.
  Status PlanSplitReduces(int axis);
  Status SplitAllReduce(const plan::Instruction& instr, comm::Communicator& c);
  struct SplitSums {
    plan::Shard part;
    uint64_t serial = 0;
    std::vector<double> sums;
  };
  std::vector<SplitSums> split_sums_;
  std::vector<const float*> chunk_copies_;
  int split_reduced_[plan::kNumAxes] = {};
  bool full_gradients_ = false;
  int direct_reduced_[plan::kNumAxes] = {};  // buffers of direct reduce-scatters
  bool direct_norm_[plan::kNumAxes] = {};    // a norm takes their sums of squares
  bool mirror_synced_[plan::kNumAxes] = {};
  // The reduce-scatters the executor runs itself between members that share their
  // arenas (Instruction::copies), and what each kept: reduced_[buffer], the sum of
  // squares of the shard it wrote, valid in the step numbered `serial` (step_serial_
  // counts the steps' microbatch runs) for the norm (Instruction::norm_from_reduce).
  Status PlanDirectReduceScatters(int axis);
  Status DirectReduceScatter(const plan::Instruction& instr, comm::Communicator& c);
  struct ReducedSum {
    uint64_t serial = 0;
    int64_t begin = 0, size = 0;
    double sum = 0;
  };
  bool Reduced(const plan::Instruction& instr) const;
  std::vector<ReducedSum> reduced_;
  uint64_t step_serial_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> zeroed_grads_;
  // Per unit: whether it reads the tokens, the targets, and writes the loss.
  struct UnitIo {
    bool tokens, targets, loss;
  };
  std::vector<UnitIo> unit_io_;
  // The running run's key for its sends: chunk * slots + slot.
  uint32_t send_key_ = 0;
  // offsets_[slot][buffer]: where a run on `slot` finds each buffer, from the arena
  // (Backend::BufferAt; a shared parameter's leads to member 0's arena).
  std::vector<std::vector<uint64_t>> offsets_;
  // sending_[chunk * slots + slot]: the communicators holding sends posted from a
  // run on that chunk's slot (their key) that were not waited for yet.
  std::vector<std::vector<comm::Communicator*>> sending_;
  comm::Communicator* comms_[plan::kNumAxes] = {nullptr, nullptr, nullptr, nullptr};
  std::vector<float> exchange_in_, exchange_out_;  // all_to_all staging
  // Per moe_route instruction (in plan order), its load summed over the step's
  // microbatches: slots kept per expert, then dropped per expert.
  std::map<const plan::Instruction*, std::vector<double>> moe_load_;
  Status SumMoeLoad(std::vector<float>* kept, float moe[2]);
  Status MoeLoadRange(const std::vector<float>& kept, const float moe[2], StepResult* result);
  // reduce_scatter / all_gather staging: a whole buffer and this rank's shard (or
  // block); the bucket thread's own for bucket_reduce_scatter.
  struct Staging {
    std::vector<float> whole, shard;
  };
  Staging staging_, bucket_staging_;
  // The step's gradient buckets in flight, each waiting for the one before it (a
  // communicator runs one collective at a time, in the same order on every rank).
  std::future<Status> buckets_;
  StepScalars scalars_;
  bool nonfinite_norm_ = false;  // this step's norm was not finite: no update ran
  bool profiling_ = false;
  Tracer* tracer_ = nullptr;  // null: not tracing
  std::vector<double> op_seconds_ = std::vector<double>(plan::fb::Op_MAX + 1, 0.0);
  uint8_t* arena_ = nullptr;
  std::vector<uint8_t> host_;  // the host copy of the arena (device backends only)
  uint8_t* view_ = nullptr;    // what F32 / I32 point into: arena_ or host_
};

}  // namespace heiretsu::exec

#endif  // HEIRETSU_RUNTIME_EXEC_EXECUTOR_H_
