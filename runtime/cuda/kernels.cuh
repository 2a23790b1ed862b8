// The CUDA backend's kernels but the tiled attention (flash_attention.cuh) and the
// column reductions (column_sums.cuh): elementwise ops, the embedding, the bias,
// the norms, RoPE, the per-query and the decode attention, the losses, the
// gradient norm and AdamW, each opcode's formula the CPU kernel's
// (runtime/cpu/kernels.h; cuda_backend.cu's file comment says how they launch and
// sum). Included by cuda_backend.cu inside its namespace after kernel_base.cuh, and
// by test/unit/cuda_kernels_emu_test.cc under the CPU emulation of
// test/unit/cuda_emulation.h, which checks them against the CPU kernels.
#ifndef HEIRETSU_RUNTIME_CUDA_KERNELS_CUH_
#define HEIRETSU_RUNTIME_CUDA_KERNELS_CUH_

__device__ inline void Store(float* dst, float v, bool accumulate) {
  *dst = accumulate ? *dst + v : v;
}

// float32 to 16 bits (the GEMMs' copies of float32 operands).
template <typename S>
__global__ void FromF32(const float* src, S* dst, int64_t n) {
  GRID_STRIDE(i, n) dst[i] = FromFloat<S>(src[i]);
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

// ---------------------------------------------------------------- elementwise

constexpr float kGeluScale = 0.7978845608028654f, kGeluCubic = 0.044715f;

template <class V>
__global__ void GeluFwd(V x, V y, int64_t n) {
  GRID_STRIDE(i, n) {
    float v = x[i], u = kGeluScale * (v + kGeluCubic * v * v * v);
    y.set(i, v / (1.f + expf(-2.f * u)));
  }
}

template <class V>
__global__ void GeluBwd(V dy, V x, V dx, int64_t n, bool acc) {
  GRID_STRIDE(i, n) {
    float v = x[i], u = kGeluScale * (v + kGeluCubic * v * v * v);
    float sig = 1.f / (1.f + expf(-2.f * u));
    float du = kGeluScale * (1.f + 3.f * kGeluCubic * v * v);
    dx.put(i, dy[i] * (sig + v * sig * (1.f - sig) * 2.f * du), acc);
  }
}

template <class V>
__global__ void SwigluFwd(V gate, V up, V y, int64_t n) {
  GRID_STRIDE(i, n) {
    float g = gate[i];
    y.set(i, g / (1.f + expf(-g)) * up[i]);
  }
}

template <class V>
__global__ void SwigluBwd(V dy, V gate, V up, V dgate, V dup, int64_t n, bool acc) {
  GRID_STRIDE(i, n) {
    float g = gate[i], sig = 1.f / (1.f + expf(-g));
    const float d = dy[i], u = up[i];
    dgate.put(i, d * u * sig * (1.f + g * (1.f - sig)), acc);
    dup.put(i, d * g * sig, acc);
  }
}

template <class V>
__global__ void AddFwd(V a, V b, V y, int64_t n) {
  GRID_STRIDE(i, n) y.set(i, a[i] + b[i]);
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

template <class V>
__global__ void EmbeddingFwd(const int32_t* ids, const float* table, const float* pos, V out,
                             int64_t rows, int64_t seq, int64_t vocab, int64_t c,
                             int64_t begin, int64_t offset) {
  GRID_STRIDE(k, rows * c) {
    const int64_t r = k / c, i = k % c, id = static_cast<int64_t>(ids[r]) - begin;
    float v = id >= 0 && id < vocab ? table[id * c + i] : 0.f;
    if (pos) v += pos[(offset + r % seq) * c + i];
    out.set(k, v);
  }
}

// ---------------------------------------------------------------- linear

template <class V>
__global__ void BiasAdd(V y, const float* bias, int64_t rows, int64_t out) {
  GRID_STRIDE(k, rows * out) y.set(k, y[k] + bias[k % out]);
}

// ---------------------------------------------------------------- norms

// One block per row (block-stride). mean/rstd as the CPU computes them (double sums).
template <class V>
__global__ void LayerNormFwd(V x, const float* w, const float* b, V y, float* mean, float* rstd,
                             int64_t rows, int64_t c, double eps) {
  BLOCK_STRIDE(r, rows) {
    const int64_t row = r * c;
    double s = 0;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s += x[row + i];
    const double mu = BlockSum(s) / c;
    double v = 0;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xi = x[row + i];
      v += (xi - mu) * (xi - mu);
    }
    const double rs = 1.0 / sqrt(BlockSum(v) / c + eps);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      y.set(row + i, static_cast<float>((x[row + i] - mu) * rs * w[i] + b[i]));
    if (threadIdx.x == 0) {
      mean[r] = static_cast<float>(mu);
      rstd[r] = static_cast<float>(rs);
    }
  }
}

// dx for one row per block (block-stride); `mean` null for RMSNorm (xhat = x * rstd).
template <class V>
__global__ void NormBwdRows(V dy, V x, const float* w, const float* mean, const float* rstd, V dx,
                            int64_t rows, int64_t c, bool acc) {
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
      dx.put(r * c + i, rs * (g - m1 - xhat * m2), acc);
    }
  }
}

template <class V>
__global__ void RMSNormFwd(V x, const float* w, V y, float* rstd, int64_t rows, int64_t c,
                           double eps) {
  BLOCK_STRIDE(r, rows) {
    const int64_t row = r * c;
    double s = 0;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xi = x[row + i];
      s += static_cast<double>(xi) * xi;
    }
    const double rs = 1.0 / sqrt(BlockSum(s) / c + eps);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      y.set(row + i, static_cast<float>(x[row + i] * rs * w[i]));
    if (threadIdx.x == 0) rstd[r] = static_cast<float>(rs);
  }
}

// ---------------------------------------------------------------- rope

template <class V>
__global__ void Rope(V x, V y, int64_t bt_count, int64_t seq, int64_t heads, int64_t hd,
                     double theta, double sign, bool acc, int64_t offset = 0) {
  const int64_t half = hd / 2;
  GRID_STRIDE(k, bt_count * half * heads) {
    const int64_t h = k % heads, i = (k / heads) % half, bt = k / (heads * half);
    const double freq = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(hd));
    const double angle = static_cast<double>(offset + bt % seq) * freq;
    const float cs = static_cast<float>(cos(angle)), sn = static_cast<float>(sign * sin(angle));
    const int64_t at = bt * heads * hd + h * hd + 2 * i;
    const float x0 = x[at], x1 = x[at + 1];
    y.put(at, x0 * cs - x1 * sn, acc);
    y.put(at + 1, x0 * sn + x1 * cs, acc);
  }
}

// ---------------------------------------------------------------- attention

// A decode step (op_table.h: cached_attention): token t's key and value into cache
// row position + t, then one thread per (b, h, t) query over rows 0 .. position + t
// in three passes (max, sum, output). Decoding is one token: latency, not FLOPs.
// float32 only (the precision pass leaves decode programs' operands wide).
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
// accumulated in float32 registers (lane l holds dimensions l, l + 32, ...) and
// stored once.
template <class V>
__global__ void AttentionFwd(V q, V k, V v, V out, float* lse, int64_t batch, int64_t seq,
                             int64_t heads, int64_t kv_heads, int64_t hd, float scale) {
  const int lane = threadIdx.x % 32;
  WARP_STRIDE(warp, batch * heads * seq) {
    const int64_t t = warp % seq, h = (warp / seq) % heads, b = warp / (seq * heads);
    const int64_t kh = h / (heads / kv_heads), qw = heads * hd, kw = kv_heads * hd;
    const int64_t qo = (b * seq + t) * qw + h * hd;
    float qr[kPerLane], acc[kPerLane];
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      qr[u] = d < hd ? q[qo + d] : 0.f;
      acc[u] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    for (int64_t j = 0; j <= t; ++j) {
      const int64_t ko = (b * seq + j) * kw + kh * hd;
      float s = 0;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) s += qr[u] * k[ko + d];
      }
      s = WarpSum(s) * scale;
      const float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
      l = l * corr + p;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) acc[u] = acc[u] * corr + p * v[ko + d];
      }
      m = m_new;
    }
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      if (d < hd) out.set(qo + d, acc[u] / l);
    }
    if (lane == 0) lse[(b * heads + h) * seq + t] = m + logf(l);
  }
}

// dq: one warp per query (grid-stride). P = exp(s - lse), dP = dout . v_j,
// D = dout . out, dq = scale * sum_j P (dP - D) k_j.
template <class V>
__global__ void AttentionBwdQ(V dout, V q, V k, V v, V out, const float* lse, V dq,
                              int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                              int64_t hd, float scale, bool acc) {
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
      const int64_t ko = (b * seq + j) * kw + kh * hd;
      float s = 0, dp = 0;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) {
          s += qr[u] * k[ko + d];
          dp += dor[u] * v[ko + d];
        }
      }
      s = WarpSum(s);
      dp = WarpSum(dp);
      const float p = expf(s * scale - l), ds = p * (dp - dd) * scale;
      for (int u = 0; u < kPerLane; ++u) {
        const int64_t d = lane + 32 * u;
        if (d < hd) g[u] += ds * k[ko + d];
      }
    }
    for (int u = 0; u < kPerLane; ++u) {
      const int64_t d = lane + 32 * u;
      if (d < hd) dq.put(qo + d, g[u], acc);
    }
  }
}

// dk, dv: one warp per (b, kv head, key j) (grid-stride), over the query heads of
// its group and the queries t >= j.
template <class V>
__global__ void AttentionBwdKV(V dout, V q, V k, V v, V out, const float* lse, V dk, V dv,
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
            const float dod = dout[qo + d];
            s += q[qo + d] * kr[u];
            dp += dod * vr[u];
            dd += dod * out[qo + d];
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
        dk.put(ko + d, gk[u], acc);
        dv.put(ko + d, gv[u], acc);
      }
    }
  }
}

// ---------------------------------------------------------------- cross-entropy

// One block per row (block-stride): lse over the row's classes, and the row's loss term.
template <class V>
__global__ void CrossEntropyRows(V logits, const int32_t* targets, float* lse, float* term,
                                 int64_t rows, int64_t vocab, int64_t classes) {
  BLOCK_STRIDE(r, rows) {
    const int64_t row = r * vocab;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < classes; i += blockDim.x) m = fmaxf(m, logits[row + i]);
    m = BlockMax(m);
    double s = 0;
    for (int64_t i = threadIdx.x; i < classes; i += blockDim.x)
      s += exp(static_cast<double>(logits[row + i] - m));
    s = BlockSum(s);
    if (threadIdx.x == 0) {
      lse[r] = static_cast<float>(m + log(s));
      term[r] = lse[r] - logits[row + targets[r]];
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

template <class V>
__global__ void CrossEntropyBwd(V logits, const int32_t* targets, const float* lse, float scale,
                                V dlogits, int64_t rows, int64_t vocab, int64_t begin,
                                int64_t classes, bool acc) {
  GRID_STRIDE(k, rows * vocab) {
    const int64_t r = k / vocab, i = k % vocab;
    const float p = i < classes ? expf(logits[k] - lse[r]) : 0.f;
    const float onehot = i == static_cast<int64_t>(targets[r]) - begin ? 1.f : 0.f;
    dlogits.put(k, scale * (p - onehot), acc);
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

#endif  // HEIRETSU_RUNTIME_CUDA_KERNELS_CUH_
