// The opcode table; see ops.h. Comments give each kernel's formula's home:
// runtime/cpu/kernels.h.
#include "runtime/plan/ops.h"

#include <cstring>

namespace heiretsu::plan {
namespace {

constexpr fb::DType F32 = fb::DType_F32;
constexpr fb::DType I32 = fb::DType_I32;

int64_t At(const std::vector<int64_t>& v, size_t i) { return i < v.size() ? v[i] : 0; }

// Product of sizes, saturating at INT64_MAX so hostile attributes cannot overflow
// (the verifier then reports a size mismatch).
int64_t N(std::initializer_list<int64_t> factors) {
  __int128 p = 1;
  for (int64_t f : factors) {
    p *= f;
    if (p > INT64_MAX || p < 0) return INT64_MAX;
  }
  return static_cast<int64_t>(p);
}

}  // namespace

Signature OpSignature(fb::Op op, const std::vector<int64_t>& a) {
  switch (op) {
    case fb::Op_Zero:
      return {"zero", {{"buffer", F32, false, -1}}, false, {}, {}};
    case fb::Op_Embedding: {
      // Learned positions: the table has `context` rows, of which the first `seq`
      // are read.
      int64_t rows = At(a, 0), seq = At(a, 1), vocab = At(a, 2), c = At(a, 3), ctx = At(a, 4);
      // vocab_parallel: the table is this tp rank's block of `vocab` rows of the
      // logical table (ids outside it contribute zeros) and tp rank 0 alone adds the
      // positions, so the all_reduce over tp that follows yields the embedding.
      return {"embedding",
              {{"ids", I32, false, rows},
               {"table", F32, false, N({vocab, c})},
               {"positions", F32, true, N({ctx, c})},
               {"out", F32, false, N({rows, c})}},
              false,
              {"rows", "seq", "vocab", "c", "context", "vocab_parallel"},
              {},
              {{1, 4}}};
    }
    case fb::Op_EmbeddingGrad: {
      int64_t rows = At(a, 0), seq = At(a, 1), vocab = At(a, 2), c = At(a, 3), ctx = At(a, 4);
      return {"embedding_grad",
              {{"ids", I32, false, rows},
               {"dout", F32, false, N({rows, c})},
               {"dtable", F32, false, N({vocab, c})},
               {"dpositions", F32, true, N({ctx, c})}},
              false,
              {"rows", "seq", "vocab", "c", "context", "vocab_parallel"},
              {},
              {{1, 4}}};
    }
    case fb::Op_Linear: {
      int64_t rows = At(a, 0), in = At(a, 1), out = At(a, 2);
      return {"linear",
              {{"x", F32, false, N({rows, in})},
               {"w", F32, false, N({out, in})},
               {"bias", F32, true, out},
               {"y", F32, false, N({rows, out})}},
              false,
              // row_parallel: x and w are tp blocks of the inner dimension, y is a
              // partial sum over tp, and tp rank 0 alone adds the bias.
              {"rows", "in", "out", "row_parallel"},
              {}};
    }
    case fb::Op_LinearGrad: {
      int64_t rows = At(a, 0), in = At(a, 1), out = At(a, 2);
      return {"linear_grad",
              {{"dy", F32, false, N({rows, out})},
               {"x", F32, false, N({rows, in})},
               {"w", F32, false, N({out, in})},
               {"dx", F32, true, N({rows, in})},
               {"dw", F32, false, N({out, in})},
               {"dbias", F32, true, out}},
              false,
              {"rows", "in", "out", "accumulate_dx"},
              {}};
    }
    case fb::Op_LayerNorm: {
      int64_t rows = At(a, 0), c = At(a, 1);
      return {"layernorm",
              {{"x", F32, false, N({rows, c})},
               {"w", F32, false, c},
               {"b", F32, false, c},
               {"y", F32, false, N({rows, c})},
               {"mean", F32, false, rows},
               {"rstd", F32, false, rows}},
              false,
              {"rows", "c"},
              {"eps"}};
    }
    case fb::Op_LayerNormGrad: {
      int64_t rows = At(a, 0), c = At(a, 1);
      return {"layernorm_grad",
              {{"dy", F32, false, N({rows, c})},
               {"x", F32, false, N({rows, c})},
               {"w", F32, false, c},
               {"mean", F32, false, rows},
               {"rstd", F32, false, rows},
               {"dx", F32, false, N({rows, c})},
               {"dw", F32, false, c},
               {"db", F32, false, c}},
              false,
              {"rows", "c", "accumulate_dx"},
              {}};
    }
    case fb::Op_RMSNorm: {
      int64_t rows = At(a, 0), c = At(a, 1);
      return {"rmsnorm",
              {{"x", F32, false, N({rows, c})},
               {"w", F32, false, c},
               {"y", F32, false, N({rows, c})},
               {"rstd", F32, false, rows}},
              false,
              {"rows", "c"},
              {"eps"}};
    }
    case fb::Op_RMSNormGrad: {
      int64_t rows = At(a, 0), c = At(a, 1);
      return {"rmsnorm_grad",
              {{"dy", F32, false, N({rows, c})},
               {"x", F32, false, N({rows, c})},
               {"w", F32, false, c},
               {"rstd", F32, false, rows},
               {"dx", F32, false, N({rows, c})},
               {"dw", F32, false, c}},
              false,
              {"rows", "c", "accumulate_dx"},
              {}};
    }
    case fb::Op_Gelu: {
      int64_t n = At(a, 0);
      return {"gelu", {{"x", F32, false, n}, {"y", F32, false, n}}, false, {"n"}, {}};
    }
    case fb::Op_GeluGrad: {
      int64_t n = At(a, 0);
      return {"gelu_grad",
              {{"dy", F32, false, n}, {"x", F32, false, n}, {"dx", F32, false, n}},
              false,
              {"n", "accumulate_dx"},
              {}};
    }
    case fb::Op_Swiglu: {
      int64_t n = At(a, 0);
      return {"swiglu",
              {{"gate", F32, false, n}, {"up", F32, false, n}, {"y", F32, false, n}},
              false,
              {"n"},
              {}};
    }
    case fb::Op_SwigluGrad: {
      int64_t n = At(a, 0);
      return {"swiglu_grad",
              {{"dy", F32, false, n},
               {"gate", F32, false, n},
               {"up", F32, false, n},
               {"dgate", F32, false, n},
               {"dup", F32, false, n}},
              false,
              {"n", "accumulate_dx"},
              {}};
    }
    case fb::Op_Add: {
      int64_t n = At(a, 0);
      return {"add",
              {{"a", F32, false, n}, {"b", F32, false, n}, {"y", F32, false, n}},
              false,
              {"n"},
              {}};
    }
    case fb::Op_Rope: {
      int64_t n = N({At(a, 0), At(a, 1), At(a, 2), At(a, 3)});
      return {"rope",
              {{"x", F32, false, n}, {"y", F32, false, n}},
              false,
              {"batch", "seq", "heads", "head_dim"},
              {"theta"}};
    }
    case fb::Op_RopeGrad: {
      int64_t n = N({At(a, 0), At(a, 1), At(a, 2), At(a, 3)});
      return {"rope_grad",
              {{"dy", F32, false, n}, {"dx", F32, false, n}},
              false,
              {"batch", "seq", "heads", "head_dim", "accumulate_dx"},
              {"theta"}};
    }
    case fb::Op_Attention: {
      int64_t b = At(a, 0), t = At(a, 1), h = At(a, 2), kv = At(a, 3), hd = At(a, 4);
      return {"attention",
              {{"q", F32, false, N({b, t, h, hd})},
               {"k", F32, false, N({b, t, kv, hd})},
               {"v", F32, false, N({b, t, kv, hd})},
               {"out", F32, false, N({b, t, h, hd})},
               {"lse", F32, false, N({b, h, t})}},
              false,
              {"batch", "seq", "heads", "kv_heads", "head_dim"},
              {}};
    }
    case fb::Op_AttentionGrad: {
      int64_t b = At(a, 0), t = At(a, 1), h = At(a, 2), kv = At(a, 3), hd = At(a, 4);
      return {"attention_grad",
              {{"dout", F32, false, N({b, t, h, hd})},
               {"q", F32, false, N({b, t, h, hd})},
               {"k", F32, false, N({b, t, kv, hd})},
               {"v", F32, false, N({b, t, kv, hd})},
               {"out", F32, false, N({b, t, h, hd})},
               {"lse", F32, false, N({b, h, t})},
               {"dq", F32, false, N({b, t, h, hd})},
               {"dk", F32, false, N({b, t, kv, hd})},
               {"dv", F32, false, N({b, t, kv, hd})}},
              false,
              {"batch", "seq", "heads", "kv_heads", "head_dim", "accumulate_dx"},
              {}};
    }
    case fb::Op_CrossEntropy: {
      int64_t rows = At(a, 0), vocab = At(a, 1);
      // Columns from `valid` on are vocabulary padding, not classes.
      return {"cross_entropy",
              {{"logits", F32, false, N({rows, vocab})},
               {"targets", I32, false, rows},
               {"loss", F32, false, 1},
               {"lse", F32, false, rows}},
              false,
              {"rows", "vocab", "valid"},
              {},
              {{2, 1}}};
    }
    case fb::Op_CrossEntropyGrad: {
      int64_t rows = At(a, 0), vocab = At(a, 1);
      return {"cross_entropy_grad",
              {{"logits", F32, false, N({rows, vocab})},
               {"targets", I32, false, rows},
               {"lse", F32, false, rows},
               {"dlogits", F32, false, N({rows, vocab})}},
              false,
              // vocab_parallel: the logits are this tp rank's block of the
              // vocabulary and lse comes from vocab_loss.
              {"rows", "vocab", "accumulate_dx", "vocab_parallel", "valid"},
              {"dloss"}};
    }
    // The vocabulary-parallel cross-entropy: each tp rank holds a block of `vocab`
    // logits per row (`valid`: the logical columns that are classes, the rest
    // being vocabulary padding); vocab_max, an all_reduce(max), vocab_sum_exp, an
    // all_reduce(sum) of both its outputs, then vocab_loss.
    case fb::Op_VocabMax: {
      int64_t rows = At(a, 0), vocab = At(a, 1);
      return {"vocab_max",
              {{"logits", F32, false, N({rows, vocab})}, {"max", F32, false, rows}},
              false,
              {"rows", "vocab", "valid"},
              {}};
    }
    case fb::Op_VocabSumExp: {
      // sum = sum exp(logits - max); target = the target's logit when it is in this
      // rank's block, else 0.
      int64_t rows = At(a, 0), vocab = At(a, 1);
      return {"vocab_sum_exp",
              {{"logits", F32, false, N({rows, vocab})},
               {"targets", I32, false, rows},
               {"max", F32, false, rows},
               {"sum", F32, false, rows},
               {"target", F32, false, rows}},
              false,
              {"rows", "vocab", "valid"},
              {}};
    }
    case fb::Op_VocabLoss: {
      // lse = max + log(sum); loss = mean(lse - target).
      int64_t rows = At(a, 0);
      return {"vocab_loss",
              {{"max", F32, false, rows},
               {"sum", F32, false, rows},
               {"target", F32, false, rows},
               {"loss", F32, false, 1},
               {"lse", F32, false, rows}},
              false,
              {"rows"},
              {}};
    }
    case fb::Op_GradNormSq:
      // With `sharded` (ZeRO-1) only this rank's dp shard of each buffer counts and
      // the sum of squares is then summed over the dp group.
      // With `tp_sharded` the buffers are tp blocks of their parameters and the sum
      // of squares is summed over the tp group too.
      return {"grad_norm_sq", {}, true, {"sharded", "tp_sharded"}, {}};
    case fb::Op_ClipAndAdamW: {
      // With shard > 0 (ZeRO-1) the update covers this rank's dp shard of the
      // parameter, [rank * shard, min(n, (rank + 1) * shard)), and the moments hold
      // just that shard.
      int64_t n = At(a, 0), shard = At(a, 2);
      return {"clip_adamw",
              {{"param", F32, false, n},
               {"grad", F32, false, n},
               {"exp_avg", F32, false, shard ? shard : n},
               {"exp_avg_sq", F32, false, shard ? shard : n}},
              false,
              {"n", "weight_decay", "shard"},
              {},
              {{2, 0}}};
    }
    case fb::Op_Moe:
    case fb::Op_MoeGrad: {
      // Slots are (row, choice) pairs: rows * top_k of them.
      int64_t rows = At(a, 0), d = At(a, 1), f = At(a, 2), e = At(a, 3), k = At(a, 4);
      int64_t slots = N({rows, k});
      std::vector<BufferSlot> weights = {{"x", F32, false, N({rows, d})},
                                         {"router", F32, false, N({e, d})},
                                         {"w_in", F32, false, N({e, f, d})},
                                         {"w_out", F32, false, N({e, d, f})},
                                         {"w_gate", F32, true, N({e, f, d})}};
      std::vector<BufferSlot> saved = {{"probs", F32, false, N({rows, e})},
                                       {"lse", F32, false, rows},
                                       {"slot_expert", I32, false, slots},
                                       {"slot_weight", F32, false, slots},
                                       {"pre", F32, false, N({slots, f})},
                                       {"gate_pre", F32, true, N({slots, f})},
                                       {"act", F32, false, N({slots, f})}};
      std::vector<const char*> ints = {"rows", "d", "f", "experts", "top_k", "capacity", "swiglu"};
      if (op == fb::Op_Moe) {
        std::vector<BufferSlot> b = weights;
        b.push_back({"y", F32, false, N({rows, d})});
        b.push_back({"aux", F32, false, 1});
        b.insert(b.end(), saved.begin(), saved.end());
        return {"moe", b, false, ints, {"aux_coef", "z_coef"}, {{4, 3}}, {{4, 6}, {12, 6}}};
      }
      std::vector<BufferSlot> b = {{"dy", F32, false, N({rows, d})}};
      b.insert(b.end(), weights.begin(), weights.end());
      b.insert(b.end(), saved.begin(), saved.end());
      b.push_back({"dx", F32, false, N({rows, d})});
      b.push_back({"drouter", F32, false, N({e, d})});
      b.push_back({"dw_in", F32, false, N({e, f, d})});
      b.push_back({"dw_out", F32, false, N({e, d, f})});
      b.push_back({"dw_gate", F32, true, N({e, f, d})});
      ints.push_back("accumulate_dx");
      return {"moe_grad", b, false, ints, {"aux_coef", "z_coef", "daux"}, {{4, 3}},
              {{5, 6}, {11, 6}, {17, 6}}};
    }
    case fb::Op_ReduceScatter:
      // Each buffer (n elements) is reduced over the group and this rank keeps its
      // shard, [rank * s, min(n, (rank + 1) * s)) with s = ceil(n / group size), in
      // place; the rest of the buffer is left stale.
      return {"reduce_scatter", {}, true, {"axis", "reduce"}, {}, {}, {}, {{0, 3}, {1, 2}}};
    case fb::Op_AllGather:
      // The inverse layout: each rank's shard of each buffer, gathered in place.
      return {"all_gather", {}, true, {"axis"}, {}, {}, {}, {{0, 3}}};
    case fb::Op_BucketAllReduce:
      // A bucket of data-parallel gradients, issued from the microbatch stream
      // where the backward pass has finished them: it runs once per step, in the
      // last microbatch, in the background (the rest of the backward pass goes
      // on), and is complete before the update stream.
      return {"bucket_all_reduce", {}, true, {"axis", "reduce"}, {}, {}, {}, {{0, 3}, {1, 2}}};
    case fb::Op_AllReduce:
      // In place on each buffer, over the group of ranks that differ only in `axis`.
      return {"all_reduce", {}, true, {"axis", "reduce"}, {}, {}, {}, {{0, 3}, {1, 2}}};
    case fb::Op_AllGatherInto:
    case fb::Op_ReduceScatterInto: {
      // Sequence parallelism: a tensor whole on every rank is `outer` runs of
      // `parts` blocks of `inner` elements, rank r holding block r of each run
      // (a split of dimension d: outer = the dimensions before it). all_gather_into
      // gathers the blocks (src: this rank's outer x inner) into the whole (dst);
      // reduce_scatter_into sums the wholes over the group and keeps this rank's
      // blocks. `parts` is the group's size; accumulate_dx adds into dst.
      int64_t outer = At(a, 1), parts = At(a, 2), inner = At(a, 3);
      const bool gather = op == fb::Op_AllGatherInto;
      return {gather ? "all_gather_into" : "reduce_scatter_into",
              {{"src", F32, false, gather ? N({outer, inner}) : N({outer, parts, inner})},
               {"dst", F32, false, gather ? N({outer, parts, inner}) : N({outer, inner})}},
              false,
              {"axis", "outer", "parts", "inner", "accumulate_dx"},
              {},
              {},
              {},
              {{0, 3}}};
    }
    case fb::Op_Accumulate: {
      int64_t n = At(a, 0);
      return {"accumulate",
              {{"src", F32, false, n}, {"dst", F32, false, n}},
              false,
              {"n", "accumulate_dx"},
              {}};
    }
  }
  return {nullptr, {}, false, {}, {}};
}

std::optional<fb::Op> OpFromName(const std::string& name) {
  for (int i = fb::Op_MIN; i <= fb::Op_MAX; ++i)
    if (name == OpSignature(static_cast<fb::Op>(i), {}).name) return static_cast<fb::Op>(i);
  return std::nullopt;
}

bool IsFlag(const char* name) {
  return std::strncmp(name, "accumulate", 10) == 0 || std::strcmp(name, "weight_decay") == 0 ||
         std::strcmp(name, "swiglu") == 0 || std::strcmp(name, "sharded") == 0 ||
         std::strcmp(name, "tp_sharded") == 0 || std::strcmp(name, "vocab_parallel") == 0 ||
         std::strcmp(name, "row_parallel") == 0;
}

}  // namespace heiretsu::plan
