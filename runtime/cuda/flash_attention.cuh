// Causal attention in tiles on the tensor cores (issue #5: "flash style: tiled,
// online softmax, no S x S matrix in memory"), for 16-bit storage (bf16 or fp16: q,
// k, v, out and their gradients one type; lse and the row dots float32) and head_dim
// 32, 64 or 128. Included by cuda_backend.cu inside its namespace, after
// kernel_base.cuh (View, the grid-stride loops, WarpSum, DynamicShared), FromFloat,
// kThreads and Blocks; cuda_backend.cu picks these kernels (FlashHeadDim,
// FlashAligned, FlashSharedBytes) and keeps its per-query kernels for everything
// else (float32 plans, mixed storage, other head dims, a misaligned operand, a
// device that grants a block less shared memory than the tiles take) and for all
// of it under HEIRETSU_CUDA_ATTENTION=rows. The formulas are the per-query kernels' (op_table.h:
// attention, attention_grad): s = scale q.k over keys j <= t, lse = m + log l,
// P = exp(s - lse), dP = dout.v, D = dout.out, dS = P (dP - D) scale.
//
// Forward: a block per (query tile of 64 rows, batch, head), 4 warps of 16 query
// rows. Per key tile of 64 keys up to the tile's last query: S = Q K^T on the tensor
// cores (16-bit products, float32 sums), the rows' online softmax in float32 (the
// float32 output rows rescaled in shared memory), P rounded to the storage type,
// O += P V; out = O / l once at the end.
// Backward (FlashAttention-2's, without atomics, so deterministic): D_i = dout_i .
// out_i first (FlashRowDot); then a block per (key tile, batch, kv head) sums dK and
// dV over the query tiles at or after it and the query heads of its group, and a
// block per (query tile, batch, head) sums dQ over the key tiles up to it; each
// recomputes P from lse. P and dS are rounded to the storage type for their GEMMs
// (as FlashAttention does), so results differ from the per-query kernels' by the
// 16-bit rounding, within heiretsu-cuda-check's 16-bit tolerances.
//
// Every kernel loops over its items (BLOCK_STRIDE; FlashRowDot WARP_STRIDE), so a capped grid
// (CudaOptions::max_blocks) still covers everything. Shared memory tiles are padded
// (kPad16, kPad32) against bank conflicts; wmma needs 32-byte aligned tile pointers
// and leading dimensions that are multiples of 8 (16-bit) or 4 (float32), which
// the padded strides keep. Global rows are read 16 bytes at a time: every operand
// must be 16-byte aligned (FlashAligned). The launchers need nvcc; the kernels also
// compile as C++ under test/unit/cuda_emulation.h's emulation of the warps and of
// wmma, where test/unit/flash_attention_test.cc checks them against a float64
// reference on the CPU.
#ifndef HEIRETSU_RUNTIME_CUDA_FLASH_ATTENTION_CUH_
#define HEIRETSU_RUNTIME_CUDA_FLASH_ATTENTION_CUH_

namespace wmma = nvcuda::wmma;

constexpr int kFlashThreads = 128;  // 4 warps
constexpr int kFlashTile = 64;      // queries and keys per tile (4 warps x 16)
constexpr int kPad16 = 8;           // 16-bit elements of padding per shared row
constexpr int kPad32 = 4;           // float32 elements of padding per shared row

template <typename S>
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, S, wmma::row_major>;
template <typename S>
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::row_major>;
template <typename S>
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// Rows row0 .. row0 + rows of a [seq, stride] operand (src already at the head's
// first element) into dst (rows x ld, 16-bit), zero past `limit`.
template <typename S, int D>
__device__ void FlashLoadRows(S* dst, int ld, const S* src, int64_t row0, int64_t limit,
                              int64_t stride, int rows) {
  constexpr int kVec = 8;  // 16-bit elements per 16-byte load
  for (int i = threadIdx.x; i < rows * (D / kVec); i += blockDim.x) {
    const int r = i / (D / kVec), c = (i % (D / kVec)) * kVec;
    uint4 value = make_uint4(0, 0, 0, 0);
    if (row0 + r < limit) value = *reinterpret_cast<const uint4*>(src + (row0 + r) * stride + c);
    *reinterpret_cast<uint4*>(dst + r * ld + c) = value;
  }
}

// out (16 x 16 at `stage`'s warp region, ld `ld`) of one accumulator: stored into
// the warp's float32 staging area, then each row r < `rows` to dst[r * stride + c]
// (View::put: written, or added to when `acc`).
template <typename S>
__device__ void FlashStoreFragment(const FragC& frag, float* stage, int ld, View<S> dst,
                                   int64_t first, int64_t stride, int rows, bool acc) {
  wmma::store_matrix_sync(stage, frag, ld, wmma::mem_row_major);
  __syncwarp();
  const int lane = threadIdx.x % 32;
  for (int e = lane; e < 256; e += 32) {
    const int r = e / 16, c = e % 16;
    if (r < rows) dst.put(first + r * stride + c, stage[r * ld + c], acc);
  }
  __syncwarp();
}

// S_w (16 x 64) = A_w (16 x D, rows of `a` from the warp's first) times B^T (B: 64 x
// D rows of `b`), into `s` (ld ls) at the warp's rows.
template <typename S, int D>
__device__ void FlashScores(const S* a, const S* b, int ld, float* s, int ls) {
  for (int n = 0; n < kFlashTile / 16; ++n) {
    FragC c;
    wmma::fill_fragment(c, 0.f);
    for (int kk = 0; kk < D / 16; ++kk) {
      FragA<S> fa;
      FragBCol<S> fb;
      wmma::load_matrix_sync(fa, a + kk * 16, ld);
      wmma::load_matrix_sync(fb, b + n * 16 * ld + kk * 16, ld);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(s + n * 16, c, ls, wmma::mem_row_major);
  }
}

// The rows of a warp's 16 that exist, of `left` rows from its first to the end.
__device__ inline int FlashRows(int64_t left) {
  return left < 0 ? 0 : left > 16 ? 16 : static_cast<int>(left);
}

// Item `item` of the kernels over query tiles (FlashFwd, FlashBwdQ), the tiles with
// the most keys first: batch b, head h, its KV head kh, the tile's first query i0.
struct FlashQueryTile {
  int64_t b, h, kh, i0;
};
__device__ inline FlashQueryTile FlashQueryTileOf(int64_t item, int64_t tiles, int64_t heads,
                                                  int64_t kv_heads) {
  const int64_t tile = tiles - 1 - item % tiles, bh = item / tiles, h = bh % heads;
  return {bh / heads, h, h / (heads / kv_heads), tile * kFlashTile};
}

template <int D>
constexpr size_t FlashFwdShared() {
  return 3 * kFlashTile * (D + kPad16) * 2 + kFlashTile * (kFlashTile + kPad16) * 2 +
         kFlashTile * (kFlashTile + kPad32) * 4 + kFlashTile * (D + kPad32) * 4;
}

template <typename S, int D>
__global__ void __launch_bounds__(kFlashThreads)
    FlashFwd(const S* q, const S* k, const S* v, View<S> out, float* lse, int64_t batch,
             int64_t seq, int64_t heads, int64_t kv_heads, float scale) {
  constexpr int T = kFlashTile, LQ = D + kPad16, LP = T + kPad16, LS = T + kPad32, LO = D + kPad32;
  unsigned char* shared = DynamicShared();
  S* qs = reinterpret_cast<S*>(shared);               // T x LQ
  S* ks = qs + T * LQ;                                // T x LQ
  S* vs = ks + T * LQ;                                // T x LQ
  S* ps = vs + T * LQ;                                // T x LP
  float* ss = reinterpret_cast<float*>(ps + T * LP);  // T x LS
  float* os = ss + T * LS;                            // T x LO
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  // Lane pair (r, half): row r of the tile, columns half, half + 2, ...
  const int r = warp * 16 + lane / 2, half = lane % 2;
  const int64_t tiles = (seq + T - 1) / T, qw = heads * D, kw = kv_heads * D;
  BLOCK_STRIDE(item, tiles * batch * heads) {
    const FlashQueryTile at = FlashQueryTileOf(item, tiles, heads, kv_heads);
    const int64_t b = at.b, h = at.h, kh = at.kh, i0 = at.i0, t = i0 + r;
    const S* kb = k + b * seq * kw + kh * D;
    const S* vb = v + b * seq * kw + kh * D;
    __syncthreads();  // the previous item is done with shared memory
    FlashLoadRows<S, D>(qs, LQ, q + b * seq * qw + h * D, i0, seq, qw, T);
    for (int i = threadIdx.x; i < T * LO; i += blockDim.x) os[i] = 0.f;
    float m = -INFINITY, l = 0.f;
    const int64_t last = (i0 + T < seq ? i0 + T : seq) - 1;
    for (int64_t j0 = 0; j0 <= last; j0 += T) {
      __syncthreads();  // every warp is done with the previous key tile
      FlashLoadRows<S, D>(ks, LQ, kb, j0, seq, kw, T);
      FlashLoadRows<S, D>(vs, LQ, vb, j0, seq, kw, T);
      __syncthreads();
      FlashScores<S, D>(qs + warp * 16 * LQ, ks, LQ, ss + warp * 16 * LS, LS);
      __syncwarp();
      float* srow = ss + r * LS;
      float mx = -INFINITY;
      for (int c = half; c < T; c += 2) {
        const int64_t j = j0 + c;
        const float s = j <= t && j < seq ? srow[c] * scale : -INFINITY;
        srow[c] = s;
        mx = fmaxf(mx, s);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_new = fmaxf(m, mx);
      const float corr = m_new == -INFINITY ? 1.f : expf(m - m_new);
      float sum = 0.f;
      S* prow = ps + r * LP;
      for (int c = half; c < T; c += 2) {
        const float p = srow[c] == -INFINITY ? 0.f : expf(srow[c] - m_new);
        prow[c] = FromFloat<S>(p);
        sum += p;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      l = l * corr + sum;
      m = m_new;
      for (int d = half; d < D; d += 2) os[r * LO + d] *= corr;
      __syncwarp();
      for (int n = 0; n < D / 16; ++n) {
        FragC c;
        float* o = os + warp * 16 * LO + n * 16;
        wmma::load_matrix_sync(c, o, LO, wmma::mem_row_major);
        for (int kk = 0; kk < T / 16; ++kk) {
          FragA<S> fa;
          FragBRow<S> fb;
          wmma::load_matrix_sync(fa, ps + warp * 16 * LP + kk * 16, LP);
          wmma::load_matrix_sync(fb, vs + kk * 16 * LQ + n * 16, LQ);
          wmma::mma_sync(c, fa, fb, c);
        }
        wmma::store_matrix_sync(o, c, LO, wmma::mem_row_major);
      }
      __syncwarp();
    }
    if (t < seq) {
      const float inv = 1.f / l;
      const int64_t at = (b * seq + t) * qw + h * D;
      for (int d = half; d < D; d += 2) out.set(at + d, os[r * LO + d] * inv);
      if (half == 0) lse[(b * heads + h) * seq + t] = m + logf(l);
    }
  }
}

// dot[(b, h, t)] = dout . out over the head's dimensions: one warp per row.
template <typename S>
__global__ void FlashRowDot(View<S> dout, View<S> out, float* dot, int64_t batch, int64_t seq,
                            int64_t heads, int64_t hd) {
  const int lane = threadIdx.x % 32;
  WARP_STRIDE(w, batch * heads * seq) {
    const int64_t t = w % seq, h = (w / seq) % heads, b = w / (seq * heads);
    const int64_t at = (b * seq + t) * heads * hd + h * hd;
    float s = 0.f;
    for (int64_t d = lane; d < hd; d += 32) s += dout[at + d] * out[at + d];
    s = WarpSum(s);
    if (lane == 0) dot[(b * heads + h) * seq + t] = s;
  }
}

template <int D>
constexpr size_t FlashBwdKVShared() {
  return 4 * kFlashTile * (D + kPad16) * 2 + 2 * kFlashTile * (kFlashTile + kPad16) * 2 +
         2 * kFlashTile * (kFlashTile + kPad32) * 4 + 2 * kFlashTile * 4;
}

// dK, dV of key tile j0: warp w holds keys j0 + 16 w ..; per query tile at or after
// it and query head of the kv head's group: S^T, dP^T (keys x queries), P^T and
// dS^T, then dV += P^T dout, dK += dS^T q (float32 accumulators in registers).
template <typename S, int D>
__global__ void __launch_bounds__(kFlashThreads)
    FlashBwdKV(const S* q, const S* k, const S* v, const S* dout, const float* lse,
               const float* dot, View<S> dk, View<S> dv, int64_t batch, int64_t seq, int64_t heads,
               int64_t kv_heads, float scale, bool acc) {
  constexpr int T = kFlashTile, LQ = D + kPad16, LP = T + kPad16, LS = T + kPad32;
  unsigned char* shared = DynamicShared();
  S* ks = reinterpret_cast<S*>(shared);  // T x LQ each
  S* vs = ks + T * LQ;
  S* qs = vs + T * LQ;
  S* dos = qs + T * LQ;
  S* pt = dos + T * LQ;  // T x LP each
  S* dst = pt + T * LP;
  float* st = reinterpret_cast<float*>(dst + T * LP);  // T x LS each
  float* dpt = st + T * LS;
  float* lse_s = dpt + T * LS;  // T each
  float* dot_s = lse_s + T;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rr = warp * 16 + lane / 2, half = lane % 2;  // the lane pair's key row
  const int64_t tiles = (seq + T - 1) / T, qw = heads * D, kw = kv_heads * D;
  const int64_t group = heads / kv_heads;
  BLOCK_STRIDE(item, tiles * batch * kv_heads) {
    const int64_t tile = item % tiles;  // key tile 0 has the most queries: first
    const int64_t bk = item / tiles, kh = bk % kv_heads, b = bk / kv_heads;
    const int64_t j0 = tile * T, j = j0 + rr;
    __syncthreads();
    FlashLoadRows<S, D>(ks, LQ, k + b * seq * kw + kh * D, j0, seq, kw, T);
    FlashLoadRows<S, D>(vs, LQ, v + b * seq * kw + kh * D, j0, seq, kw, T);
    FragC gk[D / 16], gv[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fill_fragment(gk[n], 0.f);
      wmma::fill_fragment(gv[n], 0.f);
    }
    for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
      const S* qb = q + b * seq * qw + h * D;
      const S* db = dout + b * seq * qw + h * D;
      for (int64_t i0 = j0; i0 < seq; i0 += T) {
        __syncthreads();  // every warp is done with the previous query tile
        FlashLoadRows<S, D>(qs, LQ, qb, i0, seq, qw, T);
        FlashLoadRows<S, D>(dos, LQ, db, i0, seq, qw, T);
        for (int i = threadIdx.x; i < T; i += blockDim.x) {
          const int64_t t = i0 + i;
          lse_s[i] = t < seq ? lse[(b * heads + h) * seq + t] : 0.f;
          dot_s[i] = t < seq ? dot[(b * heads + h) * seq + t] : 0.f;
        }
        __syncthreads();
        FlashScores<S, D>(ks + warp * 16 * LQ, qs, LQ, st + warp * 16 * LS, LS);
        FlashScores<S, D>(vs + warp * 16 * LQ, dos, LQ, dpt + warp * 16 * LS, LS);
        __syncwarp();
        for (int c = half; c < T; c += 2) {
          const int64_t t = i0 + c;
          float p = 0.f, ds = 0.f;
          if (t < seq && j <= t) {
            p = expf(st[rr * LS + c] * scale - lse_s[c]);
            ds = p * (dpt[rr * LS + c] - dot_s[c]) * scale;
          }
          pt[rr * LP + c] = FromFloat<S>(p);
          dst[rr * LP + c] = FromFloat<S>(ds);
        }
        __syncwarp();
        // Each A fragment (a 16 x 16 block of P^T or dS^T) loaded once, for every n.
        for (int kk = 0; kk < T / 16; ++kk) {
          FragA<S> fp, fd;
          wmma::load_matrix_sync(fp, pt + warp * 16 * LP + kk * 16, LP);
          wmma::load_matrix_sync(fd, dst + warp * 16 * LP + kk * 16, LP);
#pragma unroll
          for (int n = 0; n < D / 16; ++n) {
            FragBRow<S> fb;
            wmma::load_matrix_sync(fb, dos + kk * 16 * LQ + n * 16, LQ);
            wmma::mma_sync(gv[n], fp, fb, gv[n]);
            wmma::load_matrix_sync(fb, qs + kk * 16 * LQ + n * 16, LQ);
            wmma::mma_sync(gk[n], fd, fb, gk[n]);
          }
        }
      }
    }
    const int64_t first = j0 + warp * 16;
    const int rows = FlashRows(seq - first);
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      const int64_t at = (b * seq + first) * kw + kh * D + n * 16;
      FlashStoreFragment(gk[n], st + warp * 16 * LS, LS, dk, at, kw, rows, acc);
      FlashStoreFragment(gv[n], st + warp * 16 * LS, LS, dv, at, kw, rows, acc);
    }
  }
}

template <int D>
constexpr size_t FlashBwdQShared() {
  return 4 * kFlashTile * (D + kPad16) * 2 + kFlashTile * (kFlashTile + kPad16) * 2 +
         2 * kFlashTile * (kFlashTile + kPad32) * 4 + 2 * kFlashTile * 4;
}

// dQ of query tile i0: warp w holds queries i0 + 16 w ..; per key tile up to the
// tile's last query: S, dP, dS, then dQ += dS k.
template <typename S, int D>
__global__ void __launch_bounds__(kFlashThreads)
    FlashBwdQ(const S* q, const S* k, const S* v, const S* dout, const float* lse, const float* dot,
              View<S> dq, int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads, float scale,
              bool acc) {
  constexpr int T = kFlashTile, LQ = D + kPad16, LP = T + kPad16, LS = T + kPad32;
  unsigned char* shared = DynamicShared();
  S* qs = reinterpret_cast<S*>(shared);  // T x LQ each
  S* dos = qs + T * LQ;
  S* ks = dos + T * LQ;
  S* vs = ks + T * LQ;
  S* dss = vs + T * LQ;                                // T x LP
  float* ss = reinterpret_cast<float*>(dss + T * LP);  // T x LS each
  float* dps = ss + T * LS;
  float* lse_s = dps + T * LS;  // T each
  float* dot_s = lse_s + T;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r = warp * 16 + lane / 2, half = lane % 2;
  const int64_t tiles = (seq + T - 1) / T, qw = heads * D, kw = kv_heads * D;
  BLOCK_STRIDE(item, tiles * batch * heads) {
    const FlashQueryTile at = FlashQueryTileOf(item, tiles, heads, kv_heads);
    const int64_t b = at.b, h = at.h, kh = at.kh, i0 = at.i0, t = i0 + r;
    const S* kb = k + b * seq * kw + kh * D;
    const S* vb = v + b * seq * kw + kh * D;
    __syncthreads();
    FlashLoadRows<S, D>(qs, LQ, q + b * seq * qw + h * D, i0, seq, qw, T);
    FlashLoadRows<S, D>(dos, LQ, dout + b * seq * qw + h * D, i0, seq, qw, T);
    for (int i = threadIdx.x; i < T; i += blockDim.x) {
      const int64_t ti = i0 + i;
      lse_s[i] = ti < seq ? lse[(b * heads + h) * seq + ti] : 0.f;
      dot_s[i] = ti < seq ? dot[(b * heads + h) * seq + ti] : 0.f;
    }
    FragC gq[D / 16];
#pragma unroll
    for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(gq[n], 0.f);
    const int64_t last = (i0 + T < seq ? i0 + T : seq) - 1;
    for (int64_t j0 = 0; j0 <= last; j0 += T) {
      __syncthreads();
      FlashLoadRows<S, D>(ks, LQ, kb, j0, seq, kw, T);
      FlashLoadRows<S, D>(vs, LQ, vb, j0, seq, kw, T);
      __syncthreads();
      FlashScores<S, D>(qs + warp * 16 * LQ, ks, LQ, ss + warp * 16 * LS, LS);
      FlashScores<S, D>(dos + warp * 16 * LQ, vs, LQ, dps + warp * 16 * LS, LS);
      __syncwarp();
      for (int c = half; c < T; c += 2) {
        const int64_t j = j0 + c;
        float ds = 0.f;
        if (t < seq && j <= t) {
          const float p = expf(ss[r * LS + c] * scale - lse_s[r]);
          ds = p * (dps[r * LS + c] - dot_s[r]) * scale;
        }
        dss[r * LP + c] = FromFloat<S>(ds);
      }
      __syncwarp();
      for (int kk = 0; kk < T / 16; ++kk) {
        FragA<S> fa;
        wmma::load_matrix_sync(fa, dss + warp * 16 * LP + kk * 16, LP);
#pragma unroll
        for (int n = 0; n < D / 16; ++n) {
          FragBRow<S> fb;
          wmma::load_matrix_sync(fb, ks + kk * 16 * LQ + n * 16, LQ);
          wmma::mma_sync(gq[n], fa, fb, gq[n]);
        }
      }
    }
    const int64_t first = i0 + warp * 16;
    const int rows = FlashRows(seq - first);
#pragma unroll
    for (int n = 0; n < D / 16; ++n)
      FlashStoreFragment(gq[n], ss + warp * 16 * LS, LS, dq,
                         (b * seq + first) * qw + h * D + n * 16, qw, rows, acc);
  }
}

// Whether the tiled kernels take an attention instruction: 16-bit storage (S), a
// head_dim they are built for, every operand 16-byte aligned.
inline bool FlashHeadDim(int64_t hd) { return hd == 32 || hd == 64 || hd == 128; }
// The most shared memory one block of the forward (or of the backward's kernels)
// takes at head_dim hd (FlashHeadDim).
inline size_t FlashSharedBytes(int64_t hd, bool forward) {
  auto most = [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    return forward ? FlashFwdShared<D>() : std::max(FlashBwdKVShared<D>(), FlashBwdQShared<D>());
  };
  return hd == 32   ? most(std::integral_constant<int, 32>{})
         : hd == 64 ? most(std::integral_constant<int, 64>{})
                    : most(std::integral_constant<int, 128>{});
}
inline bool FlashAligned(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (p && reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

#ifdef __CUDACC__
// Lets `kernel` take `bytes` of dynamic shared memory, once per kernel (the process
// drives one device). On failure the runtime's last error is cleared, so that no
// later cudaGetLastError blames another launch.
template <auto kernel>
cudaError_t FlashSharedMemory(size_t bytes) {
  static const cudaError_t set = [&] {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(bytes));
    if (e != cudaSuccess) (void)cudaGetLastError();
    return e;
  }();
  return set;
}

// Launches (on `stream`, at most `cap` blocks each): the forward, or the backward
// (FlashRowDot into `dot`, B x H x T floats of scratch, then dK/dV and dQ). Returns
// the first CUDA error of setting the kernels' shared memory or launching them.
template <typename S, int D>
cudaError_t FlashForward(cudaStream_t stream, unsigned cap, const S* q, const S* k, const S* v,
                         View<S> out, float* lse, int64_t b, int64_t t, int64_t h, int64_t kv,
                         float scale) {
  constexpr size_t bytes = FlashFwdShared<D>();
  auto kernel = FlashFwd<S, D>;
  if (auto e = FlashSharedMemory<FlashFwd<S, D>>(bytes); e != cudaSuccess) return e;
  const int64_t items = (t + kFlashTile - 1) / kFlashTile * b * h;
  kernel<<<Blocks(items, 1, cap), kFlashThreads, bytes, stream>>>(q, k, v, out, lse, b, t, h, kv,
                                                                  scale);
  return cudaGetLastError();
}

template <typename S, int D>
cudaError_t FlashBackward(cudaStream_t stream, unsigned cap, View<S> dout, const S* q, const S* k,
                          const S* v, View<S> out, const float* lse, float* dot, View<S> dq,
                          View<S> dk, View<S> dv, int64_t b, int64_t t, int64_t h, int64_t kv,
                          float scale, bool acc) {
  FlashRowDot<<<Blocks(b * h * t, kThreads / 32, cap), kThreads, 0, stream>>>(dout, out, dot, b, t,
                                                                              h, D);
  if (auto e = cudaGetLastError(); e != cudaSuccess) return e;
  const int64_t tiles = (t + kFlashTile - 1) / kFlashTile;
  constexpr size_t kv_bytes = FlashBwdKVShared<D>(), q_bytes = FlashBwdQShared<D>();
  auto kv_kernel = FlashBwdKV<S, D>;
  auto q_kernel = FlashBwdQ<S, D>;
  if (auto e = FlashSharedMemory<FlashBwdKV<S, D>>(kv_bytes); e != cudaSuccess) return e;
  if (auto e = FlashSharedMemory<FlashBwdQ<S, D>>(q_bytes); e != cudaSuccess) return e;
  kv_kernel<<<Blocks(tiles * b * kv, 1, cap), kFlashThreads, kv_bytes, stream>>>(
      q, k, v, dout.p, lse, dot, dk, dv, b, t, h, kv, scale, acc);
  if (auto e = cudaGetLastError(); e != cudaSuccess) return e;
  q_kernel<<<Blocks(tiles * b * h, 1, cap), kFlashThreads, q_bytes, stream>>>(
      q, k, v, dout.p, lse, dot, dq, b, t, h, kv, scale, acc);
  return cudaGetLastError();
}
#endif  // __CUDACC__

#endif  // HEIRETSU_RUNTIME_CUDA_FLASH_ATTENTION_CUH_
