// The CPU backend: every compute opcode of runtime/plan/op_table.h mapped to its
// kernel in runtime/cpu/kernels.h. Each case reads its instruction's operands by
// name (ops.h), already checked by the plan verifier and resolved for this rank
// (prepare.h), so nothing is re-checked or re-derived here.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "runtime/cpu/kernels.h"
#include "runtime/exec/backend.h"

#include "runtime/base/half.h"
#include "runtime/comm/shared_arena.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::exec {
namespace {

namespace fb = plan::fb;
namespace k = cpu;
namespace op = plan::op;

// The float32 copies of an instruction's 16-bit operands (backend.h): made from the
// arena when constructed, rounded back into it (to nearest even) when destroyed, so
// whatever the kernel wrote lands in the buffer's own dtype. One copy per buffer,
// however many operands name it. The copies live in `pool`, the backend's vectors,
// which only grow: no allocation (nor clearing) once the largest instruction ran.
class Widened {
 public:
  Widened(const fb::Plan& plan, const plan::Instruction& in, uint8_t* arena,
          const uint64_t* offsets, std::vector<std::vector<float>>* pool) {
    for (uint32_t b : in.buffers) {
      if (b == plan::kNoBuffer || Find(b)) continue;
      const fb::Buffer& buffer = *plan.buffers()->Get(b);
      if (!plan::IsHalf(buffer.dtype())) continue;
      const size_t n = static_cast<size_t>(plan::NumElements(buffer));
      if (pool->size() <= copies_.size()) pool->emplace_back();
      std::vector<float>& wide = (*pool)[copies_.size()];
      if (wide.size() < n) wide.resize(n);
      Copy c{b, buffer.dtype(), reinterpret_cast<uint16_t*>(Backend::BufferAt(arena, offsets[b])),
             wide.data(), n};
      if (c.dtype == fb::DType_BF16)
        half::Bf16sToFloats(c.narrow, c.wide, n);
      else
        half::HalfsToFloats(c.narrow, c.wide, n);
      copies_.push_back(c);
    }
  }
  ~Widened() {
    for (Copy& c : copies_) {
      if (c.dtype == fb::DType_BF16)
        half::FloatsToBf16s(c.wide, c.narrow, c.n);
      else
        half::FloatsToHalfs(c.wide, c.narrow, c.n);
    }
  }
  Widened(const Widened&) = delete;
  Widened& operator=(const Widened&) = delete;

  // Buffer b's float32 copy, or null when it is not a 16-bit operand.
  float* Find(uint32_t b) {
    for (Copy& c : copies_)
      if (c.buffer == b) return c.wide;
    return nullptr;
  }

 private:
  struct Copy {
    uint32_t buffer;
    fb::DType dtype;
    uint16_t* narrow;
    float* wide;
    size_t n;
  };
  std::vector<Copy> copies_;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(bool shared_arenas) : shared_arenas_(shared_arenas) {}
  const char* name() const override { return "cpu"; }
  bool host_visible() const override { return true; }
  bool overwrites_weight_grads() const override { return true; }

  // With shared_arenas_ in a memory file (zeroed, page-aligned), so that the ranks
  // of one machine can share it; plain memory otherwise or when none can be made.
  uint8_t* AllocateArena(uint64_t bytes) override {
    if (auto shared = shared_arenas_ ? comm::SharedArena::Create(bytes) : nullptr) {
      uint8_t* arena = shared->data();
      shared_.push_back(std::move(shared));
      return arena;
    }
    size_t size = (bytes + 63) / 64 * 64;
    auto* arena = static_cast<uint8_t*>(std::aligned_alloc(64, size ? size : 64));
    if (arena) std::memset(arena, 0, size);
    return arena;
  }

  void FreeArena(uint8_t* arena) override {
    for (auto it = shared_.begin(); it != shared_.end(); ++it)
      if ((*it)->data() == arena) {
        shared_.erase(it);
        return;
      }
    std::free(arena);
  }

  int64_t square_chunk() const override { return k::kSumSquaresChunk; }
  void SumSquareChunks(const float* x, int64_t n, int64_t first, int64_t count,
                       double* partials) override {
    k::SumSquaresChunks(x, n, first, count, partials);
  }

  Status SumCopies(const float* const* copies, int count, float* out, int64_t n, bool average,
                   double* sum_squares) override {
    const double sum = k::SumCopies(copies, count, out, n, average, sum_squares != nullptr);
    if (sum_squares) *sum_squares = sum;
    return std::nullopt;
  }

  int ArenaFd(const uint8_t* arena) const override {
    for (const auto& shared : shared_)
      if (shared->data() == arena) return shared->fd();
    return -1;
  }

  Status Run(const fb::Plan& plan, const plan::Instruction& in, uint8_t* arena,
             const uint64_t* offsets, StepScalars& s) override {
    // 16-bit operands (plan::IsHalf) are widened to float32 copies for the kernel
    // and rounded back after it (backend.h); an input's round trip is exact.
    Widened widened(plan, in, arena, offsets, &widened_);
    // A buffer's floats (at the run's slot's offset), null for an absent one.
    auto f = [&](uint32_t b) -> float* {
      if (b == plan::kNoBuffer) return nullptr;
      if (float* wide = widened.Find(b)) return wide;
      return reinterpret_cast<float*>(BufferAt(arena, offsets[b]));
    };
    auto ids = [&](uint32_t b) {
      return reinterpret_cast<const int32_t*>(BufferAt(arena, offsets[b]));
    };
    // An int32 buffer an instruction writes (the route's choice and pos).
    auto i32 = [&](uint32_t b) { return reinterpret_cast<int32_t*>(BufferAt(arena, offsets[b])); };
    auto outside = [&](const char* what, const int32_t* id, int64_t at, int64_t limit) {
      return Error::BadInput(std::string(what) + " id " + std::to_string(id[at]) + " at position " +
                             std::to_string(at) + " is outside the vocabulary [0, " +
                             std::to_string(limit) + ")");
    };
    switch (in.op) {
      case fb::Op_Zero: {
        const auto z = plan::Read<op::Zero<uint32_t>>(in);
        std::fill_n(f(z.buffer), plan::NumElements(*plan.buffers()->Get(z.buffer)), 0.f);
        break;
      }
      case fb::Op_Embedding: {
        const auto e = plan::Read<op::Embedding<uint32_t>>(in);
        int64_t offset = 0;
        if (plan::Has(e.offset)) {
          offset = *ids(e.offset);
          if (auto err = CheckDecodePosition(offset, e.seq, e.context)) return err;
        }
        int64_t bad = k::EmbeddingForward(ids(e.ids), f(e.table), f(e.positions), f(e.out), e.rows,
                                          e.seq, e.vocab, e.c, e.vocab_begin, e.vocab_total,
                                          offset);
        if (bad >= 0) return outside("token", ids(e.ids), bad, e.vocab_total);
        break;
      }
      case fb::Op_EmbeddingGrad: {
        const auto e = plan::Read<op::EmbeddingGrad<uint32_t>>(in);
        k::EmbeddingBackward(ids(e.ids), f(e.dout), f(e.dtable), f(e.dpositions), e.rows, e.seq,
                             e.c, e.vocab_begin, e.vocab_rows);
        break;
      }
      case fb::Op_Linear: {
        const auto l = plan::Read<op::Linear<uint32_t>>(in);
        k::LinearForward(f(l.x), f(l.w), f(l.bias), f(l.y), l.rows, l.in, l.out);
        break;
      }
      case fb::Op_LinearGrad: {
        const auto l = plan::Read<op::LinearGrad<uint32_t>>(in);
        k::LinearBackward(f(l.dy), f(l.x), f(l.w), f(l.dx), f(l.dw), f(l.dbias), l.rows, l.in,
                          l.out, l.accumulate_dx != 0, in.overwrite_weight_grads);
        break;
      }
      case fb::Op_LayerNorm: {
        const auto n = plan::Read<op::LayerNorm<uint32_t>>(in);
        k::LayerNormForward(f(n.x), f(n.w), f(n.b), f(n.y), f(n.mean), f(n.rstd), n.rows, n.c,
                            n.eps);
        break;
      }
      case fb::Op_LayerNormGrad: {
        const auto n = plan::Read<op::LayerNormGrad<uint32_t>>(in);
        k::LayerNormBackward(f(n.dy), f(n.x), f(n.w), f(n.mean), f(n.rstd), f(n.dx), f(n.dw),
                             f(n.db), n.rows, n.c, n.accumulate_dx != 0,
                            in.overwrite_weight_grads);
        break;
      }
      case fb::Op_RMSNorm: {
        const auto n = plan::Read<op::RMSNorm<uint32_t>>(in);
        k::RMSNormForward(f(n.x), f(n.w), f(n.y), f(n.rstd), n.rows, n.c, n.eps);
        break;
      }
      case fb::Op_RMSNormGrad: {
        const auto n = plan::Read<op::RMSNormGrad<uint32_t>>(in);
        k::RMSNormBackward(f(n.dy), f(n.x), f(n.w), f(n.rstd), f(n.dx), f(n.dw), n.rows, n.c,
                           n.accumulate_dx != 0, in.overwrite_weight_grads);
        break;
      }
      case fb::Op_Gelu: {
        const auto g = plan::Read<op::Gelu<uint32_t>>(in);
        k::GeluForward(f(g.x), f(g.y), g.n);
        break;
      }
      case fb::Op_GeluGrad: {
        const auto g = plan::Read<op::GeluGrad<uint32_t>>(in);
        k::GeluBackward(f(g.dy), f(g.x), f(g.dx), g.n, g.accumulate_dx != 0);
        break;
      }
      case fb::Op_Swiglu: {
        const auto g = plan::Read<op::Swiglu<uint32_t>>(in);
        k::SwigluForward(f(g.gate), f(g.up), f(g.y), g.n);
        break;
      }
      case fb::Op_SwigluGrad: {
        const auto g = plan::Read<op::SwigluGrad<uint32_t>>(in);
        k::SwigluBackward(f(g.dy), f(g.gate), f(g.up), f(g.dgate), f(g.dup), g.n,
                          g.accumulate_dx != 0);
        break;
      }
      case fb::Op_Add: {
        const auto a = plan::Read<op::Add<uint32_t>>(in);
        k::AddForward(f(a.a), f(a.b), f(a.y), a.n);
        break;
      }
      case fb::Op_Rope: {
        const auto r = plan::Read<op::Rope<uint32_t>>(in);
        k::RopeForward(f(r.x), f(r.y), r.batch, r.seq, r.heads, r.head_dim, r.theta,
                       plan::Has(r.offset) ? *ids(r.offset) : 0);
        break;
      }
      case fb::Op_RopeGrad: {
        const auto r = plan::Read<op::RopeGrad<uint32_t>>(in);
        k::RopeBackward(f(r.dy), f(r.dx), r.batch, r.seq, r.heads, r.head_dim, r.theta,
                        r.accumulate_dx != 0);
        break;
      }
      case fb::Op_Attention: {
        const auto a = plan::Read<op::Attention<uint32_t>>(in);
        k::AttentionForward(f(a.q), f(a.k), f(a.v), f(a.out), f(a.lse), a.batch, a.seq, a.heads,
                            a.kv_heads, a.head_dim);
        break;
      }
      case fb::Op_CachedAttention: {
        const auto a = plan::Read<op::CachedAttention<uint32_t>>(in);
        const int64_t position = *ids(a.position);
        if (auto err = CheckDecodePosition(position, a.seq, a.context)) return err;
        k::CachedAttentionForward(f(a.q), f(a.k), f(a.v), f(a.k_cache), f(a.v_cache), f(a.out),
                                  a.batch, a.seq, a.heads, a.kv_heads, a.head_dim, a.context,
                                  position);
        break;
      }
      case fb::Op_AttentionGrad: {
        const auto a = plan::Read<op::AttentionGrad<uint32_t>>(in);
        k::AttentionBackward(f(a.dout), f(a.q), f(a.k), f(a.v), f(a.out), f(a.lse), f(a.dq),
                             f(a.dk), f(a.dv), a.batch, a.seq, a.heads, a.kv_heads, a.head_dim,
                             a.accumulate_dx != 0);
        break;
      }
      case fb::Op_CrossEntropy: {
        const auto ce = plan::Read<op::CrossEntropy<uint32_t>>(in);
        int64_t bad = k::CrossEntropyForward(f(ce.logits), ids(ce.targets), f(ce.loss), f(ce.lse),
                                             ce.rows, ce.vocab, ce.valid);
        if (bad >= 0) return outside("target", ids(ce.targets), bad, ce.valid);
        break;
      }
      case fb::Op_CrossEntropyGrad: {
        const auto ce = plan::Read<op::CrossEntropyGrad<uint32_t>>(in);
        k::CrossEntropyBackward(f(ce.logits), ids(ce.targets), f(ce.lse),
                                static_cast<float>(ce.dloss * s.loss_scale), f(ce.dlogits), ce.rows, ce.vocab,
                                ce.accumulate_dx != 0, ce.vocab_begin, ce.valid);
        break;
      }
      case fb::Op_VocabMax: {
        const auto v = plan::Read<op::VocabMax<uint32_t>>(in);
        k::VocabMax(f(v.logits), f(v.max), v.rows, v.vocab, v.vocab_begin, v.valid);
        break;
      }
      case fb::Op_VocabSumExp: {
        const auto v = plan::Read<op::VocabSumExp<uint32_t>>(in);
        int64_t bad = k::VocabSumExp(f(v.logits), ids(v.targets), f(v.max), f(v.sum), f(v.target),
                                     v.rows, v.vocab, v.vocab_begin, v.vocab_total, v.valid);
        if (bad >= 0)
          return outside("target", ids(v.targets), bad, std::min(v.vocab_total, v.valid));
        break;
      }
      case fb::Op_VocabLoss: {
        const auto v = plan::Read<op::VocabLoss<uint32_t>>(in);
        k::VocabLoss(f(v.max), f(v.sum), f(v.target), f(v.loss), f(v.lse), v.rows);
        break;
      }
      case fb::Op_MoeRoute: {
        const auto m = plan::Read<op::MoeRoute<uint32_t>>(in);
        k::MoeRouteShape shape{m.rows, m.d, m.experts, m.top_k, m.seq, m.capacity};
        k::MoeRoute(shape, f(m.x), f(m.router), m.aux_coef, m.z_coef, f(m.probs), f(m.lse),
                    i32(m.choice), i32(m.pos), f(m.weight), i32(m.counts), f(m.aux), f(m.load));
        break;
      }
      case fb::Op_MoeRouteGrad: {
        const auto m = plan::Read<op::MoeRouteGrad<uint32_t>>(in);
        // The backward needs no capacity: the drops are in the saved choice and pos.
        k::MoeRouteShape shape{m.rows, m.d, m.experts, m.top_k, m.seq, 0};
        k::MoeRouteBackward(shape, f(m.dweight), m.daux * s.loss_scale, m.aux_coef, m.z_coef, f(m.x),
                            f(m.router), f(m.probs), f(m.lse), ids(m.choice), f(m.dx),
                            f(m.drouter), m.accumulate_dx != 0);
        break;
      }
      case fb::Op_MoeDispatch: {
        const auto m = plan::Read<op::MoeDispatch<uint32_t>>(in);
        k::MoeSlotShape shape{m.rows, m.d, m.experts, m.top_k, m.slots};
        k::MoeDispatch(shape, f(m.x), ids(m.choice), ids(m.pos), f(m.buf));
        break;
      }
      case fb::Op_MoeDispatchGrad: {
        const auto m = plan::Read<op::MoeDispatchGrad<uint32_t>>(in);
        k::MoeSlotShape shape{m.rows, m.d, m.experts, m.top_k, m.slots};
        k::MoeDispatchBackward(shape, f(m.dbuf), ids(m.choice), ids(m.pos), f(m.dx),
                               m.accumulate_dx != 0);
        break;
      }
      case fb::Op_MoeExperts: {
        const auto m = plan::Read<op::MoeExperts<uint32_t>>(in);
        k::MoeExpertShape shape{m.experts, m.tokens, m.d, m.f, m.swiglu != 0, m.sources};
        k::MoeExperts(shape, ids(m.rows), f(m.x), f(m.w_in), f(m.w_gate), f(m.w_out), f(m.pre), f(m.gate_pre),
                      f(m.act), f(m.y));
        break;
      }
      case fb::Op_MoeExpertsGrad: {
        const auto m = plan::Read<op::MoeExpertsGrad<uint32_t>>(in);
        k::MoeExpertShape shape{m.experts, m.tokens, m.d, m.f, m.swiglu != 0, m.sources};
        k::MoeExpertsBackward(shape, ids(m.rows), f(m.dy), f(m.x), f(m.w_in), f(m.w_gate), f(m.w_out),
                              f(m.pre), f(m.gate_pre), f(m.act), m.dw_scale, f(m.dx),
                              f(m.dw_in), f(m.dw_gate), f(m.dw_out), m.accumulate_dx != 0);
        break;
      }
      case fb::Op_MoeCombine: {
        const auto m = plan::Read<op::MoeCombine<uint32_t>>(in);
        k::MoeSlotShape shape{m.rows, m.d, m.experts, m.top_k, m.slots};
        k::MoeCombine(shape, f(m.buf), ids(m.choice), ids(m.pos), f(m.weight), f(m.y));
        break;
      }
      case fb::Op_MoeCombineGrad: {
        const auto m = plan::Read<op::MoeCombineGrad<uint32_t>>(in);
        k::MoeSlotShape shape{m.rows, m.d, m.experts, m.top_k, m.slots};
        k::MoeCombineBackward(shape, f(m.dy), f(m.buf), ids(m.choice), ids(m.pos), f(m.weight),
                              f(m.dbuf), f(m.dweight), m.accumulate_dx != 0);
        break;
      }
      case fb::Op_Accumulate: {
        const auto a = plan::Read<op::Accumulate<uint32_t>>(in);
        k::AccumulateForward(f(a.src), f(a.dst), a.n, a.accumulate_dx != 0);
        break;
      }
      case fb::Op_GradNormSq:
        // Each buffer's range: all of it, or this rank's ZeRO-1 shard (prepared).
        for (size_t i = 0; i < in.buffers.size(); ++i)
          s.grad_norm_sq += k::SumSquares(f(in.buffers[i]) + in.ranges[i].begin, in.ranges[i].size);
        break;
      case fb::Op_ClipAndAdamW: {
        const auto u = plan::Read<op::ClipAndAdamW<uint32_t>>(in);
        const fb::Optimizer* opt = plan.optimizer();
        double b1 = opt ? opt->beta1() : 0.9, b2 = opt ? opt->beta2() : 0.95;
        double eps = opt ? opt->eps() : 1e-8;
        // [begin, begin + size): all of the parameter, this rank's ZeRO-1 shard,
        // whose moments hold only that, or this rank's part of an update split
        // over the data-parallel ranks (Executor::PlanSplitUpdates), whose
        // moments are whole.
        const int64_t moments = u.shard ? 0 : u.begin;
        const k::AdamWMirrors<float> mirrors{in.mirrors.data(),
                                             static_cast<int>(in.mirrors.size())};
        k::AdamW(f(u.param) + u.begin, f(u.grad) + u.begin, f(u.exp_avg) + moments,
                 f(u.exp_avg_sq) + moments, u.size, s.lr, b1, b2, eps,
                 u.weight_decay ? s.weight_decay : 0.0, s.step, s.clip_scale, mirrors);
        break;
      }
      default:
        return Error::Failure(std::string("the cpu backend does not run ") + plan::OpName(in.op) +
               " (the executor runs collectives)");
    }
    return std::nullopt;
  }

 private:
  std::vector<std::vector<float>> widened_;  // Widened's float32 copies, reused
  const bool shared_arenas_;
  std::vector<std::unique_ptr<comm::SharedArena>> shared_;  // the arenas in memory files
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(bool shared_arenas) {
  return std::make_unique<CpuBackend>(shared_arenas);
}

}  // namespace heiretsu::exec
