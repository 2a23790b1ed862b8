// Parameter initialization: Philox known-answer vectors, determinism, shard
// independence (any slice equals the same range of the whole), and moments.
#include "runtime/init/init.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace heiretsu::init {
namespace {

TEST(Philox, KnownAnswerVectors) {
  // Random123's kat_vectors for philox4x32 with 10 rounds.
  EXPECT_EQ(Philox4x32({0, 0, 0, 0}, {0, 0}),
            (std::array<uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(Philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (std::array<uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(Philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (std::array<uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(FillNormal, DependsOnlyOnSeedNameAndIndex) {
  std::vector<float> a(1000), b(1000), c(1000), d(1000);
  FillNormal(1234, "layers.0.attn.wq.weight", 0.02, 0, 1000, a.data());
  FillNormal(1234, "layers.0.attn.wq.weight", 0.02, 0, 1000, b.data());
  FillNormal(1234, "layers.0.attn.wk.weight", 0.02, 0, 1000, c.data());
  FillNormal(1235, "layers.0.attn.wq.weight", 0.02, 0, 1000, d.data());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, d);
}

TEST(FillNormal, AnySliceEqualsTheSameRangeOfTheWhole) {
  const int64_t n = 4097;
  std::vector<float> whole(n);
  FillNormal(7, "wte", 1.0, 0, n, whole.data());
  // Odd boundaries split Box-Muller pairs between shards.
  for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 1}, {1, 1024}, {1023, 3001}, {3001, n}}) {
    std::vector<float> part(hi - lo);
    FillNormal(7, "wte", 1.0, lo, hi, part.data());
    for (int64_t i = lo; i < hi; ++i) ASSERT_EQ(part[i - lo], whole[i]) << "index " << i;
  }
}

TEST(FillNormal, MomentsMatchTheRequestedDistribution) {
  const int64_t n = 1 << 20;
  std::vector<float> x(n);
  FillNormal(42, "h", 0.02, 0, n, x.data());
  double sum = 0, sq = 0, fourth = 0;
  for (float v : x) {
    double z = v / 0.02;
    sum += z;
    sq += z * z;
    fourth += z * z * z * z;
  }
  double mean = sum / n, var = sq / n - mean * mean, kurt = fourth / n;
  // Standard errors at n = 2^20: mean 0.001, variance 0.0014, 4th moment 0.009.
  EXPECT_NEAR(mean, 0.0, 0.005);
  EXPECT_NEAR(var, 1.0, 0.007);
  EXPECT_NEAR(kurt, 3.0, 0.05);
}

}  // namespace
}  // namespace heiretsu::init
