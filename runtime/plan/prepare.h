// A plan prepared for one rank: every choice that depends on the rank's mesh
// coordinates is made here, once, before the first step, so that backends read
// only resolved operands (op_table.h's RES values) and never re-derive them:
//   - linear, row-parallel: tp rank 0 alone adds the bias (others see no bias);
//   - embedding, vocabulary-parallel: the rank's block of vocabulary rows, and tp
//     rank 0 alone adds the positions;
//   - the vocabulary-parallel loss: the logical column of the rank's first logit;
//   - ZeRO-1: the elements of each parameter (clip_adamw) and gradient
//     (grad_norm_sq) this rank's dp shard covers.
// It also records, once, the mesh axis each collective or send / recv runs over, so
// the executor does not look it up per instruction.
#ifndef HEIRETSU_RUNTIME_PLAN_PREPARE_H_
#define HEIRETSU_RUNTIME_PLAN_PREPARE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::plan {

// One instruction of a verified plan, prepared for a rank. It is a Read source of
// ops.h (op::Linear<uint32_t>::Read(instruction)).
struct Instruction {
  fb::Op op = fb::Op_Zero;
  std::vector<uint32_t> buffers;  // the plan's; kNoBuffer where this rank skips one
  std::vector<int64_t> ints;      // the plan's
  std::vector<double> floats;     // the plan's
  std::vector<int64_t> resolved;  // op_table.h's RES values, in table order
  // For variadic opcodes: the elements of each buffer this rank works on (all of
  // it unless a ZeRO-1 shard).
  std::vector<Shard> ranges;
  // The mesh axis whose group a collective or send / recv runs over (CommAxis).
  std::optional<int64_t> axis;
  // Set by the executor, never in a plan: this instruction writes the weight
  // gradients WeightGradientsOf names instead of adding to them, because it is the
  // first to touch them in the step (Executor: the first run of its unit uses a
  // copy of the unit with this set; the gradients are then not zeroed beforehand).
  bool overwrite_weight_grads = false;
  // Set by the executor, never in a plan (Executor::PlanMirroredUpdates: ZeRO-1 over
  // a group whose members share their arenas): clip_adamw's `mirrors` are the other
  // members' copies of its parameter's updated range, which it writes too, and
  // `mirror_axis` that group's axis (-1: none); the all_gather of those parameters
  // is then `mirrored`: its data is in place, only its synchronization remains.
  std::vector<float*> mirrors;
  int32_t mirror_axis = -1;
  bool mirrored = false;
  // ... and for an update split over data-parallel ranks that keep whole moments
  // (no ZeRO-1, Executor::PlanSplitUpdates): the executor narrows clip_adamw's
  // range to this rank's part of the parameter, `mirrors` are the other members'
  // copies of that part, and `mirror_sync_after` ends the split updates with a
  // barrier of the group. When the group keeps one copy of the parameters
  // (Executor::PlanSharedParameters) `mirrors` is empty and `mirror_axis` still
  // names the group whose barriers surround the updates.
  bool mirror_sync_after = false;
  // Set by the executor, never in a plan (Executor::PlanDirectReduceScatters,
  // PlanSplitReduces): reduce_scatter's, bucket_reduce_scatter's and
  // bucket_all_reduce's `copies`, per buffer every member's copy of this member's
  // shard or part (its own at its rank), which the executor sums; and
  // grad_norm_sq's `norm_from_reduce`: its buffers' sums of squares may be those the
  // direct reduce-scatters computed as they wrote them this step.
  std::vector<std::vector<float*>> copies;
  bool norm_from_reduce = false;
  // Set by the executor, never in a plan (Executor::PlanSplitNorms): grad_norm_sq's
  // sums of squares are split over the group of this axis (-1: none).
  int32_t split_norm_axis = -1;

  uint32_t Buffer(size_t i) const { return buffers[i]; }
  std::vector<uint32_t> Buffers() const { return buffers; }
  int64_t Int(size_t i) const { return ints[i]; }
  double Float(size_t i) const { return floats[i]; }
  int64_t Resolved(size_t i) const { return resolved[i]; }
};

template <class Op>
Op Read(const Instruction& in) {
  return Op::Read(in);
}

// The weight-gradient buffers `instr` adds to that the backends can write instead
// (Instruction::overwrite_weight_grads): linear_grad's dw and dbias, layernorm_grad's
// dw and db, rmsnorm_grad's dw, those present. Empty for every other opcode.
std::vector<uint32_t> WeightGradientsOf(const Instruction& instr);

// `instr` of `plan` prepared for the rank at `coords`.
Instruction Prepare(const fb::Plan& plan, const fb::Instr& instr, const MeshCoordinates& coords);

// Every unit's instructions prepared, indexed like plan.units().
std::vector<std::vector<Instruction>> PrepareUnits(const fb::Plan& plan,
                                                   const MeshCoordinates& coords);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_PREPARE_H_
