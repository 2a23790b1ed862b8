// The CUDA backend, fp32 reference slice; see cuda_backend.h. Each opcode's formula
// is the CPU kernel's (runtime/cpu/kernels.h); where the CPU sums in double so does
// this. Reductions run in a fixed order (block trees, one thread per column for
// column sums), so results do not change from run to run. Every kernel but the
// single-block ones (MeanOfRows, VocabLossKernel, AddPartials: one block loops over
// everything) and SumSquaresPartial (a fixed kPartials blocks, grid-stride) is
// launched on a capped grid (Grid) and loops over its whole range: GRID_STRIDE over
// elements, WARP_STRIDE over attention's queries or keys (one warp each),
// BLOCK_STRIDE over the rows of the norms and the losses (one block each). So the
// cap (CudaOptions::max_blocks) never leaves an element out.
#include "runtime/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <string>

#include "runtime/cuda/devices.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::cuda {
namespace {

namespace fb = plan::fb;
namespace op = plan::op;

constexpr int kThreads = 256;
constexpr int kPartials = 256;  // blocks of the sum-of-squares pass
constexpr unsigned kMaxBlocks = 65535 * 16;  // the default cap of a grid-stride launch

// Blocks of `per_block` items for `n` items, at most `cap`: the kernels launched
// so loop (GRID_STRIDE, WARP_STRIDE) over whatever the grid does not cover.
unsigned Blocks(int64_t n, int per_block, unsigned cap) {
  int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, cap)));
}

#define GRID_STRIDE(i, n)                                                                 \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// The same over warps (blockDim.x a multiple of 32): warp w of the grid takes items
// w, w + warps, ...; all 32 lanes of a warp take the same items, so the warp's
// shuffles always see every lane.
#define WARP_STRIDE(w, n)                                                                    \
  for (int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; w < (n); \
       w += static_cast<int64_t>(blockDim.x) * gridDim.x / 32)

__device__ inline void Store(float* dst, float v, bool accumulate) {
  *dst = accumulate ? *dst + v : v;
}

// Block-wide sum / max in a fixed order (warp shuffles, then the warps' results).
template <typename T>
__device__ T BlockSum(T v) {
  __shared__ T warp[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) warp[w] = v;
  __syncthreads();
  T total = 0;
  if (threadIdx.x == 0)
    for (int i = 0; i < (blockDim.x + 31) / 32; ++i) total += warp[i];
  __shared__ T result;
  if (threadIdx.x == 0) result = total;
  __syncthreads();
  return result;
}

__device__ float BlockMax(float v) {
  __shared__ float warp[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) warp[w] = v;
  __syncthreads();
  __shared__ float result;
  if (threadIdx.x == 0) {
    float m = -INFINITY;
    for (int i = 0; i < (blockDim.x + 31) / 32; ++i) m = fmaxf(m, warp[i]);
    result = m;
  }
  __syncthreads();
  return result;
}

__device__ inline float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------- elementwise

constexpr float kGeluScale = 0.7978845608028654f, kGeluCubic = 0.044715f;

__global__ void GeluFwd(const float* x, float* y, int64_t n) {
  GRID_STRIDE(i, n) {
    float v = x[i], u = kGeluScale * (v + kGeluCubic * v * v * v);
    y[i] = v / (1.f + expf(-2.f * u));
  }
}

__global__ void GeluBwd(const float* dy, const float* x, float* dx, int64_t n, bool acc) {
  GRID_STRIDE(i, n) {
    float v = x[i], u = kGeluScale * (v + kGeluCubic * v * v * v);
    float sig = 1.f / (1.f + expf(-2.f * u));
    float du = kGeluScale * (1.f + 3.f * kGeluCubic * v * v);
    Store(&dx[i], dy[i] * (sig + v * sig * (1.f - sig) * 2.f * du), acc);
  }
}

__global__ void SwigluFwd(const float* gate, const float* up, float* y, int64_t n) {
  GRID_STRIDE(i, n) {
    float g = gate[i];
    y[i] = g / (1.f + expf(-g)) * up[i];
  }
}

__global__ void SwigluBwd(const float* dy, const float* gate, const float* up, float* dgate,
                          float* dup, int64_t n, bool acc) {
  GRID_STRIDE(i, n) {
    float g = gate[i], sig = 1.f / (1.f + expf(-g));
    Store(&dgate[i], dy[i] * up[i] * sig * (1.f + g * (1.f - sig)), acc);
    Store(&dup[i], dy[i] * g * sig, acc);
  }
}

__global__ void AddFwd(const float* a, const float* b, float* y, int64_t n) {
  GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

__global__ void AccumulateKernel(const float* src, float* dst, int64_t n, bool acc) {
  GRID_STRIDE(i, n) Store(&dst[i], src[i], acc);
}

// The first index r with ids[r] outside [0, limit), via atomicMin (the minimum
// does not depend on the order).
__global__ void CheckIds(const int32_t* ids, int64_t n, int64_t limit, int* bad) {
  GRID_STRIDE(i, n) {
    if (ids[i] < 0 || ids[i] >= limit) atomicMin(bad, static_cast<int>(i));
  }
}

// ---------------------------------------------------------------- embedding

__global__ void EmbeddingFwd(const int32_t* ids, const float* table, const float* pos, float* out,
                             int64_t rows, int64_t seq, int64_t vocab, int64_t c,
                             int64_t begin, int64_t offset) {
  GRID_STRIDE(k, rows * c) {
    const int64_t r = k / c, i = k % c, id = static_cast<int64_t>(ids[r]) - begin;
    float v = id >= 0 && id < vocab ? table[id * c + i] : 0.f;
    if (pos) v += pos[(offset + r % seq) * c + i];
    out[k] = v;
  }
}

// One thread per column walks every row in order: deterministic scatter-add.
__global__ void EmbeddingBwd(const int32_t* ids, const float* dout, float* dtable, float* dpos,
                             int64_t rows, int64_t seq, int64_t vocab, int64_t c,
                             int64_t begin) {
  GRID_STRIDE(i, c) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t id = static_cast<int64_t>(ids[r]) - begin;
      const float g = dout[r * c + i];
      if (id >= 0 && id < vocab) dtable[id * c + i] += g;
      if (dpos) dpos[(r % seq) * c + i] += g;
    }
  }
}

// ---------------------------------------------------------------- linear

__global__ void BiasAdd(float* y, const float* bias, int64_t rows, int64_t out) {
  GRID_STRIDE(k, rows * out) y[k] += bias[k % out];
}

__global__ void ColumnSum(const float* dy, float* db, int64_t rows, int64_t out) {
  GRID_STRIDE(o, out) {
    float s = 0;
    for (int64_t r = 0; r < rows; ++r) s += dy[r * out + o];
    db[o] += s;
  }
}

// ---------------------------------------------------------------- norms

// The same over blocks: block k of the grid takes rows k, k + blocks, ... (every
// thread of a block the same rows, so the block's reductions see every thread).
#define BLOCK_STRIDE(r, n) for (int64_t r = blockIdx.x; r < (n); r += gridDim.x)

// One block per row (block-stride). mean/rstd as the CPU computes them (double sums).
__global__ void LayerNormFwd(const float* x, const float* w, const float* b, float* y, float* mean,
                             float* rstd, int64_t rows, int64_t c, double eps) {
  BLOCK_STRIDE(r, rows) {
    const float* xr = x + r * c;
    double s = 0;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s += xr[i];
    const double mu = BlockSum(s) / c;
    double v = 0;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) v += (xr[i] - mu) * (xr[i] - mu);
    const double rs = 1.0 / sqrt(BlockSum(v) / c + eps);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      y[r * c + i] = static_cast<float>((xr[i] - mu) * rs * w[i] + b[i]);
    if (threadIdx.x == 0) {
      mean[r] = static_cast<float>(mu);
      rstd[r] = static_cast<float>(rs);
    }
  }
}

// dx for one row per block (block-stride); `mean` null for RMSNorm (xhat = x * rstd).
__global__ void NormBwdRows(const float* dy, const float* x, const float* w, const float* mean,
                            const float* rstd, float* dx, int64_t rows, int64_t c, bool acc) {
  BLOCK_STRIDE(r, rows) {
    const float mu = mean ? mean[r] : 0.f, rs = rstd[r];
    double s1 = 0, s2 = 0;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xhat = (x[r * c + i] - mu) * rs, g = dy[r * c + i] * w[i];
      s1 += g;
      s2 += static_cast<double>(g) * xhat;
    }
    const float m1 = mean ? static_cast<float>(BlockSum(s1) / c) : 0.f;
    const float m2 = static_cast<float>(BlockSum(s2) / c);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xhat = (x[r * c + i] - mu) * rs, g = dy[r * c + i] * w[i];
      Store(&dx[r * c + i], rs * (g - m1 - xhat * m2), acc);
    }
  }
}

// dw (and db) += column sums over rows: one thread per column.
__global__ void NormParamGrad(const float* dy, const float* x, const float* mean, const float* rstd,
                              float* dw, float* db, int64_t rows, int64_t c) {
  GRID_STRIDE(i, c) {
    float sw = 0, sb = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const float xhat = (x[r * c + i] - (mean ? mean[r] : 0.f)) * rstd[r];
      sw += dy[r * c + i] * xhat;
      sb += dy[r * c + i];
    }
    dw[i] += sw;
    if (db) db[i] += sb;
  }
}

__global__ void RMSNormFwd(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                           int64_t c, double eps) {
  BLOCK_STRIDE(r, rows) {
    const float* xr = x + r * c;
    double s = 0;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s += static_cast<double>(xr[i]) * xr[i];
    const double rs = 1.0 / sqrt(BlockSum(s) / c + eps);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      y[r * c + i] = static_cast<float>(xr[i] * rs * w[i]);
    if (threadIdx.x == 0) rstd[r] = static_cast<float>(rs);
  }
}

// ---------------------------------------------------------------- rope

__global__ void Rope(const float* x, float* y, int64_t bt_count, int64_t seq, int64_t heads,
                     int64_t hd, double theta, double sign, bool acc, int64_t offset = 0) {
  const int64_t half = hd / 2;
  GRID_STRIDE(k, bt_count * half * heads) {
    const int64_t h = k % heads, i = (k / heads) % half, bt = k / (heads * half);
    const double freq = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
    const double angle = static_cast<double>(offset + bt % seq) * freq;
    const float cs = static_cast<float>(cos(angle)), sn = static_cast<float>(sign * sin(angle));
    const int64_t at = bt * heads * hd + h * hd + 2 * i;
    const float x0 = x[at], x1 = x[at + 1];
    Store(&y[at], x0 * cs - x1 * sn, acc);
    Store(&y[at + 1], x0 * sn + x1 * cs, acc);
  }
}

// ---------------------------------------------------------------- attention

// A decode step (op_table.h: cached_attention): token t's key and value into cache
// row position + t, then one thread per (b, h, t) query over rows 0 .. position + t
// in three passes (max, sum, output). Decoding is one token: latency, not FLOPs.
__global__ void KvAppend(const float* k, const float* v, float* kc, float* vc, int64_t batch,
                         int64_t seq, int64_t kw, int64_t context, int64_t position) {
  GRID_STRIDE(i, batch * seq * kw) {
    const int64_t b = i / (seq * kw), t = (i / kw) % seq, d = i % kw;
    kc[(b * context + position + t) * kw + d] = k[i];
    vc[(b * context + position + t) * kw + d] = v[i];
  }
}

__global__ void CachedAttentionFwd(const float* q, const float* kc, const float* vc, float* out,
                                   int64_t batch, int64_t seq, int64_t heads, int64_t kv,
                                   int64_t hd, int64_t context, int64_t position, float scale) {
  GRID_STRIDE(idx, batch * heads * seq) {
    const int64_t t = idx % seq, h = (idx / seq) % heads, b = idx / (seq * heads);
    const int64_t kh = h / (heads / kv), qw = heads * hd, kw = kv * hd, last = position + t;
    const float* qt = q + (b * seq + t) * qw + h * hd;
    auto score = [&](int64_t j) {
      const float* kj = kc + (b * context + j) * kw + kh * hd;
      float s = 0.f;
      for (int64_t d = 0; d < hd; ++d) s += qt[d] * kj[d];
      return s * scale;
    };
    float mx = -INFINITY, sum = 0.f;
    for (int64_t j = 0; j <= last; ++j) mx = fmaxf(mx, score(j));
    for (int64_t j = 0; j <= last; ++j) sum += expf(score(j) - mx);
    float* ot = out + (b * seq + t) * qw + h * hd;
    for (int64_t d = 0; d < hd; ++d) ot[d] = 0.f;
    for (int64_t j = 0; j <= last; ++j) {
      const float pj = expf(score(j) - mx) / sum;
      const float* vj = vc + (b * context + j) * kw + kh * hd;
      for (int64_t d = 0; d < hd; ++d) ot[d] += pj * vj[d];
    }
  }
}

constexpr int kMaxHeadDim = 256;
constexpr int kPerLane = kMaxHeadDim / 32;

// One warp per (b, h, t) query (grid-stride: a warp takes every query its place
// in the grid reaches): an online softmax over keys j <= t, the output
// accumulated in registers (lane l holds dimensions l, l + 32, ...).
__global__ void AttentionFwd(const float* q, const float* k, const float* v, float* out, float* lse,
                             int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                             int64_t hd, float scale) {
  const int lane = threadIdx.x % 32;
  WARP_STRIDE(warp, batch * heads * seq) {
    const int64_t t = warp % seq, h = (warp / seq) % heads, b = warp / (seq * heads);
    const int64_t kh = h / (heads / kv_heads), qw = heads * hd, kw = kv_heads * hd;
    const float* qt = q + (b * seq + t) * qw + h * hd;
    float qr[kPerLane], acc[kPerLane];
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      qr[u] = d < hd ? qt[d] : 0.f;
      acc[u] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int64_t j = 0; j <= t; ++j) {
      const float* kj = k + (b * seq + j) * kw + kh * hd;
      const float* vj = v + (b * seq + j) * kw + kh * hd;
      float s = 0;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) s += qr[u] * kj[d];
      }
      s = WarpSum(s) * scale;
      const float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
      l = l * corr + p;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) acc[u] = acc[u] * corr + p * vj[d];
      }
      m = m_new;
    }
    float* ot = out + (b * seq + t) * qw + h * hd;
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      if (d < hd) ot[d] = acc[u] / l;
    }
    if (lane == 0) lse[(b * heads + h) * seq + t] = m + logf(l);
  }
}

// dq: one warp per query (grid-stride). P = exp(s - lse), dP = dout . v_j,
// D = dout . out, dq = scale * sum_j P (dP - D) k_j.
__global__ void AttentionBwdQ(const float* dout, const float* q, const float* k, const float* v,
                              const float* out, const float* lse, float* dq, int64_t batch,
                              int64_t seq, int64_t heads, int64_t kv_heads, int64_t hd, float scale,
                              bool acc) {
  const int lane = threadIdx.x % 32;
  WARP_STRIDE(warp, batch * heads * seq) {
    const int64_t t = warp % seq, h = (warp / seq) % heads, b = warp / (seq * heads);
    const int64_t kh = h / (heads / kv_heads), qw = heads * hd, kw = kv_heads * hd;
    const int64_t qo = (b * seq + t) * qw + h * hd;
    float qr[kPerLane], dor[kPerLane], g[kPerLane];
    float dd = 0;
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      qr[u] = d < hd ? q[qo + d] : 0.f;
      dor[u] = d < hd ? dout[qo + d] : 0.f;
      dd += d < hd ? dor[u] * out[qo + d] : 0.f;
      g[u] = 0.f;
    }
    dd = WarpSum(dd);
    const float l = lse[(b * heads + h) * seq + t];
    for (int64_t j = 0; j <= t; ++j) {
      const float* kj = k + (b * seq + j) * kw + kh * hd;
      const float* vj = v + (b * seq + j) * kw + kh * hd;
      float s = 0, dp = 0;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) {
          s += qr[u] * kj[d];
          dp += dor[u] * vj[d];
        }
      }
      s = WarpSum(s);
      dp = WarpSum(dp);
      const float p = expf(s * scale - l), ds = p * (dp - dd) * scale;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) g[u] += ds * kj[d];
      }
    }
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      if (d < hd) Store(&dq[qo + d], g[u], acc);
    }
  }
}

// dk, dv: one warp per (b, kv head, key j) (grid-stride), over the query heads of
// its group and the queries t >= j.
__global__ void AttentionBwdKV(const float* dout, const float* q, const float* k, const float* v,
                               const float* out, const float* lse, float* dk, float* dv,
                               int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                               int64_t hd, float scale, bool acc) {
  const int lane = threadIdx.x % 32;
  WARP_STRIDE(warp, batch * kv_heads * seq) {
    const int64_t j = warp % seq, kh = (warp / seq) % kv_heads, b = warp / (seq * kv_heads);
    const int64_t group = heads / kv_heads, qw = heads * hd, kw = kv_heads * hd;
    const int64_t ko = (b * seq + j) * kw + kh * hd;
    float kr[kPerLane], vr[kPerLane], gk[kPerLane], gv[kPerLane];
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      kr[u] = d < hd ? k[ko + d] : 0.f;
      vr[u] = d < hd ? v[ko + d] : 0.f;
      gk[u] = gv[u] = 0.f;
    }
    for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
      for (int64_t t = j; t < seq; ++t) {
        const int64_t qo = (b * seq + t) * qw + h * hd;
        float s = 0, dp = 0, dd = 0;
        for (int u = 0; u < kPerLane; ++u) {
          const int64_t d = lane + 32 * u;
          if (d < hd) {
            s += q[qo + d] * kr[u];
            dp += dout[qo + d] * vr[u];
            dd += dout[qo + d] * out[qo + d];
          }
        }
        s = WarpSum(s);
        dp = WarpSum(dp);
        dd = WarpSum(dd);
        const float p = expf(s * scale - lse[(b * heads + h) * seq + t]);
        const float ds = p * (dp - dd) * scale;
        for (int u = 0; u < kPerLane; ++u) {
          const int64_t d = lane + 32 * u;
          if (d < hd) {
            gv[u] += p * dout[qo + d];
            gk[u] += ds * q[qo + d];
          }
        }
      }
    }
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      if (d < hd) {
        Store(&dk[ko + d], gk[u], acc);
        Store(&dv[ko + d], gv[u], acc);
      }
    }
  }
}

// ---------------------------------------------------------------- cross-entropy

// One block per row (block-stride): lse over the row's classes, and the row's loss term.
__global__ void CrossEntropyRows(const float* logits, const int32_t* targets, float* lse,
                                 float* term, int64_t rows, int64_t vocab, int64_t classes) {
  BLOCK_STRIDE(r, rows) {
    const float* lr = logits + r * vocab;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < classes; i += blockDim.x) m = fmaxf(m, lr[i]);
    m = BlockMax(m);
    double s = 0;
    for (int64_t i = threadIdx.x; i < classes; i += blockDim.x)
      s += exp(static_cast<double>(lr[i] - m));
    s = BlockSum(s);
    if (threadIdx.x == 0) {
      lse[r] = static_cast<float>(m + log(s));
      term[r] = lse[r] - lr[targets[r]];
    }
  }
}

// loss = mean of the rows' terms, summed in row order by one block.
__global__ void MeanOfRows(const float* term, float* loss, int64_t rows) {
  double s = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) s += term[r];
  s = BlockSum(s);
  if (threadIdx.x == 0) *loss = static_cast<float>(s / static_cast<double>(rows));
}

__global__ void CrossEntropyBwd(const float* logits, const int32_t* targets, const float* lse,
                                float scale, float* dlogits, int64_t rows, int64_t vocab,
                                int64_t begin, int64_t classes, bool acc) {
  GRID_STRIDE(k, rows * vocab) {
    const int64_t r = k / vocab, i = k % vocab;
    const float p = i < classes ? expf(logits[k] - lse[r]) : 0.f;
    const float onehot = i == static_cast<int64_t>(targets[r]) - begin ? 1.f : 0.f;
    Store(&dlogits[k], scale * (p - onehot), acc);
  }
}

__global__ void VocabMaxRows(const float* logits, float* max, int64_t rows, int64_t vocab,
                             int64_t classes) {
  BLOCK_STRIDE(r, rows) {
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < classes; i += blockDim.x) m = fmaxf(m, logits[r * vocab + i]);
    m = BlockMax(m);
    if (threadIdx.x == 0) max[r] = m;
  }
}

__global__ void VocabSumExpRows(const float* logits, const int32_t* targets, const float* max,
                                float* sum, float* target, int64_t rows, int64_t vocab,
                                int64_t begin, int64_t classes) {
  BLOCK_STRIDE(r, rows) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < classes; i += blockDim.x)
      s += exp(static_cast<double>(logits[r * vocab + i] - max[r]));
    s = BlockSum(s);
    if (threadIdx.x == 0) {
      sum[r] = static_cast<float>(s);
      const int64_t t = static_cast<int64_t>(targets[r]) - begin;
      target[r] = t >= 0 && t < vocab ? logits[r * vocab + t] : 0.f;
    }
  }
}

__global__ void VocabLossKernel(const float* max, const float* sum, const float* target,
                                float* loss, float* lse, int64_t rows) {
  double s = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    lse[r] = static_cast<float>(max[r] + log(static_cast<double>(sum[r])));
    s += static_cast<double>(lse[r]) - target[r];
  }
  s = BlockSum(s);
  if (threadIdx.x == 0) *loss = static_cast<float>(s / static_cast<double>(rows));
}

// ---------------------------------------------------------------- optimizer

__global__ void SumSquaresPartial(const float* x, int64_t n, double* partial) {
  double s = 0;
  GRID_STRIDE(i, n) s += static_cast<double>(x[i]) * x[i];
  s = BlockSum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void AddPartials(const double* partial, int count, double* total) {
  double s = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  s = BlockSum(s);
  if (threadIdx.x == 0) *total += s;
}

__global__ void AdamWKernel(float* param, const float* grad, float* m, float* v, int64_t n,
                            float b1, float b2, float one_b1, float one_b2, float scale,
                            float step_size, float inv_c2, float decay, float eps) {
  GRID_STRIDE(i, n) {
    const float g = grad[i] * scale;
    const float mi = b1 * m[i] + one_b1 * g, vi = b2 * v[i] + one_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= step_size * mi / (sqrtf(vi * inv_c2) + eps) + decay * param[i];
  }
}

// ---------------------------------------------------------------- the backend

// Of a block of `vocab` logits starting at logical column `begin`, how many are
// classes when the first `valid` logical columns are (the rest: vocabulary padding).
int64_t ClassesIn(int64_t vocab, int64_t begin, int64_t valid) {
  return std::max<int64_t>(0, std::min(vocab, valid - begin));
}

Error CudaError(const std::string& what, cudaError_t e) {
  return Error::Failure("CUDA: " + what + ": " + cudaGetErrorString(e));
}

class CudaBackend final : public exec::Backend {
 public:
  CudaBackend(int device, const CudaOptions& options)
      : device_(device),
        check_(options.check),
        max_blocks_(options.max_blocks ? options.max_blocks : kMaxBlocks) {}
  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (blas_) cublasDestroy(blas_);
    if (scratch_) cudaFree(scratch_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  Status Init() {
    if (auto e = cudaSetDevice(device_); e != cudaSuccess) return CudaError("cudaSetDevice", e);
    if (auto e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); e != cudaSuccess)
      return CudaError("cudaStreamCreate", e);
    if (cublasCreate(&blas_) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: cublasCreate failed");
    if (cublasSetStream(blas_, stream_) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: cublasSetStream failed");
    // Plain fp32 GEMMs (no TF32): the reference slice matches the CPU backend.
    if (cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: cublasSetMathMode failed");
    return std::nullopt;
  }

  const char* name() const override { return "cuda"; }
  bool host_visible() const override { return false; }

  uint8_t* AllocateArena(uint64_t bytes) override {
    const uint64_t size = std::max<uint64_t>(bytes, 64);
    void* p = nullptr;
    cudaError_t e = cudaSetDevice(device_);
    if (e == cudaSuccess) e = cudaMalloc(&p, size);
    if (e == cudaSuccess) e = cudaMemset(p, 0, size);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      Record(CudaError("allocating a " + std::to_string(size) + "-byte arena", e));
      if (p) cudaFree(p);
      return nullptr;
    }
    return static_cast<uint8_t*>(p);
  }
  void FreeArena(uint8_t* arena) override {
    if (auto e = cudaFree(arena); e != cudaSuccess) Record(SyncError("freeing the arena", e));
  }

  // The copies and Zero return nothing: a failure is recorded (error()), and once
  // one is, they do nothing and every Run returns it.
  void CopyToHost(const uint8_t* arena, uint64_t offset, void* dst, uint64_t bytes) override {
    if (error_) return;
    cudaError_t e = cudaMemcpyAsync(dst, arena + offset, bytes, cudaMemcpyDeviceToHost, stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) Record(SyncError(Copy("from", bytes, offset), e));
  }
  void CopyToArena(uint8_t* arena, uint64_t offset, const void* src, uint64_t bytes) override {
    if (error_) return;
    cudaError_t e = cudaMemcpyAsync(arena + offset, src, bytes, cudaMemcpyHostToDevice, stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);  // `src` may change after this
    if (e != cudaSuccess) Record(SyncError(Copy("to", bytes, offset), e));
  }
  void Zero(uint8_t* arena, uint64_t offset, uint64_t bytes) override {
    if (error_) return;
    const std::string what = "zeroing " + std::to_string(bytes) + " bytes at arena offset " +
                             std::to_string(offset);
    cudaError_t e = cudaMemsetAsync(arena + offset, 0, bytes, stream_);
    if (e == cudaSuccess && check_) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) Record(check_ ? CudaError(what, e) : SyncError(what, e));
  }
  Status error() const override { return error_; }

  Status Run(const fb::Plan& plan, const plan::Instruction& in, uint8_t* arena,
             const uint64_t* offsets, exec::StepScalars& s) override;

 private:
  // The first failure of a call that returns none (sticky: see cuda_backend.h).
  // The runtime's last error is cleared too, so no later cudaGetLastError blames an
  // instruction for it.
  void Record(Error e) {
    (void)cudaGetLastError();
    if (!error_) error_ = std::move(e);
  }
  static std::string Copy(const char* direction, uint64_t bytes, uint64_t offset) {
    return std::string("copying ") + std::to_string(bytes) + " bytes " + direction +
           " the arena (offset " + std::to_string(offset) + ")";
  }
  // A failure seen where the host waits for the stream. In check mode every
  // earlier instruction and Zero was waited for already, so it is `what`'s own;
  // otherwise it may be any work queued before (kernels run asynchronously).
  Error SyncError(const std::string& what, cudaError_t e) const {
    if (check_) return CudaError(what, e);
    return Error::Failure("CUDA: " + what + ", or work queued before it: " +
                          cudaGetErrorString(e) +
                          " (kernels run asynchronously; heiretsu-cuda-check synchronizes after "
                          "every instruction and names the one that failed)");
  }
  // Blocks for `n` items of `per_block` each, within the launch cap.
  unsigned Grid(int64_t n, int per_block = kThreads) const {
    return Blocks(n, per_block, max_blocks_);
  }

  // Device scratch, grown on first need: the sum-of-squares partials and total,
  // the bad-id flag, per-row loss terms.
  Status Scratch(uint64_t row_bytes) {
    const uint64_t want = 4096 + row_bytes;
    if (want <= scratch_bytes_) return std::nullopt;
    if (scratch_) cudaFree(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    if (auto e = cudaMalloc(&scratch_, want); e != cudaSuccess) return CudaError("cudaMalloc", e);
    scratch_bytes_ = want;
    return std::nullopt;
  }
  double* Partials() { return reinterpret_cast<double*>(scratch_); }
  double* Total() { return reinterpret_cast<double*>(scratch_) + kPartials; }
  int* Bad() { return reinterpret_cast<int*>(reinterpret_cast<double*>(scratch_) + kPartials + 1); }
  float* Rows() { return reinterpret_cast<float*>(static_cast<uint8_t*>(scratch_) + 4096); }

  // Runs CheckIds and returns the first bad index, or -1 (waits for the stream);
  // `what` names the instruction.
  Status FirstBadId(const char* what, const int32_t* ids, int64_t n, int64_t limit,
                    int64_t* bad) {
    if (auto err = Scratch(0)) return err;
    const int big = INT_MAX;
    if (auto e = cudaMemcpyAsync(Bad(), &big, sizeof big, cudaMemcpyHostToDevice, stream_);
        e != cudaSuccess)
      return CudaError(what, e);
    CheckIds<<<Grid(n), kThreads, 0, stream_>>>(ids, n, limit, Bad());
    if (auto e = cudaGetLastError(); e != cudaSuccess) return CudaError(what, e);
    int host = INT_MAX;
    if (auto e = cudaMemcpyAsync(&host, Bad(), sizeof host, cudaMemcpyDeviceToHost, stream_);
        e != cudaSuccess)
      return CudaError(what, e);
    if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return SyncError(what, e);
    *bad = host == INT_MAX ? -1 : host;
    return std::nullopt;
  }

  Status Gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda,
                                  const float* b, int ldb, float beta, float* c, int ldc) {
    const float one = 1.f;
    if (cublasSgemm(blas_, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                    k, &one, a, lda, b, ldb, &beta, c, ldc) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: sgemm failed");
    return std::nullopt;
  }

  int device_;
  bool check_;           // synchronize and check after every instruction and Zero
  unsigned max_blocks_;  // the grid cap of Grid
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* scratch_ = nullptr;
  uint64_t scratch_bytes_ = 0;
  Status error_;  // sticky: the first failure of a copy, Zero or AllocateArena
};

Status CudaBackend::Run(const fb::Plan& plan, const plan::Instruction& in, uint8_t* arena,
                        const uint64_t* offsets, exec::StepScalars& s) {
  // After a failed copy, Zero or allocation nothing runs (the data is not there).
  if (error_) return error_->Within("not run after an earlier failure");
  const char* name = plan::OpName(in.op);
  for (uint32_t b : in.buffers)  // backend.h: 16-bit operands (#13: not here yet)
    if (b != plan::kNoBuffer && plan::IsHalf(plan.buffers()->Get(b)->dtype()))
      return Error::Failure(std::string(name) + ": buffer '" +
                            plan.buffers()->Get(b)->name()->str() +
                            "' is stored in 16 bits, which the CUDA backend does not run yet "
                            "(use --backend cpu)");
  // A buffer's floats (at the run's slot's offset), null for an absent one.
  auto f = [&](uint32_t b) -> float* {
    return b == plan::kNoBuffer ? nullptr : reinterpret_cast<float*>(arena + offsets[b]);
  };
  auto ids = [&](uint32_t b) -> const int32_t* {
    return reinterpret_cast<const int32_t*>(arena + offsets[b]);
  };
  Status err;
  // The first id of `n` outside [0, limit), as a message; nullopt when all are in.
  auto check_ids = [&](const char* what, const int32_t* id, int64_t n,
                       int64_t limit) -> Status {
    int64_t bad = -1;
    if (auto e = FirstBadId(name, id, n, limit, &bad)) return e;
    if (bad < 0) return std::nullopt;
    int32_t value = 0;
    cudaError_t e = cudaMemcpyAsync(&value, id + bad, sizeof value, cudaMemcpyDeviceToHost,
                                    stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) return SyncError(name, e);
    return Error::BadInput(std::string(what) + " id " + std::to_string(value) + " at position " +
                           std::to_string(bad) + " is outside the vocabulary [0, " +
                           std::to_string(limit) + ")");
  };
  // A decode program's position (one int32 in the arena), read on the host.
  auto read_position = [&](uint32_t buffer, int64_t* out) -> Status {
    int32_t value = 0;
    if (auto e = cudaMemcpyAsync(&value, ids(buffer), sizeof value, cudaMemcpyDeviceToHost,
                                 stream_);
        e != cudaSuccess)
      return CudaError(name, e);
    if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return SyncError(name, e);
    *out = value;
    return std::nullopt;
  };
  switch (in.op) {
    case fb::Op_Zero: {
      const auto z = plan::Read<op::Zero<uint32_t>>(in);
      const fb::Buffer& b = *plan.buffers()->Get(z.buffer);
      if (auto e = cudaMemsetAsync(f(z.buffer), 0,
                                   plan::NumElements(b) * plan::DTypeSize(b.dtype()), stream_);
          e != cudaSuccess)
        return SyncError(name, e);
      break;
    }
    case fb::Op_Embedding: {
      const auto e = plan::Read<op::Embedding<uint32_t>>(in);
      if ((err = check_ids("token", ids(e.ids), e.rows, e.vocab_total))) return err;
      int64_t offset = 0;
      if (plan::Has(e.offset)) {
        if ((err = read_position(e.offset, &offset))) return err;
        if ((err = exec::CheckDecodePosition(offset, e.seq, e.context))) return err;
      }
      EmbeddingFwd<<<Grid(e.rows * e.c), kThreads, 0, stream_>>>(
          ids(e.ids), f(e.table), f(e.positions), f(e.out), e.rows, e.seq, e.vocab, e.c,
          e.vocab_begin, offset);
      break;
    }
    case fb::Op_EmbeddingGrad: {
      const auto e = plan::Read<op::EmbeddingGrad<uint32_t>>(in);
      EmbeddingBwd<<<Grid(e.c), kThreads, 0, stream_>>>(
          ids(e.ids), f(e.dout), f(e.dtable), f(e.dpositions), e.rows, e.seq,
          e.vocab_rows, e.c, e.vocab_begin);
      break;
    }
    case fb::Op_Linear: {
      const auto l = plan::Read<op::Linear<uint32_t>>(in);
      const int rows = static_cast<int>(l.rows), inw = static_cast<int>(l.in),
                out = static_cast<int>(l.out);
      // Row-major y = x W^T is column-major y^T = W x^T (see the file comment).
      if ((err = Gemm(true, false, out, rows, inw, f(l.w), inw, f(l.x), inw, 0.f, f(l.y), out)))
        return err;
      if (f(l.bias))
        BiasAdd<<<Grid(l.rows * l.out), kThreads, 0, stream_>>>(f(l.y), f(l.bias), l.rows, l.out);
      break;
    }
    case fb::Op_LinearGrad: {
      const auto l = plan::Read<op::LinearGrad<uint32_t>>(in);
      const int rows = static_cast<int>(l.rows), inw = static_cast<int>(l.in),
                out = static_cast<int>(l.out);
      if (f(l.dx) && (err = Gemm(false, false, inw, rows, out, f(l.w), inw, f(l.dy), out,
                                 l.accumulate_dx ? 1.f : 0.f, f(l.dx), inw)))
        return err;
      if (f(l.dw) &&
          (err = Gemm(false, true, inw, out, rows, f(l.x), inw, f(l.dy), out, 1.f, f(l.dw), inw)))
        return err;
      if (f(l.dbias))
        ColumnSum<<<Grid(l.out), kThreads, 0, stream_>>>(f(l.dy), f(l.dbias), l.rows, l.out);
      break;
    }
    case fb::Op_LayerNorm: {
      const auto n = plan::Read<op::LayerNorm<uint32_t>>(in);
      LayerNormFwd<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(
          f(n.x), f(n.w), f(n.b), f(n.y), f(n.mean), f(n.rstd), n.rows, n.c, n.eps);
      break;
    }
    case fb::Op_LayerNormGrad: {
      const auto n = plan::Read<op::LayerNormGrad<uint32_t>>(in);
      NormBwdRows<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(
          f(n.dy), f(n.x), f(n.w), f(n.mean), f(n.rstd), f(n.dx), n.rows, n.c,
          n.accumulate_dx != 0);
      NormParamGrad<<<Grid(n.c), kThreads, 0, stream_>>>(f(n.dy), f(n.x), f(n.mean), f(n.rstd),
                                                           f(n.dw), f(n.db), n.rows, n.c);
      break;
    }
    case fb::Op_RMSNorm: {
      const auto n = plan::Read<op::RMSNorm<uint32_t>>(in);
      RMSNormFwd<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(f(n.x), f(n.w), f(n.y), f(n.rstd),
                                                             n.rows, n.c, n.eps);
      break;
    }
    case fb::Op_RMSNormGrad: {
      const auto n = plan::Read<op::RMSNormGrad<uint32_t>>(in);
      NormBwdRows<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(
          f(n.dy), f(n.x), f(n.w), nullptr, f(n.rstd), f(n.dx), n.rows, n.c,
          n.accumulate_dx != 0);
      NormParamGrad<<<Grid(n.c), kThreads, 0, stream_>>>(f(n.dy), f(n.x), nullptr, f(n.rstd),
                                                           f(n.dw), nullptr, n.rows, n.c);
      break;
    }
    case fb::Op_Gelu: {
      const auto g = plan::Read<op::Gelu<uint32_t>>(in);
      GeluFwd<<<Grid(g.n), kThreads, 0, stream_>>>(f(g.x), f(g.y), g.n);
      break;
    }
    case fb::Op_GeluGrad: {
      const auto g = plan::Read<op::GeluGrad<uint32_t>>(in);
      GeluBwd<<<Grid(g.n), kThreads, 0, stream_>>>(f(g.dy), f(g.x), f(g.dx), g.n,
                                                     g.accumulate_dx != 0);
      break;
    }
    case fb::Op_Swiglu: {
      const auto g = plan::Read<op::Swiglu<uint32_t>>(in);
      SwigluFwd<<<Grid(g.n), kThreads, 0, stream_>>>(f(g.gate), f(g.up), f(g.y), g.n);
      break;
    }
    case fb::Op_SwigluGrad: {
      const auto g = plan::Read<op::SwigluGrad<uint32_t>>(in);
      SwigluBwd<<<Grid(g.n), kThreads, 0, stream_>>>(f(g.dy), f(g.gate), f(g.up), f(g.dgate),
                                                       f(g.dup), g.n, g.accumulate_dx != 0);
      break;
    }
    case fb::Op_Add: {
      const auto a = plan::Read<op::Add<uint32_t>>(in);
      AddFwd<<<Grid(a.n), kThreads, 0, stream_>>>(f(a.a), f(a.b), f(a.y), a.n);
      break;
    }
    case fb::Op_Accumulate: {
      const auto a = plan::Read<op::Accumulate<uint32_t>>(in);
      AccumulateKernel<<<Grid(a.n), kThreads, 0, stream_>>>(f(a.src), f(a.dst), a.n,
                                                              a.accumulate_dx != 0);
      break;
    }
    case fb::Op_Rope: {
      const auto r = plan::Read<op::Rope<uint32_t>>(in);
      int64_t offset = 0;
      if (plan::Has(r.offset))
        if ((err = read_position(r.offset, &offset))) return err;
      Rope<<<Grid(r.batch * r.seq * r.heads * (r.head_dim / 2)), kThreads, 0, stream_>>>(
          f(r.x), f(r.y), r.batch * r.seq, r.seq, r.heads, r.head_dim, r.theta, 1.0, false,
          offset);
      break;
    }
    case fb::Op_RopeGrad: {
      const auto r = plan::Read<op::RopeGrad<uint32_t>>(in);
      Rope<<<Grid(r.batch * r.seq * r.heads * (r.head_dim / 2)), kThreads, 0, stream_>>>(
          f(r.dy), f(r.dx), r.batch * r.seq, r.seq, r.heads, r.head_dim, r.theta, -1.0,
          r.accumulate_dx != 0);
      break;
    }
    case fb::Op_CachedAttention: {
      const auto a = plan::Read<op::CachedAttention<uint32_t>>(in);
      int64_t position = 0;
      if ((err = read_position(a.position, &position))) return err;
      if ((err = exec::CheckDecodePosition(position, a.seq, a.context))) return err;
      const int64_t kw = a.kv_heads * a.head_dim;
      KvAppend<<<Grid(a.batch * a.seq * kw), kThreads, 0, stream_>>>(
          f(a.k), f(a.v), f(a.k_cache), f(a.v_cache), a.batch, a.seq, kw, a.context, position);
      CachedAttentionFwd<<<Grid(a.batch * a.heads * a.seq), kThreads, 0, stream_>>>(
          f(a.q), f(a.k_cache), f(a.v_cache), f(a.out), a.batch, a.seq, a.heads, a.kv_heads,
          a.head_dim, a.context, position,
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim))));
      break;
    }
    case fb::Op_Attention:
    case fb::Op_AttentionGrad: {
      // The backward's first operands are the forward's, named alike.
      const bool forward = in.op == fb::Op_Attention;
      const auto fw = forward ? plan::Read<op::Attention<uint32_t>>(in) : op::Attention<uint32_t>{};
      const auto bw = forward ? op::AttentionGrad<uint32_t>{} : plan::Read<op::AttentionGrad<uint32_t>>(in);
      const int64_t b = forward ? fw.batch : bw.batch, t = forward ? fw.seq : bw.seq;
      const int64_t h = forward ? fw.heads : bw.heads, kv = forward ? fw.kv_heads : bw.kv_heads;
      const int64_t hd = forward ? fw.head_dim : bw.head_dim;
      if (hd > kMaxHeadDim)
        return Error::Failure("attention: head_dim " + std::to_string(hd) +
                              " is above the CUDA kernel's " + std::to_string(kMaxHeadDim));
      const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
      const int warps_per_block = kThreads / 32;
      if (forward) {
        AttentionFwd<<<Grid(b * h * t, warps_per_block), kThreads, 0, stream_>>>(
            f(fw.q), f(fw.k), f(fw.v), f(fw.out), f(fw.lse), b, t, h, kv, hd, scale);
      } else {
        const bool acc = bw.accumulate_dx != 0;
        AttentionBwdQ<<<Grid(b * h * t, warps_per_block), kThreads, 0, stream_>>>(
            f(bw.dout), f(bw.q), f(bw.k), f(bw.v), f(bw.out), f(bw.lse), f(bw.dq), b, t, h, kv,
            hd, scale, acc);
        AttentionBwdKV<<<Grid(b * kv * t, warps_per_block), kThreads, 0, stream_>>>(
            f(bw.dout), f(bw.q), f(bw.k), f(bw.v), f(bw.out), f(bw.lse), f(bw.dk), f(bw.dv), b, t,
            h, kv, hd, scale, acc);
      }
      break;
    }
    case fb::Op_CrossEntropy: {
      const auto ce = plan::Read<op::CrossEntropy<uint32_t>>(in);
      if ((err = check_ids("target", ids(ce.targets), ce.rows, ce.valid))) return err;
      if ((err = Scratch(4 * static_cast<uint64_t>(ce.rows)))) return err;
      CrossEntropyRows<<<Grid(ce.rows, 1), kThreads, 0, stream_>>>(
          f(ce.logits), ids(ce.targets), f(ce.lse), Rows(), ce.rows, ce.vocab, ce.valid);
      MeanOfRows<<<1, kThreads, 0, stream_>>>(Rows(), f(ce.loss), ce.rows);
      break;
    }
    case fb::Op_CrossEntropyGrad: {
      const auto ce = plan::Read<op::CrossEntropyGrad<uint32_t>>(in);
      const int64_t classes = ClassesIn(ce.vocab, ce.vocab_begin, ce.valid);
      CrossEntropyBwd<<<Grid(ce.rows * ce.vocab), kThreads, 0, stream_>>>(
          f(ce.logits), ids(ce.targets), f(ce.lse),
          static_cast<float>(ce.dloss * s.loss_scale) / static_cast<float>(ce.rows), f(ce.dlogits), ce.rows,
          ce.vocab, ce.vocab_begin, classes, ce.accumulate_dx != 0);
      break;
    }
    case fb::Op_VocabMax: {
      const auto v = plan::Read<op::VocabMax<uint32_t>>(in);
      const int64_t classes = ClassesIn(v.vocab, v.vocab_begin, v.valid);
      VocabMaxRows<<<Grid(v.rows, 1), kThreads, 0, stream_>>>(f(v.logits), f(v.max), v.rows,
                                                               v.vocab, classes);
      break;
    }
    case fb::Op_VocabSumExp: {
      const auto v = plan::Read<op::VocabSumExp<uint32_t>>(in);
      if ((err = check_ids("target", ids(v.targets), v.rows, std::min(v.vocab_total, v.valid))))
        return err;
      const int64_t classes = ClassesIn(v.vocab, v.vocab_begin, v.valid);
      VocabSumExpRows<<<Grid(v.rows, 1), kThreads, 0, stream_>>>(
          f(v.logits), ids(v.targets), f(v.max), f(v.sum), f(v.target), v.rows, v.vocab,
          v.vocab_begin, classes);
      break;
    }
    case fb::Op_VocabLoss: {
      const auto v = plan::Read<op::VocabLoss<uint32_t>>(in);
      VocabLossKernel<<<1, kThreads, 0, stream_>>>(f(v.max), f(v.sum), f(v.target), f(v.loss),
                                                   f(v.lse), v.rows);
      break;
    }
    case fb::Op_GradNormSq: {
      if ((err = Scratch(0))) return err;
      if (auto e = cudaMemsetAsync(Total(), 0, sizeof(double), stream_); e != cudaSuccess)
        return SyncError(name, e);
      // Each buffer's range: all of it, or this rank's ZeRO-1 shard (prepared).
      for (size_t i = 0; i < in.buffers.size(); ++i) {
        SumSquaresPartial<<<kPartials, kThreads, 0, stream_>>>(
            f(in.buffers[i]) + in.ranges[i].begin, in.ranges[i].size, Partials());
        AddPartials<<<1, kThreads, 0, stream_>>>(Partials(), kPartials, Total());
      }
      if (auto e = cudaGetLastError(); e != cudaSuccess) return CudaError(name, e);
      double total = 0;
      if (auto e = cudaMemcpyAsync(&total, Total(), sizeof total, cudaMemcpyDeviceToHost, stream_);
          e != cudaSuccess)
        return SyncError(name, e);
      if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return SyncError(name, e);
      s.grad_norm_sq += total;
      break;
    }
    case fb::Op_ClipAndAdamW: {
      const auto u = plan::Read<op::ClipAndAdamW<uint32_t>>(in);
      const fb::Optimizer* opt = plan.optimizer();
      const double b1 = opt ? opt->beta1() : 0.9, b2 = opt ? opt->beta2() : 0.95;
      const double eps = opt ? opt->eps() : 1e-8;
      const double step = static_cast<double>(s.step);
      // [begin, begin + size): all of the parameter or this rank's ZeRO-1 shard.
      AdamWKernel<<<Grid(u.size), kThreads, 0, stream_>>>(
          f(u.param) + u.begin, f(u.grad) + u.begin, f(u.exp_avg), f(u.exp_avg_sq), u.size,
          static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(1.0 - b1),
          static_cast<float>(1.0 - b2), static_cast<float>(s.clip_scale),
          static_cast<float>(s.lr / (1.0 - std::pow(b1, step))),
          static_cast<float>(1.0 / (1.0 - std::pow(b2, step))),
          static_cast<float>(s.lr * (u.weight_decay ? s.weight_decay : 0.0)),
          static_cast<float>(eps));
      break;
    }
    case fb::Op_MoeRoute:
    case fb::Op_MoeRouteGrad:
    case fb::Op_MoeDispatch:
    case fb::Op_MoeDispatchGrad:
    case fb::Op_MoeExperts:
    case fb::Op_MoeExpertsGrad:
    case fb::Op_MoeCombine:
    case fb::Op_MoeCombineGrad:
      return Error::Failure("the CUDA backend has no MoE kernel yet: run MoE models with "
                            "--backend cpu");
    default:
      return Error::Failure(std::string("the CUDA backend cannot run '") + plan::OpName(in.op) +
                            "' (collectives belong to the executor)");
  }
  // A launch's own failure (a bad configuration) shows here at once; one of the
  // kernel's execution (a fault) only where the host next waits for the stream,
  // which check mode does now, so that it is this instruction's.
  if (auto e = cudaGetLastError(); e != cudaSuccess) return CudaError(name, e);
  if (check_)
    if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return CudaError(name, e);
  return std::nullopt;
}

}  // namespace

Status DeviceCount(int* count) {
  const DeviceProbe probe = ProbeDevices();
  *count = probe.count;
  if (probe.failed) return Error::Failure("CUDA: " + probe.message);
  return std::nullopt;
}

Status MakeCudaBackend(int device, std::unique_ptr<exec::Backend>* out,
                       const CudaOptions& options) {
  int count = 0;
  if (auto err = DeviceCount(&count)) return err;
  if (device < 0 || device >= count)
    return Error::Failure("--backend cuda: no CUDA device " + std::to_string(device) +
                          " (this process sees " + std::to_string(count) + ")");
  auto backend = std::make_unique<CudaBackend>(device, options);
  if (auto err = backend->Init()) return err;
  *out = std::move(backend);
  return std::nullopt;
}

}  // namespace heiretsu::cuda
