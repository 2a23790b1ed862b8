// Executor of a verified plan on the CPU backend; see executor.h. Every case below
// reads the buffers and attributes in the order runtime/plan/ops.h defines, which
// the verifier has checked, so no bounds are re-checked here.
#include "runtime/exec/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "runtime/cpu/kernels.h"
#include "runtime/init/init.h"
#include "runtime/plan/ops.h"

namespace heiretsu::exec {

namespace fb = plan::fb;
namespace k = cpu;

Executor::Executor(const plan::LoadedPlan& plan) : plan_(plan) {
  size_t bytes = (plan_.plan->arena_bytes() + 63) / 64 * 64;
  arena_ = static_cast<uint8_t*>(std::aligned_alloc(64, bytes ? bytes : 64));
  if (!arena_) throw std::bad_alloc();
  std::memset(arena_, 0, bytes);
}

Executor::~Executor() { std::free(arena_); }

float* Executor::F32(uint32_t buffer) {
  return reinterpret_cast<float*>(arena_ + plan_.plan->buffers()->Get(buffer)->offset());
}

int32_t* Executor::I32(uint32_t buffer) {
  return reinterpret_cast<int32_t*>(arena_ + plan_.plan->buffers()->Get(buffer)->offset());
}

void Executor::InitializeParameters(uint64_t seed) {
  for (const fb::Param* p : *plan_.plan->params()) {
    int64_t n = plan::NumElements(*plan_.plan->buffers()->Get(p->value()));
    float* value = F32(p->value());
    switch (p->init()) {
      case fb::Init_Zeros:
        std::fill_n(value, n, 0.f);
        break;
      case fb::Init_Ones:
        std::fill_n(value, n, 1.f);
        break;
      case fb::Init_Normal:
        init::FillNormal(seed, p->name()->str(), p->std(), 0, n, value);
        break;
    }
    for (uint32_t b : {p->grad(), p->exp_avg(), p->exp_avg_sq()}) std::fill_n(F32(b), n, 0.f);
  }
}

std::optional<std::string> Executor::ComputeGradients(const FillMicrobatch& fill, double* loss) {
  const fb::Plan& p = *plan_.plan;
  for (const fb::Param* param : *p.params())
    std::fill_n(F32(param->grad()), plan::NumElements(*p.buffers()->Get(param->grad())), 0.f);
  double loss_sum = 0;
  for (int64_t m = 0; m < p.microbatches(); ++m) {
    fill(m, I32(p.tokens()), I32(p.targets()));
    for (const fb::Instr* instr : *p.microbatch())
      if (auto err = Run(*instr, StepOptions{})) return err;
    loss_sum += *F32(p.loss());
  }
  *loss = loss_sum / static_cast<double>(p.microbatches());
  return std::nullopt;
}

std::optional<std::string> Executor::Step(const FillMicrobatch& fill, const StepOptions& options,
                                          StepResult* result) {
  if (auto err = ComputeGradients(fill, &result->loss)) return err;
  if (!std::isfinite(result->loss))
    return "loss is " + std::to_string(result->loss) + " at step " + std::to_string(options.step);
  grad_norm_sq_ = 0;
  clip_ready_ = false;
  for (const fb::Instr* instr : *plan_.plan->update())
    if (auto err = Run(*instr, options)) return err;
  result->grad_norm = std::sqrt(grad_norm_sq_);
  return std::nullopt;
}

std::optional<std::string> Executor::Run(const fb::Instr& instr, const StepOptions& options) {
  if (!profiling_) return Dispatch(instr, options);
  auto t0 = std::chrono::steady_clock::now();
  auto err = Dispatch(instr, options);
  op_seconds_[instr.op()] +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return err;
}

std::string Executor::ProfileReport() const {
  double total = 0;
  for (double s : op_seconds_) total += s;
  std::vector<std::pair<double, int>> order;
  for (int op = 0; op <= fb::Op_MAX; ++op)
    if (op_seconds_[op] > 0) order.push_back({op_seconds_[op], op});
  std::sort(order.rbegin(), order.rend());
  std::string out;
  char line[128];
  for (auto [secs, op] : order) {
    std::snprintf(line, sizeof line, "  %-20s %9.3f s  %5.1f%%\n",
                  plan::OpSignature(static_cast<fb::Op>(op), {}).name, secs, 100 * secs / total);
    out += line;
  }
  return out;
}

std::optional<std::string> Executor::Dispatch(const fb::Instr& in, const StepOptions& options) {
  auto buf = [&](size_t i) -> uint32_t { return in.buffers()->Get(i); };
  auto f = [&](size_t i) -> float* {
    uint32_t b = buf(i);
    return b == plan::kNoBuffer ? nullptr : F32(b);
  };
  auto ids = [&](size_t i) -> const int32_t* { return I32(buf(i)); };
  auto a = [&](size_t i) -> int64_t { return in.ints()->Get(i); };
  auto x = [&](size_t i) -> double { return in.floats()->Get(i); };
  switch (in.op()) {
    case fb::Op_Zero:
      std::fill_n(f(0), plan::NumElements(*plan_.plan->buffers()->Get(buf(0))), 0.f);
      break;
    case fb::Op_Embedding: {
      int64_t bad = k::EmbeddingForward(ids(0), f(1), f(2), f(3), a(0), a(1), a(2), a(3));
      if (bad >= 0)
        return "token id " + std::to_string(ids(0)[bad]) + " at position " + std::to_string(bad) +
               " is outside the vocabulary [0, " + std::to_string(a(2)) + ")";
      break;
    }
    case fb::Op_EmbeddingGrad:
      k::EmbeddingBackward(ids(0), f(1), f(2), f(3), a(0), a(1), a(3));
      break;
    case fb::Op_Linear:
      k::LinearForward(f(0), f(1), f(2), f(3), a(0), a(1), a(2));
      break;
    case fb::Op_LinearGrad:
      k::LinearBackward(f(0), f(1), f(2), f(3), f(4), f(5), a(0), a(1), a(2), a(3) != 0);
      break;
    case fb::Op_LayerNorm:
      k::LayerNormForward(f(0), f(1), f(2), f(3), f(4), f(5), a(0), a(1), x(0));
      break;
    case fb::Op_LayerNormGrad:
      k::LayerNormBackward(f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), a(0), a(1), a(2) != 0);
      break;
    case fb::Op_RMSNorm:
      k::RMSNormForward(f(0), f(1), f(2), f(3), a(0), a(1), x(0));
      break;
    case fb::Op_RMSNormGrad:
      k::RMSNormBackward(f(0), f(1), f(2), f(3), f(4), f(5), a(0), a(1), a(2) != 0);
      break;
    case fb::Op_Gelu:
      k::GeluForward(f(0), f(1), a(0));
      break;
    case fb::Op_GeluGrad:
      k::GeluBackward(f(0), f(1), f(2), a(0), a(1) != 0);
      break;
    case fb::Op_Swiglu:
      k::SwigluForward(f(0), f(1), f(2), a(0));
      break;
    case fb::Op_SwigluGrad:
      k::SwigluBackward(f(0), f(1), f(2), f(3), f(4), a(0), a(1) != 0);
      break;
    case fb::Op_Add:
      k::AddForward(f(0), f(1), f(2), a(0));
      break;
    case fb::Op_Rope:
      k::RopeForward(f(0), f(1), a(0), a(1), a(2), a(3), x(0));
      break;
    case fb::Op_RopeGrad:
      k::RopeBackward(f(0), f(1), a(0), a(1), a(2), a(3), x(0), a(4) != 0);
      break;
    case fb::Op_Attention:
      k::AttentionForward(f(0), f(1), f(2), f(3), f(4), a(0), a(1), a(2), a(3), a(4));
      break;
    case fb::Op_AttentionGrad:
      k::AttentionBackward(f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), f(8), a(0), a(1), a(2),
                           a(3), a(4), a(5) != 0);
      break;
    case fb::Op_CrossEntropy: {
      int64_t bad = k::CrossEntropyForward(f(0), ids(1), f(2), f(3), a(0), a(1));
      if (bad >= 0)
        return "target id " + std::to_string(ids(1)[bad]) + " at position " +
               std::to_string(bad) + " is outside the vocabulary [0, " + std::to_string(a(1)) +
               ")";
      break;
    }
    case fb::Op_CrossEntropyGrad:
      k::CrossEntropyBackward(f(0), ids(1), f(2), static_cast<float>(x(0)), f(3), a(0), a(1),
                              a(2) != 0);
      break;
    case fb::Op_Moe: {
      k::MoeShape shape{a(0), a(1), a(2), a(3), a(4), a(5), a(6) != 0};
      k::MoeForward(shape, f(0), f(1), f(2), f(3), f(4), x(0), x(1), f(5), f(6), f(7), f(8),
                    I32(buf(9)), f(10), f(11), f(12), f(13));
      break;
    }
    case fb::Op_MoeGrad: {
      k::MoeShape shape{a(0), a(1), a(2), a(3), a(4), a(5), a(6) != 0};
      k::MoeBackward(shape, f(0), x(2), f(1), f(2), f(3), f(4), f(5), x(0), x(1), f(6), f(7),
                     I32(buf(8)), f(9), f(10), f(11), f(12), f(13), f(14), f(15), f(16), f(17),
                     a(7) != 0);
      break;
    }
    case fb::Op_Accumulate:
      k::AccumulateForward(f(0), f(1), a(0), a(1) != 0);
      break;
    case fb::Op_GradNormSq:
      for (uint32_t b : *in.buffers())
        grad_norm_sq_ += k::SumSquares(F32(b), plan::NumElements(*plan_.plan->buffers()->Get(b)));
      break;
    case fb::Op_ClipAndAdamW: {
      if (!clip_ready_) {  // the norm is complete once the first update runs
        double norm = std::sqrt(grad_norm_sq_);
        clip_scale_ = options.grad_clip > 0 && norm > options.grad_clip
                          ? options.grad_clip / (norm + 1e-6)
                          : 1.0;
        clip_ready_ = true;
      }
      const fb::Optimizer* opt = plan_.plan->optimizer();
      double b1 = opt ? opt->beta1() : 0.9, b2 = opt ? opt->beta2() : 0.95;
      double eps = opt ? opt->eps() : 1e-8;
      k::AdamW(f(0), f(1), f(2), f(3), a(0), options.lr, b1, b2, eps,
               a(1) ? options.weight_decay : 0.0, options.step, clip_scale_);
      break;
    }
  }
  return std::nullopt;
}

}  // namespace heiretsu::exec
