// A small helper for tests that build plans by hand with the generated FlatBuffers
// API (the same API the compiler's emitter uses): buffers are laid out one after
// another in the arena, 64-byte aligned, in the order they were declared; slotted
// ones (Slotted) after all the others, once per activation slot (SetSlots), each
// slot's copies slot_bytes after the previous slot's.
#ifndef HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_
#define HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::testing {

class PlanBuilder {
 public:
  // Declares a buffer; Finish places it.
  uint32_t Buffer(const std::string& name, std::vector<int64_t> shape,
                  plan::fb::DType dtype = plan::fb::DType_F32) {
    specs_.push_back({name, std::move(shape), dtype, false});
    return static_cast<uint32_t>(specs_.size() - 1);
  }

  // Marks a buffer slotted: the arena holds one copy of it per activation slot.
  void Slotted(uint32_t buffer) { specs_[buffer].slotted = true; }
  // The activation slots (plan.fbs: Plan.slots; default 1). `slot_bytes` replaces
  // the distance between two slots' copies Finish computes (the slotted buffers'
  // span): only for plans the verifier must refuse.
  void SetSlots(uint32_t slots, std::optional<uint64_t> slot_bytes = std::nullopt) {
    slots_ = slots;
    slot_bytes_ = slot_bytes;
  }

  // The microbatch inputs (tokens, targets: batch x seq ids) and the loss, the first
  // buffers of a hand-built plan.
  struct Io {
    uint32_t tokens, targets, loss;
  };
  Io AddIo(int64_t batch, int64_t seq) {
    const uint32_t tokens = Buffer("tokens", {batch, seq}, plan::fb::DType_I32);
    const uint32_t targets = Buffer("targets", {batch, seq}, plan::fb::DType_I32);
    return {tokens, targets, Buffer("loss", {1})};
  }

  // A parameter with its value, gradient and AdamW moments; returns {value, grad}.
  std::pair<uint32_t, uint32_t> Param(const std::string& name, std::vector<int64_t> shape,
                                      plan::fb::Init init, double std, bool decay) {
    uint32_t value = Buffer(name, shape), grad = Buffer(name + ".grad", shape);
    uint32_t m = Buffer(name + ".exp_avg", shape), v = Buffer(name + ".exp_avg_sq", shape);
    params_.push_back(plan::fb::CreateParamDirect(fbb_, name.c_str(), &shape, init, std, decay,
                                                  value, grad, m, v, 0, nullptr));
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    update_.push_back(Instr(plan::op::ClipAndAdamW<uint32_t>{
        .param = value, .grad = grad, .exp_avg = m, .exp_avg_sq = v, .n = n,
        .weight_decay = decay ? 1 : 0}));
    grads_.push_back(grad);
    return {value, grad};
  }

  // An instruction from its named operands (ops.h).
  template <class Op>
  flatbuffers::Offset<plan::fb::Instr> Instr(const Op& op) {
    plan::InstrSink sink;
    op.Write(sink);
    return plan::fb::CreateInstrDirect(fbb_, Op::kOp, &sink.buffers, &sink.ints, &sink.floats);
  }
  // An instruction from raw operand lists: only for building malformed plans that
  // the verifier must refuse.
  flatbuffers::Offset<plan::fb::Instr> RawInstr(plan::fb::Op op, std::vector<uint32_t> buffers,
                                                std::vector<int64_t> ints,
                                                std::vector<double> floats = {}) {
    return plan::fb::CreateInstrDirect(fbb_, op, &buffers, &ints, &floats);
  }

  // The forward and backward units run once per microbatch, in that order.
  template <class Op>
  void Forward(const Op& op) { forward_.push_back(Instr(op)); }
  template <class Op>
  void Backward(const Op& op) { backward_.push_back(Instr(op)); }
  void RawForward(plan::fb::Op op, std::vector<uint32_t> buffers, std::vector<int64_t> ints,
                  std::vector<double> floats = {}) {
    forward_.push_back(RawInstr(op, std::move(buffers), std::move(ints), std::move(floats)));
  }

  // A schedule other than the standard one (runs of units 0 forward, 1 backward,
  // 2 update): for plans the verifier must refuse.
  void SetSchedule(std::vector<plan::fb::Run> schedule) { schedule_ = std::move(schedule); }

  // The mesh and this program's stage (default: one rank).
  void SetMesh(int dp, int pp, int tp, int ep, int stage = 0) {
    mesh_ = plan::fb::Mesh(dp, pp, tp, ep);
    stage_ = stage;
  }

  // Finishes the plan: units forward, backward and update (the gradient norm, then
  // AdamW per parameter), scheduled forward(m), backward(m) for every microbatch,
  // then update, all on slot 0. Absent tokens / targets / loss are kNoBuffer.
  std::vector<uint8_t> Finish(int64_t batch, int64_t seq, int64_t vocab, int64_t microbatches,
                              uint32_t tokens, uint32_t targets, uint32_t loss,
                              uint32_t version = plan::kPlanVersion) {
    // The buffers: the others first, then the slotted ones, slot 0's copies.
    std::vector<uint64_t> offsets(specs_.size());
    uint64_t arena = 0;
    for (bool slotted : {false, true})
      for (size_t i = 0; i < specs_.size(); ++i) {
        if (specs_[i].slotted != slotted) continue;
        int64_t n = 1;
        for (int64_t d : specs_[i].shape) n *= d;
        offsets[i] = arena;
        arena += (static_cast<uint64_t>(n) * plan::DTypeSize(specs_[i].dtype) + 63) / 64 * 64;
      }
    uint64_t slotted_begin = arena;
    for (size_t i = 0; i < specs_.size(); ++i)
      if (specs_[i].slotted) slotted_begin = std::min(slotted_begin, offsets[i]);
    // The arena holds every slot's copies of the slotted span (whatever slot_bytes
    // a test states instead).
    const uint64_t span = arena - slotted_begin;
    const uint64_t slot_bytes = slot_bytes_.value_or(span);
    if (slots_ > 1) arena += (slots_ - 1) * span;
    std::vector<flatbuffers::Offset<plan::fb::Buffer>> buffers;
    for (size_t i = 0; i < specs_.size(); ++i)
      buffers.push_back(plan::fb::CreateBufferDirect(fbb_, specs_[i].name.c_str(), offsets[i],
                                                     specs_[i].dtype, &specs_[i].shape,
                                                     specs_[i].slotted));
    std::vector<flatbuffers::Offset<plan::fb::Instr>> update;
    update.push_back(Instr(plan::op::GradNormSq<uint32_t>{.buffers = grads_}));
    update.insert(update.end(), update_.begin(), update_.end());
    auto opt = plan::fb::CreateOptimizer(fbb_);
    std::vector<flatbuffers::Offset<plan::fb::Unit>> units = {
        plan::fb::CreateUnitDirect(fbb_, "forward", plan::fb::UnitKind_Forward, &forward_),
        plan::fb::CreateUnitDirect(fbb_, "backward", plan::fb::UnitKind_Backward, &backward_),
        plan::fb::CreateUnitDirect(fbb_, "update", plan::fb::UnitKind_Update, &update)};
    std::vector<plan::fb::Run> schedule = schedule_;
    if (schedule.empty()) {
      for (int m = 0; m < microbatches; ++m) {
        schedule.emplace_back(0, m, 0, 0);
        schedule.emplace_back(1, m, 0, 0);
      }
      schedule.emplace_back(2, -1, 0, 0);
    }
    auto root = plan::fb::CreatePlanDirect(fbb_, version, "test", &mesh_, stage_, mesh_.pp(), batch,
                                           microbatches, seq, vocab, arena, 0, 0, &buffers,
                                           &params_, tokens, targets, loss, &units, &schedule, opt,
                                           slots_, slot_bytes);
    plan::fb::FinishSizePrefixedPlanBuffer(fbb_, root);
    std::vector<uint8_t> bytes(fbb_.GetBufferPointer(), fbb_.GetBufferPointer() + fbb_.GetSize());
    plan::SealPlan(&bytes);
    return bytes;
  }

 private:
  struct BufferSpec {
    std::string name;
    std::vector<int64_t> shape;
    plan::fb::DType dtype;
    bool slotted;
  };
  flatbuffers::FlatBufferBuilder fbb_;
  std::vector<BufferSpec> specs_;
  uint32_t slots_ = 1;
  std::optional<uint64_t> slot_bytes_;
  std::vector<flatbuffers::Offset<plan::fb::Param>> params_;
  std::vector<flatbuffers::Offset<plan::fb::Instr>> forward_, backward_, update_;
  std::vector<uint32_t> grads_;
  plan::fb::Mesh mesh_{1, 1, 1, 1};
  std::vector<plan::fb::Run> schedule_;
  int stage_ = 0;
};

// A bigram model (embedding -> layernorm -> linear head -> cross-entropy) with its
// backward pass and AdamW, the small model the executor and checkpoint tests train.
struct BigramOptions {
  int64_t vocab = 16, batch = 4, seq = 8, c = 8, microbatches = 1;
  std::string head = "lm_head.weight";
  bool extra_param = false;  // a parameter no instruction reads
  uint32_t version = plan::kPlanVersion;
  // Scales the loss gradient (not the loss): a huge one makes the gradients, and so
  // the gradient norm, overflow while the loss stays finite.
  double grad_scale = 1.0;
  // Activation slots: with more than one, what the forward keeps for the backward
  // (the inputs, every activation the backward reads) and the loss are slotted.
  uint32_t slots = 1;
  // A schedule other than forward(m) backward(m) ... update (units 0, 1, 2).
  std::vector<plan::fb::Run> schedule;
  // The activations' and their gradients' dtype (x, h, logits, dlogits, dh, dx);
  // the norm's statistics, lse and the loss stay float32, as do the parameters.
  plan::fb::DType activations = plan::fb::DType_F32;
};

// Microbatch m of the rule the bigram model can learn, target = (3 token + 1) mod
// vocab, for the default geometry of BigramOptions (a FillMicrobatch); either
// pointer may be null (a run that reads no tokens or no targets).
inline void FillBigramRule(int64_t m, int32_t* tokens, int32_t* targets) {
  const BigramOptions o;
  for (int64_t i = 0; i < o.batch * o.seq; ++i) {
    const int32_t token = static_cast<int32_t>((i * 7 + m * 5) % o.vocab);
    if (tokens) tokens[i] = token;
    if (targets) targets[i] = static_cast<int32_t>((3 * token + 1) % o.vocab);
  }
}

inline std::vector<uint8_t> BuildBigram(const BigramOptions& o) {
  namespace fb = plan::fb;
  const int64_t rows = o.batch * o.seq, c = o.c, v = o.vocab;
  PlanBuilder b;
  uint32_t tokens = b.Buffer("tokens", {o.batch, o.seq}, fb::DType_I32);
  uint32_t targets = b.Buffer("targets", {o.batch, o.seq}, fb::DType_I32);
  auto [wte, dwte] = b.Param("wte", {v, c}, fb::Init_Normal, 0.02, true);
  auto [g, dg] = b.Param("norm.weight", {c}, fb::Init_Ones, 0, false);
  auto [beta, dbeta] = b.Param("norm.bias", {c}, fb::Init_Zeros, 0, false);
  auto [head, dhead] = b.Param(o.head, {v, c}, fb::Init_Normal, 0.02, true);
  if (o.extra_param) b.Param("extra", {3}, fb::Init_Zeros, 0, false);
  const fb::DType a = o.activations;
  uint32_t x = b.Buffer("x", {rows, c}, a), h = b.Buffer("h", {rows, c}, a);
  uint32_t mean = b.Buffer("mean", {rows}), rstd = b.Buffer("rstd", {rows});
  uint32_t logits = b.Buffer("logits", {rows, v}, a), lse = b.Buffer("lse", {rows});
  uint32_t loss = b.Buffer("loss", {1});
  uint32_t dlogits = b.Buffer("dlogits", {rows, v}, a), dh = b.Buffer("dh", {rows, c}, a);
  uint32_t dx = b.Buffer("dx", {rows, c}, a);
  namespace op = plan::op;
  using B = uint32_t;
  b.Forward(op::Embedding<B>{.ids = tokens, .table = wte, .out = x, .rows = rows, .seq = o.seq,
                             .vocab = v, .c = c, .context = o.seq});
  b.Forward(op::LayerNorm<B>{.x = x, .w = g, .b = beta, .y = h, .mean = mean, .rstd = rstd,
                             .rows = rows, .c = c, .eps = 1e-5});
  b.Forward(op::Linear<B>{.x = h, .w = head, .y = logits, .rows = rows, .in = c, .out = v});
  b.Forward(op::CrossEntropy<B>{.logits = logits, .targets = targets, .loss = loss, .lse = lse,
                                .rows = rows, .vocab = v, .valid = v});
  b.Backward(op::CrossEntropyGrad<B>{.logits = logits, .targets = targets, .lse = lse,
                                     .dlogits = dlogits, .rows = rows, .vocab = v, .valid = v,
                                     .dloss = o.grad_scale / static_cast<double>(o.microbatches)});
  b.Backward(op::LinearGrad<B>{.dy = dlogits, .x = h, .w = head, .dx = dh, .dw = dhead,
                               .rows = rows, .in = c, .out = v});
  b.Backward(op::LayerNormGrad<B>{.dy = dh, .x = x, .w = g, .mean = mean, .rstd = rstd, .dx = dx,
                                  .dw = dg, .db = dbeta, .rows = rows, .c = c});
  b.Backward(op::EmbeddingGrad<B>{.ids = tokens, .dout = dx, .dtable = dwte, .rows = rows,
                                  .seq = o.seq, .vocab = v, .c = c, .context = o.seq});
  if (o.slots > 1) {
    b.SetSlots(o.slots);
    for (uint32_t kept : {tokens, targets, x, h, mean, rstd, logits, lse, loss}) b.Slotted(kept);
  }
  if (!o.schedule.empty()) b.SetSchedule(o.schedule);
  return b.Finish(o.batch, o.seq, v, o.microbatches, tokens, targets, loss, o.version);
}

}  // namespace heiretsu::testing

#endif  // HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_
