// CPU kernels (see kernels.h for the conventions). GEMMs go to OpenBLAS or oneDNN
// (kernels.h: ActiveBlas); the rest
// are plain loops parallelized with OpenMP over independent rows or heads, so that
// each output is produced by exactly one thread and results do not depend on the
// thread count.
#include "runtime/cpu/kernels.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "runtime/cpu/vec.h"

namespace heiretsu::cpu {

namespace vec {
bool HasAvx2() {
  static const bool has = [] {
    const char* choice = std::getenv("HEIRETSU_CPU_KERNELS");
    if (choice && std::strcmp(choice, "portable") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}
}  // namespace vec

// The float instantiation of a kernel takes its AVX2 path (vec.h) when the CPU has one.
template <typename T>
inline bool UseAvx2() {
  if constexpr (std::is_same_v<T, float>) return vec::HasAvx2();
  return false;
}

namespace {
// OpenBLAS's names for kernels that use AVX-512.
bool IsAvx512Core(const std::string& core) {
  return core == "SkylakeX" || core == "Cooperlake" || core == "SapphireRapids" ||
         core == "Zen4";
}
}  // namespace

bool CpuHasAvx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

std::string OpenBlasCoreName() { return openblas_get_corename(); }

bool ChooseBlas(const char* choice, bool avx512, Blas* out) {
  if (choice == nullptr || std::strcmp(choice, "auto") == 0) {
    *out = avx512 ? Blas::kOneDnn : Blas::kOpenBlas;
    return true;
  }
  if (std::strcmp(choice, "openblas") == 0) *out = Blas::kOpenBlas;
  else if (std::strcmp(choice, "onednn") == 0) *out = Blas::kOneDnn;
  else return false;
  return true;
}

namespace {
std::atomic<int>& BlasSlot() {  // -1: not chosen yet
  static std::atomic<int> slot{-1};
  return slot;
}

std::string OneDnnIsa() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "isa " + std::to_string(static_cast<int>(dnnl_get_effective_cpu_isa()));
  }
}
}  // namespace

Blas ActiveBlas() {
  int v = BlasSlot().load(std::memory_order_relaxed);
  if (v < 0) {
    const bool avx512 = CpuHasAvx512();
    Blas chosen = Blas::kOpenBlas;
    if (!ChooseBlas(std::getenv("HEIRETSU_BLAS"), avx512, &chosen))
      ChooseBlas(nullptr, avx512, &chosen);  // an invalid value counts as auto
    v = static_cast<int>(chosen);
    BlasSlot().store(v, std::memory_order_relaxed);
  }
  return static_cast<Blas>(v);
}

void UseBlas(Blas blas) { BlasSlot().store(static_cast<int>(blas), std::memory_order_relaxed); }

std::string OpenBlasCoreOverride(const std::string& detected, bool avx512, bool user_chose) {
  if (user_chose || !avx512 || IsAvx512Core(detected)) return "";
  return "SkylakeX";
}

std::string DescribeBlas(std::string* advice) {
  advice->clear();
  if (ActiveBlas() == Blas::kOneDnn) {
    const dnnl_version_t* v = dnnl_version();
    const int threads = omp_get_max_threads();
    return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
           std::to_string(v->patch) + " sgemm, " + OneDnnIsa() + " ISA (" +
           (std::getenv("HEIRETSU_BLAS") ? "HEIRETSU_BLAS=" + std::string(std::getenv("HEIRETSU_BLAS"))
                                         : std::string("chosen by heiretsu on this AVX-512 CPU; "
                                                       "HEIRETSU_BLAS=openblas for OpenBLAS")) +
           "), " + std::to_string(threads) + (threads == 1 ? " thread" : " threads");
  }
  const std::string config = openblas_get_config();
  const std::string core = OpenBlasCoreName();
  std::string chosen;
  if (const char* detected = std::getenv("HEIRETSU_OPENBLAS_DETECTED"))
    chosen = " (chosen by heiretsu: OpenBLAS detected this AVX-512 CPU as '" +
             std::string(detected) + "')";
  else if (CpuHasAvx512() && !IsAvx512Core(core))
    *advice = "this CPU has AVX-512 but OpenBLAS runs its '" + core + "' kernels" +
              (std::getenv("OPENBLAS_CORETYPE")
                   ? " because the environment sets OPENBLAS_CORETYPE=" +
                         std::string(std::getenv("OPENBLAS_CORETYPE")) + "; unset it, or set"
                   : std::string("; set")) +
              " OPENBLAS_CORETYPE=SkylakeX for AVX-512 ones (on such a Xeon, 2048^3 sgemm "
              "went from 42.7 to 238 GFLOP/s: issue #15)";
  return config + ", " + core + " kernels" + chosen + ", " +
         std::to_string(openblas_get_num_threads()) +
         (openblas_get_num_threads() == 1 ? " thread" : " threads");
}
namespace {

// Rows handled per parallel task in row-wise kernels.
constexpr int64_t kGrain = 16;
// Columns per task of a column sum (a bias or norm weight gradient): the task walks
// the rows in order, reading kColumns contiguous floats of each, so every column
// is still summed by one thread in row order.
constexpr int64_t kColumns = 64;
// Work (elements; multiply-adds for attention) below which a kernel runs on the
// calling thread alone: waking a sleeping OpenMP worker (the passive wait policy,
// threading.h) costs tens of microseconds, more than such a kernel saves (gpt-tiny's
// AdamW, norms and gradient norm each ran about twice as long on 2 threads as on 1).
// Results do not depend on it: every output is one thread's in a fixed order.
constexpr int64_t kParallelMin = 1 << 17;
inline bool Parallel(int64_t work) { return work >= kParallelMin; }
// Fixed chunk size of ordered reductions (independent of the thread count).
constexpr int64_t kReduceChunk = 1 << 16;

// C[M,N] = alpha op(A) op(B) + beta C, row-major, with leading dimensions (the
// row strides of A, B and C as stored).
void BlasGemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
              int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (ActiveBlas() == Blas::kOneDnn) {
    // Row-major by definition; it fails only on invalid arguments, which the
    // callers' shapes rule out (checked like the CPU backend's other preconditions).
    const dnnl_status_t status =
        dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (status != dnnl_success) {
      std::fprintf(stderr, "heiretsu: dnnl_sgemm(%c, %c, %lld, %lld, %lld) failed (status %d)\n",
                   ta ? 'T' : 'N', tb ? 'T' : 'N', static_cast<long long>(m),
                   static_cast<long long>(n), static_cast<long long>(k), static_cast<int>(status));
      std::abort();
    }
    return;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

void BlasGemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
              int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

template <typename T>
inline void Store(T* dst, T value, bool accumulate) {
  *dst = accumulate ? *dst + value : value;
}

constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluCubic = 0.044715;

}  // namespace

//===----------------------------------------------------------------------===//
// AVX2 / FMA paths of the float kernels (vec.h). Each one computes what the
// portable loop below it computes, in a fixed order of its own; the tails
// (n % 8) go through masked loads and stores with the same operations, so an
// element's result does not depend on where in an 8-lane block it falls.
//===----------------------------------------------------------------------===//
namespace avx2 {

using vec::Exp;

HEIRETSU_AVX2_INLINE __m256 Load(const float* p, int64_t n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, vec::TailMask(n));
}
HEIRETSU_AVX2_INLINE void Save(float* p, __m256 v, int64_t n) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, vec::TailMask(n), v);
}
// *p = v, or *p += v.
HEIRETSU_AVX2_INLINE void Put(float* p, __m256 v, int64_t n, bool accumulate) {
  Save(p, accumulate ? _mm256_add_ps(Load(p, n), v) : v, n);
}

// Save, streamed past the caches (`stream`: p is 32-byte aligned) for a full vector.
HEIRETSU_AVX2_INLINE void SaveCopy(float* p, __m256 v, int64_t n, bool stream) {
  if (stream && n >= 8) _mm256_stream_ps(p, v);
  else Save(p, v, n);
}

// Elementwise kernels run in blocks of kBlock elements, one task each.
constexpr int64_t kBlock = 4096;

struct AdamScalars {
  float b1, b2, one_b1, one_b2, scale, step_size, inv_c2, decay, eps;
};

HEIRETSU_AVX2 void AdamW(float* param, const float* grad, float* m, float* v, int64_t n,
                         const AdamScalars& s, const AdamWMirrors<float>& mirrors) {
  const __m256 b1 = _mm256_set1_ps(s.b1), b2 = _mm256_set1_ps(s.b2);
  const __m256 one_b1 = _mm256_set1_ps(s.one_b1), one_b2 = _mm256_set1_ps(s.one_b2);
  const __m256 scale = _mm256_set1_ps(s.scale), step_size = _mm256_set1_ps(s.step_size);
  const __m256 inv_c2 = _mm256_set1_ps(s.inv_c2), decay = _mm256_set1_ps(s.decay);
  const __m256 eps = _mm256_set1_ps(s.eps);
  // The mirrors are another process's memory, read next by its forward: streamed
  // past the caches when aligned (no read for ownership), fenced before the
  // caller's barrier publishes them.
  bool stream = true;
  for (int c = 0; c < mirrors.count; ++c)
    stream = stream && reinterpret_cast<uintptr_t>(mirrors.param[c]) % 32 == 0;

#pragma omp parallel if (Parallel(n))
  {
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i += 8) {
      const int64_t w = n - i;
      const __m256 g = _mm256_mul_ps(Load(grad + i, w), scale);
      const __m256 mi = _mm256_fmadd_ps(b1, Load(m + i, w), _mm256_mul_ps(one_b1, g));
      const __m256 vi =
          _mm256_fmadd_ps(b2, Load(v + i, w), _mm256_mul_ps(one_b2, _mm256_mul_ps(g, g)));
      const __m256 p = Load(param + i, w);
      const __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, inv_c2)), eps);
      const __m256 update =
          _mm256_fmadd_ps(decay, p, _mm256_div_ps(_mm256_mul_ps(step_size, mi), denom));
      Save(m + i, mi, w);
      Save(v + i, vi, w);
      const __m256 updated = _mm256_sub_ps(p, update);
      Save(param + i, updated, w);
      for (int c = 0; c < mirrors.count; ++c) SaveCopy(mirrors.param[c] + i, updated, w, stream);
    }
    if (mirrors.count > 0) _mm_sfence();  // this thread's streamed stores
  }
}

// The portable SumSquares' eight accumulators acc[j] (element i + j of each group
// of 8) as two vectors of doubles, combined in its order.
HEIRETSU_AVX2 double SumSquaresChunk(const float* x, int64_t n) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
    const __m256d b = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  }
  alignas(32) double acc[8];
  _mm256_store_pd(acc, lo);
  _mm256_store_pd(acc + 4, hi);
  for (; i < n; ++i) acc[0] += static_cast<double>(x[i]) * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// SumCopies (below) on the elements [lo, hi) of one SumSquares chunk: the sums
// written, their squares in SumSquaresChunk's eight accumulators.
HEIRETSU_AVX2 double SumCopiesChunk(const float* const* copies, int count, float* out,
                                    int64_t lo, int64_t hi, bool average, bool sum_squares) {
  const float inv = 1.0f / static_cast<float>(count);
  __m256d acc_lo = _mm256_setzero_pd(), acc_hi = _mm256_setzero_pd();
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8) {
    __m256 v = _mm256_loadu_ps(copies[0] + i);
    for (int c = 1; c < count; ++c) v = _mm256_add_ps(v, _mm256_loadu_ps(copies[c] + i));
    if (average) v = _mm256_mul_ps(v, _mm256_set1_ps(inv));
    _mm256_storeu_ps(out + i, v);
    if (sum_squares) {
      const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
      const __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      acc_lo = _mm256_fmadd_pd(a, a, acc_lo);
      acc_hi = _mm256_fmadd_pd(b, b, acc_hi);
    }
  }
  alignas(32) double acc[8];
  _mm256_store_pd(acc, acc_lo);
  _mm256_store_pd(acc + 4, acc_hi);
  for (; i < hi; ++i) {
    float v = copies[0][i];
    for (int c = 1; c < count; ++c) v += copies[c][i];
    if (average) v *= inv;
    out[i] = v;
    acc[0] += static_cast<double>(v) * v;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// GELU as in the portable loop: y = v sigmoid(2u), u = sqrt(2/pi) (v + 0.044715 v^3).
HEIRETSU_AVX2_INLINE __m256 GeluSigmoid(__m256 v, __m256* du) {
  const __m256 k = _mm256_set1_ps(static_cast<float>(kGeluScale));
  const __m256 c = _mm256_set1_ps(static_cast<float>(kGeluCubic));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 v2 = _mm256_mul_ps(v, v);
  const __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, v2), v, v));
  if (du) *du = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_set1_ps(static_cast<float>(3.0 * kGeluCubic)), v2, one));
  return _mm256_div_ps(one, _mm256_add_ps(one, Exp(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u))));
}

HEIRETSU_AVX2 void GeluForward(const float* x, float* y, int64_t n) {
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t b = 0; b < n; b += kBlock)
    for (int64_t i = b; i < std::min(n, b + kBlock); i += 8) {
      const int64_t w = n - i;
      const __m256 v = Load(x + i, w);
      Save(y + i, _mm256_mul_ps(v, GeluSigmoid(v, nullptr)), w);
    }
}

HEIRETSU_AVX2 void GeluBackward(const float* dy, const float* x, float* dx, int64_t n,
                                bool accumulate) {
  const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t b = 0; b < n; b += kBlock)
    for (int64_t i = b; i < std::min(n, b + kBlock); i += 8) {
      const int64_t w = n - i;
      const __m256 v = Load(x + i, w);
      __m256 du;
      const __m256 sig = GeluSigmoid(v, &du);
      // sig + v sig (1 - sig) 2 du
      const __m256 grad = _mm256_fmadd_ps(
          _mm256_mul_ps(_mm256_mul_ps(v, sig), _mm256_sub_ps(one, sig)), _mm256_mul_ps(two, du),
          sig);
      Put(dx + i, _mm256_mul_ps(Load(dy + i, w), grad), w, accumulate);
    }
}

HEIRETSU_AVX2_INLINE __m256 Sigmoid(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, Exp(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

HEIRETSU_AVX2 void SwigluForward(const float* gate, const float* up, float* y, int64_t n) {
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t b = 0; b < n; b += kBlock)
    for (int64_t i = b; i < std::min(n, b + kBlock); i += 8) {
      const int64_t w = n - i;
      const __m256 g = Load(gate + i, w);
      Save(y + i, _mm256_mul_ps(_mm256_mul_ps(g, Sigmoid(g)), Load(up + i, w)), w);
    }
}

HEIRETSU_AVX2 void SwigluBackward(const float* dy, const float* gate, const float* up,
                                  float* dgate, float* dup, int64_t n, bool accumulate) {
  const __m256 one = _mm256_set1_ps(1.0f);
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t b = 0; b < n; b += kBlock)
    for (int64_t i = b; i < std::min(n, b + kBlock); i += 8) {
      const int64_t w = n - i;
      const __m256 g = Load(gate + i, w), d = Load(dy + i, w);
      const __m256 sig = Sigmoid(g);
      // dy up sig (1 + g (1 - sig))
      const __m256 dg = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, Load(up + i, w)), sig),
                                      _mm256_fmadd_ps(g, _mm256_sub_ps(one, sig), one));
      Put(dgate + i, dg, w, accumulate);
      Put(dup + i, _mm256_mul_ps(d, _mm256_mul_ps(g, sig)), w, accumulate);
    }
}

// The largest of x[0, n), n >= 1.
HEIRETSU_AVX2 float RowMax(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float r = vec::Max(m);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// sum_i exp(x[i] - mx) over [0, n), in double: 8 lanes widened into 8 double
// accumulators, combined in vec.h's order, then the tail.
HEIRETSU_AVX2 double RowSumExp(const float* x, int64_t n, float mx) {
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    vec::AddWide(Exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx)), &lo, &hi);
  if (i < n) vec::AddWide(_mm256_and_ps(Exp(_mm256_sub_ps(Load(x + i, n - i), vmx)),
                                        _mm256_castsi256_ps(vec::TailMask(n - i))),
                          &lo, &hi);
  return vec::Sum(_mm256_add_pd(lo, hi));
}

// One row of the cross-entropy gradient: d[i] (+)= scale (exp(x[i] - lse) - [i ==
// target]) for i < classes, scale (0 - [i == target]) for the padding up to n.
HEIRETSU_AVX2 void CrossEntropyGradRow(const float* x, float lse, float scale, int64_t target,
                                       int64_t classes, int64_t n, float* d, bool accumulate) {
  const __m256 vl = _mm256_set1_ps(lse), vs = _mm256_set1_ps(scale);
  const __m256 idx = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = 0; i < classes; i += 8) {
    const int64_t w = classes - i;
    const __m256 p = Exp(_mm256_sub_ps(Load(x + i, w), vl));
    __m256 g = _mm256_mul_ps(vs, p);
    if (target >= i && target < i + 8) {
      const __m256 hit = _mm256_cmp_ps(idx, _mm256_set1_ps(static_cast<float>(target - i)),
                                       _CMP_EQ_OQ);
      g = _mm256_blendv_ps(g, _mm256_mul_ps(vs, _mm256_sub_ps(p, _mm256_set1_ps(1.0f))), hit);
    }
    Put(d + i, g, w, accumulate);
  }
  for (int64_t i = classes; i < n; ++i) {
    const float g = scale * (0.0f - (i == target ? 1.0f : 0.0f));
    d[i] = accumulate ? d[i] + g : g;
  }
}

// AttendRow (below) for head_dim % 8 == 0: scores by 8-lane dot products, the
// exponentials 8 at a time, out = sum_j p_j v_j / sum_j p_j with out in registers,
// 32 columns (or 8) at a time.
HEIRETSU_AVX2 float AttendRow(const float* q, const float* keys, const float* values,
                              int64_t stride, int64_t last, int64_t head_dim, float scale,
                              float* p, float* out) {
  const int64_t n = last + 1;
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    p[j] = vec::Dot(q, keys + j * stride, head_dim) * scale;
    mx = std::max(mx, p[j]);
  }
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const int64_t w = n - j;
    __m256 e = Exp(_mm256_sub_ps(Load(p + j, w), vmx));
    if (w < 8) e = _mm256_and_ps(e, _mm256_castsi256_ps(vec::TailMask(w)));
    Save(p + j, e, w);
    acc = _mm256_add_ps(acc, e);
  }
  const float sum = vec::Sum(acc);
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  int64_t d0 = 0;
  for (; d0 + 32 <= head_dim; d0 += 32) {
    __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
    for (int64_t j = 0; j < n; ++j) {
      const float* vj = values + j * stride + d0;
      const __m256 pj = _mm256_set1_ps(p[j]);
      o0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj), o0);
      o1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 8), o1);
      o2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 16), o2);
      o3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(vj + 24), o3);
    }
    _mm256_storeu_ps(out + d0, _mm256_mul_ps(o0, inv));
    _mm256_storeu_ps(out + d0 + 8, _mm256_mul_ps(o1, inv));
    _mm256_storeu_ps(out + d0 + 16, _mm256_mul_ps(o2, inv));
    _mm256_storeu_ps(out + d0 + 24, _mm256_mul_ps(o3, inv));
  }
  for (; d0 < head_dim; d0 += 8) {
    __m256 o = _mm256_setzero_ps();
    for (int64_t j = 0; j < n; ++j)
      o = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(values + j * stride + d0), o);
    _mm256_storeu_ps(out + d0, _mm256_mul_ps(o, inv));
  }
  return mx + std::log(sum);
}

// One query row of attention's blocked forward, from its scores s_j = q . k_j (j <
// n): s_j becomes softmax_j(s scale); returns the log-sum-exp of the scaled scores.
HEIRETSU_AVX2 float SoftmaxRow(float* s, int64_t n, float scale) {
  const __m256 vscale = _mm256_set1_ps(scale);
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < n; j += 8) {
    const int64_t w = n - j;
    const __m256 x = _mm256_mul_ps(Load(s + j, w), vscale);
    Save(s + j, x, w);
    const __m256 lanes = w >= 8 ? x : _mm256_blendv_ps(m, x, _mm256_castsi256_ps(vec::TailMask(w)));
    m = _mm256_max_ps(m, lanes);
  }
  const float mx = vec::Max(m);
  const __m256 vmx = _mm256_set1_ps(mx);
  __m256 sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < n; j += 8) {
    const int64_t w = n - j;
    const __m256 e = Exp(_mm256_sub_ps(Load(s + j, w), vmx));
    Save(s + j, e, w);
    sum = _mm256_add_ps(sum,
                        w >= 8 ? e : _mm256_and_ps(e, _mm256_castsi256_ps(vec::TailMask(w))));
  }
  const float total = vec::Sum(sum);
  const __m256 inv = _mm256_set1_ps(1.0f / total);
  for (int64_t j = 0; j < n; j += 8) Save(s + j, _mm256_mul_ps(Load(s + j, n - j), inv), n - j);
  return mx + std::log(total);
}

// One query row of attention's backward, from its scores s_j = q . k_j and dp_j =
// dout . v_j (j < n): s_j becomes p_j = exp(s_j scale - lse) and dp_j becomes ds_j
// = p_j (dp_j - delta) scale, delta = dout . out (= sum_j p_j dp_j).
HEIRETSU_AVX2 void AttentionGradScores(float* s, float* dp, int64_t n, float scale, float lse,
                                       const float* dot, const float* ot, int64_t head_dim) {
  const float delta = vec::Dot(dot, ot, head_dim);
  const __m256 vscale = _mm256_set1_ps(scale), vlse = _mm256_set1_ps(lse);
  const __m256 vdelta = _mm256_set1_ps(delta);
  for (int64_t j = 0; j < n; j += 8) {
    const int64_t w = n - j;
    const __m256 p = Exp(_mm256_fmsub_ps(Load(s + j, w), vscale, vlse));
    Save(s + j, p, w);
    Save(dp + j, _mm256_mul_ps(_mm256_mul_ps(p, _mm256_sub_ps(Load(dp + j, w), vdelta)), vscale),
         w);
  }
}

// One query row t of causal attention's backward, head_dim % 8 == 0: the scores
// and dp = dout . v_j by dot products, p and ds 8 at a time, then dv_j += p_j dout,
// dk_j += ds_j q, dq += ds_j k_j. `s` and `dp` have room for t + 1 values.
HEIRETSU_AVX2 void AttentionGradRow(const float* qt, const float* dot, const float* ot,
                                    const float* keys, const float* values, float* dkeys,
                                    float* dvalues, int64_t stride, int64_t t, int64_t head_dim,
                                    float scale, float row_lse, float* dqt, float* s,
                                    float* dp) {
  const int64_t n = t + 1;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = vec::Dot(qt, keys + j * stride, head_dim);
    dp[j] = vec::Dot(dot, values + j * stride, head_dim);
  }
  AttentionGradScores(s, dp, n, scale, row_lse, dot, ot, head_dim);
  for (int64_t j = 0; j < n; ++j) {
    vec::Axpy(s[j], dot, dvalues + j * stride, head_dim);
    vec::Axpy(dp[j], keys + j * stride, dqt, head_dim);
    vec::Axpy(dp[j], qt, dkeys + j * stride, head_dim);
  }
}

}  // namespace avx2

template <typename T>
void Gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          const T* b, T beta, T* c) {
  BlasGemm(trans_a, trans_b, m, n, k, alpha, a, trans_a ? m : k, b, trans_b ? k : n, beta, c, n);
}

template <typename T>
void LinearForward(const T* x, const T* w, const T* bias, T* y, int64_t rows, int64_t in,
                   int64_t out) {
  Gemm<T>(false, true, rows, out, in, T(1), x, w, T(0), y);
  if (!bias) return;
#pragma omp parallel for schedule(static) if (Parallel(rows * out))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) y[r * out + o] += bias[o];
}

template <typename T>
void LinearBackward(const T* dy, const T* x, const T* w, T* dx, T* dw, T* bias_grad,
                    int64_t rows, int64_t in, int64_t out, bool accumulate_dx, bool overwrite_dw) {
  if (dx) Gemm<T>(false, false, rows, in, out, T(1), dy, w, accumulate_dx ? T(1) : T(0), dx);
  if (dw) Gemm<T>(true, false, out, in, rows, T(1), dy, x, overwrite_dw ? T(0) : T(1), dw);
  if (!bias_grad) return;
#pragma omp parallel for schedule(static) if (Parallel(rows * out))
  for (int64_t o0 = 0; o0 < out; o0 += kColumns) {
    const int64_t w = std::min(kColumns, out - o0);
    T sum[kColumns] = {};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < w; ++o) sum[o] += dy[r * out + o0 + o];
    for (int64_t o = 0; o < w; ++o) Store(&bias_grad[o0 + o], sum[o], !overwrite_dw);
  }
}

template <typename T>
int64_t EmbeddingForward(const int32_t* ids, const T* table, const T* positions, T* out,
                         int64_t rows, int64_t seq, int64_t vocab, int64_t c, int64_t vocab_begin,
                         int64_t vocab_total, int64_t position_offset) {
  if (vocab_total < 0) vocab_total = vocab;
  for (int64_t r = 0; r < rows; ++r)
    if (ids[r] < 0 || ids[r] >= vocab_total) return r;
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * c))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t id = static_cast<int64_t>(ids[r]) - vocab_begin;
    const T* row = id >= 0 && id < vocab ? table + id * c : nullptr;
    const T* pos = positions ? positions + (position_offset + r % seq) * c : nullptr;
    for (int64_t i = 0; i < c; ++i) out[r * c + i] = (row ? row[i] : T(0)) + (pos ? pos[i] : T(0));
  }
  return -1;
}

template <typename T>
void EmbeddingBackward(const int32_t* ids, const T* dout, T* dtable, T* dpositions, int64_t rows,
                       int64_t seq, int64_t c, int64_t vocab_begin, int64_t vocab) {
  // Scatter-add: rows with equal ids hit the same table row, so columns are split
  // across threads instead and each thread walks every row in order.
#pragma omp parallel for schedule(static) if (Parallel(rows * c))
  for (int64_t i = 0; i < c; ++i) {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t id = static_cast<int64_t>(ids[r]) - vocab_begin;
      if (vocab < 0 || (id >= 0 && id < vocab)) dtable[id * c + i] += dout[r * c + i];
      if (dpositions) dpositions[(r % seq) * c + i] += dout[r * c + i];
    }
  }
}

template <typename T>
void LayerNormForward(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t rows,
                      int64_t c, double eps) {
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * c))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    double mu = 0;
    for (int64_t i = 0; i < c; ++i) mu += xr[i];
    mu /= c;
    double var = 0;
    for (int64_t i = 0; i < c; ++i) var += (xr[i] - mu) * (xr[i] - mu);
    var /= c;
    double rs = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < c; ++i) y[r * c + i] = static_cast<T>((xr[i] - mu) * rs * w[i] + b[i]);
    mean[r] = static_cast<T>(mu);
    rstd[r] = static_cast<T>(rs);
  }
}

template <typename T>
void LayerNormBackward(const T* dy, const T* x, const T* w, const T* mean, const T* rstd, T* dx,
                       T* dw, T* db, int64_t rows, int64_t c, bool accumulate_dx,
                       bool overwrite_dw) {
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * c))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    const T* dyr = dy + r * c;
    double mean_g = 0, mean_gx = 0;
    for (int64_t i = 0; i < c; ++i) {
      double xhat = (xr[i] - mean[r]) * rstd[r];
      double g = static_cast<double>(dyr[i]) * w[i];
      mean_g += g;
      mean_gx += g * xhat;
    }
    mean_g /= c;
    mean_gx /= c;
    for (int64_t i = 0; i < c; ++i) {
      double xhat = (xr[i] - mean[r]) * rstd[r];
      double g = static_cast<double>(dyr[i]) * w[i];
      Store(&dx[r * c + i], static_cast<T>(rstd[r] * (g - mean_g - xhat * mean_gx)),
            accumulate_dx);
    }
  }
#pragma omp parallel for schedule(static) if (Parallel(rows * c))
  for (int64_t i0 = 0; i0 < c; i0 += kColumns) {
    const int64_t w = std::min(kColumns, c - i0);
    T sw[kColumns] = {}, sb[kColumns] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* dyr = dy + r * c + i0;
      const T* xr = x + r * c + i0;
      const T mr = mean[r], sr = rstd[r];
      for (int64_t i = 0; i < w; ++i) {
        T d = dyr[i];
        sw[i] += d * (xr[i] - mr) * sr;
        sb[i] += d;
      }
    }
    for (int64_t i = 0; i < w; ++i) {
      Store(&dw[i0 + i], sw[i], !overwrite_dw);
      Store(&db[i0 + i], sb[i], !overwrite_dw);
    }
  }
}

template <typename T>
void RMSNormForward(const T* x, const T* w, T* y, T* rstd, int64_t rows, int64_t c, double eps) {
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * c))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    double ms = 0;
    for (int64_t i = 0; i < c; ++i) ms += static_cast<double>(xr[i]) * xr[i];
    double rs = 1.0 / std::sqrt(ms / c + eps);
    for (int64_t i = 0; i < c; ++i) y[r * c + i] = static_cast<T>(xr[i] * rs * w[i]);
    rstd[r] = static_cast<T>(rs);
  }
}

template <typename T>
void RMSNormBackward(const T* dy, const T* x, const T* w, const T* rstd, T* dx, T* dw,
                     int64_t rows, int64_t c, bool accumulate_dx, bool overwrite_dw) {
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * c))
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * c;
    const T* dyr = dy + r * c;
    double rs = rstd[r];
    double dot = 0;
    for (int64_t i = 0; i < c; ++i) dot += static_cast<double>(dyr[i]) * w[i] * xr[i];
    double k = rs * rs * rs * dot / c;
    for (int64_t i = 0; i < c; ++i)
      Store(&dx[r * c + i], static_cast<T>(rs * dyr[i] * w[i] - xr[i] * k), accumulate_dx);
  }
#pragma omp parallel for schedule(static) if (Parallel(rows * c))
  for (int64_t i0 = 0; i0 < c; i0 += kColumns) {
    const int64_t w = std::min(kColumns, c - i0);
    T sw[kColumns] = {};
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < w; ++i) sw[i] += dy[r * c + i0 + i] * x[r * c + i0 + i] * rstd[r];
    for (int64_t i = 0; i < w; ++i) Store(&dw[i0 + i], sw[i], !overwrite_dw);
  }
}

// GELU's tanh form rewritten with 0.5 (1 + tanh(u)) = sigmoid(2u): one exp
// instead of a tanh, which is several times cheaper in libm (measured: GELU and its
// gradient were 15% of a GPT-2 small CPU step with tanh).
template <typename T>
void GeluForward(const T* x, T* y, int64_t n) {
  if constexpr (std::is_same_v<T, float>)
    if (vec::HasAvx2()) return avx2::GeluForward(x, y, n);
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i];
    T u = static_cast<T>(kGeluScale) * (v + static_cast<T>(kGeluCubic) * v * v * v);
    y[i] = v / (T(1) + std::exp(T(-2) * u));
  }
}

template <typename T>
void GeluBackward(const T* dy, const T* x, T* dx, int64_t n, bool accumulate_dx) {
  if constexpr (std::is_same_v<T, float>)
    if (vec::HasAvx2()) return avx2::GeluBackward(dy, x, dx, n, accumulate_dx);
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t i = 0; i < n; ++i) {
    T v = x[i];
    T u = static_cast<T>(kGeluScale) * (v + static_cast<T>(kGeluCubic) * v * v * v);
    T sig = T(1) / (T(1) + std::exp(T(-2) * u));
    T du = static_cast<T>(kGeluScale) * (T(1) + T(3) * static_cast<T>(kGeluCubic) * v * v);
    T grad = sig + v * sig * (T(1) - sig) * T(2) * du;
    Store(&dx[i], dy[i] * grad, accumulate_dx);
  }
}

template <typename T>
void SwigluForward(const T* gate, const T* up, T* y, int64_t n) {
  if constexpr (std::is_same_v<T, float>)
    if (vec::HasAvx2()) return avx2::SwigluForward(gate, up, y, n);
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t i = 0; i < n; ++i) {
    T g = gate[i];
    y[i] = g / (T(1) + std::exp(-g)) * up[i];
  }
}

template <typename T>
void SwigluBackward(const T* dy, const T* gate, const T* up, T* dgate, T* dup, int64_t n,
                    bool accumulate_dx) {
  if constexpr (std::is_same_v<T, float>)
    if (vec::HasAvx2()) return avx2::SwigluBackward(dy, gate, up, dgate, dup, n, accumulate_dx);
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t i = 0; i < n; ++i) {
    T g = gate[i];
    T sig = T(1) / (T(1) + std::exp(-g));
    T silu = g * sig;
    Store(&dgate[i], dy[i] * up[i] * sig * (T(1) + g * (T(1) - sig)), accumulate_dx);
    Store(&dup[i], dy[i] * silu, accumulate_dx);
  }
}

template <typename T>
void AddForward(const T* a, const T* b, T* y, int64_t n) {
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <typename T>
void AccumulateForward(const T* src, T* dst, int64_t n, bool accumulate) {
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t i = 0; i < n; ++i) Store(&dst[i], src[i], accumulate);
}

namespace {
// Rotates (or, with sign = -1, rotates back) each pair of every head.
template <typename T>
void Rope(const T* x, T* y, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          double theta, double sign, bool accumulate, int64_t position_offset = 0) {
  const int64_t width = heads * head_dim;
#pragma omp parallel for schedule(static) if (Parallel(batch * seq * heads * head_dim))
  for (int64_t bt = 0; bt < batch * seq; ++bt) {
    const int64_t t = position_offset + bt % seq;
    for (int64_t i = 0; i < head_dim / 2; ++i) {
      double freq = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
      double angle = static_cast<double>(t) * freq;
      T cs = static_cast<T>(std::cos(angle)), sn = static_cast<T>(sign * std::sin(angle));
      for (int64_t h = 0; h < heads; ++h) {
        int64_t at = bt * width + h * head_dim + 2 * i;
        T x0 = x[at], x1 = x[at + 1];
        Store(&y[at], x0 * cs - x1 * sn, accumulate);
        Store(&y[at + 1], x0 * sn + x1 * cs, accumulate);
      }
    }
  }
}
}  // namespace

template <typename T>
void RopeForward(const T* x, T* y, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                 double theta, int64_t position_offset) {
  Rope(x, y, batch, seq, heads, head_dim, theta, 1.0, false, position_offset);
}

template <typename T>
void RopeBackward(const T* dy, T* dx, int64_t batch, int64_t seq, int64_t heads,
                  int64_t head_dim, double theta, bool accumulate_dx) {
  Rope(dy, dx, batch, seq, heads, head_dim, theta, -1.0, accumulate_dx);
}

namespace {
// One query of causal attention over key and value rows 0 .. last (row j at keys + j *
// stride, values likewise): out = sum_j softmax_j(q . k_j * scale) v_j, the row
// maxima subtracted; returns the log-sum-exp of the scaled scores. `p` has room for
// last + 1 scores. The training forward and the decode step share it, so both sum in
// the same order.
template <typename T>
T AttendRow(const T* q, const T* keys, const T* values, int64_t stride, int64_t last,
            int64_t head_dim, T scale, T* p, T* out) {
  if constexpr (std::is_same_v<T, float>)
    if (vec::HasAvx2() && head_dim % 8 == 0)
      return avx2::AttendRow(q, keys, values, stride, last, head_dim, scale, p, out);
  T mx = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j <= last; ++j) {
    const T* kj = keys + j * stride;
    T s = 0;
    for (int64_t d = 0; d < head_dim; ++d) s += q[d] * kj[d];
    p[j] = s * scale;
    mx = std::max(mx, p[j]);
  }
  T sum = 0;
  for (int64_t j = 0; j <= last; ++j) {
    p[j] = std::exp(p[j] - mx);
    sum += p[j];
  }
  std::fill(out, out + head_dim, T(0));
  for (int64_t j = 0; j <= last; ++j) {
    const T* vj = values + j * stride;
    const T pj = p[j] / sum;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += pj * vj[d];
  }
  return mx + std::log(sum);
}
}  // namespace

template <typename T>
void AttentionForwardRows(const T* q, const T* k, const T* v, T* out, T* lse, int64_t batch,
                          int64_t seq, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  const int64_t group = heads / kv_heads;
  const int64_t qw = heads * head_dim, kw = kv_heads * head_dim;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
#pragma omp parallel if (Parallel(batch * heads * seq * seq * head_dim))
  {
    std::vector<T> p(seq);
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t kh = h / group;
        for (int64_t t = 0; t < seq; ++t)
          lse[(b * heads + h) * seq + t] =
              AttendRow(q + (b * seq + t) * qw + h * head_dim, k + b * seq * kw + kh * head_dim,
                        v + b * seq * kw + kh * head_dim, kw, t, head_dim, scale, p.data(),
                        out + (b * seq + t) * qw + h * head_dim);
      }
    }
  }
}

template <typename T>
void AttentionForwardBlocked(const T* q, const T* k, const T* v, T* out, T* lse, int64_t batch,
                             int64_t seq, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  const int64_t group = heads / kv_heads;
  const int64_t qw = heads * head_dim, kw = kv_heads * head_dim;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  const int64_t rows = std::min(kAttentionBlockRows, seq);
  std::vector<T> p(rows * seq);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kh = h / group;
      const T* qh = q + b * seq * qw + h * head_dim;
      const T* kh_ = k + b * seq * kw + kh * head_dim;
      const T* vh = v + b * seq * kw + kh * head_dim;
      T* lseh = lse + (b * heads + h) * seq;
      for (int64_t t0 = 0; t0 < seq; t0 += rows) {
        const int64_t m = std::min(rows, seq - t0), n = t0 + m;  // queries t0.., keys 0..n-1
        BlasGemm(false, true, m, n, head_dim, T(1), qh + t0 * qw, qw, kh_, kw, T(0), p.data(), n);
#pragma omp parallel for schedule(static) if (Parallel(m * n * 4))
        for (int64_t i = 0; i < m; ++i) {
          const int64_t t = t0 + i, keys = t + 1;
          T* pi = p.data() + i * n;
          bool done = false;
          if constexpr (std::is_same_v<T, float>)
            if (vec::HasAvx2()) {
              lseh[t] = avx2::SoftmaxRow(pi, keys, scale);
              done = true;
            }
          if (!done) {
            T mx = -std::numeric_limits<T>::infinity();
            for (int64_t j = 0; j < keys; ++j) mx = std::max(mx, pi[j] *= scale);
            T sum = 0;
            for (int64_t j = 0; j < keys; ++j) sum += pi[j] = std::exp(pi[j] - mx);
            for (int64_t j = 0; j < keys; ++j) pi[j] /= sum;
            lseh[t] = mx + std::log(sum);
          }
          std::fill(pi + keys, pi + n, T(0));  // causal: keys after the query
        }
        BlasGemm(false, false, m, head_dim, n, T(1), p.data(), n, vh, kw, T(0),
                 out + (b * seq + t0) * qw + h * head_dim, qw);
      }
    }
}

template <typename T>
void AttentionForward(const T* q, const T* k, const T* v, T* out, T* lse, int64_t batch,
                      int64_t seq, int64_t heads, int64_t kv_heads, int64_t head_dim) {
  (seq >= kAttentionBlockedSeq ? AttentionForwardBlocked<T> : AttentionForwardRows<T>)(
      q, k, v, out, lse, batch, seq, heads, kv_heads, head_dim);
}

template <typename T>
void CachedAttentionForward(const T* q, const T* k, const T* v, T* k_cache, T* v_cache, T* out,
                            int64_t batch, int64_t seq, int64_t heads, int64_t kv_heads,
                            int64_t head_dim, int64_t context, int64_t position) {
  const int64_t group = heads / kv_heads;
  const int64_t qw = heads * head_dim, kw = kv_heads * head_dim;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      std::copy_n(k + (b * seq + t) * kw, kw, k_cache + (b * context + position + t) * kw);
      std::copy_n(v + (b * seq + t) * kw, kw, v_cache + (b * context + position + t) * kw);
    }
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
#pragma omp parallel if (Parallel(batch * heads * (position + seq) * seq * head_dim))
  {
    std::vector<T> p(position + seq);
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t kh = h / group;
        for (int64_t t = 0; t < seq; ++t)  // token t sees the cache's rows 0 .. position + t
          AttendRow(q + (b * seq + t) * qw + h * head_dim,
                    k_cache + b * context * kw + kh * head_dim,
                    v_cache + b * context * kw + kh * head_dim, kw, position + t, head_dim, scale,
                    p.data(), out + (b * seq + t) * qw + h * head_dim);
      }
    }
  }
}

template <typename T>
void AttentionBackwardRows(const T* dout, const T* q, const T* k, const T* v, const T* out,
                           const T* lse, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                           int64_t heads, int64_t kv_heads, int64_t head_dim,
                           bool accumulate_dx) {
  const int64_t group = heads / kv_heads;
  const int64_t qw = heads * head_dim, kw = kv_heads * head_dim;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  // One task per (batch, KV head): it owns dk and dv of that head and dq of the
  // query heads in its group, so no two threads write the same element.
#pragma omp parallel if (Parallel(batch * heads * seq * seq * head_dim))
  {
  std::vector<T> s_row(seq), dp_row(seq);
#pragma omp for schedule(static) collapse(2)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t kh = 0; kh < kv_heads; ++kh) {
      if (!accumulate_dx) {
        for (int64_t t = 0; t < seq; ++t) {
          std::fill_n(dk + (b * seq + t) * kw + kh * head_dim, head_dim, T(0));
          std::fill_n(dv + (b * seq + t) * kw + kh * head_dim, head_dim, T(0));
          for (int64_t h = kh * group; h < (kh + 1) * group; ++h)
            std::fill_n(dq + (b * seq + t) * qw + h * head_dim, head_dim, T(0));
        }
      }
      for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
        for (int64_t t = 0; t < seq; ++t) {
          const T* qt = q + (b * seq + t) * qw + h * head_dim;
          const T* dot = dout + (b * seq + t) * qw + h * head_dim;
          const T* ot = out + (b * seq + t) * qw + h * head_dim;
          T* dqt = dq + (b * seq + t) * qw + h * head_dim;
          const T row_lse = lse[(b * heads + h) * seq + t];
          if constexpr (std::is_same_v<T, float>)
            if (vec::HasAvx2() && head_dim % 8 == 0) {
              avx2::AttentionGradRow(qt, dot, ot, k + b * seq * kw + kh * head_dim,
                                     v + b * seq * kw + kh * head_dim,
                                     dk + b * seq * kw + kh * head_dim,
                                     dv + b * seq * kw + kh * head_dim, kw, t, head_dim, scale,
                                     row_lse, dqt, s_row.data(), dp_row.data());
              continue;
            }
          T delta = 0;  // sum_j p_j dp_j = dout . out
          for (int64_t d = 0; d < head_dim; ++d) delta += dot[d] * ot[d];
          for (int64_t j = 0; j <= t; ++j) {
            const T* kj = k + (b * seq + j) * kw + kh * head_dim;
            const T* vj = v + (b * seq + j) * kw + kh * head_dim;
            T s = 0, dp = 0;
            for (int64_t d = 0; d < head_dim; ++d) {
              s += qt[d] * kj[d];
              dp += dot[d] * vj[d];
            }
            T p = std::exp(s * scale - row_lse);
            T ds = p * (dp - delta) * scale;
            T* dkj = dk + (b * seq + j) * kw + kh * head_dim;
            T* dvj = dv + (b * seq + j) * kw + kh * head_dim;
            for (int64_t d = 0; d < head_dim; ++d) {
              dvj[d] += p * dot[d];
              dqt[d] += ds * kj[d];
              dkj[d] += ds * qt[d];
            }
          }
        }
      }
    }
  }
  }
}

template <typename T>
void AttentionBackwardBlocked(const T* dout, const T* q, const T* k, const T* v, const T* out,
                              const T* lse, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                              int64_t heads, int64_t kv_heads, int64_t head_dim,
                              bool accumulate_dx) {
  const int64_t group = heads / kv_heads;
  const int64_t qw = heads * head_dim, kw = kv_heads * head_dim;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  if (!accumulate_dx) {
    std::fill_n(dq, batch * seq * qw, T(0));
    std::fill_n(dk, batch * seq * kw, T(0));
    std::fill_n(dv, batch * seq * kw, T(0));
  }
  const int64_t rows = std::min(kAttentionBlockRows, seq);
  std::vector<T> p(rows * seq), ds(rows * seq);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t kh = h / group;
      const T* qh = q + b * seq * qw + h * head_dim;
      const T* doh = dout + b * seq * qw + h * head_dim;
      const T* oh = out + b * seq * qw + h * head_dim;
      const T* kh_ = k + b * seq * kw + kh * head_dim;
      const T* vh = v + b * seq * kw + kh * head_dim;
      T* dqh = dq + b * seq * qw + h * head_dim;
      T* dkh = dk + b * seq * kw + kh * head_dim;
      T* dvh = dv + b * seq * kw + kh * head_dim;
      const T* lseh = lse + (b * heads + h) * seq;
      for (int64_t t0 = 0; t0 < seq; t0 += rows) {
        const int64_t m = std::min(rows, seq - t0), n = t0 + m;  // queries t0.., keys 0..n-1
        BlasGemm(false, true, m, n, head_dim, T(1), qh + t0 * qw, qw, kh_, kw, T(0), p.data(), n);
        BlasGemm(false, true, m, n, head_dim, T(1), doh + t0 * qw, qw, vh, kw, T(0), ds.data(),
                 n);
#pragma omp parallel for schedule(static) if (Parallel(m * n * 4))
        for (int64_t i = 0; i < m; ++i) {
          const int64_t t = t0 + i, keys = t + 1;
          T* pi = p.data() + i * n;
          T* dsi = ds.data() + i * n;
          const T* dot = doh + t * qw;
          const T* ot = oh + t * qw;
          bool done = false;
          if constexpr (std::is_same_v<T, float>)
            if (vec::HasAvx2() && head_dim % 8 == 0) {
              avx2::AttentionGradScores(pi, dsi, keys, scale, lseh[t], dot, ot, head_dim);
              done = true;
            }
          if (!done) {
            T delta = 0;
            for (int64_t d = 0; d < head_dim; ++d) delta += dot[d] * ot[d];
            for (int64_t j = 0; j < keys; ++j) {
              pi[j] = std::exp(pi[j] * scale - lseh[t]);
              dsi[j] = pi[j] * (dsi[j] - delta) * scale;
            }
          }
          std::fill(pi + keys, pi + n, T(0));  // causal: keys after the query
          std::fill(dsi + keys, dsi + n, T(0));
        }
        // dv[0..n) += p^T dout, dq[t0..t0+m) += ds k, dk[0..n) += ds^T q.
        BlasGemm(true, false, n, head_dim, m, T(1), p.data(), n, doh + t0 * qw, qw, T(1), dvh, kw);
        BlasGemm(false, false, m, head_dim, n, T(1), ds.data(), n, kh_, kw, T(1), dqh + t0 * qw,
                 qw);
        BlasGemm(true, false, n, head_dim, m, T(1), ds.data(), n, qh + t0 * qw, qw, T(1), dkh, kw);
      }
    }
}

template <typename T>
void AttentionBackward(const T* dout, const T* q, const T* k, const T* v, const T* out,
                       const T* lse, T* dq, T* dk, T* dv, int64_t batch, int64_t seq,
                       int64_t heads, int64_t kv_heads, int64_t head_dim, bool accumulate_dx) {
  (seq >= kAttentionBlockedSeq ? AttentionBackwardBlocked<T> : AttentionBackwardRows<T>)(
      dout, q, k, v, out, lse, dq, dk, dv, batch, seq, heads, kv_heads, head_dim, accumulate_dx);
}

template <typename T>
int64_t CrossEntropyForward(const T* logits, const int32_t* targets, T* loss, T* lse,
                            int64_t rows, int64_t vocab, int64_t valid) {
  const int64_t classes = valid < 0 ? vocab : valid;
  for (int64_t r = 0; r < rows; ++r)
    if (targets[r] < 0 || targets[r] >= classes) return r;
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    const T* lr = logits + r * vocab;
    T mx;
    double sum = 0;
    if (UseAvx2<T>()) {
      if constexpr (std::is_same_v<T, float>) {
        mx = avx2::RowMax(lr, classes);
        sum = avx2::RowSumExp(lr, classes, mx);
      }
    } else {
      mx = *std::max_element(lr, lr + classes);
      for (int64_t i = 0; i < classes; ++i) sum += std::exp(static_cast<double>(lr[i] - mx));
    }
    lse[r] = static_cast<T>(mx + std::log(sum));
  }
  double total = 0;
  for (int64_t r = 0; r < rows; ++r)
    total += static_cast<double>(lse[r]) - logits[r * vocab + targets[r]];
  *loss = static_cast<T>(total / static_cast<double>(rows));
  return -1;
}

template <typename T>
void CrossEntropyBackward(const T* logits, const int32_t* targets, const T* lse, T dloss,
                          T* dlogits, int64_t rows, int64_t vocab, bool accumulate_dx,
                          int64_t vocab_begin, int64_t valid) {
  const T scale = dloss / static_cast<T>(rows);
  // Columns [0, classes) of this block are classes; the rest are padding.
  const int64_t classes =
      valid < 0 ? vocab : std::max<int64_t>(0, std::min(vocab, valid - vocab_begin));
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t target = static_cast<int64_t>(targets[r]) - vocab_begin;
    if constexpr (std::is_same_v<T, float>)
      if (vec::HasAvx2()) {
        avx2::CrossEntropyGradRow(logits + r * vocab, lse[r], scale, target, classes, vocab,
                                  dlogits + r * vocab, accumulate_dx);
        continue;
      }
    for (int64_t i = 0; i < vocab; ++i) {
      T p = i < classes ? std::exp(logits[r * vocab + i] - lse[r]) : T(0);
      T g = scale * (p - (i == target ? T(1) : T(0)));
      Store(&dlogits[r * vocab + i], g, accumulate_dx);
    }
  }
}

namespace {
// The number of columns of a block starting at logical column `begin` that are
// classes rather than padding.
int64_t ClassesIn(int64_t vocab, int64_t begin, int64_t valid) {
  return valid < 0 ? vocab : std::max<int64_t>(0, std::min(vocab, valid - begin));
}
}  // namespace

template <typename T>
void VocabMax(const T* logits, T* max, int64_t rows, int64_t vocab, int64_t vocab_begin,
              int64_t valid) {
  const int64_t classes = ClassesIn(vocab, vocab_begin, valid);
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    if constexpr (std::is_same_v<T, float>)
      if (vec::HasAvx2() && classes) {
        max[r] = avx2::RowMax(logits + r * vocab, classes);
        continue;
      }
    max[r] = classes ? *std::max_element(logits + r * vocab, logits + r * vocab + classes)
                     : -std::numeric_limits<T>::infinity();
  }
}

template <typename T>
int64_t VocabSumExp(const T* logits, const int32_t* targets, const T* max, T* sum, T* target,
                    int64_t rows, int64_t vocab, int64_t vocab_begin, int64_t vocab_total,
                    int64_t valid) {
  const int64_t limit = valid < 0 ? vocab_total : valid;
  for (int64_t r = 0; r < rows; ++r)
    if (targets[r] < 0 || targets[r] >= limit) return r;
  const int64_t classes = ClassesIn(vocab, vocab_begin, valid);
#pragma omp parallel for schedule(static, kGrain) if (Parallel(rows * vocab))
  for (int64_t r = 0; r < rows; ++r) {
    const T* lr = logits + r * vocab;
    double s = 0;
    if (UseAvx2<T>() && classes) {
      if constexpr (std::is_same_v<T, float>) s = avx2::RowSumExp(lr, classes, max[r]);
    } else {
      for (int64_t i = 0; i < classes; ++i) s += std::exp(static_cast<double>(lr[i] - max[r]));
    }
    sum[r] = static_cast<T>(s);
    const int64_t t = static_cast<int64_t>(targets[r]) - vocab_begin;
    target[r] = t >= 0 && t < vocab ? lr[t] : T(0);
  }
  return -1;
}

template <typename T>
void VocabLoss(const T* max, const T* sum, const T* target, T* loss, T* lse, int64_t rows) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    lse[r] = static_cast<T>(max[r] + std::log(static_cast<double>(sum[r])));
    total += static_cast<double>(lse[r]) - target[r];
  }
  *loss = static_cast<T>(total / static_cast<double>(rows));
}

//===----------------------------------------------------------------------===//
// Mixture of experts, in steps
//===----------------------------------------------------------------------===//

namespace {
// The sequences of a route: `count` of them, sequence s holding rows
// [s * seq, min(rows, (s + 1) * seq)) (each `seq` long when seq divides rows).
struct Sequences {
  int64_t seq, rows, count;
  Sequences(int64_t seq, int64_t rows)
      : seq(seq), rows(rows), count(seq > 0 ? (rows + seq - 1) / seq : 0) {}
  int64_t begin(int64_t s) const { return s * seq; }
  int64_t length(int64_t s) const { return std::min(rows, (s + 1) * seq) - s * seq; }
};

// The slots of each sequence routed to each expert before dropping, [count, E],
// recounted from `choice`; one task per sequence, each in slot order.
std::vector<int64_t> RoutedPerSequence(const Sequences& q, const int32_t* choice, int64_t experts,
                                       int64_t top_k) {
  std::vector<int64_t> routed(q.count * experts, 0);
#pragma omp parallel for schedule(static)
  for (int64_t s = 0; s < q.count; ++s) {
    int64_t* counts = routed.data() + s * experts;
    const int64_t lo = q.begin(s) * top_k, hi = (q.begin(s) + q.length(s)) * top_k;
    for (int64_t slot = lo; slot < hi; ++slot) ++counts[choice[slot]];
  }
  return routed;
}

// The place of a kept slot in an expert-major buffer [experts, slots, d]: its
// row, or -1 for a dropped slot.
inline int64_t PlaceOf(const int32_t* choice, const int32_t* pos, int64_t slot, int64_t slots) {
  return pos[slot] < 0 ? -1 : static_cast<int64_t>(choice[slot]) * slots + pos[slot];
}
}  // namespace

template <typename T>
void MoeRoute(const MoeRouteShape& s, const T* x, const T* router, double aux_coef,
              double z_coef, T* probs, T* lse, int32_t* choice, int32_t* pos, T* weight,
              int32_t* counts, T* aux, T* load) {
  const int64_t E = s.experts, K = s.top_k;
  const Sequences q(s.seq, s.rows);
  // logits = x router^T, in place in probs.
  Gemm<T>(false, true, s.rows, E, s.d, T(1), x, router, T(0), probs);
  // Softmax, log-sum-exp and top-k with renormalized weights, row by row.
#pragma omp parallel for schedule(static, kGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    T* pr = probs + r * E;
    const T mx = *std::max_element(pr, pr + E);
    double sum = 0;
    for (int64_t e = 0; e < E; ++e) sum += std::exp(static_cast<double>(pr[e] - mx));
    lse[r] = static_cast<T>(mx + std::log(sum));
    for (int64_t e = 0; e < E; ++e) pr[e] = std::exp(pr[e] - lse[r]);
    T total = 0;
    for (int64_t j = 0; j < K; ++j) {
      // The largest probability not taken yet; strictly larger wins, so the
      // lower index wins ties.
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        bool taken = false;
        for (int64_t i = 0; i < j; ++i) taken |= choice[r * K + i] == e;
        if (!taken && (best < 0 || pr[e] > pr[best])) best = e;
      }
      choice[r * K + j] = static_cast<int32_t>(best);
      weight[r * K + j] = pr[best];
      total += pr[best];
    }
    for (int64_t j = 0; j < K; ++j) weight[r * K + j] /= total;
  }
  // Capacity, sequence by sequence in slot order; per-sequence counts (kept,
  // dropped, routed) and probability sums, each sequence's by one task.
  std::vector<int64_t> kept(q.count * E, 0), dropped(q.count * E, 0);
  std::vector<double> prob_sum(q.count * E, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t sq = 0; sq < q.count; ++sq) {
    int64_t* kept_s = kept.data() + sq * E;
    int64_t* dropped_s = dropped.data() + sq * E;
    double* prob_s = prob_sum.data() + sq * E;
    const int64_t lo = q.begin(sq), hi = lo + q.length(sq);
    for (int64_t slot = lo * K; slot < hi * K; ++slot) {
      const int32_t e = choice[slot];
      if (kept_s[e] < s.capacity) {
        pos[slot] = static_cast<int32_t>(kept_s[e]);  // within the sequence, for now
        ++kept_s[e];
      } else {
        pos[slot] = -1;
        ++dropped_s[e];
      }
    }
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t e = 0; e < E; ++e) prob_s[e] += probs[r * E + e];
  }
  // Each expert's kept slots fill its region's rows in slot order: a sequence's
  // start after those the earlier sequences kept.
  std::vector<int64_t> before(q.count * E, 0);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t sq = 1; sq < q.count; ++sq)
      before[sq * E + e] = before[(sq - 1) * E + e] + kept[(sq - 1) * E + e];
#pragma omp parallel for schedule(static)
  for (int64_t sq = 0; sq < q.count; ++sq) {
    const int64_t lo = q.begin(sq), hi = lo + q.length(sq);
    for (int64_t slot = lo * K; slot < hi * K; ++slot)
      if (pos[slot] >= 0) pos[slot] += static_cast<int32_t>(before[sq * E + choice[slot]]);
  }
  // counts, load and aux, summed in sequence order.
  double balance = 0, z = 0;
  for (int64_t e = 0; e < E; ++e) {
    int64_t kept_e = 0, dropped_e = 0;
    for (int64_t sq = 0; sq < q.count; ++sq) {
      kept_e += kept[sq * E + e];
      dropped_e += dropped[sq * E + e];
    }
    counts[e] = static_cast<int32_t>(kept_e);
    load[e] = static_cast<T>(kept_e);
    load[E + e] = static_cast<T>(dropped_e);
  }
  for (int64_t sq = 0; sq < q.count; ++sq) {
    const double len = static_cast<double>(q.length(sq));
    double term = 0;
    for (int64_t e = 0; e < E; ++e) {
      const double routed =
          static_cast<double>(kept[sq * E + e] + dropped[sq * E + e]) / (len * K);
      term += routed * (prob_sum[sq * E + e] / len);
    }
    balance += term;
  }
  for (int64_t r = 0; r < s.rows; ++r) z += static_cast<double>(lse[r]) * lse[r];
  const double mean_balance = q.count ? balance / static_cast<double>(q.count) : 0.0;
  const double mean_z = s.rows ? z / static_cast<double>(s.rows) : 0.0;
  *aux = static_cast<T>(aux_coef * static_cast<double>(E) * mean_balance + z_coef * mean_z);
}

template <typename T>
void MoeRouteBackward(const MoeRouteShape& s, const T* dweight, double daux, double aux_coef,
                      double z_coef, const T* x, const T* router, const T* probs, const T* lse,
                      const int32_t* choice, T* dx, T* drouter, bool accumulate_dx) {
  const int64_t E = s.experts, K = s.top_k;
  const Sequences q(s.seq, s.rows);
  const std::vector<int64_t> routed = RoutedPerSequence(q, choice, E, K);
  std::vector<T> dlogits(s.rows * E);
  const double z_scale = s.rows ? daux * z_coef * 2.0 / static_cast<double>(s.rows) : 0.0;
#pragma omp parallel
  {
    std::vector<T> dprob(E);
#pragma omp for schedule(static, kGrain)
    for (int64_t r = 0; r < s.rows; ++r) {
      const T* pr = probs + r * E;
      const int32_t* cr = choice + r * K;
      const T* dwr = dweight + r * K;
      std::fill(dprob.begin(), dprob.end(), T(0));
      // w_j = p_{c_j} / S over the k choices: dp_{c_i} += (dw_i - sum_j dw_j w_j) / S.
      T total = 0, dot = 0;
      for (int64_t j = 0; j < K; ++j) total += pr[cr[j]];
      for (int64_t j = 0; j < K; ++j) dot += dwr[j] * pr[cr[j]] / total;
      for (int64_t j = 0; j < K; ++j) dprob[cr[j]] += (dwr[j] - dot) / total;
      // Load balance: d/dp_{r,e} of aux_coef * E * mean_s sum_e f_se P_se, P_se the
      // mean of p_{r,e} over the sequence's rows.
      const int64_t sq = r / s.seq;
      const double len = static_cast<double>(q.length(sq));
      const double balance =
          daux * aux_coef * static_cast<double>(E) / (static_cast<double>(q.count) * len);
      for (int64_t e = 0; e < E; ++e)
        dprob[e] += static_cast<T>(balance * static_cast<double>(routed[sq * E + e]) /
                                   (len * static_cast<double>(K)));
      // Softmax backward, plus the z-loss: d/dlogit of z_coef * mean_r lse_r^2.
      T sum = 0;
      for (int64_t e = 0; e < E; ++e) sum += dprob[e] * pr[e];
      const T z = static_cast<T>(z_scale) * lse[r];
      for (int64_t e = 0; e < E; ++e) dlogits[r * E + e] = pr[e] * (dprob[e] - sum) + z * pr[e];
    }
  }
  // logits = x router^T: drouter += dlogits^T x; dx (+)= dlogits router.
  Gemm<T>(true, false, E, s.d, s.rows, T(1), dlogits.data(), x, T(1), drouter);
  Gemm<T>(false, false, s.rows, s.d, E, T(1), dlogits.data(), router,
          accumulate_dx ? T(1) : T(0), dx);
}

template <typename T>
void MoeDispatch(const MoeSlotShape& s, const T* x, const int32_t* choice, const int32_t* pos,
                 T* buf) {
  const int64_t n = s.experts * s.slots * s.d;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) buf[i] = T(0);
  // Every kept slot has its own place: one writer per row of buf.
#pragma omp parallel for schedule(static, kGrain)
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t j = 0; j < s.top_k; ++j) {
      const int64_t at = PlaceOf(choice, pos, r * s.top_k + j, s.slots);
      if (at >= 0) std::copy_n(x + r * s.d, s.d, buf + at * s.d);
    }
}

template <typename T>
void MoeDispatchBackward(const MoeSlotShape& s, const T* dbuf, const int32_t* choice,
                         const int32_t* pos, T* dx, bool accumulate_dx) {
#pragma omp parallel for schedule(static, kGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    T* dxr = dx + r * s.d;
    if (!accumulate_dx) std::fill_n(dxr, s.d, T(0));
    for (int64_t j = 0; j < s.top_k; ++j) {
      const int64_t at = PlaceOf(choice, pos, r * s.top_k + j, s.slots);
      if (at < 0) continue;
      const T* src = dbuf + at * s.d;
      for (int64_t i = 0; i < s.d; ++i) dxr[i] += src[i];
    }
  }
}

template <typename T>
void MoeCombine(const MoeSlotShape& s, const T* buf, const int32_t* choice, const int32_t* pos,
                const T* weight, T* y) {
#pragma omp parallel for schedule(static, kGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    T* yr = y + r * s.d;
    std::fill_n(yr, s.d, T(0));
    for (int64_t j = 0; j < s.top_k; ++j) {
      const int64_t slot = r * s.top_k + j;
      const int64_t at = PlaceOf(choice, pos, slot, s.slots);
      if (at < 0) continue;
      const T w = weight[slot];
      const T* src = buf + at * s.d;
      for (int64_t i = 0; i < s.d; ++i) yr[i] += w * src[i];
    }
  }
}

template <typename T>
void MoeCombineBackward(const MoeSlotShape& s, const T* dy, const T* buf, const int32_t* choice,
                        const int32_t* pos, const T* weight, T* dbuf, T* dweight,
                        bool accumulate_dx) {
  const int64_t n = s.experts * s.slots * s.d;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dbuf[i] = T(0);
#pragma omp parallel for schedule(static, kGrain)
  for (int64_t r = 0; r < s.rows; ++r) {
    const T* dyr = dy + r * s.d;
    for (int64_t j = 0; j < s.top_k; ++j) {
      const int64_t slot = r * s.top_k + j;
      const int64_t at = PlaceOf(choice, pos, slot, s.slots);
      T dot = 0;
      if (at >= 0) {
        const T w = weight[slot];
        const T* src = buf + at * s.d;
        T* dst = dbuf + at * s.d;
        for (int64_t i = 0; i < s.d; ++i) {
          dst[i] = w * dyr[i];
          dot += dyr[i] * src[i];
        }
      }
      Store(&dweight[slot], dot, accumulate_dx);
    }
  }
}

// One GEMM per expert over all its rows in use, the activation (elementwise,
// parallel) between them. The rows in use of each expert's region: the sum of its
// sources' counts.
static std::vector<int64_t> ExpertRows(const MoeExpertShape& s, const int32_t* rows) {
  std::vector<int64_t> n(static_cast<size_t>(s.experts), 0);
  for (int64_t e = 0; e < s.experts; ++e)
    for (int64_t k = 0; k < s.sources; ++k) n[e] += rows[e * s.sources + k];
  return n;
}

template <typename T>
void MoeExperts(const MoeExpertShape& s, const int32_t* rows, const T* x, const T* w_in,
                const T* w_gate, const T* w_out, T* pre, T* gate_pre, T* act, T* y) {
  const int64_t xs = s.tokens * s.d, hs = s.tokens * s.f, ws = s.f * s.d;
  const std::vector<int64_t> n = ExpertRows(s, rows);
  for (int64_t e = 0; e < s.experts; ++e) {
    std::fill(y + e * xs + n[e] * s.d, y + (e + 1) * xs, T(0));
    if (n[e] == 0) continue;
    Gemm<T>(false, true, n[e], s.f, s.d, T(1), x + e * xs, w_in + e * ws, T(0), pre + e * hs);
    if (s.swiglu) {
      Gemm<T>(false, true, n[e], s.f, s.d, T(1), x + e * xs, w_gate + e * ws, T(0),
              gate_pre + e * hs);
      SwigluForward(gate_pre + e * hs, pre + e * hs, act + e * hs, n[e] * s.f);
    } else {
      GeluForward(pre + e * hs, act + e * hs, n[e] * s.f);
    }
    Gemm<T>(false, true, n[e], s.d, s.f, T(1), act + e * hs, w_out + e * ws, T(0), y + e * xs);
  }
}

template <typename T>
void MoeExpertsBackward(const MoeExpertShape& s, const int32_t* rows, const T* dy, const T* x,
                        const T* w_in, const T* w_gate, const T* w_out, const T* pre,
                        const T* gate_pre, const T* act, double dw_scale, T* dx, T* dw_in,
                        T* dw_gate, T* dw_out, bool accumulate_dx) {
  const int64_t xs = s.tokens * s.d, hs = s.tokens * s.f, ws = s.f * s.d;
  const std::vector<int64_t> n = ExpertRows(s, rows);
  const T scale = static_cast<T>(dw_scale);
  const T beta_dx = accumulate_dx ? T(1) : T(0);
  // Scratch for one expert's hidden gradients, kept between calls (allocating and
  // zeroing it every call cost ~10 ms of a 135 ms GPT-2-small-sized backward).
  thread_local std::vector<T> dact, dpre, dgate;
  dact.resize(static_cast<size_t>(hs));
  dpre.resize(static_cast<size_t>(hs));
  dgate.resize(s.swiglu ? static_cast<size_t>(hs) : 0);
  for (int64_t e = 0; e < s.experts; ++e) {
    if (!accumulate_dx) std::fill(dx + e * xs + n[e] * s.d, dx + (e + 1) * xs, T(0));
    if (n[e] == 0) continue;
    // y = act w_out^T: dw_out += scale * dy^T act; dact = dy w_out.
    Gemm<T>(true, false, s.d, s.f, n[e], scale, dy + e * xs, act + e * hs, T(1), dw_out + e * ws);
    Gemm<T>(false, false, n[e], s.f, s.d, T(1), dy + e * xs, w_out + e * ws, T(0), dact.data());
    if (s.swiglu)
      SwigluBackward(dact.data(), gate_pre + e * hs, pre + e * hs, dgate.data(), dpre.data(),
                     n[e] * s.f, false);
    else
      GeluBackward(dact.data(), pre + e * hs, dpre.data(), n[e] * s.f, false);
    // pre = x w_in^T (gate_pre = x w_gate^T): dw += scale * d^T x; dx (+)= d w.
    Gemm<T>(true, false, s.f, s.d, n[e], scale, dpre.data(), x + e * xs, T(1), dw_in + e * ws);
    Gemm<T>(false, false, n[e], s.d, s.f, T(1), dpre.data(), w_in + e * ws, beta_dx, dx + e * xs);
    if (s.swiglu) {
      Gemm<T>(true, false, s.f, s.d, n[e], scale, dgate.data(), x + e * xs, T(1), dw_gate + e * ws);
      Gemm<T>(false, false, n[e], s.d, s.f, T(1), dgate.data(), w_gate + e * ws, T(1), dx + e * xs);
    }
  }
}

// SumSquares' chunk `ch`: eight independent accumulators, combined in a fixed
// order: the additions overlap in the pipeline instead of waiting on each other,
// and the result still does not depend on the thread count.
template <typename T>
double ChunkSquares(const T* x, int64_t n, int64_t ch) {
  const int64_t lo = ch * kReduceChunk, hi = std::min(n, lo + kReduceChunk);
  if constexpr (std::is_same_v<T, float>)
    if (vec::HasAvx2()) return avx2::SumSquaresChunk(x + lo, hi - lo);
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = lo;
  for (; i + 8 <= hi; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(x[i + j]) * x[i + j];
  for (; i < hi; ++i) acc[0] += static_cast<double>(x[i]) * x[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <typename T>
double SumSquares(const T* x, int64_t n) {
  const int64_t chunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> partial(chunks, 0.0);
  SumSquaresChunks(x, n, 0, chunks, partial.data());
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

template <typename T>
void SumSquaresChunks(const T* x, int64_t n, int64_t first, int64_t count, double* partials) {
  static_assert(kReduceChunk == kSumSquaresChunk);
#pragma omp parallel for schedule(static) if (count > 1)
  for (int64_t k = 0; k < count; ++k) partials[k] = ChunkSquares(x, n, first + k);
}

double SumCopies(const float* const* copies, int count, float* out, int64_t n, bool average,
                 bool sum_squares) {
  const float inv = 1.0f / static_cast<float>(count);
  double total = 0;  // SumSquares' chunks, summed in order
  for (int64_t lo = 0; lo < n; lo += kReduceChunk) {
    const int64_t hi = std::min(n, lo + kReduceChunk);
    if (vec::HasAvx2()) {
      total += avx2::SumCopiesChunk(copies, count, out, lo, hi, average, sum_squares);
      continue;
    }
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t i = lo; i < hi; ++i) {
      float v = copies[0][i];
      for (int c = 1; c < count; ++c) v += copies[c][i];
      if (average) v *= inv;
      out[i] = v;
      // SumSquares' accumulators: element lo + 8 k + j in acc[j], the tail in acc[0].
      const int64_t j = i < lo + (hi - lo) / 8 * 8 ? (i - lo) % 8 : 0;
      acc[j] += static_cast<double>(v) * v;
    }
    total += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
  return sum_squares ? total : 0.0;
}

template <typename T>
void AdamW(T* param, const T* grad, T* m, T* v, int64_t n, double lr, double beta1, double beta2,
           double eps, double weight_decay, int64_t step, double grad_scale,
           const AdamWMirrors<T>& mirrors) {
  // Per-element math in T (float for training, as in PyTorch's AdamW), so the
  // loop vectorizes; the step-dependent scalars are computed once in double.
  const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
  const T one_b1 = static_cast<T>(1.0 - beta1), one_b2 = static_cast<T>(1.0 - beta2);
  const T scale = static_cast<T>(grad_scale);
  const T step_size = static_cast<T>(lr / (1.0 - std::pow(beta1, static_cast<double>(step))));
  const T inv_c2 = static_cast<T>(1.0 / (1.0 - std::pow(beta2, static_cast<double>(step))));
  const T decay = static_cast<T>(lr * weight_decay), e = static_cast<T>(eps);
  if constexpr (std::is_same_v<T, float>)
    if (vec::HasAvx2())
      return avx2::AdamW(param, grad, m, v, n,
                         {b1, b2, one_b1, one_b2, scale, step_size, inv_c2, decay, e}, mirrors);
#pragma omp parallel for schedule(static) if (Parallel(n))
  for (int64_t i = 0; i < n; ++i) {
    T g = grad[i] * scale;
    T mi = b1 * m[i] + one_b1 * g;
    T vi = b2 * v[i] + one_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] -= step_size * mi / (std::sqrt(vi * inv_c2) + e) + decay * param[i];
    for (int c = 0; c < mirrors.count; ++c) mirrors.param[c][i] = param[i];
  }
}

#define HEIRETSU_INSTANTIATE(T)                                                                 \
  template void Gemm<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, const T*, T, T*);  \
  template void LinearForward<T>(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t); \
  template void LinearBackward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t, int64_t,  \
                                  int64_t, bool, bool);                                         \
  template int64_t EmbeddingForward<T>(const int32_t*, const T*, const T*, T*, int64_t,        \
                                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);   \
  template void EmbeddingBackward<T>(const int32_t*, const T*, T*, T*, int64_t, int64_t,       \
                                     int64_t, int64_t, int64_t);                                \
  template void VocabMax<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t);                  \
  template int64_t VocabSumExp<T>(const T*, const int32_t*, const T*, T*, T*, int64_t, int64_t, \
                                  int64_t, int64_t, int64_t);                                   \
  template void VocabLoss<T>(const T*, const T*, const T*, T*, T*, int64_t);                    \
  template void LayerNormForward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t,         \
                                    int64_t, double);                                           \
  template void LayerNormBackward<T>(const T*, const T*, const T*, const T*, const T*, T*, T*, \
                                     T*, int64_t, int64_t, bool, bool);                         \
  template void RMSNormForward<T>(const T*, const T*, T*, T*, int64_t, int64_t, double);       \
  template void RMSNormBackward<T>(const T*, const T*, const T*, const T*, T*, T*, int64_t,    \
                                   int64_t, bool, bool);                                        \
  template void GeluForward<T>(const T*, T*, int64_t);                                          \
  template void GeluBackward<T>(const T*, const T*, T*, int64_t, bool);                         \
  template void SwigluForward<T>(const T*, const T*, T*, int64_t);                              \
  template void SwigluBackward<T>(const T*, const T*, const T*, T*, T*, int64_t, bool);         \
  template void AddForward<T>(const T*, const T*, T*, int64_t);                                 \
  template void AccumulateForward<T>(const T*, T*, int64_t, bool);                              \
  template void RopeForward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, double,      \
                              int64_t);                                                        \
  template void CachedAttentionForward<T>(const T*, const T*, const T*, T*, T*, T*, int64_t,   \
                                          int64_t, int64_t, int64_t, int64_t, int64_t,         \
                                          int64_t);                                            \
  template void RopeBackward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, double,      \
                                bool);                                                          \
  template void AttentionForward<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t,    \
                                    int64_t, int64_t, int64_t);                                 \
  template void AttentionForwardRows<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, \
                                        int64_t, int64_t, int64_t);                             \
  template void AttentionForwardBlocked<T>(const T*, const T*, const T*, T*, T*, int64_t,       \
                                           int64_t, int64_t, int64_t, int64_t);                 \
  template void AttentionBackward<T>(const T*, const T*, const T*, const T*, const T*,         \
                                     const T*, T*, T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                     int64_t, bool);                                            \
  template void AttentionBackwardRows<T>(const T*, const T*, const T*, const T*, const T*,     \
                                         const T*, T*, T*, T*, int64_t, int64_t, int64_t,       \
                                         int64_t, int64_t, bool);                               \
  template void AttentionBackwardBlocked<T>(const T*, const T*, const T*, const T*, const T*,  \
                                            const T*, T*, T*, T*, int64_t, int64_t, int64_t,    \
                                            int64_t, int64_t, bool);                            \
  template int64_t CrossEntropyForward<T>(const T*, const int32_t*, T*, T*, int64_t, int64_t,  \
                                          int64_t);                                             \
  template void CrossEntropyBackward<T>(const T*, const int32_t*, const T*, T, T*, int64_t,    \
                                        int64_t, bool, int64_t, int64_t);                       \
  template double SumSquares<T>(const T*, int64_t);                                             \
  template void SumSquaresChunks<T>(const T*, int64_t, int64_t, int64_t, double*);              \
  template void MoeRoute<T>(const MoeRouteShape&, const T*, const T*, double, double, T*, T*, \
                            int32_t*, int32_t*, T*, int32_t*, T*, T*);                         \
  template void MoeRouteBackward<T>(const MoeRouteShape&, const T*, double, double, double,    \
                                    const T*, const T*, const T*, const T*, const int32_t*, T*, \
                                    T*, bool);                                                  \
  template void MoeDispatch<T>(const MoeSlotShape&, const T*, const int32_t*, const int32_t*,  \
                               T*);                                                             \
  template void MoeDispatchBackward<T>(const MoeSlotShape&, const T*, const int32_t*,          \
                                       const int32_t*, T*, bool);                               \
  template void MoeCombine<T>(const MoeSlotShape&, const T*, const int32_t*, const int32_t*,   \
                              const T*, T*);                                                    \
  template void MoeCombineBackward<T>(const MoeSlotShape&, const T*, const T*, const int32_t*, \
                                      const int32_t*, const T*, T*, T*, bool);                  \
  template void MoeExperts<T>(const MoeExpertShape&, const int32_t*, const T*, const T*,       \
                              const T*, const T*, T*, T*, T*, T*);                              \
  template void MoeExpertsBackward<T>(const MoeExpertShape&, const int32_t*, const T*, const T*, \
                                      const T*,                                                 \
                                      const T*, const T*, const T*, const T*, const T*, double, \
                                      T*, T*, T*, T*, bool);                                    \
  template void AdamW<T>(T*, const T*, T*, T*, int64_t, double, double, double, double,        \
                         double, int64_t, double, const AdamWMirrors<T>&);

HEIRETSU_INSTANTIATE(float)
HEIRETSU_INSTANTIATE(double)
#undef HEIRETSU_INSTANTIATE

}  // namespace heiretsu::cpu
