// CPU kernels: forward and backward of every graph op the training step needs,
// on plain row-major arrays. They are templates instantiated for float (the
// runtime) and double (the finite-difference tests, which need the precision).
//
// Conventions, shared by every kernel:
//   - Activations are [rows, C] row-major, rows = B * T; attention tensors are
//     [B, T, heads * head_dim].
//   - Linear weights are stored [out, in] (graph.linear): y = x W^T + b.
//   - Backward kernels write input gradients (dx...) and *accumulate* (+=) into
//     parameter gradients (dw, db, dtable...): a parameter used twice, like the tied
//     embedding, sums its uses, and the step zeroes parameter gradients once.
//     `accumulate_dx` makes a kernel add into dx instead (a value with several uses).
//   - Results do not depend on the number of threads: every output element, and
//     every reduction, is computed by one thread in a fixed order.
#ifndef HEIRETSU_RUNTIME_CPU_KERNELS_H_
#define HEIRETSU_RUNTIME_CPU_KERNELS_H_

#include <cstdint>
#include <string>

namespace heiretsu::cpu {

// The library the float GEMMs run on (double GEMMs, used by references, always go
// to OpenBLAS). Chosen by measurement (bench/results/README.md, blas.jsonl):
// oneDNN's sgemm on CPUs with AVX-512 (on the Xeon kind of machine it ran the
// model's GEMMs 12 % (GPT-2 small) to 58 % (gpt-tiny) faster than OpenBLAS's
// SkylakeX kernels at 256 rows, and tied at 4096), OpenBLAS elsewhere (on the AMD
// EPYC, Zen 3, they tied within noise). HEIRETSU_BLAS=openblas|onednn|auto
// overrides (auto, the default: that rule); PrepareThreads validates it.
enum class Blas { kOpenBlas, kOneDnn };
// The rule: `choice` is HEIRETSU_BLAS's value (null: unset, = auto); `avx512`
// whether the CPU has AVX-512 (CpuHasAvx512). Returns false for a value that is
// none of the three, leaving *out alone.
bool ChooseBlas(const char* choice, bool avx512, Blas* out);
// The library in use: the rule applied to this process's environment and CPU
// (an invalid HEIRETSU_BLAS counts as auto here; PrepareThreads refuses it), or
// what UseBlas set.
Blas ActiveBlas();
// For tests and benchmarks: run the float GEMMs on `blas` from now on.
void UseBlas(Blas blas);

// The BLAS the GEMMs run on, for the run's first lines and benchmark records:
// "OpenBLAS 0.3.21 ... Zen, Zen kernels, 2 threads" or "oneDNN 2.6.3 sgemm,
// avx512_core_bf16 ISA (chosen by heiretsu on this AVX-512 CPU; ...), 2 threads",
// saying so when heiretsu chose
// the kernels (PrepareThreads, threading.h). When the CPU has AVX-512 but
// OpenBLAS runs kernels without it anyway (the user set OPENBLAS_CORETYPE, or the
// re-execution failed), `*advice` says how to select the right ones; else it is
// left empty.
std::string DescribeBlas(std::string* advice);

// OpenBLAS kernels for a CPU whose features OpenBLAS's own table may not know:
// the OPENBLAS_CORETYPE to set when OpenBLAS detected the CPU as `detected` (its
// core name) although the CPU has AVX-512 F, BW, DQ and VL (`avx512`): "SkylakeX",
// unless `detected` already uses AVX-512 or the user chose a core type
// (`user_chose`). OpenBLAS 0.3.21 falls back to "Prescott" on some such Xeons:
// issue #15 measured a 2048^3 sgemm at 42.7 GFLOP/s as detected and 238 with
// SkylakeX there.
std::string OpenBlasCoreOverride(const std::string& detected, bool avx512, bool user_chose);

// Whether this CPU has the AVX-512 subsets OpenBLAS's SkylakeX kernels use.
bool CpuHasAvx512();

// OpenBLAS's name for the kernels it runs now.
std::string OpenBlasCoreName();

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major, through ActiveBlas() (float)
// or OpenBLAS (double).
template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          const T* b, T beta, T* c);

// y[rows, out] = x[rows, in] W[out, in]^T (+ bias[out]).
template <typename T>
void LinearForward(const T* x, const T* w, const T* bias, T* y, int64_t rows, int64_t in,
                   int64_t out);
// dx = dy W; dw += dy^T x; dbias += sum_rows dy. `dx`, `dw` and `bias_grad` may be null.
// overwrite_dw: dw = dy^T x and dbias = sum_rows dy instead (the step's first write
// of those gradients, plan::Instruction::overwrite_weight_grads); bitwise what adding
// to zeros gives.
template <typename T>
void LinearBackward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* bias_grad,
                    int64_t rows, int64_t in, int64_t out, bool accumulate_dx,
                    bool overwrite_dw = false);

// out[r, :] = table[ids[r], :] (+ positions[r % seq, :]). Returns -1 when every id
// is in [0, vocab_total), else the index r of the first id that is not. The table
// holds the `vocab` rows from `vocab_begin` of the logical table (vocabulary
// parallelism); ids outside them give zero rows. vocab_total < 0 means `vocab`.
template <typename T>
int64_t EmbeddingForward(const int32_t* ids, const T* table, const T* positions, T* out,
                         int64_t rows, int64_t seq, int64_t vocab, int64_t c,
                         int64_t vocab_begin = 0, int64_t vocab_total = -1,
                         int64_t position_offset = 0);
// dtable[ids[r] - vocab_begin] += dout[r] for ids in the table's block;
// dpositions[r % seq] += dout[r] (if non-null) for every row.
template <typename T>
void EmbeddingBackward(const int32_t* ids, const T* dout, T* dtable, T* dpositions, int64_t rows,
                       int64_t seq, int64_t c, int64_t vocab_begin = 0, int64_t vocab = -1);

// Layer norm over the last dimension; saves mean and 1/std per row for backward.
template <typename T>
void LayerNormForward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                      int64_t c, double eps);
// dw and db are added to, or with overwrite_dw written (as LinearBackward's).
template <typename T>
void LayerNormBackward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                       T* dw, T* db, int64_t rows, int64_t c, bool accumulate_dx,
                       bool overwrite_dw = false);

// RMS norm over the last dimension; saves 1/rms per row.
template <typename T>
void RMSNormForward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t c, double eps);
// dw is added to, or with overwrite_dw written (as LinearBackward's).
template <typename T>
void RMSNormBackward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw,
                     int64_t rows, int64_t c, bool accumulate_dx, bool overwrite_dw = false);

// GELU, tanh approximation (GPT-2).
template <typename T>
void GeluForward(const T* x, T* y, int64_t n);
template <typename T>
void GeluBackward(const T* dy, const T* x, T* dx, int64_t n, bool accumulate_dx);

// y = silu(gate) * up.
template <typename T>
void SwigluForward(const T* gate, const T* up, T* y, int64_t n);
template <typename T>
void SwigluBackward(const T* dy, const T* gate, const T* up, T* dgate, T* dup, int64_t n,
                    bool accumulate_dx);

// y = a + b.
template <typename T>
void AddForward(const T* a, const T* b, T* y, int64_t n);

// dst = src (or dst += src with `accumulate`): a gradient reaching a value that
// has several uses.
template <typename T>
void AccumulateForward(const T* src, T* dst, int64_t n, bool accumulate);

// Rotary position embedding on x[B, T, heads * head_dim]: each pair (2i, 2i+1) of a
// head at position t rotates by t * theta^(-2i / head_dim). Backward rotates back.
template <typename T>
void RopeForward(const T* x, T* y, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                 double theta, int64_t position_offset = 0);
template <typename T>
void RopeBackward(const T* dy, T* dx, int64_t batch, int64_t seq, int64_t heads,
                  int64_t head_dim, double theta, bool accumulate_dx);

// Causal attention, grouped-query: q is [B, T, H * hd], k and v [B, T, KV * hd];
// query head h reads KV head h / (H / KV). Saves lse[B, H, T] (log-sum-exp of each
// row of scores) so backward recomputes probabilities without an S x S buffer.
template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, T* out, T* lse, int64_t batch,
                      int64_t seq, int64_t heads, int64_t kv_heads, int64_t head_dim);
// A decode step's attention over a KV cache of `context` positions ([B, context, KV
// * hd] each): token t of q, k, v ([B, T, .]) is at position p = position + t; its key
// and value are written to cache row p, then it attends causally to rows 0 .. p. The
// caller checks position + seq <= context.
template <typename T>
void CachedAttentionForward(const T* q, const T* k, const T* v, T* k_cache, T* v_cache, T* out,
                            int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                            int64_t head_dim, int64_t context, int64_t position);
template <typename T>
void AttentionBackward(const T* dout, const T* q, const T* k, const T* v, const T* out,
                       const T* lse, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                       int64_t heads, int64_t kv_heads, int64_t head_dim, bool accumulate_dx);
// The forward's two ways, chosen by seq as the backward's below: per query row
// (shared with the decode step), or in blocks through GEMMs (S = Q K^T, the softmax
// rows, O = P V).
template <typename T>
void AttentionForwardRows(const T* q, const T* k, const T* v, T* out, T* lse, int64_t batch,
                          int64_t seq, int64_t heads, int64_t kv_heads, int64_t head_dim);
template <typename T>
void AttentionForwardBlocked(const T* q, const T* k, const T* v, T* out, T* lse, int64_t batch,
                             int64_t seq, int64_t heads, int64_t kv_heads, int64_t head_dim);
// Its two ways, AttentionBackward choosing by seq (equal up to rounding): per query
// row (vectorized dot products and axpys; short sequences), or in blocks of
// kAttentionBlockRows queries through GEMMs (the scores S = Q K^T and dP = dO V^T of
// the block against every key up to its last query, then dV += P^T dO, dQ += dS K,
// dK += dS^T Q), from seq kAttentionBlockedSeq on.
constexpr int64_t kAttentionBlockRows = 128, kAttentionBlockedSeq = 256;
template <typename T>
void AttentionBackwardRows(const T* dout, const T* q, const T* k, const T* v, const T* out,
                           const T* lse, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                           int64_t heads, int64_t kv_heads, int64_t head_dim, bool accumulate_dx);
template <typename T>
void AttentionBackwardBlocked(const T* dout, const T* q, const T* k, const T* v, const T* out,
                              const T* lse, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                              int64_t heads, int64_t kv_heads, int64_t head_dim,
                              bool accumulate_dx);

// Mean softmax cross-entropy over rows; saves lse per row. Returns -1 when every
// target is in [0, vocab), else the first row whose target is not (loss untouched).
// Columns from `valid` on (vocabulary padding; valid < 0: none) are not classes:
// they are left out of the softmax and get zero gradient.
template <typename T>
int64_t CrossEntropyForward(const T* logits, const int32_t* targets, T* loss, T* lse,
                            int64_t rows, int64_t vocab, int64_t valid = -1);
// dlogits = dloss * (softmax(logits) - onehot(targets)) / rows.
// With vocab_begin (vocabulary parallelism) the logits are columns [vocab_begin,
// vocab_begin + vocab) of the logical ones.
template <typename T>
void CrossEntropyBackward(const T* logits, const int32_t* targets, const T* lse, T dloss,
                          T* dlogits, int64_t rows, int64_t vocab, bool accumulate_dx,
                          int64_t vocab_begin = 0, int64_t valid = -1);

// The vocabulary-parallel cross-entropy in three steps, with all_reduces between
// them (ops.h): the row max of this block of logits; then the sum of
// exp(logit - max) and the target's logit (0 when the target is outside the
// block; returns the first row whose target is outside [0, vocab_total), else
// -1); then lse = max + log(sum) and loss = mean(lse - target).
// Columns whose logical index is `valid` or more are padding and left out (a
// block of padding only has max -inf).
template <typename T>
void VocabMax(const T* logits, T* max, int64_t rows, int64_t vocab, int64_t vocab_begin = 0,
              int64_t valid = -1);
template <typename T>
int64_t VocabSumExp(const T* logits, const int32_t* targets, const T* max, T* sum, T* target,
                    int64_t rows, int64_t vocab, int64_t vocab_begin, int64_t vocab_total,
                    int64_t valid = -1);
template <typename T>
void VocabLoss(const T* max, const T* sum, const T* target, T* loss, T* lse, int64_t rows);

// Mixture of experts, in steps (plan opcodes moe_route .. moe_combine; op_table.h).
// Rows of x[rows, d] come in sequences of `seq` rows (s = r / seq). A slot is a
// (row, choice) pair, slot index r * top_k + j.
//
// MoeRoute: logits = x router^T [rows, E]; lse[r] = log sum_e exp(logits);
//   probs = softmax; row r's slots j = 0..k-1 take its top_k experts by probability
//   (lower index on ties), choice[slot] = e, with weight[slot] = p_e / sum of the k
//   chosen p. Capacity, per sequence: in slot order within the sequence, expert e
//   keeps its first `capacity` slots and drops the rest (pos = -1; a dropped slot
//   contributes nothing, its weight still counts in the renormalization). The kept
//   slots of e, over all rows in slot order, take the rows 0, 1, ... of e's region:
//   pos[slot] = how many slots e kept before; counts[e] = how many it kept in all.
//   load[e] = slots e kept, load[E + e] = slots e dropped.
//   aux = aux_coef * E * mean_s sum_e f_se P_se + z_coef * mean_r lse_r^2, where f_se
//   is the fraction of sequence s's seq*k slots routed to e (before dropping) and
//   P_se the mean probability of e over s's rows.
// MoeRouteBackward: from dweight (the gradient of `weight`) and daux: writes (or
//   accumulates into) dx and accumulates into drouter.
struct MoeRouteShape {
  int64_t rows, d, experts, top_k, seq, capacity;
};
template <typename T>
void MoeRoute(const MoeRouteShape& s, const T* x, const T* router, double aux_coef,
              double z_coef, T* probs, T* lse, int32_t* choice, int32_t* pos, T* weight,
              int32_t* counts, T* aux, T* load);
template <typename T>
void MoeRouteBackward(const MoeRouteShape& s, const T* dweight, double daux, double aux_coef,
                      double z_coef, const T* x, const T* router, const T* probs, const T* lse,
                      const int32_t* choice, T* dx, T* drouter, bool accumulate_dx);

// Expert-major buffers are [experts, slots, d]: slot (r, j) kept lives at row
// choice * slots + pos.
// MoeDispatch: buf = 0, then each kept slot's row of x at its place.
// MoeDispatchBackward: dx[r] (+)= sum over r's kept slots of dbuf at their places.
// MoeCombine: y[r] = sum over r's kept slots of weight * buf at their places.
// MoeCombineBackward: dbuf = 0, then weight * dy[r] at each kept slot's place;
//   dweight[slot] (+)= dy[r] . buf at its place (0 for a dropped slot).
struct MoeSlotShape {
  int64_t rows, d, experts, top_k, slots;
};
template <typename T>
void MoeDispatch(const MoeSlotShape& s, const T* x, const int32_t* choice, const int32_t* pos,
                 T* buf);
template <typename T>
void MoeDispatchBackward(const MoeSlotShape& s, const T* dbuf, const int32_t* choice,
                         const int32_t* pos, T* dx, bool accumulate_dx);
template <typename T>
void MoeCombine(const MoeSlotShape& s, const T* buf, const int32_t* choice, const int32_t* pos,
                const T* weight, T* y);
template <typename T>
void MoeCombineBackward(const MoeSlotShape& s, const T* dy, const T* buf, const int32_t* choice,
                        const int32_t* pos, const T* weight, T* dbuf, T* dweight,
                        bool accumulate_dx);

// MoeExperts: the grouped GEMMs, one per expert e over the first n_e of its
// `tokens` rows of x[experts, tokens, d], n_e = the sum of rows[e * sources ..
// (e + 1) * sources): pre = x_e w_in_e^T [n_e, f]; act = gelu(pre), or (swiglu)
// gate_pre = x_e w_gate_e^T and act = silu(gate_pre) * pre; y_e = act w_out_e^T
// [n_e, d]; y's other rows are zero (pre, gate_pre and act's are left alone).
// w_in, w_gate: [experts, f, d]; w_out: [experts, d, f].
// MoeExpertsBackward: over the same rows, accumulates dw_scale * the weight
// gradients; writes (or accumulates into) dx's rows in use, and zeroes dx's
// others when it writes. gate_pre, w_gate, dw_gate are null unless swiglu.
struct MoeExpertShape {
  int64_t experts, tokens, d, f;
  bool swiglu;
  int64_t sources = 1;  // counts per expert in `rows`
};
template <typename T>
void MoeExperts(const MoeExpertShape& s, const int32_t* rows, const T* x, const T* w_in,
                const T* w_gate, const T* w_out, T* pre, T* gate_pre, T* act, T* y);
template <typename T>
void MoeExpertsBackward(const MoeExpertShape& s, const int32_t* rows, const T* dy, const T* x,
                        const T* w_in,
                        const T* w_gate, const T* w_out, const T* pre, const T* gate_pre,
                        const T* act, double dw_scale, T* dx, T* dw_in, T* dw_gate, T* dw_out,
                        bool accumulate_dx);

// Sum of squares in double, in a fixed order (global gradient norm): the in-order
// sum of the partial sums of x's chunks of kSumSquaresChunk elements.
inline constexpr int64_t kSumSquaresChunk = int64_t{1} << 16;
template <typename T>
double SumSquares(const T* x, int64_t n);
// Those partial sums of chunks [first, first + count) (the norm split over
// data-parallel ranks: Executor::PlanSplitNorms).
template <typename T>
void SumSquaresChunks(const T* x, int64_t n, int64_t first, int64_t count, double* partials);

// out[i] = copies[0][i] + copies[1][i] + ... + copies[count - 1][i], added in that
// order in float, times 1 / count when `average` (comm.h's kAvg): a reduce-scatter
// of members that share their arenas (Executor::PlanDirectReduceScatters; plain dp's
// parts, PlanSplitReduces). `out` may be one of the copies (each element is read
// from every copy before it is written).
// Returns SumSquares(out, n), bit for bit, computed as the elements are written,
// when `sum_squares` (else 0). On the calling thread alone.
double SumCopies(const float* const* copies, int count, float* out, int64_t n, bool average,
                 bool sum_squares);

// One AdamW step (decoupled weight decay, bias-corrected moments) on n elements:
//   g = grad * grad_scale            (grad_scale carries global-norm clipping)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * p)
// `step` t counts from 1. `mirrors`: `count` other copies of param (n elements
// each, overlapping none of the operands) that get the updated values too
// (ZeRO-1's all_gather done by the update, Executor::PlanMirroredUpdates; an update
// split over data-parallel ranks, PlanSplitUpdates).
template <typename T>
struct AdamWMirrors {
  T* const* param = nullptr;
  int count = 0;
};
template <typename T>
void AdamW(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2,
           double eps, double weight_decay, int64_t step, double grad_scale,
           const AdamWMirrors<T>& mirrors = {});

}  // namespace heiretsu::cpu

#endif  // HEIRETSU_RUNTIME_CPU_KERNELS_H_
