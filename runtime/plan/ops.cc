// The signatures of ops.h, generated from op_table.h: each opcode's integer
// attributes are read into locals named as the table names them, so the table's
// element-count expressions (N(rows, in)) evaluate against this instruction.
#include "runtime/plan/ops.h"

#include <cstring>
#include <initializer_list>
#include <set>
#include <utility>

namespace heiretsu::plan {
namespace {

constexpr fb::DType F32 = fb::DType_F32;
constexpr fb::DType I32 = fb::DType_I32;
constexpr int64_t Any = -1;

int64_t At(const std::vector<int64_t>& v, size_t i) { return i < v.size() ? v[i] : 0; }

// Product of sizes, saturating at INT64_MAX so hostile attributes cannot overflow
// (the verifier then reports a size mismatch).
template <class... T>
int64_t N(T... factors) {
  __int128 p = 1;
  for (int64_t f : {static_cast<int64_t>(factors)...}) {
    p *= f;
    if (p > INT64_MAX || p < 0) return INT64_MAX;
  }
  return static_cast<int64_t>(p);
}

size_t IntIndex(const Signature& sig, const char* name) {
  for (size_t i = 0; i < sig.ints.size(); ++i)
    if (std::strcmp(sig.ints[i].name, name) == 0) return i;
  return sig.ints.size();  // not reached: the table names its own attributes
}

struct PresenceSpec {
  Presence presence;
  const char* flag;
};

}  // namespace

int64_t MaxValue(IntKind kind) {
  switch (kind) {
    case IntKind::kSize: return (int64_t{1} << 31) - 1;
    case IntKind::kFlag: return 1;
    case IntKind::kAxis: return kNumAxes - 1;
    case IntKind::kReduce: return kReduceAvg;
  }
  return 0;
}

#define Req PresenceSpec{Presence::kRequired, nullptr}
#define Opt PresenceSpec{Presence::kOptional, nullptr}
#define Iff(flag) PresenceSpec{Presence::kIff, #flag}
#define HEIRETSU_SIG_INT_(name, kind)                                \
  [[maybe_unused]] const int64_t name = At(ints, sig.ints.size()); \
  sig.ints.push_back({#name, IntKind::k##kind});
#define HEIRETSU_SIG_BUF_(name, dtype, when, numel)                        \
  {                                                                        \
    const PresenceSpec p = when;                                           \
    if (p.flag) sig.present_iff.push_back({sig.buffers.size(), IntIndex(sig, p.flag)}); \
    sig.buffers.push_back({#name, dtype, p.presence, numel});              \
  }
#define HEIRETSU_SIG_VAR_(dtype) \
  sig.variadic = true;           \
  sig.variadic_dtype = dtype;
#define HEIRETSU_SIG_FLT_(name) sig.floats.push_back(#name);
#define HEIRETSU_SIG_LE_(a, b) sig.at_most.push_back({IntIndex(sig, #a), IntIndex(sig, #b)});
#define HEIRETSU_SIG_RES_(name) sig.resolved.push_back(#name);

Signature OpSignature(fb::Op op, const std::vector<int64_t>& ints) {
  Signature sig;
  switch (op) {
#define HEIRETSU_SIG_CASE_(Enum, text)                                                         \
  case fb::Op_##Enum: {                                                                        \
    sig.name = #text;                                                                          \
    HEIRETSU_INTS_(Enum, HEIRETSU_SIG_INT_)                                                    \
    HEIRETSU_OP_##Enum(HEIRETSU_SIG_BUF_, HEIRETSU_SIG_VAR_, HEIRETSU_IGNORE_, HEIRETSU_SIG_FLT_, \
                       HEIRETSU_SIG_LE_, HEIRETSU_SIG_RES_)                                    \
    return sig;                                                                                \
  }
    HEIRETSU_OPS(HEIRETSU_SIG_CASE_)
#undef HEIRETSU_SIG_CASE_
  }
  return sig;
}

#undef Req
#undef Opt
#undef Iff
#undef HEIRETSU_SIG_INT_
#undef HEIRETSU_SIG_BUF_
#undef HEIRETSU_SIG_VAR_
#undef HEIRETSU_SIG_FLT_
#undef HEIRETSU_SIG_LE_
#undef HEIRETSU_SIG_RES_

// The table lists every opcode of plan.fbs, in plan.fbs's order.
#define HEIRETSU_COUNT_(Enum, text) +1
static_assert(0 HEIRETSU_OPS(HEIRETSU_COUNT_) == fb::Op_MAX + 1,
              "op_table.h and plan.fbs list different opcodes");
#undef HEIRETSU_COUNT_

std::optional<int64_t> CommAxis(fb::Op op, const std::vector<int64_t>& ints) {
  const Signature sig = OpSignature(op, ints);
  for (size_t i = 0; i < sig.ints.size(); ++i)
    if (sig.ints[i].kind == IntKind::kAxis) return At(ints, i);
  return std::nullopt;
}

bool Takes16Bit(fb::Op op, const std::string& slot) {
  static const std::set<std::pair<fb::Op, std::string>> slots = {
      {fb::Op_Zero, "buffer"},
      {fb::Op_Embedding, "out"},         {fb::Op_EmbeddingGrad, "dout"},
      {fb::Op_Linear, "x"},              {fb::Op_Linear, "y"},
      {fb::Op_LinearGrad, "dy"},         {fb::Op_LinearGrad, "x"},
      {fb::Op_LinearGrad, "dx"},
      {fb::Op_LayerNorm, "x"},           {fb::Op_LayerNorm, "y"},
      {fb::Op_LayerNormGrad, "dy"},      {fb::Op_LayerNormGrad, "x"},
      {fb::Op_LayerNormGrad, "dx"},
      {fb::Op_RMSNorm, "x"},             {fb::Op_RMSNorm, "y"},
      {fb::Op_RMSNormGrad, "dy"},        {fb::Op_RMSNormGrad, "x"},
      {fb::Op_RMSNormGrad, "dx"},
      {fb::Op_Gelu, "x"},                {fb::Op_Gelu, "y"},
      {fb::Op_GeluGrad, "dy"},           {fb::Op_GeluGrad, "x"},
      {fb::Op_GeluGrad, "dx"},
      {fb::Op_Swiglu, "gate"},           {fb::Op_Swiglu, "up"},
      {fb::Op_Swiglu, "y"},
      {fb::Op_SwigluGrad, "dy"},         {fb::Op_SwigluGrad, "gate"},
      {fb::Op_SwigluGrad, "up"},         {fb::Op_SwigluGrad, "dgate"},
      {fb::Op_SwigluGrad, "dup"},
      {fb::Op_Add, "a"},                 {fb::Op_Add, "b"},
      {fb::Op_Add, "y"},
      {fb::Op_Rope, "x"},                {fb::Op_Rope, "y"},
      {fb::Op_RopeGrad, "dy"},           {fb::Op_RopeGrad, "dx"},
      {fb::Op_Attention, "q"},           {fb::Op_Attention, "k"},
      {fb::Op_Attention, "v"},           {fb::Op_Attention, "out"},
      {fb::Op_AttentionGrad, "dout"},    {fb::Op_AttentionGrad, "q"},
      {fb::Op_AttentionGrad, "k"},       {fb::Op_AttentionGrad, "v"},
      {fb::Op_AttentionGrad, "out"},     {fb::Op_AttentionGrad, "dq"},
      {fb::Op_AttentionGrad, "dk"},      {fb::Op_AttentionGrad, "dv"},
      {fb::Op_CrossEntropy, "logits"},
      {fb::Op_CrossEntropyGrad, "logits"}, {fb::Op_CrossEntropyGrad, "dlogits"},
  };
  return slots.count({op, slot}) != 0;
}

const char* OpName(fb::Op op) {
  switch (op) {
#define HEIRETSU_NAME_(Enum, text) \
  case fb::Op_##Enum:              \
    return #text;
    HEIRETSU_OPS(HEIRETSU_NAME_)
#undef HEIRETSU_NAME_
  }
  return "?";
}

std::optional<fb::Op> OpFromName(const std::string& name) {
#define HEIRETSU_FROM_NAME_(Enum, text) \
  if (name == #text) return fb::Op_##Enum;
  HEIRETSU_OPS(HEIRETSU_FROM_NAME_)
#undef HEIRETSU_FROM_NAME_
  return std::nullopt;
}

}  // namespace heiretsu::plan
