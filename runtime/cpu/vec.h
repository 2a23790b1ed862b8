// AVX2 / FMA building blocks for the float kernels of kernels.cc.
//
// The project builds for baseline x86-64 (SSE2), so these are compiled per function
// with `HEIRETSU_AVX2` (GCC's target attribute) and chosen at run time: a kernel's
// float instantiation takes its AVX2 path when `HasAvx2()`, the portable loop
// otherwise. The choice depends only on the CPU, so every run on one machine takes
// the same path and sums in the same order (results stay bit-identical from run to
// run and independent of the thread count); paths that must agree with each other
// (the training attention and the decode step) call the same row function.
//
// Every reduction here is in a fixed order: lanes first, then the lanes combined as
// ((0 + 4) + (2 + 6)) + ((1 + 5) + (3 + 7)), the same for every call.
#ifndef HEIRETSU_RUNTIME_CPU_VEC_H_
#define HEIRETSU_RUNTIME_CPU_VEC_H_

#include <immintrin.h>

#include <cstdint>

#define HEIRETSU_AVX2 __attribute__((target("avx2,fma")))
#define HEIRETSU_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace heiretsu::cpu::vec {

// Whether this CPU runs the AVX2 / FMA paths; fixed for the process. The
// environment variable HEIRETSU_CPU_KERNELS=portable turns them off (to compare).
bool HasAvx2();

// e^x for 8 floats, within 2 ulp of the correctly rounded value on [-87, 88]
// (tested against std::exp in double): 0 below -87 (where e^x < 1.7e-38) and at
// -inf, +inf above 88, NaN for NaN. x = n ln 2 + r with |r| <= ln 2 / 2;
// e^r by its Taylor polynomial of degree 7 (truncation below 6e-9 relative);
// 2^n built in the exponent bits.
HEIRETSU_AVX2_INLINE __m256 Exp(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(88.0f);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln 2 in two parts: the high part has few mantissa bits, so n * hi is exact.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);                        // 0
  y = _mm256_blendv_ps(y, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));                 // NaN
}

// The sum of 8 lanes in the fixed order above.
HEIRETSU_AVX2_INLINE float Sum(__m256 v) {
  const __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_add_ss(b, _mm_shuffle_ps(b, b, 1)));
}
HEIRETSU_AVX2_INLINE double Sum(__m256d v) {
  const __m128d a = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(a, _mm_unpackhi_pd(a, a)));
}
HEIRETSU_AVX2_INLINE float Max(__m256 v) {
  const __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 b = _mm_max_ps(a, _mm_movehl_ps(a, a));
  return _mm_cvtss_f32(_mm_max_ss(b, _mm_shuffle_ps(b, b, 1)));
}

// Adds the 8 floats of v, widened, into two double accumulators (lanes 0-3, 4-7).
HEIRETSU_AVX2_INLINE void AddWide(__m256 v, __m256d* lo, __m256d* hi) {
  *lo = _mm256_add_pd(*lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
  *hi = _mm256_add_pd(*hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

// A mask loading / storing the first n < 8 lanes.
HEIRETSU_AVX2_INLINE __m256i TailMask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), idx);
}

// x . y over n floats: 8 lanes (two accumulators for n >= 16, added lane-wise),
// the tail in scalar order after them.
HEIRETSU_AVX2_INLINE float Dot(const float* x, const float* y, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8)
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), a0);
  float s = Sum(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

// y[0, n) += a * x[0, n).
HEIRETSU_AVX2_INLINE void Axpy(float a, const float* x, float* y, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += a * x[i];
}

}  // namespace heiretsu::cpu::vec

#endif  // HEIRETSU_RUNTIME_CPU_VEC_H_
