// Counter-based parameter initialization; see init.h for the derivation.
#include "runtime/init/init.h"

#include <cmath>

namespace heiretsu::init {
namespace {

constexpr uint32_t kMul0 = 0xD2511F53, kMul1 = 0xCD9E8D57;      // Philox multipliers
constexpr uint32_t kWeyl0 = 0x9E3779B9, kWeyl1 = 0xBB67AE85;    // key schedule

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A uniform in the open interval (0, 1) from 64 random bits (53 used).
double Uniform(uint32_t hi, uint32_t lo) {
  uint64_t bits = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return (static_cast<double>(bits) + 0.5) * 0x1.0p-53;
}

}  // namespace

std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kMul0) * c[0];
    uint64_t p1 = static_cast<uint64_t>(kMul1) * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
    k[0] += kWeyl0;
    k[1] += kWeyl1;
  }
  return c;
}

uint64_t NameHash(const std::string& name) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char ch : name) {
    h ^= ch;
    h *= 0x100000001B3ull;
  }
  return h;
}

void FillNormal(uint64_t seed, const std::string& name, double stddev, int64_t begin, int64_t end,
                float* out) {
  const uint64_t mixed = SplitMix64(seed ^ NameHash(name));
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(mixed),
                                       static_cast<uint32_t>(mixed >> 32)};
  constexpr double kTwoPi = 6.283185307179586;
#pragma omp parallel for schedule(static)
  for (int64_t i = begin; i < end; ++i) {
    const uint64_t ctr = static_cast<uint64_t>(i) >> 1;
    std::array<uint32_t, 4> r =
        Philox4x32({static_cast<uint32_t>(ctr), static_cast<uint32_t>(ctr >> 32), 0, 0}, key);
    double radius = std::sqrt(-2.0 * std::log(Uniform(r[0], r[1])));
    double angle = kTwoPi * Uniform(r[2], r[3]);
    double z = (i & 1) ? radius * std::sin(angle) : radius * std::cos(angle);
    out[i - begin] = static_cast<float>(z * stddev);
  }
}

}  // namespace heiretsu::init
