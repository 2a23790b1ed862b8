// The two 16-bit floating-point formats of mixed precision (issue #13), as bit
// patterns, and their conversions to and from float32. Header-only: the CPU
// kernels, checkpoints and tests share these, and CUDA's own intrinsics must agree
// with them (test/unit/half_test.cc checks them against the compiler's _Float16 and a
// float64 reference).
//
// - bfloat16: float32's sign and 8-bit exponent, 7 fraction bits (the top half of a
//   float32). Same range as float32 (max 3.3895314e38, subnormals down to 2^-133).
// - float16 (IEEE 754 binary16): 5-bit exponent, 10 fraction bits; max 65504, the
//   smallest normal 2^-14, subnormals down to 2^-24.
//
// Float to 16 bits rounds to nearest, ties to even (IEEE's default, and CUDA's
// __float2bfloat16_rn / __float2half_rn). A finite value that rounds past the largest
// finite one becomes infinity of its sign (float16: |x| >= 65520); values below half the
// smallest subnormal become zero of their sign; subnormal results are exact to the
// rounding. Infinity stays infinity; NaN stays NaN (quiet, sign kept, payload
// dropped: 0x7fc0 / 0x7e00 with the sign bit). 16 bits to float is exact.
#ifndef HEIRETSU_RUNTIME_BASE_HALF_H_
#define HEIRETSU_RUNTIME_BASE_HALF_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace heiretsu::half {

inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float Bf16ToFloat(uint16_t h) { return BitsFloat(static_cast<uint32_t>(h) << 16); }

inline uint16_t FloatToBf16(float f) {
  const uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN
    return static_cast<uint16_t>((u >> 16) | 0x0040u) & 0xffc0u;
  // Round to nearest, ties to even, on the 16 bits dropped: add 0x7fff plus the kept
  // lowest bit. A carry into the exponent is right (the next binade, or infinity).
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

inline float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, frac = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (frac << 13));  // inf, NaN
  if (exp != 0) return BitsFloat(sign | ((exp + 112) << 23) | (frac << 13));
  // Subnormal (or zero): frac * 2^-24, exact in float32.
  const float magnitude = static_cast<float>(frac) * 5.9604644775390625e-8f;
  return BitsFloat(sign | FloatBits(magnitude));
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t u = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to infinity
  const int32_t exp = static_cast<int32_t>(abs >> 23) - 127;
  if (exp >= -14) {
    // Normal: keep 10 of the 23 fraction bits, rounding the 13 dropped to even.
    const uint32_t mant = abs & 0x7fffffu;
    uint32_t h = (static_cast<uint32_t>(exp + 15) << 10) | (mant >> 13);
    const uint32_t rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into exp
    return sign | static_cast<uint16_t>(h);
  }
  if (exp < -25) return sign;  // below half of 2^-24 (and float subnormals): zero
  // Subnormal: the value is m * 2^(exp - 23) with m the 24-bit significand; in units
  // of 2^-24 that is m >> (-exp - 1), rounded to even on the bits shifted out.
  const uint32_t m = (abs & 0x7fffffu) | 0x800000u;
  const int shift = -exp - 1;  // 14 .. 24
  uint32_t h = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
  if (rest > halfway || (rest == halfway && (h & 1u))) ++h;  // 0x400: the smallest normal
  return sign | static_cast<uint16_t>(h);
}

// Bulk conversions of n values (the CPU backend's widening, exec/backend.h). On an
// x86-64 CPU with F16C, float16 goes through vcvtph2ps / vcvtps2ph 8 values at a time,
// rounding to nearest even: the same bits as the functions above for every value but
// NaN, which stays a NaN whose payload may differ; with AVX2, bfloat16 8 at a time
// with exactly the functions' bits (test/unit/half_test.cc).
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) inline void HalfsToFloatsF16c(const uint16_t* in, float* out,
                                                                  size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  for (; i < n; ++i) out[i] = HalfToFloat(in[i]);
}
__attribute__((target("avx,f16c"))) inline void FloatsToHalfsF16c(const float* in, uint16_t* out,
                                                                  size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) out[i] = FloatToHalf(in[i]);
}
inline bool HasF16c() {
  static const bool has = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
  return has;
}
// bfloat16 with AVX2, 8 values at a time: FloatToBf16's rounding and NaN rule as
// integer arithmetic on the bit patterns (the same bits for every value).
__attribute__((target("avx2"))) inline void Bf16sToFloatsAvx2(const uint16_t* in, float* out,
                                                              size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i wide =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), _mm256_slli_epi32(wide, 16));
  }
  for (; i < n; ++i) out[i] = Bf16ToFloat(in[i]);
}
__attribute__((target("avx2"))) inline void FloatsToBf16sAvx2(const float* in, uint16_t* out,
                                                              size_t n) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
  const __m256i quiet = _mm256_set1_epi32(0x0040), nan_bits = _mm256_set1_epi32(0xffc0);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i));
    const __m256i high = _mm256_srli_epi32(u, 16);
    const __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, bias), _mm256_and_si256(high, one)), 16);
    const __m256i nan = _mm256_and_si256(_mm256_or_si256(high, quiet), nan_bits);
    // |u| as a signed int32 is >= 0, so a signed compare is right.
    const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    const __m256i r = _mm256_blendv_epi8(rounded, nan, is_nan);  // each lane < 2^16
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
  }
  for (; i < n; ++i) out[i] = FloatToBf16(in[i]);
}
inline bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#else
inline bool HasF16c() { return false; }
inline bool HasAvx2() { return false; }
inline void HalfsToFloatsF16c(const uint16_t*, float*, size_t) {}
inline void FloatsToHalfsF16c(const float*, uint16_t*, size_t) {}
inline void Bf16sToFloatsAvx2(const uint16_t*, float*, size_t) {}
inline void FloatsToBf16sAvx2(const float*, uint16_t*, size_t) {}
#endif

inline void HalfsToFloats(const uint16_t* in, float* out, size_t n) {
  if (HasF16c()) return HalfsToFloatsF16c(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = HalfToFloat(in[i]);
}
inline void FloatsToHalfs(const float* in, uint16_t* out, size_t n) {
  if (HasF16c()) return FloatsToHalfsF16c(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = FloatToHalf(in[i]);
}
inline void Bf16sToFloats(const uint16_t* in, float* out, size_t n) {
  if (HasAvx2()) return Bf16sToFloatsAvx2(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(in[i]);
}
inline void FloatsToBf16s(const float* in, uint16_t* out, size_t n) {
  if (HasAvx2()) return FloatsToBf16sAvx2(in, out, n);
  for (size_t i = 0; i < n; ++i) out[i] = FloatToBf16(in[i]);
}

}  // namespace heiretsu::half

#endif  // HEIRETSU_RUNTIME_BASE_HALF_H_
