// The CUDA backend (docs/architecture.md §2): the arena in device memory, every opcode of
// runtime/plan/ops.h as cuBLAS / cuBLASLt GEMMs or kernels of our own on one stream.
// Correct and deterministic (every reduction in a fixed order, no atomics), not yet
// fast; 16-bit attention runs in tiles on the tensor cores (flash_attention.cuh);
// fused epilogues beyond the bias and CUDA graphs build on it. MoE has no CUDA
// kernel yet (an error says so).
//
// Mixed precision (issue #13): the activations a bf16 or fp16 plan stores in 16
// bits are read and written in 16 bits by every kernel that takes them (arithmetic
// in float32, stores rounded to nearest even), and a linear with 16-bit activations
// runs its GEMMs in 16 bits on the tensor cores (cuBLASLt, float32 accumulation,
// the float32 master weight rounded into a scratch copy per GEMM); float32 plans
// run exactly as before (cuBLAS sgemm without TF32). cuda_backend.cu says how.
//
// The arena is not host-visible: the executor stages inputs, collectives and
// checkpoints through its host copy (executor.h).
//
// Errors. Kernels run asynchronously, so a kernel's fault shows only where the host
// next waits for the stream:
//   - Run returns a launch's failure at once (every cudaMemsetAsync and
//     cudaMemcpyAsync it makes is checked too), and one seen where it waits (the id
//     checks, a decode position, grad_norm_sq) saying it may be any queued work's;
//   - in check mode (CudaOptions::check, what heiretsu-cuda-check uses) Run and
//     Zero wait for the stream and read cudaGetLastError after every call, so a
//     fault is reported by the instruction that caused it, under its opcode (the
//     executor adds the unit and the index: executor.cc);
//   - CopyToHost, CopyToArena, Zero, AllocateArena and FreeArena return nothing:
//     their first failure is recorded and sticky (Backend::error(), backend.h).
//     Once one is, the copies and Zero do nothing and every Run returns it ("not
//     run after an earlier failure: ...") without running, and the executor
//     reports it from Step, ComputeGradients, Decode, PullState and PushState, so
//     none is lost.
#ifndef HEIRETSU_RUNTIME_CUDA_CUDA_BACKEND_H_
#define HEIRETSU_RUNTIME_CUDA_CUDA_BACKEND_H_

#include <memory>
#include <string>

#include "runtime/exec/backend.h"

namespace heiretsu::cuda {

// The number of CUDA devices this process can use, into *count. No device and no
// CUDA driver at all are not errors (*count is 0: runtime/cuda/devices.h); any
// other failure of cudaGetDeviceCount is (kFailure, with CUDA's message).
Status DeviceCount(int* count);

struct CudaOptions {
  // Check mode: wait for the stream and check for errors after every instruction
  // and Zero (slower: nothing queues), so a fault is named by its instruction, and
  // `heiretsu run --trace` shows each instruction's GPU time. Also set by
  // HEIRETSU_CUDA_CHECK=1 (0 or unset: as here; any other value is refused).
  bool check = false;
  // The most blocks of a grid-stride launch (0: 65535 x 16). Every kernel launched
  // on a capped grid loops over its whole range (attention's one warp per query or
  // key, the norms' and losses' one block per row, the decode step's KV append and
  // cached attention included); a small cap makes every launch loop, which
  // heiretsu-cuda-check's --max-blocks uses to check that no element depends on
  // the grid covering it.
  unsigned max_blocks = 0;
  // Attention through the per-query kernels only, never the tiled tensor-core
  // ones (runtime/cuda/flash_attention.cuh, for 16-bit plans at head_dim 32, 64 and
  // 128). Also set by HEIRETSU_CUDA_ATTENTION=rows ("tiles", the default, or unset:
  // the tiled kernels where they apply; any other value is refused).
  bool attention_rows = false;
};

// Whether the CUDA backend runs `in`'s operand dtypes: every 16-bit (bf16, f16)
// operand must be an activation it reads in 16 bits (the operands
// compiler/transforms/Precision.cpp narrows), and an instruction takes one 16-bit
// type. Fails (kFailure) naming the operand and its buffer. *half (when not null):
// that 16-bit type, or F32 when `in` has none. Host code only: needs no GPU, so
// heiretsu-cuda-check --dry-run checks a plan against it on any machine.
Status CheckOperandStorage(const plan::fb::Plan& plan, const plan::Instruction& in,
                           plan::fb::DType* half = nullptr);

// Whether device `device` has room for a program: `arena` bytes and `beyond` more
// (runtime/cuda/device_memory.h's total) and a 256 MiB margin for CUDA's and
// cuBLAS's own, against cudaMemGetInfo's free bytes. Fails
// (kFailure) naming the need, the device and what it has, with what to change; else
// *summary (when not null) is a line "device D (NAME, sm_XY): F free of T; this
// program takes N (the arena A and B beyond it)". A check at start, not a promise:
// ranks that share a device check before any of them allocates.
Status CheckDeviceMemory(int device, uint64_t arena, uint64_t beyond, std::string* summary);

// A backend on device `device` into *out. Fails (kFailure) when there is no such
// device or it cannot be initialized; *out is set exactly when it succeeds.
Status MakeCudaBackend(int device, std::unique_ptr<exec::Backend>* out,
                       const CudaOptions& options = {});

}  // namespace heiretsu::cuda

#endif  // HEIRETSU_RUNTIME_CUDA_CUDA_BACKEND_H_
