// The CUDA backend's kernels (runtime/cuda/kernels.cuh, column_sums.cuh) run on the
// CPU under test/unit/cuda_emulation.h, on capped grids (every kernel loops over its
// range), launched as cuda_backend.cu launches them: each against the CPU backend's
// kernel (runtime/cpu/kernels.h) within heiretsu-cuda-check's float32 tolerance
// (1e-5 of each output's largest magnitude), the column reductions against float64
// sums, the embedding's gradients bitwise against float32 adds in row order. The
// tiled attention has its own test (flash_attention_test.cc).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/cpu/kernels.h"
#include "runtime/cuda/device_memory.h"
#include "test/unit/cuda_emulation.h"

namespace heiretsu::emu {

// kernel_base.cuh first, as cuda_backend.cu includes them.
// clang-format off
#include "runtime/cuda/kernel_base.cuh"
#include "runtime/cuda/kernels.cuh"
#include "runtime/cuda/column_sums.cuh"
// clang-format on

constexpr unsigned kBlockThreads = 128;

std::vector<float> Normal(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(n);
  for (float& e : x) e = normal(rng);
  return x;
}

// dst[i] (starting at `start`) after the two passes over the [rows, c] values of
// `dy`, on a grid of `blocks` blocks.
template <typename S>
std::vector<float> ColumnSums(const std::vector<S>& dy, int64_t rows, int64_t c, unsigned blocks,
                              float start) {
  const int64_t chunks = ColumnChunks(rows);
  std::vector<float> partial(static_cast<size_t>(chunks * c), NAN),
      dst(static_cast<size_t>(c), start);
  std::vector<S> in = dy;
  cuda_emu::Launch(blocks, kBlockThreads,
                   [&] { ColumnSumPartials(View<S>{in.data()}, partial.data(), rows, c); });
  cuda_emu::Launch(blocks, kBlockThreads,
                   [&] { AddColumnPartials(partial.data(), chunks, c, dst.data()); });
  return dst;
}

// |got - (start + sum)| within 1e-6 of the column's sum of magnitudes (float32's
// error bound for these lengths, with room), per column.
void ExpectColumnSums(const std::vector<float>& got, const std::vector<double>& sum,
                      const std::vector<double>& magnitude, float start) {
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], start + sum[i], 1e-6 * magnitude[i] + 1e-7) << "column " << i;
}

// 300 rows = 4 chunks of 64 and one of 44; 37 columns; grids of 1, 3 and 16 blocks.
TEST(CudaColumnSums, BiasGradientMatchesFloat64Sums) {
  const int64_t rows = 300, c = 37;
  std::vector<float> dy = Normal(static_cast<size_t>(rows * c), 1);
  std::vector<Bf16> dy16 = ToStorage<Bf16>(&dy);  // the same values in both storages
  std::vector<double> sum(c, 0.0), magnitude(c, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < c; ++i) {
      sum[i] += dy[r * c + i];
      magnitude[i] += std::fabs(dy[r * c + i]);
    }
  for (unsigned blocks : {1u, 3u, 16u}) {
    SCOPED_TRACE(blocks);
    ExpectColumnSums(ColumnSums(dy, rows, c, blocks, 0.25f), sum, magnitude, 0.25f);
    ExpectColumnSums(ColumnSums(dy16, rows, c, blocks, 0.25f), sum, magnitude, 0.25f);
  }
}

// LayerNorm's dw, db (mean and rstd per row) and RMSNorm's dw (no mean, no db).
TEST(CudaColumnSums, NormParameterGradientsMatchFloat64Sums) {
  const int64_t rows = 130, c = 48;
  std::vector<float> dy = Normal(static_cast<size_t>(rows * c), 2);
  std::vector<float> x = Normal(static_cast<size_t>(rows * c), 3);
  std::vector<float> mean = Normal(static_cast<size_t>(rows), 4), rstd(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) rstd[r] = 0.5f + 0.01f * static_cast<float>(r % 17);
  for (bool layernorm : {true, false}) {
    SCOPED_TRACE(layernorm ? "layernorm" : "rmsnorm");
    std::vector<double> sw(c, 0.0), sb(c, 0.0), mw(c, 0.0), mb(c, 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < c; ++i) {
        const float xhat = (x[r * c + i] - (layernorm ? mean[r] : 0.f)) * rstd[r];
        sw[i] += static_cast<double>(dy[r * c + i]) * xhat;
        mw[i] += std::fabs(static_cast<double>(dy[r * c + i]) * xhat);
        sb[i] += dy[r * c + i];
        mb[i] += std::fabs(dy[r * c + i]);
      }
    const int64_t chunks = ColumnChunks(rows);
    std::vector<float> pw(static_cast<size_t>(chunks * c), NAN), pb(pw.size(), NAN);
    std::vector<float> dw(static_cast<size_t>(c), -1.f), db(static_cast<size_t>(c), 2.f);
    cuda_emu::Launch(2, kBlockThreads, [&] {
      NormParamPartials(View<float>{dy.data()}, View<float>{x.data()},
                        layernorm ? mean.data() : nullptr, rstd.data(), pw.data(),
                        layernorm ? pb.data() : nullptr, rows, c);
    });
    cuda_emu::Launch(2, kBlockThreads, [&] {
      AddColumnPartials(pw.data(), chunks, c, dw.data());
      if (layernorm) AddColumnPartials(pb.data(), chunks, c, db.data());
    });
    ExpectColumnSums(dw, sw, mw, -1.f);
    if (layernorm)
      ExpectColumnSums(db, sb, mb, 2.f);
    else
      for (float v : db) EXPECT_EQ(v, 2.f);  // no bias: untouched
  }
}

// The table's rows of a vocabulary shard [begin, begin + vocab) (ids outside it are
// another rank's) and the learned positions, each element's rows added in row order
// as one thread per column did: bitwise.
TEST(CudaColumnSums, EmbeddingGradientsAddTheRowsInRowOrderBitwise) {
  const int64_t batch = 3, seq = 7, rows = batch * seq, c = 20, vocab = 150, begin = 100;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> id(80, 260);  // some below, some past the shard
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  for (int32_t& e : ids) e = id(rng);
  ids[3] = ids[10] = ids[17] = 123;  // one id on several rows, so their order matters
  std::vector<float> dout = Normal(static_cast<size_t>(rows * c), 6);
  std::vector<float> table = Normal(static_cast<size_t>(vocab * c), 7),
                     pos = Normal(static_cast<size_t>(seq * c), 8);
  std::vector<float> want_table = table, want_pos = pos;
  for (int64_t i = 0; i < c; ++i)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t e = ids[r] - begin;
      if (e >= 0 && e < vocab) want_table[e * c + i] += dout[r * c + i];
      want_pos[(r % seq) * c + i] += dout[r * c + i];
    }
  cuda_emu::Launch(3, kBlockThreads, [&] {
    EmbeddingTableGrad(ids.data(), View<float>{dout.data()}, table.data(), rows, vocab, c, begin);
    EmbeddingPositionGrad(View<float>{dout.data()}, pos.data(), rows, seq, c);
  });
  for (size_t k = 0; k < table.size(); ++k) ASSERT_EQ(table[k], want_table[k]) << "table " << k;
  for (size_t k = 0; k < pos.size(); ++k) ASSERT_EQ(pos[k], want_pos[k]) << "position " << k;
}

// ---------------------------------------------------------------- against the CPU

constexpr unsigned kThreads = 256;  // cuda_backend.cu's block size

// The largest |got - want| over want's largest magnitude (1 when all zero); NaN
// when any element is NaN.
double MaxRel(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0, scale = 0;
  for (float w : want) scale = std::max(scale, std::fabs(double{w}));
  if (scale == 0) scale = 1;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) return NAN;
    worst = std::max(worst, std::fabs(double{got[i]} - want[i]));
  }
  return worst / scale;
}
constexpr double kF32 = 1e-5;

View<float> V(std::vector<float>& x) { return View<float>{x.data()}; }

// 37 rows of 300 columns (past one block's 256 threads), on 3 blocks.
TEST(CudaKernels, LayerNormMatchesTheCpu) {
  const int64_t rows = 37, c = 300;
  std::vector<float> x = Normal(rows * c, 11), w = Normal(c, 12), b = Normal(c, 13),
                     dy = Normal(rows * c, 14);
  for (float& e : x) e = 3.f + 2.f * e;  // a mean and a scale to take out
  std::vector<float> y(rows * c, NAN), mean(rows, NAN), rstd(rows, NAN);
  cuda_emu::Launch(3, kThreads, [&] {
    LayerNormFwd(V(x), w.data(), b.data(), V(y), mean.data(), rstd.data(), rows, c, 1e-5);
  });
  std::vector<float> cy(rows * c), cmean(rows), crstd(rows);
  cpu::LayerNormForward(x.data(), w.data(), b.data(), cy.data(), cmean.data(), crstd.data(), rows,
                        c, 1e-5);
  EXPECT_LE(MaxRel(y, cy), kF32);
  EXPECT_LE(MaxRel(mean, cmean), kF32);
  EXPECT_LE(MaxRel(rstd, crstd), kF32);
  for (bool acc : {false, true}) {
    SCOPED_TRACE(acc);
    std::vector<float> dx(rows * c, acc ? 0.5f : NAN), dw(c, 0.25f), db(c, -0.25f);
    std::vector<float> cdx(rows * c, 0.5f), cdw = dw, cdb = db;
    const int64_t chunks = ColumnChunks(rows);
    std::vector<float> pw(chunks * c), pb(chunks * c);
    cuda_emu::Launch(3, kThreads, [&] {
      NormBwdRows(V(dy), V(x), w.data(), mean.data(), rstd.data(), V(dx), rows, c, acc);
      NormParamPartials(V(dy), V(x), mean.data(), rstd.data(), pw.data(), pb.data(), rows, c);
    });
    cuda_emu::Launch(3, kThreads, [&] {
      AddColumnPartials(pw.data(), chunks, c, dw.data());
      AddColumnPartials(pb.data(), chunks, c, db.data());
    });
    cpu::LayerNormBackward(dy.data(), x.data(), w.data(), cmean.data(), crstd.data(), cdx.data(),
                           cdw.data(), cdb.data(), rows, c, acc);
    EXPECT_LE(MaxRel(dx, cdx), kF32) << "dx";
    EXPECT_LE(MaxRel(dw, cdw), kF32) << "dw";
    EXPECT_LE(MaxRel(db, cdb), kF32) << "db";
  }
}

TEST(CudaKernels, RMSNormMatchesTheCpu) {
  const int64_t rows = 19, c = 260;
  std::vector<float> x = Normal(rows * c, 21), w = Normal(c, 22), dy = Normal(rows * c, 23);
  std::vector<float> y(rows * c, NAN), rstd(rows, NAN), cy(rows * c), crstd(rows);
  cuda_emu::Launch(2, kThreads,
                   [&] { RMSNormFwd(V(x), w.data(), V(y), rstd.data(), rows, c, 1e-6); });
  cpu::RMSNormForward(x.data(), w.data(), cy.data(), crstd.data(), rows, c, 1e-6);
  EXPECT_LE(MaxRel(y, cy), kF32);
  EXPECT_LE(MaxRel(rstd, crstd), kF32);
  std::vector<float> dx(rows * c, NAN), dw(c, 1.f), cdx(rows * c), cdw = dw;
  const int64_t chunks = ColumnChunks(rows);
  std::vector<float> pw(chunks * c);
  cuda_emu::Launch(2, kThreads, [&] {
    NormBwdRows(V(dy), V(x), w.data(), nullptr, rstd.data(), V(dx), rows, c, false);
    NormParamPartials(V(dy), V(x), nullptr, rstd.data(), pw.data(), nullptr, rows, c);
  });
  cuda_emu::Launch(2, kThreads, [&] { AddColumnPartials(pw.data(), chunks, c, dw.data()); });
  cpu::RMSNormBackward(dy.data(), x.data(), w.data(), crstd.data(), cdx.data(), cdw.data(), rows, c,
                       false);
  EXPECT_LE(MaxRel(dx, cdx), kF32) << "dx";
  EXPECT_LE(MaxRel(dw, cdw), kF32) << "dw";
}

// The loss over a padded vocabulary (valid 90 of 96 columns), its gradient
// accumulated into, and the vocabulary-parallel three steps on a block of it.
TEST(CudaKernels, CrossEntropyMatchesTheCpu) {
  const int64_t rows = 21, vocab = 96, valid = 90;
  std::vector<float> logits = Normal(rows * vocab, 31);
  for (float& e : logits) e *= 4.f;
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 37) % valid);
  std::vector<float> lse(rows, NAN), term(rows, NAN), loss(1, NAN);
  cuda_emu::Launch(4, kThreads, [&] {
    CrossEntropyRows(V(logits), targets.data(), lse.data(), term.data(), rows, vocab, valid);
  });
  cuda_emu::Launch(1, kThreads, [&] { MeanOfRows(term.data(), loss.data(), rows); });
  std::vector<float> closs(1), clse(rows);
  ASSERT_EQ(cpu::CrossEntropyForward(logits.data(), targets.data(), closs.data(), clse.data(), rows,
                                     vocab, valid),
            -1);
  EXPECT_LE(MaxRel(loss, closs), kF32);
  EXPECT_LE(MaxRel(lse, clse), kF32);
  const float dloss = 1.5f;
  std::vector<float> dlogits(rows * vocab, 0.5f), cdlogits = dlogits;
  cuda_emu::Launch(3, kThreads, [&] {
    CrossEntropyBwd(V(logits), targets.data(), lse.data(), dloss / static_cast<float>(rows),
                    V(dlogits), rows, vocab, 0, valid, true);
  });
  cpu::CrossEntropyBackward(logits.data(), targets.data(), clse.data(), dloss, cdlogits.data(),
                            rows, vocab, true, 0, valid);
  EXPECT_LE(MaxRel(dlogits, cdlogits), kF32);
  // Columns [48, 96) of the logical logits as one rank's block: its gradient (the
  // targets below it are another rank's), then the three steps of the loss.
  const int64_t begin = 48, block = vocab - begin, classes = valid - begin;
  std::vector<float> part(rows * block);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < block; ++i) part[r * block + i] = logits[r * vocab + begin + i];
  std::vector<float> dpart(rows * block, NAN), cdpart(rows * block);
  cuda_emu::Launch(2, kThreads, [&] {
    CrossEntropyBwd(V(part), targets.data(), clse.data(), dloss / static_cast<float>(rows),
                    V(dpart), rows, block, begin, classes, false);
  });
  cpu::CrossEntropyBackward(part.data(), targets.data(), clse.data(), dloss, cdpart.data(), rows,
                            block, false, begin, valid);
  EXPECT_LE(MaxRel(dpart, cdpart), kF32) << "block's gradient";
  std::vector<float> mx(rows, NAN), sum(rows, NAN), target(rows, NAN), vloss(1, NAN),
      vlse(rows, NAN);
  cuda_emu::Launch(2, kThreads, [&] {
    VocabMaxRows(part.data(), mx.data(), rows, block, classes);
    VocabSumExpRows(part.data(), targets.data(), mx.data(), sum.data(), target.data(), rows, block,
                    begin, classes);
  });
  cuda_emu::Launch(1, kThreads, [&] {
    VocabLossKernel(mx.data(), sum.data(), target.data(), vloss.data(), vlse.data(), rows);
  });
  std::vector<float> cmx(rows), csum(rows), ctarget(rows), cvloss(1), cvlse(rows);
  cpu::VocabMax(part.data(), cmx.data(), rows, block, begin, valid);
  cpu::VocabSumExp(part.data(), targets.data(), cmx.data(), csum.data(), ctarget.data(), rows,
                   block, begin, vocab, valid);
  cpu::VocabLoss(cmx.data(), csum.data(), ctarget.data(), cvloss.data(), cvlse.data(), rows);
  EXPECT_LE(MaxRel(mx, cmx), kF32) << "max";
  EXPECT_LE(MaxRel(sum, csum), kF32) << "sum";
  EXPECT_LE(MaxRel(target, ctarget), kF32) << "target";
  EXPECT_LE(MaxRel(vloss, cvloss), kF32) << "loss";
  EXPECT_LE(MaxRel(vlse, cvlse), kF32) << "lse";
}

// The per-query kernels (float32 plans): GQA 4 / 2, head_dim 40 (lanes past it idle),
// 2 blocks of 8 warps for 2 x 4 x 23 queries.
TEST(CudaKernels, PerQueryAttentionMatchesTheCpu) {
  const int64_t b = 2, t = 23, h = 4, kv = 2, hd = 40;
  std::vector<float> q = Normal(b * t * h * hd, 41), k = Normal(b * t * kv * hd, 42),
                     v = Normal(b * t * kv * hd, 43), dout = Normal(b * t * h * hd, 44);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  std::vector<float> out(q.size(), NAN), lse(b * h * t, NAN), cout(q.size()), clse(lse.size());
  cuda_emu::Launch(2, kThreads, [&] {
    AttentionFwd(V(q), V(k), V(v), V(out), lse.data(), b, t, h, kv, hd, scale);
  });
  cpu::AttentionForward(q.data(), k.data(), v.data(), cout.data(), clse.data(), b, t, h, kv, hd);
  EXPECT_LE(MaxRel(out, cout), kF32) << "out";
  EXPECT_LE(MaxRel(lse, clse), kF32) << "lse";
  std::vector<float> dq(q.size(), 0.5f), dk(k.size(), 0.5f), dv(v.size(), 0.5f);
  std::vector<float> cdq = dq, cdk = dk, cdv = dv;
  cuda_emu::Launch(2, kThreads, [&] {
    AttentionBwdQ(V(dout), V(q), V(k), V(v), V(out), lse.data(), V(dq), b, t, h, kv, hd, scale,
                  true);
    AttentionBwdKV(V(dout), V(q), V(k), V(v), V(out), lse.data(), V(dk), V(dv), b, t, h, kv, hd,
                   scale, true);
  });
  cpu::AttentionBackward(dout.data(), q.data(), k.data(), v.data(), cout.data(), clse.data(),
                         cdq.data(), cdk.data(), cdv.data(), b, t, h, kv, hd, true);
  EXPECT_LE(MaxRel(dq, cdq), kF32) << "dq";
  EXPECT_LE(MaxRel(dk, cdk), kF32) << "dk";
  EXPECT_LE(MaxRel(dv, cdv), kF32) << "dv";
}

// A decode step of 2 tokens at position 5 of a 9-position cache, GQA 4 / 2.
TEST(CudaKernels, DecodeAttentionMatchesTheCpu) {
  const int64_t b = 2, t = 2, h = 4, kv = 2, hd = 12, context = 9, position = 5;
  std::vector<float> q = Normal(b * t * h * hd, 45), k = Normal(b * t * kv * hd, 46),
                     v = Normal(b * t * kv * hd, 47);
  std::vector<float> kc = Normal(b * context * kv * hd, 48), vc = Normal(b * context * kv * hd, 49);
  std::vector<float> ckc = kc, cvc = vc, out(q.size(), NAN), cout(q.size());
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  cuda_emu::Launch(2, kThreads, [&] {
    KvAppend(k.data(), v.data(), kc.data(), vc.data(), b, t, kv * hd, context, position);
  });
  cuda_emu::Launch(2, kThreads, [&] {
    CachedAttentionFwd(q.data(), kc.data(), vc.data(), out.data(), b, t, h, kv, hd, context,
                       position, scale);
  });
  cpu::CachedAttentionForward(q.data(), k.data(), v.data(), ckc.data(), cvc.data(), cout.data(), b,
                              t, h, kv, hd, context, position);
  EXPECT_LE(MaxRel(kc, ckc), 0.0) << "k cache";
  EXPECT_LE(MaxRel(vc, cvc), 0.0) << "v cache";
  EXPECT_LE(MaxRel(out, cout), kF32) << "out";
}

TEST(CudaKernels, ElementwiseKernelsMatchTheCpu) {
  const int64_t n = 1000;
  std::vector<float> x = Normal(n, 51), u = Normal(n, 52), dy = Normal(n, 53);
  for (float& e : x) e *= 3.f;
  std::vector<float> y(n, NAN), cy(n), dx(n, 0.5f), cdx = dx, dup(n, NAN), cdup(n);
  cuda_emu::Launch(2, kThreads, [&] { GeluFwd(V(x), V(y), n); });
  cpu::GeluForward(x.data(), cy.data(), n);
  EXPECT_LE(MaxRel(y, cy), kF32) << "gelu";
  cuda_emu::Launch(2, kThreads, [&] { GeluBwd(V(dy), V(x), V(dx), n, true); });
  cpu::GeluBackward(dy.data(), x.data(), cdx.data(), n, true);
  EXPECT_LE(MaxRel(dx, cdx), kF32) << "gelu_grad";
  cuda_emu::Launch(2, kThreads, [&] { SwigluFwd(V(x), V(u), V(y), n); });
  cpu::SwigluForward(x.data(), u.data(), cy.data(), n);
  EXPECT_LE(MaxRel(y, cy), kF32) << "swiglu";
  std::fill(dx.begin(), dx.end(), NAN);
  cuda_emu::Launch(2, kThreads, [&] { SwigluBwd(V(dy), V(x), V(u), V(dx), V(dup), n, false); });
  cpu::SwigluBackward(dy.data(), x.data(), u.data(), cdx.data(), cdup.data(), n, false);
  EXPECT_LE(MaxRel(dx, cdx), kF32) << "swiglu_grad dgate";
  EXPECT_LE(MaxRel(dup, cdup), kF32) << "swiglu_grad dup";
  cuda_emu::Launch(2, kThreads, [&] { AddFwd(V(x), V(u), V(y), n); });
  cpu::AddForward(x.data(), u.data(), cy.data(), n);
  EXPECT_LE(MaxRel(y, cy), 0.0) << "add";
}

// RoPE on 2 x 5 positions of 3 heads of 8, forward at an offset (a decode step) and
// the backward accumulated into.
TEST(CudaKernels, RopeMatchesTheCpu) {
  const int64_t b = 2, t = 5, h = 3, hd = 8, n = b * t * h * hd;
  const double theta = 10000.0;
  std::vector<float> x = Normal(n, 61), y(n, NAN), cy(n);
  cuda_emu::Launch(2, kThreads, [&] { Rope(V(x), V(y), b * t, t, h, hd, theta, 1.0, false, 7); });
  cpu::RopeForward(x.data(), cy.data(), b, t, h, hd, theta, 7);
  EXPECT_LE(MaxRel(y, cy), kF32) << "rope";
  std::vector<float> dx(n, 0.5f), cdx = dx;
  cuda_emu::Launch(2, kThreads, [&] { Rope(V(x), V(dx), b * t, t, h, hd, theta, -1.0, true); });
  cpu::RopeBackward(x.data(), cdx.data(), b, t, h, hd, theta, true);
  EXPECT_LE(MaxRel(dx, cdx), kF32) << "rope_grad";
}

// A vocabulary block [100, 250) of the table, learned positions at an offset.
TEST(CudaKernels, EmbeddingMatchesTheCpu) {
  const int64_t rows = 12, seq = 4, vocab = 150, begin = 100, c = 33;
  std::vector<int32_t> ids(rows);
  for (int64_t r = 0; r < rows; ++r) ids[r] = static_cast<int32_t>(60 + 17 * r);
  std::vector<float> table = Normal(vocab * c, 71), pos = Normal(16 * c, 72);
  std::vector<float> out(rows * c, NAN), cout(rows * c);
  cuda_emu::Launch(2, kThreads, [&] {
    EmbeddingFwd(ids.data(), table.data(), pos.data(), V(out), rows, seq, vocab, c, begin, 3);
  });
  cpu::EmbeddingForward(ids.data(), table.data(), pos.data(), cout.data(), rows, seq, vocab, c,
                        begin, 400, 3);
  EXPECT_LE(MaxRel(out, cout), 0.0);
}

TEST(CudaKernels, AdamWAndTheNormMatchTheCpu) {
  const int64_t n = 5000;
  std::vector<float> p = Normal(n, 81), g = Normal(n, 82), m = Normal(n, 83), v = Normal(n, 84);
  for (float& e : v) e = e * e;
  const double b1 = 0.9, b2 = 0.95, eps = 1e-8, lr = 3e-3, wd = 0.1, clip = 0.7;
  const int64_t step = 3;
  std::vector<float> cp = p, cm = m, cv = v;
  cuda_emu::Launch(3, kThreads, [&] {
    AdamWKernel(p.data(), g.data(), m.data(), v.data(), n, static_cast<float>(b1),
                static_cast<float>(b2), static_cast<float>(1.0 - b1), static_cast<float>(1.0 - b2),
                static_cast<float>(clip), static_cast<float>(lr / (1.0 - std::pow(b1, step))),
                static_cast<float>(1.0 / (1.0 - std::pow(b2, step))), static_cast<float>(lr * wd),
                static_cast<float>(eps));
  });
  cpu::AdamW(cp.data(), g.data(), cm.data(), cv.data(), n, lr, b1, b2, eps, wd, step, clip);
  EXPECT_LE(MaxRel(p, cp), kF32) << "param";
  EXPECT_LE(MaxRel(m, cm), kF32) << "exp_avg";
  EXPECT_LE(MaxRel(v, cv), kF32) << "exp_avg_sq";
  // The norm's sum of squares: 8 partial blocks, then their sum added to a total.
  std::vector<double> partial(8, NAN), total(1, 2.0);
  cuda_emu::Launch(8, kThreads, [&] { SumSquaresPartial(g.data(), n, partial.data()); });
  cuda_emu::Launch(1, kThreads, [&] { AddPartials(partial.data(), 8, total.data()); });
  EXPECT_NEAR(total[0], 2.0 + cpu::SumSquares(g.data(), n), 1e-9 * cpu::SumSquares(g.data(), n));
}

// The 16-bit storage path (View<Bf16>): loads widened, arithmetic in float32, one
// rounding per store, an accumulated output read, added to and rounded once; against
// the CPU kernels on the widened values, rounded as the CPU backend rounds its
// widened copies (each output within 2^-7 of its largest magnitude: one bf16 ulp
// where the two float32 results round apart).
std::vector<float> Widen(const std::vector<Bf16>& x) {
  std::vector<float> out;
  for (Bf16 e : x) out.push_back(ToFloat(e));
  return out;
}
std::vector<float> RoundBf16(std::vector<float> x) {
  for (float& e : x) e = ToFloat(FromFloat<Bf16>(e));
  return x;
}
constexpr double kBf16 = 1.0 / 128;

TEST(CudaKernels, Bf16StorageMatchesTheCpuOnWidenedValues) {
  const int64_t rows = 9, c = 96, n = rows * c;
  std::vector<float> xf = Normal(n, 91), w = Normal(c, 92), b = Normal(c, 93), dyf = Normal(n, 94);
  std::vector<Bf16> x = ToStorage<Bf16>(&xf), dy = ToStorage<Bf16>(&dyf);
  // LayerNorm: y in bf16, mean and rstd in float32.
  std::vector<Bf16> y(n, FromFloat<Bf16>(NAN));
  std::vector<float> mean(rows, NAN), rstd(rows, NAN), cy(n), cmean(rows), crstd(rows);
  cuda_emu::Launch(2, kThreads, [&] {
    LayerNormFwd(View<Bf16>{x.data()}, w.data(), b.data(), View<Bf16>{y.data()}, mean.data(),
                 rstd.data(), rows, c, 1e-5);
  });
  cpu::LayerNormForward(xf.data(), w.data(), b.data(), cy.data(), cmean.data(), crstd.data(), rows,
                        c, 1e-5);
  EXPECT_LE(MaxRel(Widen(y), RoundBf16(cy)), kBf16) << "layernorm y";
  EXPECT_LE(MaxRel(mean, cmean), kF32) << "layernorm mean";
  EXPECT_LE(MaxRel(rstd, crstd), kF32) << "layernorm rstd";
  // GELU's gradient accumulated into a bf16 dx.
  std::vector<float> dx0f = Normal(n, 95);
  std::vector<Bf16> dx = ToStorage<Bf16>(&dx0f);
  std::vector<float> cdx = dx0f;
  cuda_emu::Launch(2, kThreads, [&] {
    GeluBwd(View<Bf16>{dy.data()}, View<Bf16>{x.data()}, View<Bf16>{dx.data()}, n, true);
  });
  cpu::GeluBackward(dyf.data(), xf.data(), cdx.data(), n, true);
  EXPECT_LE(MaxRel(Widen(dx), RoundBf16(cdx)), kBf16) << "gelu_grad, accumulated";
  // Cross-entropy over bf16 logits: lse and the loss in float32.
  const int64_t vocab = 40;
  std::vector<float> lf = Normal(rows * vocab, 96);
  std::vector<Bf16> logits = ToStorage<Bf16>(&lf);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>(r * 7 % vocab);
  std::vector<float> lse(rows, NAN), term(rows, NAN), loss(1, NAN), clse(rows), closs(1);
  cuda_emu::Launch(2, kThreads, [&] {
    CrossEntropyRows(View<Bf16>{logits.data()}, targets.data(), lse.data(), term.data(), rows,
                     vocab, vocab);
  });
  cuda_emu::Launch(1, kThreads, [&] { MeanOfRows(term.data(), loss.data(), rows); });
  ASSERT_EQ(
      cpu::CrossEntropyForward(lf.data(), targets.data(), closs.data(), clse.data(), rows, vocab),
      -1);
  EXPECT_LE(MaxRel(lse, clse), kF32) << "cross_entropy lse";
  EXPECT_LE(MaxRel(loss, closs), kF32) << "cross_entropy loss";
}

// CheckIds names the first id outside [0, limit), whichever thread sees it first.
TEST(CudaKernels, CheckIdsFindsTheFirstBadId) {
  std::vector<int32_t> ids(700, 3);
  ids[650] = -1;
  ids[333] = 50;
  int bad = 1 << 30;
  cuda_emu::Launch(2, kThreads, [&] { CheckIds(ids.data(), 700, 50, &bad); });
  EXPECT_EQ(bad, 333);
}

}  // namespace heiretsu::emu
