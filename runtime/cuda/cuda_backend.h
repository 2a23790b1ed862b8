// The CUDA backend (docs/architecture.md §2): the arena in device memory, every opcode of
// runtime/plan/ops.h as cuBLAS GEMMs or kernels of our own on one stream. This is
// the fp32 reference slice: correct and deterministic (every reduction in a fixed
// order, no atomics), not yet fast; mixed precision, fused epilogues, flash-style
// tiling and CUDA graphs build on it. MoE has no CUDA kernel yet (an error says so).
//
// The arena is not host-visible: the executor stages inputs, collectives and
// checkpoints through its host copy (executor.h).
#ifndef HEIRETSU_RUNTIME_CUDA_CUDA_BACKEND_H_
#define HEIRETSU_RUNTIME_CUDA_CUDA_BACKEND_H_

#include <memory>
#include <string>

#include "runtime/exec/backend.h"

namespace heiretsu::cuda {

// The number of CUDA devices this process can use (0 without a driver or device).
int DeviceCount();

// A backend on device `device` into *out. Fails (kFailure) when there is no such
// device or it cannot be initialized.
Status MakeCudaBackend(int device, std::unique_ptr<exec::Backend>* out);

}  // namespace heiretsu::cuda

#endif  // HEIRETSU_RUNTIME_CUDA_CUDA_BACKEND_H_
