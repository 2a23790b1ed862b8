// A small helper for tests that build plans by hand with the generated FlatBuffers
// API (the same API the compiler's emitter uses): buffers are laid out one after
// another in the arena, 64-byte aligned.
#ifndef HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_
#define HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_

#include <string>
#include <vector>

#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::testing {

class PlanBuilder {
 public:
  uint32_t Buffer(const std::string& name, std::vector<int64_t> shape,
                  plan::fb::DType dtype = plan::fb::DType_F32) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    buffers_.push_back(
        plan::fb::CreateBufferDirect(fbb_, name.c_str(), arena_, dtype, &shape));
    arena_ += (static_cast<uint64_t>(n) * 4 + 63) / 64 * 64;
    return static_cast<uint32_t>(buffers_.size() - 1);
  }

  // A parameter with its value, gradient and AdamW moments; returns {value, grad}.
  std::pair<uint32_t, uint32_t> Param(const std::string& name, std::vector<int64_t> shape,
                                      plan::fb::Init init, double std, bool decay) {
    uint32_t value = Buffer(name, shape), grad = Buffer(name + ".grad", shape);
    uint32_t m = Buffer(name + ".exp_avg", shape), v = Buffer(name + ".exp_avg_sq", shape);
    params_.push_back(plan::fb::CreateParamDirect(fbb_, name.c_str(), &shape, init, std, decay,
                                                  value, grad, m, v));
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    update_.push_back(
        Instr(plan::fb::Op_ClipAndAdamW, {value, grad, m, v}, {n, decay ? 1 : 0, 0}));
    grads_.push_back(grad);
    return {value, grad};
  }

  flatbuffers::Offset<plan::fb::Instr> Instr(plan::fb::Op op, std::vector<uint32_t> buffers,
                                             std::vector<int64_t> ints,
                                             std::vector<double> floats = {}) {
    return plan::fb::CreateInstrDirect(fbb_, op, &buffers, &ints, &floats);
  }

  void Micro(plan::fb::Op op, std::vector<uint32_t> buffers, std::vector<int64_t> ints,
             std::vector<double> floats = {}) {
    microbatch_.push_back(Instr(op, std::move(buffers), std::move(ints), std::move(floats)));
  }

  // Finishes the plan: the update stream is the gradient norm, then AdamW per param.
  std::vector<uint8_t> Finish(int64_t batch, int64_t seq, int64_t vocab, int64_t microbatches,
                              uint32_t tokens, uint32_t targets, uint32_t loss,
                              uint32_t version = plan::kPlanVersion) {
    std::vector<flatbuffers::Offset<plan::fb::Instr>> update;
    update.push_back(Instr(plan::fb::Op_GradNormSq, grads_, {0, 0}));
    update.insert(update.end(), update_.begin(), update_.end());
    plan::fb::Mesh mesh(1, 1, 1, 1);
    auto opt = plan::fb::CreateOptimizer(fbb_);
    auto root = plan::fb::CreatePlanDirect(fbb_, version, "test", &mesh, 0, batch, microbatches,
                                           seq, vocab, arena_, 0, 0, &buffers_, &params_, tokens,
                                           targets, loss, &microbatch_, &update, opt);
    plan::fb::FinishSizePrefixedPlanBuffer(fbb_, root);
    std::vector<uint8_t> bytes(fbb_.GetBufferPointer(), fbb_.GetBufferPointer() + fbb_.GetSize());
    plan::SealPlan(&bytes);
    return bytes;
  }

 private:
  flatbuffers::FlatBufferBuilder fbb_;
  uint64_t arena_ = 0;
  std::vector<flatbuffers::Offset<plan::fb::Buffer>> buffers_;
  std::vector<flatbuffers::Offset<plan::fb::Param>> params_;
  std::vector<flatbuffers::Offset<plan::fb::Instr>> microbatch_, update_;
  std::vector<uint32_t> grads_;
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
};

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
  uint32_t x = b.Buffer("x", {rows, c}), h = b.Buffer("h", {rows, c});
  uint32_t mean = b.Buffer("mean", {rows}), rstd = b.Buffer("rstd", {rows});
  uint32_t logits = b.Buffer("logits", {rows, v}), lse = b.Buffer("lse", {rows});
  uint32_t loss = b.Buffer("loss", {1});
  uint32_t dlogits = b.Buffer("dlogits", {rows, v}), dh = b.Buffer("dh", {rows, c});
  uint32_t dx = b.Buffer("dx", {rows, c});
  b.Micro(fb::Op_Embedding, {tokens, wte, plan::kNoBuffer, x}, {rows, o.seq, v, c, o.seq, 0});
  b.Micro(fb::Op_LayerNorm, {x, g, beta, h, mean, rstd}, {rows, c}, {1e-5});
  b.Micro(fb::Op_Linear, {h, head, plan::kNoBuffer, logits}, {rows, c, v, 0});
  b.Micro(fb::Op_CrossEntropy, {logits, targets, loss, lse}, {rows, v, v});
  b.Micro(fb::Op_CrossEntropyGrad, {logits, targets, lse, dlogits}, {rows, v, 0, 0, v},
          {o.grad_scale / static_cast<double>(o.microbatches)});
  b.Micro(fb::Op_LinearGrad, {dlogits, h, head, dh, dhead, plan::kNoBuffer}, {rows, c, v, 0});
  b.Micro(fb::Op_LayerNormGrad, {dh, x, g, mean, rstd, dx, dg, dbeta}, {rows, c, 0});
  b.Micro(fb::Op_EmbeddingGrad, {tokens, dx, dwte, plan::kNoBuffer}, {rows, o.seq, v, c, o.seq, 0});
  return b.Finish(o.batch, o.seq, v, o.microbatches, tokens, targets, loss, o.version);
}

}  // namespace heiretsu::testing

#endif  // HEIRETSU_TEST_UNIT_PLAN_BUILDER_H_
