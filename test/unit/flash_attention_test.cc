// The CUDA backend's tiled attention kernels (runtime/cuda/flash_attention.cuh) run
// on the CPU under test/unit/cuda_emulation.h. So the kernels' indexing, masks,
// tiling, online softmax, barriers and 16-bit roundings are checked here, on any
// machine, against a float64 reference of causal attention (every output element,
// with outputs poisoned or accumulated into); what only a GPU shows (wmma's real
// fragment layouts, timing, the launchers' shared-memory sizes) is
// heiretsu-cuda-check's, on 16-bit plans (bench/gpu/verify.sh).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "test/unit/cuda_emulation.h"

namespace heiretsu::emu {

// kernel_base.cuh first, as cuda_backend.cu includes them.
// clang-format off
#include "runtime/cuda/kernel_base.cuh"
#include "runtime/cuda/flash_attention.cuh"
// clang-format on

// ---------------------------------------------------------------- the check

struct Shape {
  int64_t batch, seq, heads, kv_heads;
};

// Causal attention in float64 on the 16-bit inputs' values: out and lse, and, for
// dout, dq, dk, dv (the formulas of op_table.h's attention / attention_grad).
struct Reference {
  std::vector<double> out, lse, dq, dk, dv;
};
Reference Attend(const Shape& s, int64_t hd, const std::vector<float>& q,
                 const std::vector<float>& k, const std::vector<float>& v,
                 const std::vector<float>& dout) {
  const int64_t qw = s.heads * hd, kw = s.kv_heads * hd, group = s.heads / s.kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  Reference r;
  r.out.assign(q.size(), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  r.lse.assign(static_cast<size_t>(s.batch * s.heads * s.seq), 0.0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t kh = h / group;
      for (int64_t t = 0; t < s.seq; ++t) {
        const float* qt = &q[(b * s.seq + t) * qw + h * hd];
        std::vector<double> p(static_cast<size_t>(t + 1));
        double mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += double{qt[d]} * k[(b * s.seq + j) * kw + kh * hd + d];
          p[j] = dot * scale;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (double& e : p) sum += (e = std::exp(e - mx));
        for (double& e : p) e /= sum;
        r.lse[(b * s.heads + h) * s.seq + t] = mx + std::log(sum);
        const int64_t at = (b * s.seq + t) * qw + h * hd;
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t d = 0; d < hd; ++d)
            r.out[at + d] += p[j] * v[(b * s.seq + j) * kw + kh * hd + d];
        double dd = 0;
        for (int64_t d = 0; d < hd; ++d) dd += double{dout[at + d]} * r.out[at + d];
        for (int64_t j = 0; j <= t; ++j) {
          const int64_t ko = (b * s.seq + j) * kw + kh * hd;
          double dp = 0;
          for (int64_t d = 0; d < hd; ++d) dp += double{dout[at + d]} * v[ko + d];
          const double ds = p[j] * (dp - dd) * scale;
          for (int64_t d = 0; d < hd; ++d) {
            r.dq[at + d] += ds * k[ko + d];
            r.dk[ko + d] += ds * qt[d];
            r.dv[ko + d] += p[j] * dout[at + d];
          }
        }
      }
    }
  return r;
}

// The largest |got - want| over `want`'s largest magnitude (or 1 where want is all
// zero), with `base` added to every expected element (an accumulated output); NaN
// when any element is NaN.
template <typename S>
double MaxError(const std::vector<S>& got, const std::vector<double>& want, double base) {
  double worst = 0, scale = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  if (scale == 0) scale = 1;  // all zero (one key: dq = dk = 0): the error itself
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = ToFloat(got[i]);
    if (std::isnan(g)) return NAN;
    worst = std::max(worst, std::fabs(g - (want[i] + base)));
  }
  return worst / scale;
}

// Runs the forward and the backward of `s` at head_dim D in storage S on a grid
// capped at `cap` blocks, with the backward's outputs poisoned (NaN) or accumulated
// into (`accumulate`: each starts at 0.5), against the float64 reference.
template <typename S, int D>
void Check(const Shape& s, unsigned cap, bool accumulate, double tolerance) {
  SCOPED_TRACE("head_dim " + std::to_string(D) + ", seq " + std::to_string(s.seq) + ", heads " +
               std::to_string(s.heads) + "/" + std::to_string(s.kv_heads) + ", cap " +
               std::to_string(cap) + (accumulate ? ", accumulating" : ""));
  std::mt19937 rng(static_cast<uint32_t>(D * 1000 + s.seq));
  std::normal_distribution<float> normal(0.f, 1.f);
  const size_t nq = static_cast<size_t>(s.batch * s.seq * s.heads * D);
  const size_t nk = static_cast<size_t>(s.batch * s.seq * s.kv_heads * D);
  auto draw = [&](size_t n, float sd) {
    std::vector<float> x(n);
    for (float& e : x) e = sd * normal(rng);
    return x;
  };
  // Scores of a few units (q and k at 1.5 / head_dim^(1/4)): a peaked softmax, so the
  // mask and the online rescaling matter.
  const float sd = 1.5f / std::pow(static_cast<float>(D), 0.25f);
  std::vector<float> qf = draw(nq, sd), kf = draw(nk, sd), vf = draw(nk, 1.f), df = draw(nq, 1.f);
  std::vector<S> q = ToStorage<S>(&qf), k = ToStorage<S>(&kf), v = ToStorage<S>(&vf),
                 dout = ToStorage<S>(&df);
  const Reference want = Attend(s, D, qf, kf, vf, df);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const S poison = FromFloat<S>(NAN), half_value = FromFloat<S>(0.5f);

  std::vector<S> out(nq, poison);
  std::vector<float> lse(static_cast<size_t>(s.batch * s.heads * s.seq), NAN);
  const int64_t tiles = (s.seq + kFlashTile - 1) / kFlashTile;
  auto blocks = [&](int64_t items) { return static_cast<unsigned>(std::min<int64_t>(items, cap)); };
  cuda_emu::Launch(blocks(tiles * s.batch * s.heads), kFlashThreads, [&] {
    FlashFwd<S, D>(q.data(), k.data(), v.data(), View<S>{out.data()}, lse.data(), s.batch, s.seq,
                   s.heads, s.kv_heads, scale);
  });
  EXPECT_LE(MaxError(out, want.out, 0.0), tolerance) << "out";
  double lse_error = 0;
  for (size_t i = 0; i < lse.size(); ++i)
    lse_error = std::max(lse_error, std::isnan(lse[i]) ? INFINITY
                                                       : std::fabs(lse[i] - want.lse[i]) /
                                                             std::max(1.0, std::fabs(want.lse[i])));
  EXPECT_LE(lse_error, 1e-5) << "lse";

  // The backward reads the forward's out and lse, as it does in a step.
  const S start = accumulate ? half_value : poison;
  std::vector<S> dq(nq, start), dk(nk, start), dv(nk, start);
  std::vector<float> dot(lse.size(), NAN);
  cuda_emu::Launch(blocks(s.batch * s.heads * s.seq), kFlashThreads, [&] {
    FlashRowDot<S>(View<S>{dout.data()}, View<S>{out.data()}, dot.data(), s.batch, s.seq, s.heads,
                   D);
  });
  cuda_emu::Launch(blocks(tiles * s.batch * s.kv_heads), kFlashThreads, [&] {
    FlashBwdKV<S, D>(q.data(), k.data(), v.data(), dout.data(), lse.data(), dot.data(),
                     View<S>{dk.data()}, View<S>{dv.data()}, s.batch, s.seq, s.heads, s.kv_heads,
                     scale, accumulate);
  });
  cuda_emu::Launch(blocks(tiles * s.batch * s.heads), kFlashThreads, [&] {
    FlashBwdQ<S, D>(q.data(), k.data(), v.data(), dout.data(), lse.data(), dot.data(),
                    View<S>{dq.data()}, s.batch, s.seq, s.heads, s.kv_heads, scale, accumulate);
  });
  const double base = accumulate ? 0.5 : 0.0;
  EXPECT_LE(MaxError(dq, want.dq, base), tolerance) << "dq";
  EXPECT_LE(MaxError(dk, want.dk, base), tolerance) << "dk";
  EXPECT_LE(MaxError(dv, want.dv, base), tolerance) << "dv";
}

// heiretsu-cuda-check's 16-bit tolerances: each output within 2^-6 (bf16) or 2^-9
// (fp16) of its largest magnitude.
constexpr double kBf16Tolerance = 1.0 / 64, kF16Tolerance = 1.0 / 512;

// Three query tiles, the last partial (130 = 64 + 64 + 2); GQA (4 query heads on 2
// KV heads); a grid of 3 blocks, so every kernel loops over its items.
TEST(FlashAttention, Bf16MatchesTheReferenceOverSeveralTiles) {
  Check<Bf16, 64>({1, 130, 4, 2}, 3, false, kBf16Tolerance);
  Check<Bf16, 32>({2, 130, 2, 1}, 3, true, kBf16Tolerance);
  Check<Bf16, 128>({1, 70, 2, 2}, 2, false, kBf16Tolerance);
}

TEST(FlashAttention, F16MatchesTheReferenceOverSeveralTiles) {
  Check<F16, 64>({1, 130, 4, 2}, 5, true, kF16Tolerance);
}

// A sequence shorter than one warp's 16 rows: most of the tile is past the end.
TEST(FlashAttention, ASequenceShorterThanAWarpsRows) {
  Check<Bf16, 64>({2, 5, 2, 1}, 64, false, kBf16Tolerance);
  Check<F16, 32>({1, 1, 1, 1}, 1, true, kF16Tolerance);
}

}  // namespace heiretsu::emu

namespace heiretsu::emu {

// The tiles' shared memory fits a block on the GPUs the build targets (sm_80's
// opt-in 163 KiB, sm_90's 227 KiB); at head_dim 32 and 64 also on sm_86 / sm_89's
// 99 KiB (at 128 those run the per-query kernels: cuda_backend.cu asks the device).
TEST(FlashAttention, SharedMemoryFitsTheTargetGpus) {
  for (bool forward : {true, false}) {
    EXPECT_LE(FlashSharedBytes(128, forward), 166912u);
    EXPECT_LE(FlashSharedBytes(64, forward), 101376u);
    EXPECT_LE(FlashSharedBytes(32, forward), 101376u);
  }
  EXPECT_GT(FlashSharedBytes(128, false), 101376u);
}

}  // namespace heiretsu::emu
