// The interface between the executor and a device (docs/architecture.md §2): memory for the
// arena, and the execution of one verified instruction on it. The executor owns
// the phases and the step's control flow; a backend owns how each instruction
// runs. The CPU backend (cpu_backend.cc) is the reference; the CUDA backend
// implements the same interface.
#ifndef HEIRETSU_RUNTIME_EXEC_BACKEND_H_
#define HEIRETSU_RUNTIME_EXEC_BACKEND_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "runtime/plan/prepare.h"

namespace heiretsu::exec {

// The scalar state of one optimizer step that instructions read and update.
struct StepScalars {
  double lr = 0;
  double weight_decay = 0;
  double grad_clip = 0;  // <= 0: no clipping
  int64_t step = 1;
  // Dynamic loss scaling (fp16): the loss's gradient seeds, cross_entropy_grad's
  // dloss and moe_route_grad's daux, are taken times loss_scale, so every gradient
  // of the step is loss_scale times the true one. 1: no scaling.
  double loss_scale = 1;
  double grad_norm_sq = 0;  // accumulated by grad_norm_sq instructions (scaled grads)
  // What clip_adamw multiplies each gradient by: min(1, grad_clip / norm) /
  // loss_scale, norm the true global norm. The executor sets it (and clip_ready)
  // before the step's first clip_adamw runs, once the norm is complete.
  double clip_scale = 1;
  bool clip_ready = false;
};

// A decode program's position (op_table.h: embedding's offset, cached_attention):
// its `seq` tokens must lie within the model's `context` positions. Bad input
// otherwise: the caller asked for more tokens than the model's context holds.
inline Status CheckDecodePosition(int64_t position, int64_t seq, int64_t context) {
  if (position >= 0 && position <= context - seq) return std::nullopt;
  return Error::BadInput("position " + std::to_string(position) + " (+ " + std::to_string(seq) +
                         " tokens) is outside the model's context of " + std::to_string(context) +
                         " positions");
}

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Whether the arena is host memory the executor may read and write directly
  // (parameter initialization, microbatch inputs, collectives, checkpoints). For a
  // backend that says no, the executor keeps a host copy of the arena and moves
  // buffers with CopyToHost / CopyToArena around each of those (collectives over
  // Gloo are then staged through host memory).
  virtual bool host_visible() const = 0;
  // Prepare: `bytes` of zeroed arena memory, 64-byte aligned; null on failure.
  virtual uint8_t* AllocateArena(uint64_t bytes) = 0;
  virtual void FreeArena(uint8_t* arena) = 0;
  // Prepare, once, after AllocateArena: the program's prepared units. A backend that
  // needs memory beyond the arena allocates all of it here, so that no step
  // allocates (the CUDA backend: runtime/cuda/device_memory.h); a failure is
  // recorded as AllocateArena's copies' are (error()).
  virtual void Reserve(const plan::fb::Plan& plan,
                       const std::vector<std::vector<plan::Instruction>>& units) {
    (void)plan;
    (void)units;
  }
  // The memory file the arena lies in, which the other processes of this machine
  // can map (comm/shared_arena.h: the executor shares it with its shared-memory
  // groups, Communicator::ShareArena); -1 when there is none (the default).
  virtual int ArenaFd(const uint8_t* arena) const {
    (void)arena;
    return -1;
  }
  // Execute one instruction of a verified plan, prepared for this rank (its
  // rank-dependent operands resolved: runtime/plan/prepare.h). Buffer b lies at
  // BufferAt(arena, offsets[b]): the offset table of the run's activation slot
  // (plan::SlotOffsets; the executor builds one per slot at prepare), never the
  // plan's own offsets. Returns an error for bad data (a token outside the
  // vocabulary). A float operand may be stored in 16 bits (plan::IsHalf: BF16, F16):
  // the backend computes in float32 and stores the results rounded to nearest even
  // (runtime/base/half.h); a backend that cannot fails naming the instruction.
  virtual Status Run(const plan::fb::Plan& plan, const plan::Instruction& instr, uint8_t* arena,
                     const uint64_t* offsets, StepScalars& scalars) = 0;
  // Where an offset of Run's table points: arena + offset, modulo 2^64, computed as
  // integers. The offset may lead out of this arena, into another process's
  // arena that this one maps (a host-visible arena only: the data-parallel group's
  // one copy of the parameters, Executor::PlanSharedParameters).
  static uint8_t* BufferAt(uint8_t* arena, uint64_t offset) {
    return reinterpret_cast<uint8_t*>(reinterpret_cast<uintptr_t>(arena) + offset);
  }
  // Whether Run honours Instruction::overwrite_weight_grads (writes those
  // gradients instead of adding to them). When it does not (the default), the
  // executor zeroes every gradient before the step and never sets the flag.
  virtual bool overwrites_weight_grads() const { return false; }
  // How grad_norm_sq sums the squares of a buffer, when the backend says
  // (square_chunk() > 0: the CPU's): the in-order sum of the partial sums of its
  // chunks of square_chunk() elements, which SumSquareChunks computes for chunks
  // [first, first + count) of the n floats at x into partials (the norm split over
  // data-parallel ranks, Executor::PlanSplitNorms). Host memory only.
  virtual int64_t square_chunk() const { return 0; }
  virtual void SumSquareChunks(const float* x, int64_t n, int64_t first, int64_t count,
                               double* partials) {
    (void)x, (void)n, (void)first, (void)count, (void)partials;
  }
  // A reduce-scatter between members that share their arenas, run by the executor
  // (Executor::PlanDirectReduceScatters; plain dp's parts, PlanSplitReduces): out =
  // the member-order sum of the `count` copies of n floats (times 1 / count when
  // `average`), `out` possibly one of them;
  // *sum_squares (when not null) = the grad_norm_sq of out, bit for bit as Run would
  // sum it. Called only for an arena in a memory file (ArenaFd >= 0); the default
  // fails.
  virtual Status SumCopies(const float* const* copies, int count, float* out, int64_t n,
                           bool average, double* sum_squares) {
    (void)copies, (void)count, (void)out, (void)n, (void)average, (void)sum_squares;
    return Error::Failure(std::string(name()) + " cannot sum the members' copies");
  }
  // Copies between host memory and the arena, complete when they return (a
  // device backend waits for its queued work first). The defaults are for a
  // host-visible arena. They, Zero and AllocateArena return no status: a backend
  // whose calls can fail records the failure in error().
  virtual void CopyToHost(const uint8_t* arena, uint64_t offset, void* dst, uint64_t bytes) {
    std::memcpy(dst, arena + offset, bytes);
  }
  virtual void CopyToArena(uint8_t* arena, uint64_t offset, const void* src, uint64_t bytes) {
    std::memcpy(arena + offset, src, bytes);
  }
  virtual void Zero(uint8_t* arena, uint64_t offset, uint64_t bytes) {
    std::memset(arena + offset, 0, bytes);
  }
  // The first failure of a CopyToHost, CopyToArena, Zero or AllocateArena, sticky:
  // once set it stays set, those calls do nothing more, and every later Run
  // returns it without running. One design for every call without a status, so
  // that none can be lost: the executor checks error() before Step,
  // ComputeGradients, PullState or PushState report success (whatever copy or
  // zeroing they did), and a Run after a failure fails. Never set for a
  // host-visible arena (the defaults cannot fail).
  virtual Status error() const { return std::nullopt; }
};

// OpenBLAS GEMMs and OpenMP kernels (runtime/cpu/kernels.h). `shared_arenas`: the
// arenas lie in memory files (comm/shared_arena.h), for a rank whose collectives
// may run directly between the arenas of the ranks of its machine; otherwise plain
// memory (memory files cost more to set up: the kernel clears a shared page more
// slowly).
std::unique_ptr<Backend> MakeCpuBackend(bool shared_arenas = false);

}  // namespace heiretsu::exec

#endif  // HEIRETSU_RUNTIME_EXEC_BACKEND_H_
