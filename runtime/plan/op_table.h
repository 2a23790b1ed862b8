// THE instruction table: for every opcode of plan.fbs, its buffers, integer and
// float attributes, named once, with what each means and the checks on it. Every
// other place that reads or writes an instruction (the plan dialect's builders and
// verifier, the emitter, the runtime verifier, the executor, each backend, the
// collective check, explain) goes through what ops.h generates from this table:
// typed structs (op::Linear<B> with fields x, w, bias, y, rows, ...) and the
// signatures the verifiers check. Nothing else indexes an instruction's buffers,
// ints or floats by position.
//
// HEIRETSU_OPS(X) lists the opcodes as X(Enum, name), Enum being plan.fbs's Op_Enum
// and name the text name the plan dialect and messages use.
//
// HEIRETSU_OP_<Enum>(BUF, VAR, INT, FLT, LE, RES) lists one opcode's operands:
//   BUF(name, dtype, presence, numel)  a buffer slot, in slot order. presence:
//       Req (always present), Opt (may be absent), Iff(flag) (present exactly when
//       the 0/1 attribute `flag` is 1). numel: the element count the buffer must
//       have, an expression of the integer attributes (N(a, b) = a * b,
//       saturating), or Any.
//   VAR(dtype)   the opcode takes any positive number of buffers of `dtype`
//       instead of slots (collectives, the gradient norm).
//   INT(name, kind)  an integer attribute, in order. kind: Size (0 .. 2^31 - 1),
//       Flag (0 or 1), Axis (a mesh axis, plan::MeshAxis), Reduce (plan::Reduction).
//   FLT(name)    a float attribute, in order.
//   LE(a, b)     the check ints a <= b.
//   RES(name)    a value the runtime resolves when it prepares the plan for a
//       rank (runtime/plan/prepare.h), from the rank's mesh coordinates: it is not
//       in the plan file. Backends read these instead of re-deriving them.
// Within a kernel, "rows" is batch x seq of this rank; an "accumulate..." flag adds
// into the output instead of overwriting it. Formulas: runtime/cpu/kernels.h.
#ifndef HEIRETSU_RUNTIME_PLAN_OP_TABLE_H_
#define HEIRETSU_RUNTIME_PLAN_OP_TABLE_H_

// clang-format off
#define HEIRETSU_OPS(X)                                                               \
  X(Zero, zero)                                                                       \
  X(Embedding, embedding) X(EmbeddingGrad, embedding_grad)                            \
  X(Linear, linear) X(LinearGrad, linear_grad)                                        \
  X(LayerNorm, layernorm) X(LayerNormGrad, layernorm_grad)                            \
  X(RMSNorm, rmsnorm) X(RMSNormGrad, rmsnorm_grad)                                    \
  X(Gelu, gelu) X(GeluGrad, gelu_grad)                                                \
  X(Swiglu, swiglu) X(SwigluGrad, swiglu_grad)                                        \
  X(Add, add)                                                                         \
  X(Rope, rope) X(RopeGrad, rope_grad)                                                \
  X(Attention, attention) X(AttentionGrad, attention_grad)                            \
  X(CrossEntropy, cross_entropy) X(CrossEntropyGrad, cross_entropy_grad)              \
  X(GradNormSq, grad_norm_sq) X(ClipAndAdamW, clip_adamw)                             \
  X(Accumulate, accumulate)                                                           \
  X(MoeRoute, moe_route) X(MoeRouteGrad, moe_route_grad)                              \
  X(MoeDispatch, moe_dispatch) X(MoeDispatchGrad, moe_dispatch_grad)                  \
  X(MoeExperts, moe_experts) X(MoeExpertsGrad, moe_experts_grad)                      \
  X(MoeCombine, moe_combine) X(MoeCombineGrad, moe_combine_grad)                      \
  X(AllReduce, all_reduce)                                                            \
  X(ReduceScatter, reduce_scatter) X(AllGather, all_gather)                           \
  X(VocabMax, vocab_max) X(VocabSumExp, vocab_sum_exp) X(VocabLoss, vocab_loss)       \
  X(AllGatherInto, all_gather_into) X(ReduceScatterInto, reduce_scatter_into)         \
  X(BucketAllReduce, bucket_all_reduce)                                               \
  X(Send, send) X(Recv, recv)                                                         \
  X(AllToAll, all_to_all)                                                             \
  X(CachedAttention, cached_attention)                                                \
  X(BucketReduceScatter, bucket_reduce_scatter)

// The embedding's and its gradient's integer attributes.
#define HEIRETSU_EMBEDDING_INTS_(INT, LE)                                             \
  INT(rows, Size) INT(seq, Size) INT(vocab, Size) INT(c, Size) INT(context, Size)     \
  INT(vocab_parallel, Flag) LE(seq, context)

// Sets a buffer to zeros.
#define HEIRETSU_OP_Zero(BUF, VAR, INT, FLT, LE, RES)                                 \
  BUF(buffer, F32, Req, Any)

// out[r] = table[ids[r]] (+ positions[offset + r % seq]), offset being offset[0], or 0
// without it (a decode program's position; offset + seq <= context is checked when it
// runs). Learned positions: the table has `context` rows, of which rows offset ..
// offset + seq - 1 are read. vocab_parallel: the table is
// this tp rank's block of `vocab` rows of the logical table (ids outside it
// contribute zeros) and tp rank 0 alone adds the positions, so the all_reduce over
// tp that follows yields the embedding.
#define HEIRETSU_OP_Embedding(BUF, VAR, INT, FLT, LE, RES)                            \
  HEIRETSU_EMBEDDING_INTS_(INT, LE)                                                   \
  BUF(ids, I32, Req, rows) BUF(table, F32, Req, N(vocab, c))                          \
  BUF(positions, F32, Opt, N(context, c)) BUF(out, F32, Req, N(rows, c))              \
  BUF(offset, I32, Opt, 1)                                                            \
  /* the first logical row of this rank's block; the logical vocabulary size */       \
  RES(vocab_begin) RES(vocab_total)

#define HEIRETSU_OP_EmbeddingGrad(BUF, VAR, INT, FLT, LE, RES)                        \
  HEIRETSU_EMBEDDING_INTS_(INT, LE)                                                   \
  BUF(ids, I32, Req, rows) BUF(dout, F32, Req, N(rows, c))                            \
  BUF(dtable, F32, Req, N(vocab, c)) BUF(dpositions, F32, Opt, N(context, c))         \
  /* ids in [vocab_begin, vocab_begin + vocab_rows) are this rank's table rows */     \
  RES(vocab_begin) RES(vocab_rows)

// y = x w^T (+ bias). row_parallel: x and w are tp blocks of the inner dimension,
// y is a partial sum over tp, and tp rank 0 alone adds the bias (the prepared
// instruction of every other tp rank has no bias).
#define HEIRETSU_OP_Linear(BUF, VAR, INT, FLT, LE, RES)                               \
  INT(rows, Size) INT(in, Size) INT(out, Size) INT(row_parallel, Flag)                \
  BUF(x, F32, Req, N(rows, in)) BUF(w, F32, Req, N(out, in))                          \
  BUF(bias, F32, Opt, out) BUF(y, F32, Req, N(rows, out))

// dx and dw are each optional: a backward split for zero-bubble schedules computes
// the input gradient (dx) in one instruction and the weight gradients (dw, dbias)
// in another, later.
#define HEIRETSU_OP_LinearGrad(BUF, VAR, INT, FLT, LE, RES)                           \
  INT(rows, Size) INT(in, Size) INT(out, Size) INT(accumulate_dx, Flag)               \
  BUF(dy, F32, Req, N(rows, out)) BUF(x, F32, Req, N(rows, in))                       \
  BUF(w, F32, Req, N(out, in)) BUF(dx, F32, Opt, N(rows, in))                         \
  BUF(dw, F32, Opt, N(out, in)) BUF(dbias, F32, Opt, out)

#define HEIRETSU_OP_LayerNorm(BUF, VAR, INT, FLT, LE, RES)                            \
  INT(rows, Size) INT(c, Size) FLT(eps)                                               \
  BUF(x, F32, Req, N(rows, c)) BUF(w, F32, Req, c) BUF(b, F32, Req, c)                \
  BUF(y, F32, Req, N(rows, c)) BUF(mean, F32, Req, rows) BUF(rstd, F32, Req, rows)

#define HEIRETSU_OP_LayerNormGrad(BUF, VAR, INT, FLT, LE, RES)                        \
  INT(rows, Size) INT(c, Size) INT(accumulate_dx, Flag)                               \
  BUF(dy, F32, Req, N(rows, c)) BUF(x, F32, Req, N(rows, c)) BUF(w, F32, Req, c)      \
  BUF(mean, F32, Req, rows) BUF(rstd, F32, Req, rows) BUF(dx, F32, Req, N(rows, c))   \
  BUF(dw, F32, Req, c) BUF(db, F32, Req, c)

#define HEIRETSU_OP_RMSNorm(BUF, VAR, INT, FLT, LE, RES)                              \
  INT(rows, Size) INT(c, Size) FLT(eps)                                               \
  BUF(x, F32, Req, N(rows, c)) BUF(w, F32, Req, c) BUF(y, F32, Req, N(rows, c))       \
  BUF(rstd, F32, Req, rows)

#define HEIRETSU_OP_RMSNormGrad(BUF, VAR, INT, FLT, LE, RES)                          \
  INT(rows, Size) INT(c, Size) INT(accumulate_dx, Flag)                               \
  BUF(dy, F32, Req, N(rows, c)) BUF(x, F32, Req, N(rows, c)) BUF(w, F32, Req, c)      \
  BUF(rstd, F32, Req, rows) BUF(dx, F32, Req, N(rows, c)) BUF(dw, F32, Req, c)

#define HEIRETSU_OP_Gelu(BUF, VAR, INT, FLT, LE, RES)                                 \
  INT(n, Size) BUF(x, F32, Req, n) BUF(y, F32, Req, n)

#define HEIRETSU_OP_GeluGrad(BUF, VAR, INT, FLT, LE, RES)                             \
  INT(n, Size) INT(accumulate_dx, Flag)                                               \
  BUF(dy, F32, Req, n) BUF(x, F32, Req, n) BUF(dx, F32, Req, n)

// y = silu(gate) * up.
#define HEIRETSU_OP_Swiglu(BUF, VAR, INT, FLT, LE, RES)                               \
  INT(n, Size) BUF(gate, F32, Req, n) BUF(up, F32, Req, n) BUF(y, F32, Req, n)

#define HEIRETSU_OP_SwigluGrad(BUF, VAR, INT, FLT, LE, RES)                           \
  INT(n, Size) INT(accumulate_dx, Flag)                                               \
  BUF(dy, F32, Req, n) BUF(gate, F32, Req, n) BUF(up, F32, Req, n)                    \
  BUF(dgate, F32, Req, n) BUF(dup, F32, Req, n)

#define HEIRETSU_OP_Add(BUF, VAR, INT, FLT, LE, RES)                                  \
  INT(n, Size) BUF(a, F32, Req, n) BUF(b, F32, Req, n) BUF(y, F32, Req, n)

// Rotary embedding of [batch, seq, heads, head_dim] with base `theta`: token t is at
// position offset[0] + t (a decode program's), or t without `offset`.
#define HEIRETSU_OP_Rope(BUF, VAR, INT, FLT, LE, RES)                                 \
  INT(batch, Size) INT(seq, Size) INT(heads, Size) INT(head_dim, Size) FLT(theta)     \
  BUF(x, F32, Req, N(batch, seq, heads, head_dim))                                    \
  BUF(y, F32, Req, N(batch, seq, heads, head_dim)) BUF(offset, I32, Opt, 1)

#define HEIRETSU_OP_RopeGrad(BUF, VAR, INT, FLT, LE, RES)                             \
  INT(batch, Size) INT(seq, Size) INT(heads, Size) INT(head_dim, Size)                \
  INT(accumulate_dx, Flag) FLT(theta)                                                 \
  BUF(dy, F32, Req, N(batch, seq, heads, head_dim))                                   \
  BUF(dx, F32, Req, N(batch, seq, heads, head_dim))

// Causal attention; kv_heads divides heads (grouped-query). lse: per (b, h, t).
#define HEIRETSU_OP_Attention(BUF, VAR, INT, FLT, LE, RES)                            \
  INT(batch, Size) INT(seq, Size) INT(heads, Size) INT(kv_heads, Size)                \
  INT(head_dim, Size)                                                                 \
  BUF(q, F32, Req, N(batch, seq, heads, head_dim))                                    \
  BUF(k, F32, Req, N(batch, seq, kv_heads, head_dim))                                 \
  BUF(v, F32, Req, N(batch, seq, kv_heads, head_dim))                                 \
  BUF(out, F32, Req, N(batch, seq, heads, head_dim))                                  \
  BUF(lse, F32, Req, N(batch, heads, seq))

// A decode program's attention (graph.attention with a cache): with p = position[0],
// writes k and v of token t into row p + t of the caches (which keep `context`
// positions from one run of the program to the next), then token t's query attends
// causally to cache rows 0 .. p + t. p + seq <= context is checked when it runs.
#define HEIRETSU_OP_CachedAttention(BUF, VAR, INT, FLT, LE, RES)                      \
  INT(batch, Size) INT(seq, Size) INT(heads, Size) INT(kv_heads, Size)                \
  INT(head_dim, Size) INT(context, Size) LE(seq, context)                             \
  BUF(q, F32, Req, N(batch, seq, heads, head_dim))                                    \
  BUF(k, F32, Req, N(batch, seq, kv_heads, head_dim))                                 \
  BUF(v, F32, Req, N(batch, seq, kv_heads, head_dim))                                 \
  BUF(k_cache, F32, Req, N(batch, context, kv_heads, head_dim))                       \
  BUF(v_cache, F32, Req, N(batch, context, kv_heads, head_dim))                       \
  BUF(position, I32, Req, 1)                                                          \
  BUF(out, F32, Req, N(batch, seq, heads, head_dim))

#define HEIRETSU_OP_AttentionGrad(BUF, VAR, INT, FLT, LE, RES)                        \
  INT(batch, Size) INT(seq, Size) INT(heads, Size) INT(kv_heads, Size)                \
  INT(head_dim, Size) INT(accumulate_dx, Flag)                                        \
  BUF(dout, F32, Req, N(batch, seq, heads, head_dim))                                 \
  BUF(q, F32, Req, N(batch, seq, heads, head_dim))                                    \
  BUF(k, F32, Req, N(batch, seq, kv_heads, head_dim))                                 \
  BUF(v, F32, Req, N(batch, seq, kv_heads, head_dim))                                 \
  BUF(out, F32, Req, N(batch, seq, heads, head_dim))                                  \
  BUF(lse, F32, Req, N(batch, heads, seq))                                            \
  BUF(dq, F32, Req, N(batch, seq, heads, head_dim))                                   \
  BUF(dk, F32, Req, N(batch, seq, kv_heads, head_dim))                                \
  BUF(dv, F32, Req, N(batch, seq, kv_heads, head_dim))

// loss = mean over rows of lse - logits[target]. Columns from `valid` on are
// vocabulary padding, not classes.
#define HEIRETSU_OP_CrossEntropy(BUF, VAR, INT, FLT, LE, RES)                         \
  INT(rows, Size) INT(vocab, Size) INT(valid, Size) LE(valid, vocab)                  \
  BUF(logits, F32, Req, N(rows, vocab)) BUF(targets, I32, Req, rows)                  \
  BUF(loss, F32, Req, 1) BUF(lse, F32, Req, rows)

// dlogits = dloss / rows * (softmax - onehot). vocab_parallel: the logits are this
// tp rank's block of the vocabulary and lse comes from vocab_loss.
#define HEIRETSU_OP_CrossEntropyGrad(BUF, VAR, INT, FLT, LE, RES)                     \
  INT(rows, Size) INT(vocab, Size) INT(accumulate_dx, Flag) INT(vocab_parallel, Flag) \
  INT(valid, Size) FLT(dloss)                                                         \
  BUF(logits, F32, Req, N(rows, vocab)) BUF(targets, I32, Req, rows)                  \
  BUF(lse, F32, Req, rows) BUF(dlogits, F32, Req, N(rows, vocab))                     \
  /* the logical column of this rank's first logit */                                 \
  RES(vocab_begin)

// The vocabulary-parallel cross-entropy: each tp rank holds a block of `vocab`
// logits per row (`valid`: the logical columns that are classes, the rest being
// vocabulary padding); vocab_max, an all_reduce(max), vocab_sum_exp, an
// all_reduce(sum) of both its outputs, then vocab_loss.
#define HEIRETSU_OP_VocabMax(BUF, VAR, INT, FLT, LE, RES)                             \
  INT(rows, Size) INT(vocab, Size) INT(valid, Size)                                   \
  BUF(logits, F32, Req, N(rows, vocab)) BUF(max, F32, Req, rows)                      \
  RES(vocab_begin)

// sum = sum exp(logits - max); target = the target's logit when it is in this
// rank's block, else 0.
#define HEIRETSU_OP_VocabSumExp(BUF, VAR, INT, FLT, LE, RES)                          \
  INT(rows, Size) INT(vocab, Size) INT(valid, Size)                                   \
  BUF(logits, F32, Req, N(rows, vocab)) BUF(targets, I32, Req, rows)                  \
  BUF(max, F32, Req, rows) BUF(sum, F32, Req, rows) BUF(target, F32, Req, rows)       \
  RES(vocab_begin) RES(vocab_total)

// lse = max + log(sum); loss = mean(lse - target).
#define HEIRETSU_OP_VocabLoss(BUF, VAR, INT, FLT, LE, RES)                            \
  INT(rows, Size)                                                                     \
  BUF(max, F32, Req, rows) BUF(sum, F32, Req, rows) BUF(target, F32, Req, rows)       \
  BUF(loss, F32, Req, 1) BUF(lse, F32, Req, rows)

// Adds the sum of squares of the buffers to the step's gradient norm. sharded
// (ZeRO-1): only this rank's dp shard of each buffer counts (the prepared
// instruction's ranges) and the sum is then summed over dp. tp_sharded: the
// buffers are tp blocks of their parameters and the sum is summed over tp too;
// ep_sharded: they are ep blocks (experts), summed over ep too. shard_data: the
// ZeRO-1 shards are over the data ranks (dp x ep), not dp.
#define HEIRETSU_OP_GradNormSq(BUF, VAR, INT, FLT, LE, RES)                           \
  VAR(F32) INT(sharded, Flag) INT(tp_sharded, Flag) INT(ep_sharded, Flag)             \
  INT(shard_data, Flag)

// Clips by the step's global norm and applies AdamW to [begin, begin + size) of the
// parameter. shard > 0 (ZeRO-1): that is this rank's dp shard (shard_data: its shard
// over the data ranks, dp x ep), [rank * shard, min(n, (rank + 1) * shard)), and the
// moments hold just that shard. Otherwise the moments are whole and the same range
// of them is updated: all of it (an executor may split it over the ranks that hold
// the parameter, Executor::PlanMirroredUpdates).
#define HEIRETSU_OP_ClipAndAdamW(BUF, VAR, INT, FLT, LE, RES)                         \
  INT(n, Size) INT(weight_decay, Flag) INT(shard, Size) INT(shard_data, Flag)         \
  LE(shard, n)                                                                        \
  BUF(param, F32, Req, n) BUF(grad, F32, Req, n)                                      \
  BUF(exp_avg, F32, Req, shard ? shard : n) BUF(exp_avg_sq, F32, Req, shard ? shard : n) \
  /* the elements of param and grad this rank updates */                              \
  RES(begin) RES(size)

#define HEIRETSU_OP_Accumulate(BUF, VAR, INT, FLT, LE, RES)                           \
  INT(n, Size) INT(accumulate_dx, Flag) BUF(src, F32, Req, n) BUF(dst, F32, Req, n)

// Mixture of experts, in steps (graph.moe_route .. graph.moe_combine; formulas in
// runtime/cpu/kernels.h). Rows come in sequences of `seq` rows; a slot is a (row,
// choice) pair, rows * top_k of them. Every decision is the sequence's own (an
// expert keeps at most `capacity` slots of each sequence), so no layout changes it.
// Each expert has a region of `slots` rows in the expert-major buffers (room for
// `capacity` per sequence); the slots it kept fill the region's first rows, in
// slot order, and only those rows are computed and exchanged.
//
// moe_route: the router GEMM, softmax, top-k and the slots' places: `choice` the
// expert of each slot, `pos` its row in that expert's region (-1: dropped past the
// sequence's capacity), `weight` its combine weight; `counts` the rows in use of
// each expert's region; `aux` the auxiliary loss; `load` [2, experts]: the slots
// each expert kept, then those it dropped (metrics).
// tp_parts: the route runs on that many tensor-parallel ranks whose gradients are
// summed (each differentiates 1/tp_parts of the auxiliary loss).
#define HEIRETSU_OP_MoeRoute(BUF, VAR, INT, FLT, LE, RES)                             \
  INT(rows, Size) INT(d, Size) INT(experts, Size) INT(top_k, Size) INT(seq, Size)     \
  INT(capacity, Size) INT(tp_parts, Size) FLT(aux_coef) FLT(z_coef)                   \
  LE(top_k, experts) LE(capacity, seq) LE(seq, rows)                                  \
  BUF(x, F32, Req, N(rows, d)) BUF(router, F32, Req, N(experts, d))                   \
  BUF(probs, F32, Req, N(rows, experts)) BUF(lse, F32, Req, rows)                     \
  BUF(choice, I32, Req, N(rows, top_k)) BUF(pos, I32, Req, N(rows, top_k))            \
  BUF(weight, F32, Req, N(rows, top_k)) BUF(counts, I32, Req, experts)                \
  BUF(aux, F32, Req, 1) BUF(load, F32, Req, N(2, experts))

// dweight: the gradient of the combine weights; daux: the auxiliary loss's.
#define HEIRETSU_OP_MoeRouteGrad(BUF, VAR, INT, FLT, LE, RES)                         \
  INT(rows, Size) INT(d, Size) INT(experts, Size) INT(top_k, Size) INT(seq, Size)     \
  INT(accumulate_dx, Flag) FLT(aux_coef) FLT(z_coef) FLT(daux)                        \
  LE(top_k, experts) LE(seq, rows)                                                    \
  BUF(dweight, F32, Req, N(rows, top_k)) BUF(x, F32, Req, N(rows, d))                 \
  BUF(router, F32, Req, N(experts, d)) BUF(probs, F32, Req, N(rows, experts))         \
  BUF(lse, F32, Req, rows) BUF(choice, I32, Req, N(rows, top_k))                      \
  BUF(dx, F32, Req, N(rows, d)) BUF(drouter, F32, Req, N(experts, d))

// moe_dispatch: each kept slot's row of x to its place in `buf` (expert-major,
// [experts, slots, d]); the rows no slot took are zero.
#define HEIRETSU_OP_MoeDispatch(BUF, VAR, INT, FLT, LE, RES)                          \
  INT(rows, Size) INT(d, Size) INT(experts, Size) INT(top_k, Size) INT(slots, Size)   \
  BUF(x, F32, Req, N(rows, d)) BUF(choice, I32, Req, N(rows, top_k))                  \
  BUF(pos, I32, Req, N(rows, top_k)) BUF(buf, F32, Req, N(experts, slots, d))

#define HEIRETSU_OP_MoeDispatchGrad(BUF, VAR, INT, FLT, LE, RES)                      \
  INT(rows, Size) INT(d, Size) INT(experts, Size) INT(top_k, Size) INT(slots, Size)   \
  INT(accumulate_dx, Flag)                                                            \
  BUF(dbuf, F32, Req, N(experts, slots, d)) BUF(choice, I32, Req, N(rows, top_k))     \
  BUF(pos, I32, Req, N(rows, top_k)) BUF(dx, F32, Req, N(rows, d))

// moe_experts: the grouped GEMMs, one per expert over the rows in use of its
// region of `tokens` rows (the sum of its `sources` counts in `rows`: one, or one
// per ep rank it received from): pre = x w_in^T, act = gelu(pre) (SwiGLU:
// silu(x w_gate^T) * pre), y = act w_out^T; the rest of y is zero. `experts` are
// this rank's; f is this rank's block of the hidden size.
#define HEIRETSU_OP_MoeExperts(BUF, VAR, INT, FLT, LE, RES)                           \
  INT(experts, Size) INT(tokens, Size) INT(d, Size) INT(f, Size) INT(swiglu, Flag)    \
  INT(sources, Size) BUF(rows, I32, Req, N(experts, sources))                         \
  BUF(x, F32, Req, N(experts, tokens, d)) BUF(w_in, F32, Req, N(experts, f, d))       \
  BUF(w_gate, F32, Iff(swiglu), N(experts, f, d)) BUF(w_out, F32, Req, N(experts, d, f)) \
  BUF(pre, F32, Req, N(experts, tokens, f)) BUF(gate_pre, F32, Iff(swiglu), N(experts, tokens, f)) \
  BUF(act, F32, Req, N(experts, tokens, f)) BUF(y, F32, Req, N(experts, tokens, d))

// Accumulates dw_scale times each weight's gradient (1/ep: an expert's tokens come
// from the ep ranks of its replica, whose losses are averaged); writes (or
// accumulates into) dx.
#define HEIRETSU_OP_MoeExpertsGrad(BUF, VAR, INT, FLT, LE, RES)                       \
  INT(experts, Size) INT(tokens, Size) INT(d, Size) INT(f, Size) INT(swiglu, Flag)    \
  INT(accumulate_dx, Flag) INT(sources, Size) FLT(dw_scale)                           \
  BUF(rows, I32, Req, N(experts, sources))                                            \
  BUF(dy, F32, Req, N(experts, tokens, d)) BUF(x, F32, Req, N(experts, tokens, d))    \
  BUF(w_in, F32, Req, N(experts, f, d)) BUF(w_gate, F32, Iff(swiglu), N(experts, f, d)) \
  BUF(w_out, F32, Req, N(experts, d, f)) BUF(pre, F32, Req, N(experts, tokens, f))    \
  BUF(gate_pre, F32, Iff(swiglu), N(experts, tokens, f)) BUF(act, F32, Req, N(experts, tokens, f)) \
  BUF(dx, F32, Req, N(experts, tokens, d)) BUF(dw_in, F32, Req, N(experts, f, d))     \
  BUF(dw_gate, F32, Iff(swiglu), N(experts, f, d)) BUF(dw_out, F32, Req, N(experts, d, f))

// moe_combine: y[r] = sum over r's kept slots of weight * buf[choice][pos].
#define HEIRETSU_OP_MoeCombine(BUF, VAR, INT, FLT, LE, RES)                           \
  INT(rows, Size) INT(d, Size) INT(experts, Size) INT(top_k, Size) INT(slots, Size)   \
  BUF(buf, F32, Req, N(experts, slots, d)) BUF(choice, I32, Req, N(rows, top_k))      \
  BUF(pos, I32, Req, N(rows, top_k)) BUF(weight, F32, Req, N(rows, top_k))            \
  BUF(y, F32, Req, N(rows, d))

// Writes dbuf whole (zero where no slot is) and writes (or accumulates into)
// dweight (zero for dropped slots).
#define HEIRETSU_OP_MoeCombineGrad(BUF, VAR, INT, FLT, LE, RES)                       \
  INT(rows, Size) INT(d, Size) INT(experts, Size) INT(top_k, Size) INT(slots, Size)   \
  INT(accumulate_dx, Flag)                                                            \
  BUF(dy, F32, Req, N(rows, d)) BUF(buf, F32, Req, N(experts, slots, d))              \
  BUF(choice, I32, Req, N(rows, top_k)) BUF(pos, I32, Req, N(rows, top_k))            \
  BUF(weight, F32, Req, N(rows, top_k)) BUF(dbuf, F32, Req, N(experts, slots, d))     \
  BUF(dweight, F32, Req, N(rows, top_k))

// In place on each buffer, over the group of ranks that differ only in `axis`.
#define HEIRETSU_OP_AllReduce(BUF, VAR, INT, FLT, LE, RES)                            \
  VAR(F32) INT(axis, Axis) INT(reduce, Reduce)

// Each buffer (n elements) is reduced over the group and this rank keeps its shard,
// [rank * s, min(n, (rank + 1) * s)) with s = ceil(n / group size), in place; the
// rest of the buffer is left stale.
#define HEIRETSU_OP_ReduceScatter(BUF, VAR, INT, FLT, LE, RES)                        \
  VAR(F32) INT(axis, Axis) INT(reduce, Reduce)

// The inverse layout: each rank's shard of each buffer, gathered in place.
#define HEIRETSU_OP_AllGather(BUF, VAR, INT, FLT, LE, RES)                            \
  VAR(F32) INT(axis, Axis)

// Sequence parallelism: a tensor whole on every rank is `outer` runs of `parts`
// blocks of `inner` elements, rank r holding block r of each run (a split of
// dimension d: outer = the dimensions before it). all_gather_into gathers the
// blocks (src: this rank's outer x inner) into the whole (dst); reduce_scatter_into
// sums the wholes over the group and keeps this rank's blocks. `parts` is the
// group's size; accumulate_dx adds into dst.
#define HEIRETSU_OP_AllGatherInto(BUF, VAR, INT, FLT, LE, RES)                        \
  INT(axis, Axis) INT(outer, Size) INT(parts, Size) INT(inner, Size)                  \
  INT(accumulate_dx, Flag)                                                            \
  BUF(src, F32, Req, N(outer, inner)) BUF(dst, F32, Req, N(outer, parts, inner))

#define HEIRETSU_OP_ReduceScatterInto(BUF, VAR, INT, FLT, LE, RES)                    \
  INT(axis, Axis) INT(outer, Size) INT(parts, Size) INT(inner, Size)                  \
  INT(accumulate_dx, Flag)                                                            \
  BUF(src, F32, Req, N(outer, parts, inner)) BUF(dst, F32, Req, N(outer, inner))

// A bucket of data-parallel gradients, in the backward unit where the backward pass
// has finished them: it runs once per step, in the unit's last run of the step, in
// the background (the rest of the backward pass goes on), and is complete before
// the next unit that is not a microbatch's (communication or update).
#define HEIRETSU_OP_BucketAllReduce(BUF, VAR, INT, FLT, LE, RES)                      \
  VAR(F32) INT(axis, Axis) INT(reduce, Reduce)

// ZeRO-1's bucket: reduce_scatter's operands and result, run as bucket_all_reduce
// runs (once per step, in the unit's last run, in the background, complete before
// the next unit that is not a microbatch's).
#define HEIRETSU_OP_BucketReduceScatter(BUF, VAR, INT, FLT, LE, RES)                  \
  VAR(F32) INT(axis, Axis) INT(reduce, Reduce)

// Point to point over `axis`: the buffer (the run's activation slot's copy) goes
// to (comes from) the rank of this rank's group whose coordinate on `axis` is
// `peer` (pipeline stages: an activation to the next stage, its gradient back).
// A send is posted and does not block; its copy must stay unwritten until the send
// completes, which the executor waits for before the next run on the same slot
// (of the same virtual chunk) starts, after the microbatch runs (before the first unit of the step), at the
// end of a unit of the step that sends, and before the step returns. A recv blocks
// until its data has arrived. Every send has its recv, in the same order on both
// ranks (the static check matches them, simulating exactly these rules:
// runtime/exec/executor.h).
#define HEIRETSU_OP_Send(BUF, VAR, INT, FLT, LE, RES)                                 \
  INT(axis, Axis) INT(peer, Size) BUF(x, F32, Req, Any)

#define HEIRETSU_OP_Recv(BUF, VAR, INT, FLT, LE, RES)                                 \
  INT(axis, Axis) INT(peer, Size) BUF(x, F32, Req, Any)

// Exchange over the group of `axis` (`parts` ranks; MoE dispatch and combine):
// src is [parts, outer, inner], block p going to the rank at coordinate p; dst is
// [outer, parts, inner], block p coming from that rank. back = 1 is the inverse
// (src [outer, parts, inner] -> dst [parts, outer, inner]), the transpose of
// back = 0. accumulate_dx adds into dst.
// With variable = 1 (the variable-size exchange of MoE): blocks are rows of `row`
// elements, and only the rows in use travel. src_rows gives the rows this rank
// sends of each block ([parts, outer] for back = 0, [outer, parts] for back = 1);
// the exchange writes dst_rows, the rows received, shaped like dst's first two
// dimensions. The [parts, outer] side keeps a block's rows at its start; the
// [outer, parts] side packs them: outer o holds the rows from (for) part p after
// those of parts 0 .. p-1. Rows of dst nothing was received into are zero.
#define HEIRETSU_OP_AllToAll(BUF, VAR, INT, FLT, LE, RES)                             \
  INT(axis, Axis) INT(outer, Size) INT(parts, Size) INT(inner, Size) INT(back, Flag)  \
  INT(accumulate_dx, Flag) INT(variable, Flag) INT(row, Size) LE(row, inner)         \
  BUF(src, F32, Req, N(outer, parts, inner)) BUF(dst, F32, Req, N(outer, parts, inner)) \
  BUF(src_rows, I32, Iff(variable), N(outer, parts))                                  \
  BUF(dst_rows, I32, Iff(variable), N(outer, parts))
// clang-format on

// One kind of an opcode's operands, the others left out: its buffer slots (and
// variadic buffers), integer attributes, float attributes or resolved values.
#define HEIRETSU_IGNORE_(...)
#define HEIRETSU_SLOTS_(Enum, BUF, VAR)                                                  \
  HEIRETSU_OP_##Enum(BUF, VAR, HEIRETSU_IGNORE_, HEIRETSU_IGNORE_, HEIRETSU_IGNORE_,     \
                     HEIRETSU_IGNORE_)
#define HEIRETSU_INTS_(Enum, INT)                                                        \
  HEIRETSU_OP_##Enum(HEIRETSU_IGNORE_, HEIRETSU_IGNORE_, INT, HEIRETSU_IGNORE_,          \
                     HEIRETSU_IGNORE_, HEIRETSU_IGNORE_)
#define HEIRETSU_FLOATS_(Enum, FLT)                                                      \
  HEIRETSU_OP_##Enum(HEIRETSU_IGNORE_, HEIRETSU_IGNORE_, HEIRETSU_IGNORE_, FLT,          \
                     HEIRETSU_IGNORE_, HEIRETSU_IGNORE_)
#define HEIRETSU_RESOLVED_(Enum, RES)                                                    \
  HEIRETSU_OP_##Enum(HEIRETSU_IGNORE_, HEIRETSU_IGNORE_, HEIRETSU_IGNORE_,               \
                     HEIRETSU_IGNORE_, HEIRETSU_IGNORE_, RES)

#endif  // HEIRETSU_RUNTIME_PLAN_OP_TABLE_H_
