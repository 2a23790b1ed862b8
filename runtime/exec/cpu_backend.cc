// The CPU backend: every opcode of runtime/plan/ops.h mapped to its kernel in
// runtime/cpu/kernels.h. Each case reads the buffers and attributes in the order
// ops.h defines, which the plan verifier has checked, so no bounds are re-checked.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "runtime/cpu/kernels.h"
#include "runtime/exec/backend.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::exec {
namespace {

namespace fb = plan::fb;
namespace k = cpu;

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  bool host_visible() const override { return true; }

  uint8_t* AllocateArena(uint64_t bytes) override {
    size_t size = (bytes + 63) / 64 * 64;
    auto* arena = static_cast<uint8_t*>(std::aligned_alloc(64, size ? size : 64));
    if (arena) std::memset(arena, 0, size);
    return arena;
  }

  void FreeArena(uint8_t* arena) override { std::free(arena); }

  std::optional<std::string> Run(const fb::Plan& plan, const fb::Instr& in, uint8_t* arena,
                                 StepScalars& s) override {
    auto F32 = [&](uint32_t b) {
      return reinterpret_cast<float*>(arena + plan.buffers()->Get(b)->offset());
    };
    auto I32 = [&](uint32_t b) {
      return reinterpret_cast<int32_t*>(arena + plan.buffers()->Get(b)->offset());
    };

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
        std::fill_n(f(0), plan::NumElements(*plan.buffers()->Get(buf(0))), 0.f);
        break;
      case fb::Op_Embedding: {
        // Vocabulary parallelism: this tp rank's block of the table; rank 0 alone
        // adds the positions (the all_reduce that follows sums the blocks).
        const bool vp = a(5) != 0;
        const int64_t total = vp ? a(2) * s.tp_size : a(2);
        int64_t bad = k::EmbeddingForward(ids(0), f(1), vp && s.tp_rank != 0 ? nullptr : f(2),
                                          f(3), a(0), a(1), a(2), a(3),
                                          vp ? a(2) * s.tp_rank : 0, total);
        if (bad >= 0)
          return "token id " + std::to_string(ids(0)[bad]) + " at position " + std::to_string(bad) +
                 " is outside the vocabulary [0, " + std::to_string(total) + ")";
        break;
      }
      case fb::Op_EmbeddingGrad:
        k::EmbeddingBackward(ids(0), f(1), f(2), f(3), a(0), a(1), a(3),
                             a(5) ? a(2) * s.tp_rank : 0, a(5) ? a(2) : -1);
        break;
      case fb::Op_Linear:
        // Row parallelism: y is a partial sum over tp; rank 0 alone adds the bias.
        k::LinearForward(f(0), f(1), a(3) && s.tp_rank != 0 ? nullptr : f(2), f(3), a(0), a(1),
                         a(2));
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
        int64_t bad = k::CrossEntropyForward(f(0), ids(1), f(2), f(3), a(0), a(1), a(2));
        if (bad >= 0)
          return "target id " + std::to_string(ids(1)[bad]) + " at position " +
                 std::to_string(bad) + " is outside the vocabulary [0, " + std::to_string(a(2)) +
                 ")";
        break;
      }
      case fb::Op_CrossEntropyGrad:
        k::CrossEntropyBackward(f(0), ids(1), f(2), static_cast<float>(x(0)), f(3), a(0), a(1),
                                a(2) != 0, a(3) ? a(1) * s.tp_rank : 0, a(4));
        break;
      case fb::Op_VocabMax:
        k::VocabMax(f(0), f(1), a(0), a(1), a(1) * s.tp_rank, a(2));
        break;
      case fb::Op_VocabSumExp: {
        const int64_t total = a(1) * s.tp_size;
        int64_t bad = k::VocabSumExp(f(0), ids(1), f(2), f(3), f(4), a(0), a(1), a(1) * s.tp_rank,
                                     total, a(2));
        if (bad >= 0)
          return "target id " + std::to_string(ids(1)[bad]) + " at position " +
                 std::to_string(bad) + " is outside the vocabulary [0, " +
                 std::to_string(std::min(total, a(2))) + ")";
        break;
      }
      case fb::Op_VocabLoss:
        k::VocabLoss(f(0), f(1), f(2), f(3), f(4), a(0));
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
        for (uint32_t b : *in.buffers()) {
          const int64_t n = plan::NumElements(*plan.buffers()->Get(b));
          if (a(0)) {  // sharded: this rank's dp shard only
            const plan::Shard sh = plan::ShardOf(n, s.dp_rank, s.dp_size);
            s.grad_norm_sq += k::SumSquares(F32(b) + sh.begin, sh.size);
          } else {
            s.grad_norm_sq += k::SumSquares(F32(b), n);
          }
        }
        break;
      case fb::Op_ClipAndAdamW: {
        if (!s.clip_ready) {  // the norm is complete once the first update runs
          double norm = std::sqrt(s.grad_norm_sq);
          s.clip_scale = s.grad_clip > 0 && norm > s.grad_clip ? s.grad_clip / (norm + 1e-6) : 1.0;
          s.clip_ready = true;
        }
        const fb::Optimizer* opt = plan.optimizer();
        double b1 = opt ? opt->beta1() : 0.9, b2 = opt ? opt->beta2() : 0.95;
        double eps = opt ? opt->eps() : 1e-8;
        // ZeRO-1 (shard > 0): this rank updates its shard; its moments hold only that.
        const plan::Shard sh =
            a(2) ? plan::ShardOf(a(0), s.dp_rank, s.dp_size) : plan::Shard{0, a(0)};
        k::AdamW(f(0) + sh.begin, f(1) + sh.begin, f(2), f(3), sh.size, s.lr, b1, b2, eps,
                 a(1) ? s.weight_decay : 0.0, s.step, s.clip_scale);
        break;
      }
    }
    return std::nullopt;
  }
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend() { return std::make_unique<CpuBackend>(); }

}  // namespace heiretsu::exec
