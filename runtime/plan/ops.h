// The instruction set of a plan: for every opcode of plan.fbs, the buffers it
// takes (in order, with dtype and element count as a function of its integer
// attributes), its integer and float attributes. The verifier checks every
// instruction against this table, so the executor can trust what it reads; the
// compiler's emitter writes instructions in this order.
#ifndef HEIRETSU_RUNTIME_PLAN_OPS_H_
#define HEIRETSU_RUNTIME_PLAN_OPS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/plan/plan_generated.h"

namespace heiretsu::plan {

// An absent optional buffer.
inline constexpr uint32_t kNoBuffer = 0xFFFFFFFFu;

struct BufferSlot {
  const char* name;
  fb::DType dtype;
  bool optional;
  // Element count the buffer must have, from the instruction's ints; -1 = any.
  int64_t numel;
};

struct Signature {
  const char* name;
  std::vector<BufferSlot> buffers;  // empty + variadic = any number of F32 buffers
  bool variadic = false;
  std::vector<const char*> ints;
  std::vector<const char*> floats;
  // Pairs (a, b) of integer attribute positions with ints[a] <= ints[b] required.
  std::vector<std::pair<size_t, size_t>> at_most = {};
  // Pairs (buffer slot, integer attribute position): the optional buffer is present
  // exactly when that 0/1 flag is 1 (MoE's gate buffers and `swiglu`).
  std::vector<std::pair<size_t, size_t>> present_iff = {};
  // Pairs (integer attribute position, largest value): enumerations such as a
  // mesh axis (0-3) or a reduction (0-2).
  std::vector<std::pair<size_t, int64_t>> max_value = {};
};

// Mesh axes and reductions as collectives' integer attributes encode them.
enum MeshAxis : int64_t { kAxisDp = 0, kAxisPp = 1, kAxisTp = 2, kAxisEp = 3 };
enum Reduction : int64_t { kReduceSum = 0, kReduceMax = 1, kReduceAvg = 2 };

// "dp", "pp", "tp" or "ep"; "?" for anything else.
inline const char* AxisName(int64_t axis) {
  static const char* kNames[] = {"dp", "pp", "tp", "ep"};
  return axis >= 0 && axis < 4 ? kNames[axis] : "?";
}

// The signature of `op` given the instruction's integer attributes (which must
// number at least Signature(op, {}).ints.size(); sizes read from them).
Signature OpSignature(fb::Op op, const std::vector<int64_t>& ints);

// Whether integer attribute `name` is a 0/1 flag (accumulate_dx, weight_decay,
// swiglu, sharded) rather than a size.
bool IsFlag(const char* name);

// Rank `rank`'s piece of a flattened tensor of n elements cut into `parts` pieces
// of ceil(n / parts) (the last ones shorter or empty): ZeRO-1 shards and the blocks
// of reduce_scatter / all_gather.
struct Shard {
  int64_t begin = 0, size = 0;
};
inline int64_t ShardSize(int64_t n, int64_t parts) { return (n + parts - 1) / parts; }
inline Shard ShardOf(int64_t n, int64_t rank, int64_t parts) {
  const int64_t s = ShardSize(n, parts);
  const int64_t begin = rank * s < n ? rank * s : n;
  const int64_t end = (rank + 1) * s < n ? (rank + 1) * s : n;
  return {begin, end - begin};
}

// The opcode whose signature is named `name` ("linear", "attention_grad"...).
std::optional<fb::Op> OpFromName(const std::string& name);

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_OPS_H_
