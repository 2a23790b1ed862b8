// runtime/base/half.h against independent references: float16 against the
// compiler's _Float16 (GCC's conversions, IEEE round-to-nearest-even) on every 16-bit
// pattern and on float32 values around every rounding boundary; bfloat16 against a
// float64 computation of the nearest representable value (ties to even); and the
// documented reference values (overflow, subnormals, ties, NaN, signed zero).
#include "runtime/base/half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace heiretsu {
namespace {

using half::BitsFloat;
using half::Bf16ToFloat;
using half::FloatBits;
using half::FloatToBf16;
using half::FloatToHalf;
using half::HalfToFloat;
using half::Bf16sToFloats;
using half::FloatsToBf16s;
using half::FloatsToHalfs;
using half::HalfsToFloats;
using half::HasF16c;

uint16_t CompilerHalf(float f) {
  _Float16 h = static_cast<_Float16>(f);
  uint16_t bits;
  std::memcpy(&bits, &h, sizeof bits);
  return bits;
}

float CompilerHalfToFloat(uint16_t bits) {
  _Float16 h;
  std::memcpy(&h, &bits, sizeof h);
  return static_cast<float>(h);
}

// The nearest bfloat16 value of a finite float, ties to even, by float64 arithmetic:
// x = q * 2^(e - 7) with q rounded to an integer (nearbyint rounds ties to even).
double ReferenceBf16(float f) {
  const double x = f;
  if (x == 0) return x;
  int e;
  std::frexp(x, &e);  // |x| in [2^(e-1), 2^e)
  const int exponent = std::max(e - 1, -126);  // bfloat16's subnormals share float's floor
  const double unit = std::ldexp(1.0, exponent - 7);
  const double rounded = std::nearbyint(x / unit) * unit;
  const double max = std::ldexp(255.0 / 128.0, 127);  // 0x7f7f
  if (std::fabs(rounded) > max) return std::copysign(INFINITY, x);
  return rounded;
}

TEST(Half, EveryFloat16PatternConvertsExactlyAndBack) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    const float reference = CompilerHalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(reference)) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_EQ(FloatToHalf(f) & 0x7e00u, 0x7e00u) << h;  // a quiet NaN
      continue;
    }
    EXPECT_EQ(FloatBits(f), FloatBits(reference)) << h;
    EXPECT_EQ(FloatToHalf(f), h) << h;
  }
}

TEST(Half, Float16RoundingMatchesTheCompilerAroundEveryBoundary) {
  // For every float16 value v and its successor: the midpoint and its float32
  // neighbours, where ties to even and the carries into the next binade happen.
  int64_t checked = 0;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float lo = HalfToFloat(static_cast<uint16_t>(h));
    const float hi = h + 1 == 0x7c00 ? 65536.0f : HalfToFloat(static_cast<uint16_t>(h + 1));
    const float mid = BitsFloat(FloatBits(lo) + (FloatBits(hi) - FloatBits(lo)) / 2);
    for (float x : {lo, mid, std::nextafter(mid, 0.f), std::nextafter(mid, INFINITY),
                    (lo + hi) / 2}) {
      for (float s : {x, -x}) {
        ASSERT_EQ(FloatToHalf(s), CompilerHalf(s)) << s;
        ++checked;
      }
    }
  }
  std::mt19937 rng(7);
  for (int i = 0; i < 2000000; ++i) {
    const float f = BitsFloat(rng());
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), CompilerHalf(f)) << f;
    ++checked;
  }
  EXPECT_GT(checked, 2000000);
}

TEST(Half, Float16ReferenceValues) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);          // the largest finite
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7bff);         // rounds down to it
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);          // the tie rounds to even: infinity
  EXPECT_EQ(FloatToHalf(-1e6f), 0xfc00);
  EXPECT_EQ(FloatToHalf(INFINITY), 0x7c00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // the smallest normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // half of it: ties to even, 0
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 of it rounds up
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 of it: ties to even, 2
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie: stays even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie: up to even
  EXPECT_EQ(FloatToHalf(NAN) & 0x7e00, 0x7e00);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
}

TEST(Half, EveryBfloat16PatternConvertsExactlyAndBack) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(h));
    EXPECT_EQ(FloatBits(f), h << 16);
    if (std::isnan(f)) {
      EXPECT_EQ(FloatToBf16(f) & 0x7fc0u, 0x7fc0u) << h;  // quiet, the sign kept
      EXPECT_EQ(FloatToBf16(f) & 0x8000u, h & 0x8000u) << h;
    } else {
      EXPECT_EQ(FloatToBf16(f), h) << h;
    }
  }
}

TEST(Half, Bfloat16RoundingMatchesTheFloat64Reference) {
  std::mt19937 rng(11);
  for (int i = 0; i < 2000000; ++i) {
    // Random bit patterns, and values at and around the ties of random bfloat16s.
    const uint32_t bits = i % 2 ? rng() : ((rng() & 0xffff0000u) | 0x8000u) + (rng() % 3) - 1;
    const float f = BitsFloat(bits);
    if (std::isnan(f)) continue;
    const double expected = std::isinf(f) ? f : ReferenceBf16(f);
    ASSERT_EQ(static_cast<double>(Bf16ToFloat(FloatToBf16(f))), expected) << f;
  }
}

TEST(Half, Bfloat16ReferenceValues) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);        // tie: stays even
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);        // tie: up to even
  EXPECT_EQ(FloatToBf16(3.3895314e38f), 0x7f7f);                      // the largest finite
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to infinity
  EXPECT_EQ(FloatToBf16(-INFINITY), 0xff80);
  EXPECT_EQ(FloatToBf16(std::ldexp(1.0f, -133)), 0x0001);             // the smallest subnormal
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBf16(-NAN) & 0xffc0, 0xffc0);
}


// The bulk conversions the CPU backend widens with (F16C's vcvtph2ps / vcvtps2ph
// where the CPU has it) give the scalar functions' bits for every float16 pattern,
// every rounding boundary and 2 million random floats; a NaN stays a NaN.
TEST(Half, BulkConversionsMatchTheScalarOnes) {
  std::vector<uint16_t> halfs(65536);
  for (uint32_t h = 0; h < 65536; ++h) halfs[h] = static_cast<uint16_t>(h);
  std::vector<float> wide(halfs.size());
  HalfsToFloats(halfs.data(), wide.data(), halfs.size());
  for (uint32_t h = 0; h < 65536; ++h) {
    const float scalar = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(scalar)) {
      EXPECT_TRUE(std::isnan(wide[h])) << h;
      continue;
    }
    ASSERT_EQ(FloatBits(wide[h]), FloatBits(scalar)) << h;
  }
  std::vector<float> floats;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float lo = HalfToFloat(static_cast<uint16_t>(h));
    const float hi = h + 1 == 0x7c00 ? 65536.0f : HalfToFloat(static_cast<uint16_t>(h + 1));
    const float mid = BitsFloat(FloatBits(lo) + (FloatBits(hi) - FloatBits(lo)) / 2);
    for (float x : {lo, mid, std::nextafter(mid, 0.f), std::nextafter(mid, INFINITY)})
      for (float s : {x, -x}) floats.push_back(s);
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 2000000; ++i) floats.push_back(BitsFloat(rng()));
  floats.push_back(NAN);
  floats.push_back(INFINITY);
  std::vector<uint16_t> narrow(floats.size());
  FloatsToHalfs(floats.data(), narrow.data(), floats.size());
  for (size_t i = 0; i < floats.size(); ++i) {
    if (std::isnan(floats[i])) {
      EXPECT_EQ(narrow[i] & 0x7e00u, 0x7e00u) << i;
      continue;
    }
    ASSERT_EQ(narrow[i], FloatToHalf(floats[i])) << floats[i];
  }
  std::vector<uint16_t> bf(floats.size());
  FloatsToBf16s(floats.data(), bf.data(), floats.size());
  std::vector<float> back(floats.size());
  Bf16sToFloats(bf.data(), back.data(), bf.size());
  for (size_t i = 0; i < floats.size(); ++i) {
    ASSERT_EQ(bf[i], FloatToBf16(floats[i])) << floats[i];  // NaNs too: the same rule
    ASSERT_EQ(FloatBits(back[i]), FloatBits(Bf16ToFloat(bf[i])));
  }
  // Every bfloat16 pattern widens to its scalar value.
  std::vector<float> every(65536);
  Bf16sToFloats(halfs.data(), every.data(), halfs.size());
  for (uint32_t h = 0; h < 65536; ++h)
    ASSERT_EQ(FloatBits(every[h]), FloatBits(Bf16ToFloat(static_cast<uint16_t>(h)))) << h;
  std::printf("float16 bulk path: %s, bfloat16: %s\n", HasF16c() ? "F16C" : "scalar",
              half::HasAvx2() ? "AVX2" : "scalar");
}

}  // namespace
}  // namespace heiretsu
