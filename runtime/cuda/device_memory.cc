// See device_memory.h. Each case mirrors what CudaBackend::Run asks for
// (cuda_backend.cu): the scratch through InstructionExtras itself, the copies
// through its ToHalf calls (slot 0: the activation operand x or dy when it is
// float32; slot 1: the master weight; slot 2: a 16-bit y's bias, or linear_grad's x
// when it is float32).
#include "runtime/cuda/device_memory.h"

#include <algorithm>

#include "runtime/plan/explain.h"
#include "runtime/plan/ops.h"

namespace heiretsu::cuda {

namespace fb = plan::fb;
namespace op = plan::op;

namespace {

uint64_t ColumnChunks(int64_t rows) {
  return static_cast<uint64_t>((rows + kColumnChunkRows - 1) / kColumnChunkRows);
}

// The instruction's 16-bit type: that of its 16-bit operands, F32 when it has none.
fb::DType HalfOf(const fb::Plan& plan, const plan::Instruction& in) {
  for (uint32_t b : in.buffers)
    if (plan::Has(b)) {
      const fb::DType t = plan.buffers()->Get(b)->dtype();
      if (t == fb::DType_BF16 || t == fb::DType_F16) return t;
    }
  return fb::DType_F32;
}

bool IsF32(const fb::Plan& plan, uint32_t b) {
  return plan::Has(b) && plan.buffers()->Get(b)->dtype() == fb::DType_F32;
}

// A 16-bit copy of n elements (ToHalf allocates at least one).
uint64_t Copy(int64_t n) { return static_cast<uint64_t>(std::max<int64_t>(n, 1)) * 2; }

}  // namespace

CudaExtras InstructionExtras(const fb::Plan& plan, const plan::Instruction& in) {
  CudaExtras x;
  const bool half = HalfOf(plan, in) != fb::DType_F32;
  switch (in.op) {
    case fb::Op_CrossEntropy: {
      const auto ce = plan::Read<op::CrossEntropy<uint32_t>>(in);
      x.scratch_rows = 4 * static_cast<uint64_t>(ce.rows);
      break;
    }
    case fb::Op_Linear: {
      const auto l = plan::Read<op::Linear<uint32_t>>(in);
      if (!half) break;
      if (IsF32(plan, l.x)) x.copies[0] = Copy(l.rows * l.in);
      x.copies[1] = Copy(l.out * l.in);
      if (plan::Has(l.bias) && !IsF32(plan, l.y)) x.copies[2] = Copy(l.out);
      x.workspace = kLtWorkspace;
      break;
    }
    case fb::Op_LinearGrad: {
      const auto l = plan::Read<op::LinearGrad<uint32_t>>(in);
      if (plan::Has(l.dbias))
        x.scratch_rows = 4 * ColumnChunks(l.rows) * static_cast<uint64_t>(l.out);
      if (!half) break;
      if (IsF32(plan, l.dy)) x.copies[0] = Copy(l.rows * l.out);
      if (plan::Has(l.dx)) x.copies[1] = Copy(l.out * l.in);
      if (plan::Has(l.dw) && IsF32(plan, l.x)) x.copies[2] = Copy(l.rows * l.in);
      x.workspace = kLtWorkspace;
      break;
    }
    case fb::Op_LayerNormGrad: {  // dw's and db's partials
      const auto n = plan::Read<op::LayerNormGrad<uint32_t>>(in);
      x.scratch_rows = 8 * ColumnChunks(n.rows) * static_cast<uint64_t>(n.c);
      break;
    }
    case fb::Op_RMSNormGrad: {
      const auto n = plan::Read<op::RMSNormGrad<uint32_t>>(in);
      x.scratch_rows = 4 * ColumnChunks(n.rows) * static_cast<uint64_t>(n.c);
      break;
    }
    case fb::Op_AttentionGrad: {  // the tiled backward's row dots (16-bit plans)
      const auto a = plan::Read<op::AttentionGrad<uint32_t>>(in);
      if (half)
        x.scratch_rows = 4 * static_cast<uint64_t>(a.batch) * static_cast<uint64_t>(a.heads) *
                         static_cast<uint64_t>(a.seq);
      break;
    }
    default:
      break;
  }
  return x;
}

CudaExtras ProgramExtras(const fb::Plan& plan,
                         const std::vector<std::vector<plan::Instruction>>& units) {
  CudaExtras most;
  for (const std::vector<plan::Instruction>& unit : units)
    for (const plan::Instruction& in : unit) {
      const CudaExtras x = InstructionExtras(plan, in);
      most.scratch_rows = std::max(most.scratch_rows, x.scratch_rows);
      for (size_t s = 0; s < most.copies.size(); ++s)
        most.copies[s] = std::max(most.copies[s], x.copies[s]);
      most.workspace = std::max(most.workspace, x.workspace);
    }
  return most;
}

std::string DescribeExtras(const fb::Plan& plan, const plan::MeshCoordinates& coords) {
  const auto units = plan::PrepareUnits(plan, coords);
  for (const std::vector<plan::Instruction>& unit : units)
    for (const plan::Instruction& in : unit)
      if (in.op == fb::Op_MoeRoute || in.op == fb::Op_MoeDispatch || in.op == fb::Op_MoeExperts ||
          in.op == fb::Op_MoeCombine)
        return "  with --backend cuda: not runnable (" + std::string(plan::OpName(in.op)) +
               ": the CUDA backend has no MoE kernels yet)\n";
  const CudaExtras x = ProgramExtras(plan, units);
  std::string out = "  with --backend cuda, device memory beyond the arena:\n";
  out += "    scratch           " + plan::FormatBytes(x.scratch()) + "\n";
  const uint64_t copies = x.copies[0] + x.copies[1] + x.copies[2];
  if (copies > 0)
    out += "    16-bit copies     " + plan::FormatBytes(copies) + " (of float32 GEMM operands)\n";
  if (x.workspace > 0)
    out += "    cuBLASLt          " + plan::FormatBytes(x.workspace) + " (workspace)\n";
  out += "    device in all     " + plan::FormatBytes(plan.arena_bytes() + x.total()) + "\n";
  return out;
}

}  // namespace heiretsu::cuda
