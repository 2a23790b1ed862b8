// The device memory the CUDA backend takes for a program beyond its arena, from the
// plan alone (plain C++: no CUDA, no GPU): `heiretsu explain` prints it, and the
// backend allocates exactly this before the first step (Backend::Reserve), so that
// no step allocates device memory of its own (cuBLAS may size its own workspace on
// the first fp32 GEMM; CUDA's context and handles are outside both). Three parts:
//   - the scratch: kScratchHeader bytes (the gradient norm's partials and total,
//     the bad-id flag) and then the rows of the instruction that needs the most: a
//     loss's per-row terms, a bias or norm gradient's column partials
//     (runtime/cuda/column_sums.cuh), the tiled attention's row dots;
//   - the 16-bit operand copies of a 16-bit GEMM, three slots (a float32 operand
//     rounded to the instruction's 16-bit type: the master weight, and an
//     activation kept in float32), each as large as its largest use;
//   - cuBLASLt's workspace, kLtWorkspace, when a 16-bit GEMM runs.
// cuda_backend.cu asks for each instruction's own sizes as it runs it and treats a
// need past the reservation as this file's mistake (an error in check mode:
// heiretsu-cuda-check's training steps, HEIRETSU_CUDA_CHECK=1).
#ifndef HEIRETSU_RUNTIME_CUDA_DEVICE_MEMORY_H_
#define HEIRETSU_RUNTIME_CUDA_DEVICE_MEMORY_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/plan/plan.h"
#include "runtime/plan/prepare.h"

namespace heiretsu::cuda {

inline constexpr uint64_t kScratchHeader = 4096;
inline constexpr uint64_t kLtWorkspace = 32ull << 20;
// Rows per partial sum of the column reductions (column_sums.cuh's kColumnChunk).
inline constexpr int64_t kColumnChunkRows = 64;

struct CudaExtras {
  uint64_t scratch_rows = 0;         // the scratch past kScratchHeader
  std::array<uint64_t, 3> copies{};  // the 16-bit operand copies, per slot
  uint64_t workspace = 0;            // cuBLASLt's
  uint64_t scratch() const { return kScratchHeader + scratch_rows; }
  uint64_t total() const { return scratch() + copies[0] + copies[1] + copies[2] + workspace; }
};

// One instruction's needs (zero for one that needs none).
CudaExtras InstructionExtras(const plan::fb::Plan& plan, const plan::Instruction& in);

// The most any of the program's instructions needs, part by part.
CudaExtras ProgramExtras(const plan::fb::Plan& plan,
                         const std::vector<std::vector<plan::Instruction>>& units);

// explain's lines for the program at `coords` ("  on --backend cuda, beyond the
// arena: ...").
std::string DescribeExtras(const plan::fb::Plan& plan, const plan::MeshCoordinates& coords);

}  // namespace heiretsu::cuda

#endif  // HEIRETSU_RUNTIME_CUDA_DEVICE_MEMORY_H_
