// The instruction set of a plan, generated from the one table in op_table.h:
//   - op::<Enum><B>, one struct per opcode with a field per buffer slot (of type B:
//     a buffer index in the runtime, an mlir::Value in the compiler), integer and
//     float attribute and prepared value, named as the table names them; Read()
//     fills one from an instruction, Write() hands its operands to a builder;
//   - Signature, what the verifiers (the plan dialect's and the runtime's) check
//     every instruction against: buffer dtypes and element counts as functions of
//     the integer attributes, attribute ranges, presence rules.
// So the compiler and the runtime cannot disagree about an instruction, and no
// code reads an instruction's operands by position.
#ifndef HEIRETSU_RUNTIME_PLAN_OPS_H_
#define HEIRETSU_RUNTIME_PLAN_OPS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/plan/op_table.h"
#include "runtime/plan/plan_generated.h"

namespace heiretsu::plan {

// An absent optional buffer.
inline constexpr uint32_t kNoBuffer = 0xFFFFFFFFu;

// Mesh axes and reductions as collectives' integer attributes encode them. `data`
// is not an axis of the mesh but the group of its data ranks, dp x ep (the ranks
// sharing a pp and a tp coordinate; member d = dp_i * ep + ep_i, DESIGN.md §3):
// ZeRO-1 shards the parameters every data rank holds over it.
enum MeshAxis : int64_t { kAxisDp = 0, kAxisPp = 1, kAxisTp = 2, kAxisEp = 3, kAxisData = 4 };
inline constexpr int kNumAxes = 5;
enum Reduction : int64_t { kReduceSum = 0, kReduceMax = 1, kReduceAvg = 2 };

// "dp", "pp", "tp", "ep" or "data"; "?" for anything else.
inline const char* AxisName(int64_t axis) {
  static const char* kNames[] = {"dp", "pp", "tp", "ep", "data"};
  return axis >= 0 && axis < kNumAxes ? kNames[axis] : "?";
}
// "sum", "max" or "avg"; "?" for anything else.
inline const char* ReductionName(int64_t reduce) {
  static const char* kNames[] = {"sum", "max", "avg"};
  return reduce >= 0 && reduce <= kReduceAvg ? kNames[reduce] : "?";
}

// What an integer attribute may hold (op_table.h: Size, Flag, Axis, Reduce).
enum class IntKind { kSize, kFlag, kAxis, kReduce };
// The largest value of `kind`: 2^31 - 1 for sizes.
int64_t MaxValue(IntKind kind);

enum class Presence { kRequired, kOptional, kIff };

struct BufferSlot {
  const char* name;
  fb::DType dtype;
  Presence presence;
  int64_t numel;            // from the instruction's ints; -1 = any
  bool optional() const { return presence != Presence::kRequired; }
};

struct IntSlot {
  const char* name;
  IntKind kind;
};

struct Signature {
  const char* name = nullptr;
  std::vector<BufferSlot> buffers;   // empty when variadic
  bool variadic = false;             // any positive number of `variadic_dtype` buffers
  fb::DType variadic_dtype = fb::DType_F32;
  std::vector<IntSlot> ints;
  std::vector<const char*> floats;
  // Pairs (a, b) of integer attribute positions with ints[a] <= ints[b] required.
  std::vector<std::pair<size_t, size_t>> at_most;
  // Pairs (buffer slot, integer attribute position): the buffer is present
  // exactly when that flag is 1.
  std::vector<std::pair<size_t, size_t>> present_iff;
  // Values the runtime resolves for each rank when it prepares the plan.
  std::vector<const char*> resolved;
};

// The signature of `op` given the instruction's integer attributes (sizes are read
// from them; missing ones count as 0). An opcode outside the table has name null.
Signature OpSignature(fb::Op op, const std::vector<int64_t>& ints = {});

// The mesh axis a collective or send / recv runs over (its Axis attribute, as the
// table kinds it), nullopt for an instruction that communicates over none.
std::optional<int64_t> CommAxis(fb::Op op, const std::vector<int64_t>& ints);

// Whether operand `slot` (its name in the table) of `op` may be stored in 16 bits
// (BF16, F16): the activations and their gradients, which mixed precision narrows
// (compiler/transforms/Precision.cpp: exactly these, when all of a buffer's uses are
// among them) and backends widen to float32 (exec/backend.h); the verifier refuses a
// 16-bit buffer anywhere else. Statistics (mean, rstd, lse), losses, ids, MoE
// routing, parameters and every communication operand are float32.
bool Takes16Bit(fb::Op op, const std::string& slot);

// The text name of `op` ("linear", "attention_grad"...), "?" outside the table.
const char* OpName(fb::Op op);
// The opcode named `name`.
std::optional<fb::Op> OpFromName(const std::string& name);

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

// The typed operands of every opcode. A source for Read provides
//   B Buffer(size_t slot), std::vector<B> Buffers(), int64_t Int(size_t),
//   double Float(size_t), int64_t Resolved(size_t)
// and a sink for Write
//   void Buffer(const B&), void Int(int64_t), void Float(double)
// (slots, then ints, then floats, each in table order; resolved values are not
// written: they are not part of a plan).
namespace op {

// What a buffer field holds when not set: an absent buffer (kNoBuffer for buffer
// indices, a null value for the compiler's mlir::Value).
template <class B>
B Absent() {
  if constexpr (std::is_same_v<B, uint32_t>)
    return kNoBuffer;
  else
    return B();
}

#define HEIRETSU_FIELD_BUF_(name, ...) B name = Absent<B>();
#define HEIRETSU_FIELD_VAR_(dtype) std::vector<B> buffers;
#define HEIRETSU_FIELD_INT_(name, kind) int64_t name = 0;
#define HEIRETSU_FIELD_FLT_(name) double name = 0;
#define HEIRETSU_FIELD_RES_(name) int64_t name = 0;
#define HEIRETSU_READ_BUF_(name, ...) out_.name = src_.Buffer(nb_++);
#define HEIRETSU_READ_VAR_(dtype) out_.buffers = src_.Buffers();
#define HEIRETSU_READ_INT_(name, kind) out_.name = src_.Int(ni_++);
#define HEIRETSU_READ_FLT_(name) out_.name = src_.Float(nf_++);
#define HEIRETSU_READ_RES_(name) out_.name = src_.Resolved(nr_++);
#define HEIRETSU_WRITE_BUF_(name, ...) sink_.Buffer(name);
#define HEIRETSU_WRITE_VAR_(dtype) \
  for (const B& buffer_ : buffers) sink_.Buffer(buffer_);
#define HEIRETSU_WRITE_INT_(name, kind) sink_.Int(name);
#define HEIRETSU_WRITE_FLT_(name) sink_.Float(name);
#define HEIRETSU_DEFINE_OP_(Enum, text)                                                      \
  template <class B>                                                                         \
  struct Enum {                                                                              \
    static constexpr fb::Op kOp = fb::Op_##Enum;                                             \
    static constexpr const char* kName = #text;                                              \
    HEIRETSU_SLOTS_(Enum, HEIRETSU_FIELD_BUF_, HEIRETSU_FIELD_VAR_)                          \
    HEIRETSU_INTS_(Enum, HEIRETSU_FIELD_INT_)                                                \
    HEIRETSU_FLOATS_(Enum, HEIRETSU_FIELD_FLT_)                                              \
    HEIRETSU_RESOLVED_(Enum, HEIRETSU_FIELD_RES_)                                            \
    template <class Src>                                                                     \
    static Enum Read(const Src& src_) {                                                      \
      Enum out_;                                                                             \
      [[maybe_unused]] size_t nb_ = 0, ni_ = 0, nf_ = 0, nr_ = 0;                            \
      HEIRETSU_SLOTS_(Enum, HEIRETSU_READ_BUF_, HEIRETSU_READ_VAR_)                          \
      HEIRETSU_INTS_(Enum, HEIRETSU_READ_INT_)                                               \
      HEIRETSU_FLOATS_(Enum, HEIRETSU_READ_FLT_)                                             \
      HEIRETSU_RESOLVED_(Enum, HEIRETSU_READ_RES_)                                           \
      return out_;                                                                           \
    }                                                                                        \
    template <class Sink>                                                                    \
    void Write(Sink& sink_) const {                                                          \
      HEIRETSU_SLOTS_(Enum, HEIRETSU_WRITE_BUF_, HEIRETSU_WRITE_VAR_)                        \
      HEIRETSU_INTS_(Enum, HEIRETSU_WRITE_INT_)                                              \
      HEIRETSU_FLOATS_(Enum, HEIRETSU_WRITE_FLT_)                                            \
    }                                                                                        \
  };
HEIRETSU_OPS(HEIRETSU_DEFINE_OP_)
#undef HEIRETSU_DEFINE_OP_
#undef HEIRETSU_FIELD_BUF_
#undef HEIRETSU_FIELD_VAR_
#undef HEIRETSU_FIELD_INT_
#undef HEIRETSU_FIELD_FLT_
#undef HEIRETSU_FIELD_RES_
#undef HEIRETSU_READ_BUF_
#undef HEIRETSU_READ_VAR_
#undef HEIRETSU_READ_INT_
#undef HEIRETSU_READ_FLT_
#undef HEIRETSU_READ_RES_
#undef HEIRETSU_WRITE_BUF_
#undef HEIRETSU_WRITE_VAR_
#undef HEIRETSU_WRITE_INT_
#undef HEIRETSU_WRITE_FLT_

}  // namespace op

// Calls f(op::<Enum><B>{}) for opcode `code` (a value-initialized struct whose type
// tells the opcode) and returns its result; `otherwise()` for a code outside the
// table.
template <class B, class F, class G>
decltype(auto) VisitOp(fb::Op code, F&& f, G&& otherwise) {
  switch (code) {
#define HEIRETSU_VISIT_(Enum, text) \
  case fb::Op_##Enum:               \
    return f(op::Enum<B>{});
    HEIRETSU_OPS(HEIRETSU_VISIT_)
#undef HEIRETSU_VISIT_
  }
  return otherwise();
}

// Reads a FlatBuffers instruction of the plan file (op::X<uint32_t>::Read(
// InstrSource{instr})). Resolved values read as 0: see prepare.h for a rank's.
struct InstrSource {
  const fb::Instr& in;
  uint32_t Buffer(size_t i) const { return in.buffers()->Get(static_cast<uint32_t>(i)); }
  std::vector<uint32_t> Buffers() const {
    return in.buffers() ? std::vector<uint32_t>(in.buffers()->begin(), in.buffers()->end())
                        : std::vector<uint32_t>();
  }
  int64_t Int(size_t i) const { return in.ints()->Get(static_cast<uint32_t>(i)); }
  double Float(size_t i) const { return in.floats()->Get(static_cast<uint32_t>(i)); }
  int64_t Resolved(size_t) const { return 0; }
};

template <class Op>
Op Read(const fb::Instr& in) {
  return Op::Read(InstrSource{in});
}

// Collects an instruction's operands from Write (the emitter, tests' plan builders).
struct InstrSink {
  std::vector<uint32_t> buffers;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  void Buffer(uint32_t b) { buffers.push_back(b); }
  void Int(int64_t v) { ints.push_back(v); }
  void Float(double v) { floats.push_back(v); }
};

}  // namespace heiretsu::plan

#endif  // HEIRETSU_RUNTIME_PLAN_OPS_H_
