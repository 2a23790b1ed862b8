// CPU kernels against references:
//   - forward (float) against naive float64 implementations written here, on
//     random inputs: max |kernel - reference| / max |reference| <= 1e-5;
//   - backward (the double instantiation) against central finite differences of the
//     double forward, through L = sum(r * y) with random r: max error / max |grad|
//     <= 1e-6.
#include "runtime/cpu/kernels.h"
#include "runtime/cpu/vec.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <tuple>
#include <vector>

namespace heiretsu::cpu {
namespace {

using Vec = std::vector<double>;

Vec Random(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  Vec v(n);
  for (double& x : v) x = dist(gen);
  return v;
}

std::vector<float> ToFloat(const Vec& v) { return std::vector<float>(v.begin(), v.end()); }

// max |a - b| / max |b|.
double RelDiff(const std::vector<float>& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::fabs(a[i] - b[i]));
    den = std::max(den, std::fabs(b[i]));
  }
  return num / std::max(den, 1e-30);
}

double Dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central finite differences of `loss` with respect to every element of `x`,
// compared with `analytic`: returns max error / max |analytic|.
double FiniteDiffError(Vec& x, const Vec& analytic, const std::function<double()>& loss) {
  const double h = 1e-5;
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double saved = x[i];
    x[i] = saved + h;
    double lp = loss();
    x[i] = saved - h;
    double lm = loss();
    x[i] = saved;
    double fd = (lp - lm) / (2 * h);
    num = std::max(num, std::fabs(fd - analytic[i]));
    den = std::max(den, std::fabs(analytic[i]));
  }
  EXPECT_GT(den, 0.0) << "gradient is identically zero: the check would prove nothing";
  return num / std::max(den, 1e-30);
}

constexpr double kForwardTol = 1e-5;
constexpr double kGradTol = 1e-6;

//===----------------------------------------------------------------------===//
// Linear
//===----------------------------------------------------------------------===//

TEST(CpuKernels, LinearForwardMatchesReference) {
  const int64_t rows = 37, in = 48, out = 29;
  Vec x = Random(rows * in, 1), w = Random(out * in, 2), b = Random(out, 3);
  Vec ref(rows * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[o];
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      ref[r * out + o] = s;
    }
  auto xf = ToFloat(x), wf = ToFloat(w), bf = ToFloat(b);
  std::vector<float> y(rows * out, NAN);
  LinearForward(xf.data(), wf.data(), bf.data(), y.data(), rows, in, out);
  EXPECT_LE(RelDiff(y, ref), kForwardTol);
}

TEST(CpuKernels, LinearBackwardMatchesFiniteDifferences) {
  const int64_t rows = 6, in = 5, out = 4;
  Vec x = Random(rows * in, 4), w = Random(out * in, 5), b = Random(out, 6);
  Vec r = Random(rows * out, 7);
  auto loss = [&] {
    Vec y(rows * out);
    LinearForward(x.data(), w.data(), b.data(), y.data(), rows, in, out);
    return Dot(y, r);
  };
  Vec dx(rows * in), dw(out * in, 0.0), db(out, 0.0);
  LinearBackward(r.data(), x.data(), w.data(), dx.data(), dw.data(), db.data(), rows, in, out,
                 false);
  EXPECT_LE(FiniteDiffError(x, dx, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(w, dw, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(b, db, loss), kGradTol);
}

TEST(CpuKernels, LinearBackwardAccumulates) {
  const int64_t rows = 3, in = 2, out = 2;
  Vec x = Random(rows * in, 8), w = Random(out * in, 9), dy = Random(rows * out, 10);
  Vec dx1(rows * in), dw1(out * in, 0.0);
  LinearBackward(dy.data(), x.data(), w.data(), dx1.data(), dw1.data(), (double*)nullptr, rows,
                 in, out, false);
  Vec dx2 = dx1, dw2 = dw1;
  LinearBackward(dy.data(), x.data(), w.data(), dx2.data(), dw2.data(), (double*)nullptr, rows,
                 in, out, true);
  for (size_t i = 0; i < dx1.size(); ++i) EXPECT_DOUBLE_EQ(dx2[i], 2 * dx1[i]);
  for (size_t i = 0; i < dw1.size(); ++i) EXPECT_DOUBLE_EQ(dw2[i], 2 * dw1[i]);
}

// The step's first write of a weight gradient (overwrite_dw, the executor's
// PlanFirstWrites) gives bitwise what adding to zeroed gradients gives, and ignores
// what the buffer held (NaN here: a BLAS with beta = 0 must not read C).
TEST(CpuKernels, WeightGradientsOverwriteBitwiseAsAddingToZeros) {
  const int64_t rows = 64, in = 96, out = 160;
  const std::vector<float> x = ToFloat(Random(rows * in, 40)), w = ToFloat(Random(out * in, 41)),
                           dy = ToFloat(Random(rows * out, 42)), dx0(rows * in, 0.f);
  const float nan = std::nanf("");
  auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  {
    std::vector<float> dx = dx0, dw(out * in, 0.f), db(out, 0.f);
    LinearBackward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), db.data(), rows, in, out,
                   false);
    std::vector<float> dx2 = dx0, dw2(out * in, nan), db2(out, nan);
    LinearBackward(dy.data(), x.data(), w.data(), dx2.data(), dw2.data(), db2.data(), rows, in,
                   out, false, /*overwrite_dw=*/true);
    EXPECT_TRUE(same(dw, dw2));
    EXPECT_TRUE(same(db, db2));
    EXPECT_TRUE(same(dx, dx2));
  }
  const int64_t c = in;
  const std::vector<float> g = ToFloat(Random(rows * c, 43)), lw = ToFloat(Random(c, 44)),
                           lb = ToFloat(Random(c, 45));
  std::vector<float> y(rows * c), mean(rows), rstd(rows);
  LayerNormForward(x.data(), lw.data(), lb.data(), y.data(), mean.data(), rstd.data(), rows, c,
                   1e-5);
  {
    std::vector<float> dx(rows * c), dw(c, 0.f), db(c, 0.f), dx2(rows * c), dw2(c, nan),
        db2(c, nan);
    LayerNormBackward(g.data(), x.data(), lw.data(), mean.data(), rstd.data(), dx.data(),
                      dw.data(), db.data(), rows, c, false);
    LayerNormBackward(g.data(), x.data(), lw.data(), mean.data(), rstd.data(), dx2.data(),
                      dw2.data(), db2.data(), rows, c, false, /*overwrite_dw=*/true);
    EXPECT_TRUE(same(dw, dw2));
    EXPECT_TRUE(same(db, db2));
  }
  RMSNormForward(x.data(), lw.data(), y.data(), rstd.data(), rows, c, 1e-5);
  {
    std::vector<float> dx(rows * c), dw(c, 0.f), dx2(rows * c), dw2(c, nan);
    RMSNormBackward(g.data(), x.data(), lw.data(), rstd.data(), dx.data(), dw.data(), rows, c,
                    false);
    RMSNormBackward(g.data(), x.data(), lw.data(), rstd.data(), dx2.data(), dw2.data(), rows, c,
                    false, /*overwrite_dw=*/true);
    EXPECT_TRUE(same(dw, dw2));
  }
}

// Which OpenBLAS kernels heiretsu asks for (issue #15): SkylakeX on a CPU with
// AVX-512 that OpenBLAS detected as one without; nothing when its choice already
// uses AVX-512, the CPU has none, or the user chose (OPENBLAS_CORETYPE).
TEST(CpuKernels, OpenBlasKernelsAreChosenByTheCpusFeatures) {
  EXPECT_EQ(OpenBlasCoreOverride("Prescott", true, false), "SkylakeX");
  EXPECT_EQ(OpenBlasCoreOverride("Haswell", true, false), "SkylakeX");
  EXPECT_EQ(OpenBlasCoreOverride("SkylakeX", true, false), "");
  EXPECT_EQ(OpenBlasCoreOverride("Zen4", true, false), "");
  EXPECT_EQ(OpenBlasCoreOverride("Zen", false, false), "");
  EXPECT_EQ(OpenBlasCoreOverride("Prescott", true, true), "");
  // This machine's own choice is left alone or replaced by an AVX-512 one.
  const std::string mine = OpenBlasCoreOverride(OpenBlasCoreName(), CpuHasAvx512(), false);
  EXPECT_TRUE(mine.empty() || CpuHasAvx512()) << mine;
  std::string advice;
  if (ActiveBlas() == Blas::kOpenBlas)
    EXPECT_NE(DescribeBlas(&advice).find(OpenBlasCoreName() + " kernels"), std::string::npos);
  else
    EXPECT_EQ(DescribeBlas(&advice).rfind("oneDNN ", 0), 0u) << DescribeBlas(&advice);
}

// Which library runs the float GEMMs (kernels.h: ActiveBlas): oneDNN on AVX-512
// CPUs, OpenBLAS elsewhere, unless HEIRETSU_BLAS says; anything else is refused.
TEST(CpuKernels, BlasChoiceFollowsTheMeasuredRule) {
  Blas b = Blas::kOpenBlas;
  ASSERT_TRUE(ChooseBlas(nullptr, true, &b));
  EXPECT_EQ(b, Blas::kOneDnn);
  ASSERT_TRUE(ChooseBlas(nullptr, false, &b));
  EXPECT_EQ(b, Blas::kOpenBlas);
  ASSERT_TRUE(ChooseBlas("auto", true, &b));
  EXPECT_EQ(b, Blas::kOneDnn);
  ASSERT_TRUE(ChooseBlas("openblas", true, &b));
  EXPECT_EQ(b, Blas::kOpenBlas);
  ASSERT_TRUE(ChooseBlas("onednn", false, &b));
  EXPECT_EQ(b, Blas::kOneDnn);
  b = Blas::kOneDnn;
  EXPECT_FALSE(ChooseBlas("mkl", false, &b));
  EXPECT_FALSE(ChooseBlas("", false, &b));
  EXPECT_EQ(b, Blas::kOneDnn);  // left alone
}

// Both libraries compute the same product: every transpose combination, beta 0 and
// 1, odd shapes and the decode step's single row, against a float64 reference
// (|c - ref| <= 1e-5 x sum_k |a_ik b_kj| + 1e-6).
TEST(CpuKernels, FloatGemmMatchesDoubleOnBothLibraries) {
  const Blas before = ActiveBlas();
  for (Blas blas : {Blas::kOpenBlas, Blas::kOneDnn}) {
    UseBlas(blas);
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{37, 29, 53}, {1, 64, 96}, {128, 3, 1}})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
          for (float beta : {0.f, 1.f}) {
            std::vector<float> a(m * k), bm(k * n), c(m * n);
            for (size_t i = 0; i < a.size(); ++i) a[i] = std::sin(0.37 * i + 1);
            for (size_t i = 0; i < bm.size(); ++i) bm[i] = std::cos(0.23 * i + 2);
            for (size_t i = 0; i < c.size(); ++i) c[i] = 0.5f * std::sin(0.11 * i);
            const std::vector<float> c0 = c;
            Gemm<float>(ta, tb, m, n, k, 0.75f, a.data(), bm.data(), beta, c.data());
            for (int64_t i = 0; i < m; ++i)
              for (int64_t j = 0; j < n; ++j) {
                double ref = beta * c0[i * n + j], mag = 1e-6;
                for (int64_t l = 0; l < k; ++l) {
                  const double x = ta ? a[l * m + i] : a[i * k + l];
                  const double y = tb ? bm[j * k + l] : bm[l * n + j];
                  ref += 0.75 * x * y;
                  mag += std::abs(0.75 * x * y);
                }
                ASSERT_LE(std::abs(c[i * n + j] - ref), 1e-5 * (mag + std::abs(c0[i * n + j])))
                    << (blas == Blas::kOneDnn ? "oneDNN" : "OpenBLAS") << " m " << m << " n " << n
                    << " k " << k << " ta " << ta << " tb " << tb << " beta " << beta;
              }
          }
  }
  UseBlas(before);
}

// The split backward of zero-bubble schedules: the input gradient alone, then the
// weight gradients alone, give exactly what one call gives.
TEST(CpuKernels, LinearBackwardSplitIntoInputAndWeightGradients) {
  const int64_t rows = 3, in = 4, out = 2;
  Vec x = Random(rows * in, 11), w = Random(out * in, 12), dy = Random(rows * out, 13);
  Vec dx(rows * in), dw(out * in, 0.0), db(out, 0.0);
  LinearBackward(dy.data(), x.data(), w.data(), dx.data(), dw.data(), db.data(), rows, in, out,
                 false);
  Vec dx_only(rows * in), dw_only(out * in, 0.0), db_only(out, 0.0);
  LinearBackward(dy.data(), x.data(), w.data(), dx_only.data(), (double*)nullptr,
                 (double*)nullptr, rows, in, out, false);
  LinearBackward(dy.data(), x.data(), w.data(), (double*)nullptr, dw_only.data(), db_only.data(),
                 rows, in, out, false);
  EXPECT_EQ(dx_only, dx);
  EXPECT_EQ(dw_only, dw);
  EXPECT_EQ(db_only, db);
}

//===----------------------------------------------------------------------===//
// Embedding
//===----------------------------------------------------------------------===//

TEST(CpuKernels, EmbeddingForwardAndBackward) {
  const int64_t vocab = 11, c = 7, seq = 5, rows = 10;
  Vec table = Random(vocab * c, 11), pos = Random(seq * c, 12);
  std::vector<int32_t> ids = {3, 0, 10, 3, 3, 7, 1, 2, 9, 3};  // repeats exercise the scatter
  auto tf = ToFloat(table), pf = ToFloat(pos);
  std::vector<float> out(rows * c, NAN);
  ASSERT_EQ(EmbeddingForward(ids.data(), tf.data(), pf.data(), out.data(), rows, seq, vocab, c),
            -1);
  Vec ref(rows * c);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < c; ++i) ref[r * c + i] = table[ids[r] * c + i] + pos[(r % seq) * c + i];
  EXPECT_LE(RelDiff(out, ref), kForwardTol);
  // A decode step's offset: one token at position t reads positions row t.
  std::vector<float> one(rows * c, NAN);
  for (int64_t r = 0; r < rows; ++r)
    ASSERT_EQ(EmbeddingForward(ids.data() + r, tf.data(), pf.data(), one.data() + r * c, 1, 1,
                               vocab, c, 0, -1, r % seq),
              -1);
  EXPECT_LE(RelDiff(one, ref), kForwardTol);

  Vec rr = Random(rows * c, 13);
  auto loss = [&] {
    Vec y(rows * c);
    EmbeddingForward(ids.data(), table.data(), pos.data(), y.data(), rows, seq, vocab, c);
    return Dot(y, rr);
  };
  Vec dtable(vocab * c, 0.0), dpos(seq * c, 0.0);
  EmbeddingBackward(ids.data(), rr.data(), dtable.data(), dpos.data(), rows, seq, c);
  EXPECT_LE(FiniteDiffError(table, dtable, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(pos, dpos, loss), kGradTol);
}

TEST(CpuKernels, EmbeddingRejectsOutOfRangeIds) {
  std::vector<int32_t> ids = {1, 2, 5, -1};
  std::vector<float> table(4 * 2, 0.f), out(4 * 2);
  EXPECT_EQ(EmbeddingForward(ids.data(), table.data(), (float*)nullptr, out.data(), 4, 4, 4, 2),
            2);
}

//===----------------------------------------------------------------------===//
// Norms
//===----------------------------------------------------------------------===//

TEST(CpuKernels, LayerNormForwardMatchesReference) {
  const int64_t rows = 19, c = 64;
  Vec x = Random(rows * c, 14, 3.0), w = Random(c, 15), b = Random(c, 16);
  Vec ref(rows * c);
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t i = 0; i < c; ++i) mu += x[r * c + i] / c;
    for (int64_t i = 0; i < c; ++i) var += (x[r * c + i] - mu) * (x[r * c + i] - mu) / c;
    for (int64_t i = 0; i < c; ++i)
      ref[r * c + i] = (x[r * c + i] - mu) / std::sqrt(var + 1e-5) * w[i] + b[i];
  }
  auto xf = ToFloat(x), wf = ToFloat(w), bf = ToFloat(b);
  std::vector<float> y(rows * c, NAN), mean(rows), rstd(rows);
  LayerNormForward(xf.data(), wf.data(), bf.data(), y.data(), mean.data(), rstd.data(), rows, c,
                   1e-5);
  EXPECT_LE(RelDiff(y, ref), kForwardTol);
}

TEST(CpuKernels, LayerNormBackwardMatchesFiniteDifferences) {
  const int64_t rows = 4, c = 6;
  Vec x = Random(rows * c, 17), w = Random(c, 18), b = Random(c, 19), r = Random(rows * c, 20);
  auto loss = [&] {
    Vec y(rows * c), mean(rows), rstd(rows);
    LayerNormForward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, c,
                     1e-5);
    return Dot(y, r);
  };
  Vec y(rows * c), mean(rows), rstd(rows);
  LayerNormForward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, c,
                   1e-5);
  Vec dx(rows * c), dw(c, 0.0), db(c, 0.0);
  LayerNormBackward(r.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                    db.data(), rows, c, false);
  EXPECT_LE(FiniteDiffError(x, dx, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(w, dw, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(b, db, loss), kGradTol);
}

TEST(CpuKernels, RMSNormForwardMatchesReference) {
  const int64_t rows = 13, c = 48;
  Vec x = Random(rows * c, 21, 2.0), w = Random(c, 22);
  Vec ref(rows * c);
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t i = 0; i < c; ++i) ms += x[r * c + i] * x[r * c + i] / c;
    for (int64_t i = 0; i < c; ++i) ref[r * c + i] = x[r * c + i] / std::sqrt(ms + 1e-6) * w[i];
  }
  auto xf = ToFloat(x), wf = ToFloat(w);
  std::vector<float> y(rows * c, NAN), rstd(rows);
  RMSNormForward(xf.data(), wf.data(), y.data(), rstd.data(), rows, c, 1e-6);
  EXPECT_LE(RelDiff(y, ref), kForwardTol);
}

TEST(CpuKernels, RMSNormBackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, c = 8;
  Vec x = Random(rows * c, 23), w = Random(c, 24), r = Random(rows * c, 25);
  auto loss = [&] {
    Vec y(rows * c), rstd(rows);
    RMSNormForward(x.data(), w.data(), y.data(), rstd.data(), rows, c, 1e-6);
    return Dot(y, r);
  };
  Vec y(rows * c), rstd(rows);
  RMSNormForward(x.data(), w.data(), y.data(), rstd.data(), rows, c, 1e-6);
  Vec dx(rows * c), dw(c, 0.0);
  RMSNormBackward(r.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data(), rows, c, false);
  EXPECT_LE(FiniteDiffError(x, dx, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(w, dw, loss), kGradTol);
}

//===----------------------------------------------------------------------===//
// Activations
//===----------------------------------------------------------------------===//

TEST(CpuKernels, GeluForwardAndBackward) {
  const int64_t n = 200;
  Vec x = Random(n, 26, 2.0);
  Vec ref(n);
  for (int64_t i = 0; i < n; ++i) {
    double v = x[i];
    ref[i] = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  auto xf = ToFloat(x);
  std::vector<float> y(n, NAN);
  GeluForward(xf.data(), y.data(), n);
  EXPECT_LE(RelDiff(y, ref), kForwardTol);

  Vec r = Random(n, 27);
  auto loss = [&] {
    Vec yy(n);
    GeluForward(x.data(), yy.data(), n);
    return Dot(yy, r);
  };
  Vec dx(n);
  GeluBackward(r.data(), x.data(), dx.data(), n, false);
  EXPECT_LE(FiniteDiffError(x, dx, loss), kGradTol);
}

TEST(CpuKernels, SwigluForwardAndBackward) {
  const int64_t n = 150;
  Vec g = Random(n, 28, 2.0), u = Random(n, 29);
  Vec ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
  auto gf = ToFloat(g), uf = ToFloat(u);
  std::vector<float> y(n, NAN);
  SwigluForward(gf.data(), uf.data(), y.data(), n);
  EXPECT_LE(RelDiff(y, ref), kForwardTol);

  Vec r = Random(n, 30);
  auto loss = [&] {
    Vec yy(n);
    SwigluForward(g.data(), u.data(), yy.data(), n);
    return Dot(yy, r);
  };
  Vec dg(n), du(n);
  SwigluBackward(r.data(), g.data(), u.data(), dg.data(), du.data(), n, false);
  EXPECT_LE(FiniteDiffError(g, dg, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(u, du, loss), kGradTol);
}

//===----------------------------------------------------------------------===//
// RoPE and attention
//===----------------------------------------------------------------------===//

TEST(CpuKernels, RopeForwardAndBackward) {
  const int64_t batch = 2, seq = 5, heads = 3, hd = 8;
  const double theta = 10000.0;
  const int64_t n = batch * seq * heads * hd;
  Vec x = Random(n, 31);
  Vec ref(n);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          int64_t at = ((b * seq + t) * heads + h) * hd + 2 * i;
          double a = t * std::pow(theta, -2.0 * i / hd);
          ref[at] = x[at] * std::cos(a) - x[at + 1] * std::sin(a);
          ref[at + 1] = x[at] * std::sin(a) + x[at + 1] * std::cos(a);
        }
  auto xf = ToFloat(x);
  std::vector<float> y(n, NAN);
  RopeForward(xf.data(), y.data(), batch, seq, heads, hd, theta);
  EXPECT_LE(RelDiff(y, ref), kForwardTol);
  // A decode step's offset: token t of each sequence alone, at position t.
  std::vector<float> one(n, NAN);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < seq; ++t) {
      const int64_t at = (b * seq + t) * heads * hd;
      RopeForward(xf.data() + at, one.data() + at, 1, 1, heads, hd, theta, t);
    }
  EXPECT_LE(RelDiff(one, ref), kForwardTol);

  Vec r = Random(n, 32);
  auto loss = [&] {
    Vec yy(n);
    RopeForward(x.data(), yy.data(), batch, seq, heads, hd, theta);
    return Dot(yy, r);
  };
  Vec dx(n);
  RopeBackward(r.data(), dx.data(), batch, seq, heads, hd, theta, false);
  EXPECT_LE(FiniteDiffError(x, dx, loss), kGradTol);
}

// Naive causal attention in double with the full score matrix.
Vec ReferenceAttention(const Vec& q, const Vec& k, const Vec& v, int64_t batch, int64_t seq,
                       int64_t heads, int64_t kv_heads, int64_t hd) {
  Vec out(batch * seq * heads * hd, 0.0);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h) {
      int64_t kh = h / (heads / kv_heads);
      for (int64_t t = 0; t < seq; ++t) {
        std::vector<double> s(seq, -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += q[((b * seq + t) * heads + h) * hd + d] *
                   k[((b * seq + j) * kv_heads + kh) * hd + d];
          s[j] = dot / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= t; ++j) sum += std::exp(s[j] - mx);
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t d = 0; d < hd; ++d)
            out[((b * seq + t) * heads + h) * hd + d] +=
                std::exp(s[j] - mx) / sum * v[((b * seq + j) * kv_heads + kh) * hd + d];
      }
    }
  return out;
}

struct AttnShape {
  int64_t batch, seq, heads, kv_heads, hd;
};

class AttentionTest : public ::testing::TestWithParam<AttnShape> {};

TEST_P(AttentionTest, ForwardMatchesReference) {
  const AttnShape s = GetParam();
  Vec q = Random(s.batch * s.seq * s.heads * s.hd, 33);
  Vec k = Random(s.batch * s.seq * s.kv_heads * s.hd, 34);
  Vec v = Random(s.batch * s.seq * s.kv_heads * s.hd, 35);
  Vec ref = ReferenceAttention(q, k, v, s.batch, s.seq, s.heads, s.kv_heads, s.hd);
  auto qf = ToFloat(q), kf = ToFloat(k), vf = ToFloat(v);
  // Both ways (AttentionForward picks one by seq), one block of queries here.
  for (auto forward : {AttentionForwardRows<float>, AttentionForwardBlocked<float>}) {
    std::vector<float> out(q.size(), NAN), lse(s.batch * s.heads * s.seq);
    forward(qf.data(), kf.data(), vf.data(), out.data(), lse.data(), s.batch, s.seq, s.heads,
            s.kv_heads, s.hd);
    EXPECT_LE(RelDiff(out, ref), kForwardTol);
  }
}

TEST_P(AttentionTest, BackwardMatchesFiniteDifferences) {
  const AttnShape s = GetParam();
  Vec q = Random(s.batch * s.seq * s.heads * s.hd, 36);
  Vec k = Random(s.batch * s.seq * s.kv_heads * s.hd, 37);
  Vec v = Random(s.batch * s.seq * s.kv_heads * s.hd, 38);
  Vec r = Random(q.size(), 39);
  Vec out(q.size()), lse(s.batch * s.heads * s.seq);
  auto forward = [&] {
    AttentionForward(q.data(), k.data(), v.data(), out.data(), lse.data(), s.batch, s.seq,
                     s.heads, s.kv_heads, s.hd);
  };
  auto loss = [&] {
    forward();
    return Dot(out, r);
  };
  // Both ways (AttentionBackward picks one by seq): the rows, and the blocks through
  // GEMMs (one block of the shape's seq < kAttentionBlockRows queries here; the
  // test below covers several). The finite differences leave out and lse at a
  // perturbed input's: each way starts from the forward of the inputs.
  for (auto backward : {AttentionBackwardRows<double>, AttentionBackwardBlocked<double>}) {
    forward();
    Vec dq(q.size()), dk(k.size()), dv(v.size());
    backward(r.data(), q.data(), k.data(), v.data(), out.data(), lse.data(), dq.data(),
             dk.data(), dv.data(), s.batch, s.seq, s.heads, s.kv_heads, s.hd, false);
    EXPECT_LE(FiniteDiffError(q, dq, loss), kGradTol);
    EXPECT_LE(FiniteDiffError(k, dk, loss), kGradTol);
    EXPECT_LE(FiniteDiffError(v, dv, loss), kGradTol);
  }
}

// The blocked forward and backward over several blocks of queries (seq 300 = 128 + 128 + 44,
// grouped-query, head_dim 64 for the AVX2 scores and 12 for the portable ones) in
// float against the per-row one in float64 (the reference the finite differences
// above check), accumulating into gradients that hold values, as the rows do.
TEST(CpuKernels, BlockedAttentionMatchesTheRowsOverSeveralBlocks) {
  for (int64_t hd : {64, 12}) {
    const int64_t batch = 2, seq = 300, heads = 4, kv_heads = 2;
    ASSERT_GT(seq, 2 * kAttentionBlockRows);
    Vec q = Random(batch * seq * heads * hd, 50), k = Random(batch * seq * kv_heads * hd, 51);
    Vec v = Random(k.size(), 52), r = Random(q.size(), 53);
    Vec out(q.size()), lse(batch * heads * seq);
    AttentionForwardRows(q.data(), k.data(), v.data(), out.data(), lse.data(), batch, seq, heads,
                         kv_heads, hd);
    {  // the blocked forward, in float, against the reference and the rows' lse
      auto qf = ToFloat(q), kf = ToFloat(k), vf = ToFloat(v);
      std::vector<float> outf(q.size(), NAN), lsef(lse.size(), NAN);
      AttentionForwardBlocked(qf.data(), kf.data(), vf.data(), outf.data(), lsef.data(), batch,
                              seq, heads, kv_heads, hd);
      EXPECT_LE(RelDiff(outf, ReferenceAttention(q, k, v, batch, seq, heads, kv_heads, hd)),
                kForwardTol) << "head_dim " << hd;
      EXPECT_LE(RelDiff(lsef, lse), kForwardTol) << "head_dim " << hd;
    }
    Vec dq = Random(q.size(), 54), dk = Random(k.size(), 55), dv = Random(v.size(), 56);
    auto dqf = ToFloat(dq), dkf = ToFloat(dk), dvf = ToFloat(dv);
    AttentionBackwardRows(r.data(), q.data(), k.data(), v.data(), out.data(), lse.data(),
                          dq.data(), dk.data(), dv.data(), batch, seq, heads, kv_heads, hd, true);
    auto rf = ToFloat(r), qf = ToFloat(q), kf = ToFloat(k), vf = ToFloat(v), of = ToFloat(out),
         lf = ToFloat(lse);
    AttentionBackwardBlocked(rf.data(), qf.data(), kf.data(), vf.data(), of.data(), lf.data(),
                             dqf.data(), dkf.data(), dvf.data(), batch, seq, heads, kv_heads, hd,
                             true);
    EXPECT_LE(RelDiff(dqf, dq), kForwardTol) << "head_dim " << hd;
    EXPECT_LE(RelDiff(dkf, dk), kForwardTol) << "head_dim " << hd;
    EXPECT_LE(RelDiff(dvf, dv), kForwardTol) << "head_dim " << hd;
  }
}

// The decode step against the same float64 reference: the sequence fed through the
// caches one position at a time (and, for the last positions, two at a time) gives the
// full causal attention's output; the cache rows past the last position stay unread
// (filled with NaN, they would poison the output).
TEST_P(AttentionTest, CachedDecodeMatchesReference) {
  const AttnShape s = GetParam();
  Vec q = Random(s.batch * s.seq * s.heads * s.hd, 33);
  Vec k = Random(s.batch * s.seq * s.kv_heads * s.hd, 34);
  Vec v = Random(s.batch * s.seq * s.kv_heads * s.hd, 35);
  Vec ref = ReferenceAttention(q, k, v, s.batch, s.seq, s.heads, s.kv_heads, s.hd);
  const int64_t context = s.seq + 3, qw = s.heads * s.hd, kw = s.kv_heads * s.hd;
  std::vector<float> kc(s.batch * context * kw, NAN), vc(kc.size(), NAN);
  std::vector<float> out(q.size(), NAN);
  // Tokens [t, t + n) of every sequence, gathered into [batch, n, .] inputs.
  auto run = [&](int64_t t, int64_t n) {
    std::vector<float> qs(s.batch * n * qw), ks(s.batch * n * kw), vs(s.batch * n * kw);
    std::vector<float> os(qs.size());
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = b * s.seq + t + i, at = b * n + i;
        for (int64_t d = 0; d < qw; ++d) qs[at * qw + d] = static_cast<float>(q[row * qw + d]);
        for (int64_t d = 0; d < kw; ++d) {
          ks[at * kw + d] = static_cast<float>(k[row * kw + d]);
          vs[at * kw + d] = static_cast<float>(v[row * kw + d]);
        }
      }
    CachedAttentionForward(qs.data(), ks.data(), vs.data(), kc.data(), vc.data(), os.data(),
                           s.batch, n, s.heads, s.kv_heads, s.hd, context, t);
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t i = 0; i < n; ++i)
        std::copy_n(os.begin() + (b * n + i) * qw, qw, out.begin() + (b * s.seq + t + i) * qw);
  };
  int64_t t = 0;
  for (; t + 2 < s.seq; ++t) run(t, 1);
  run(t, s.seq - t);
  EXPECT_LE(RelDiff(out, ref), kForwardTol);
}

// The float kernels against the double ones (which the finite differences above
// check), for both the forward's lse and every gradient, written and accumulated.
// On a CPU with AVX2 the float path of head_dim % 8 == 0 is vec.h's.
TEST_P(AttentionTest, FloatBackwardMatchesDouble) {
  const AttnShape s = GetParam();
  Vec q = Random(s.batch * s.seq * s.heads * s.hd, 50);
  Vec k = Random(s.batch * s.seq * s.kv_heads * s.hd, 51);
  Vec v = Random(s.batch * s.seq * s.kv_heads * s.hd, 52);
  Vec dout = Random(q.size(), 53);
  Vec out(q.size()), lse(s.batch * s.heads * s.seq);
  AttentionForward(q.data(), k.data(), v.data(), out.data(), lse.data(), s.batch, s.seq, s.heads,
                   s.kv_heads, s.hd);
  Vec dq(q.size()), dk(k.size()), dv(v.size());
  AttentionBackward(dout.data(), q.data(), k.data(), v.data(), out.data(), lse.data(), dq.data(),
                    dk.data(), dv.data(), s.batch, s.seq, s.heads, s.kv_heads, s.hd, false);
  auto qf = ToFloat(q), kf = ToFloat(k), vf = ToFloat(v), df = ToFloat(dout);
  std::vector<float> outf(q.size(), NAN), lsef(lse.size(), NAN);
  AttentionForward(qf.data(), kf.data(), vf.data(), outf.data(), lsef.data(), s.batch, s.seq,
                   s.heads, s.kv_heads, s.hd);
  EXPECT_LE(RelDiff(outf, out), kForwardTol);
  EXPECT_LE(RelDiff(lsef, lse), kForwardTol);
  std::vector<float> dqf(q.size(), NAN), dkf(k.size(), NAN), dvf(v.size(), NAN);
  AttentionBackward(df.data(), qf.data(), kf.data(), vf.data(), outf.data(), lsef.data(),
                    dqf.data(), dkf.data(), dvf.data(), s.batch, s.seq, s.heads, s.kv_heads, s.hd,
                    false);
  EXPECT_LE(RelDiff(dqf, dq), kForwardTol);
  EXPECT_LE(RelDiff(dkf, dk), kForwardTol);
  EXPECT_LE(RelDiff(dvf, dv), kForwardTol);
  // Accumulating adds the same gradients to what is there.
  auto twice = [](const Vec& g) {
    Vec t = g;
    for (double& x : t) x *= 2;
    return t;
  };
  AttentionBackward(df.data(), qf.data(), kf.data(), vf.data(), outf.data(), lsef.data(),
                    dqf.data(), dkf.data(), dvf.data(), s.batch, s.seq, s.heads, s.kv_heads, s.hd,
                    true);
  EXPECT_LE(RelDiff(dqf, twice(dq)), kForwardTol);
  EXPECT_LE(RelDiff(dkf, twice(dk)), kForwardTol);
  EXPECT_LE(RelDiff(dvf, twice(dv)), kForwardTol);
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttnShape{2, 5, 2, 2, 4},    // multi-head
                                           AttnShape{1, 6, 4, 2, 4},    // GQA, 2 per group
                                           AttnShape{2, 4, 3, 1, 2},    // multi-query
                                           // head_dim % 8 == 0: the AVX2 rows (8 and 32
                                           // columns at a time, a tail of 8; sequences
                                           // longer than 8 for the masked exponentials)
                                           AttnShape{2, 9, 2, 2, 8},
                                           AttnShape{1, 11, 4, 2, 16},
                                           AttnShape{1, 13, 2, 1, 40}));

//===----------------------------------------------------------------------===//
// Loss, norm, optimizer
//===----------------------------------------------------------------------===//

TEST(CpuKernels, CrossEntropyForwardAndBackward) {
  const int64_t rows = 7, vocab = 13;
  Vec logits = Random(rows * vocab, 40, 3.0);
  std::vector<int32_t> targets = {0, 12, 5, 5, 7, 1, 3};
  double ref = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[r * vocab + i]);
    ref += (std::log(sum) - logits[r * vocab + targets[r]]) / rows;
  }
  auto lf = ToFloat(logits);
  std::vector<float> lse(rows);
  float loss = NAN;
  ASSERT_EQ(CrossEntropyForward(lf.data(), targets.data(), &loss, lse.data(), rows, vocab), -1);
  EXPECT_NEAR(loss, ref, kForwardTol * std::fabs(ref));

  auto lossFn = [&] {
    Vec l(rows);
    double out = 0;
    CrossEntropyForward(logits.data(), targets.data(), &out, l.data(), rows, vocab);
    return 2.5 * out;
  };
  Vec l(rows), dlogits(rows * vocab);
  double out = 0;
  CrossEntropyForward(logits.data(), targets.data(), &out, l.data(), rows, vocab);
  CrossEntropyBackward(logits.data(), targets.data(), l.data(), 2.5, dlogits.data(), rows, vocab,
                       false);
  EXPECT_LE(FiniteDiffError(logits, dlogits, lossFn), kGradTol);
}

TEST(CpuKernels, CrossEntropyRejectsOutOfRangeTargets) {
  std::vector<float> logits(3 * 4, 0.f), lse(3);
  std::vector<int32_t> targets = {0, 4, 1};
  float loss = 7.f;
  EXPECT_EQ(CrossEntropyForward(logits.data(), targets.data(), &loss, lse.data(), 3, 4), 1);
  EXPECT_EQ(loss, 7.f);
}

// The vocabulary-parallel pieces, run on `parts` blocks of the vocabulary with the
// all_reduces done by hand, against the fused kernels on the whole vocabulary.
TEST(CpuKernels, VocabParallelCrossEntropyMatchesFused) {
  const int64_t rows = 6, vocab = 12;
  std::vector<float> logits = ToFloat(Random(rows * vocab, 41, 3.0));
  std::vector<int32_t> targets = {0, 11, 5, 6, 3, 8};
  float loss = 0;
  std::vector<float> lse(rows), dlogits(rows * vocab);
  ASSERT_EQ(CrossEntropyForward(logits.data(), targets.data(), &loss, lse.data(), rows, vocab), -1);
  CrossEntropyBackward(logits.data(), targets.data(), lse.data(), 0.5f, dlogits.data(), rows, vocab,
                       false);
  for (int64_t parts : {2, 3, 4}) {
    const int64_t v = vocab / parts;
    std::vector<std::vector<float>> block(parts, std::vector<float>(rows * v));
    for (int64_t p = 0; p < parts; ++p)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < v; ++i) block[p][r * v + i] = logits[r * vocab + p * v + i];
    std::vector<float> max(rows, -INFINITY), sum(rows, 0), target(rows, 0);
    for (int64_t p = 0; p < parts; ++p) {  // all_reduce(max)
      std::vector<float> m(rows);
      VocabMax(block[p].data(), m.data(), rows, v);
      for (int64_t r = 0; r < rows; ++r) max[r] = std::max(max[r], m[r]);
    }
    for (int64_t p = 0; p < parts; ++p) {  // all_reduce(sum) of both outputs
      std::vector<float> s(rows), t(rows);
      ASSERT_EQ(VocabSumExp(block[p].data(), targets.data(), max.data(), s.data(), t.data(), rows,
                            v, p * v, vocab),
                -1);
      for (int64_t r = 0; r < rows; ++r) sum[r] += s[r], target[r] += t[r];
    }
    float vloss = 0;
    std::vector<float> vlse(rows);
    VocabLoss(max.data(), sum.data(), target.data(), &vloss, vlse.data(), rows);
    EXPECT_NEAR(vloss, loss, 1e-6 * std::fabs(loss)) << parts << " parts";
    for (int64_t r = 0; r < rows; ++r) EXPECT_NEAR(vlse[r], lse[r], 1e-5) << parts;
    for (int64_t p = 0; p < parts; ++p) {
      std::vector<float> d(rows * v, NAN);
      CrossEntropyBackward(block[p].data(), targets.data(), vlse.data(), 0.5f, d.data(), rows, v,
                           false, p * v);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < v; ++i)
          EXPECT_NEAR(d[r * v + i], dlogits[r * vocab + p * v + i], 1e-6) << parts;
    }
  }
  std::vector<float> s(rows), t(rows);
  EXPECT_EQ(VocabSumExp(logits.data(), targets.data(), lse.data(), s.data(), t.data(), rows, 6, 6,
                        11),
            1);  // target 11 is outside a vocabulary of 11
}

// Vocabulary padding: logits from column `valid` on are not classes. The loss and
// lse equal those of the unpadded logits, and padding columns get zero gradient.
TEST(CpuKernels, CrossEntropyIgnoresPaddingColumns) {
  const int64_t rows = 5, vocab = 7, padded = 10;
  Vec x = Random(rows * padded, 47, 2.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = vocab; i < padded; ++i) x[r * padded + i] = 50.0;  // would dominate
  std::vector<float> p = ToFloat(x), u(rows * vocab);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < vocab; ++i) u[r * vocab + i] = p[r * padded + i];
  std::vector<int32_t> targets = {0, 6, 3, 2, 5};
  float lp = 0, lu = 0;
  std::vector<float> lsep(rows), lseu(rows), dp(rows * padded, NAN), du(rows * vocab);
  ASSERT_EQ(CrossEntropyForward(p.data(), targets.data(), &lp, lsep.data(), rows, padded, vocab), -1);
  ASSERT_EQ(CrossEntropyForward(u.data(), targets.data(), &lu, lseu.data(), rows, vocab), -1);
  EXPECT_EQ(lp, lu);
  CrossEntropyBackward(p.data(), targets.data(), lsep.data(), 1.0f, dp.data(), rows, padded, false,
                       0, vocab);
  CrossEntropyBackward(u.data(), targets.data(), lseu.data(), 1.0f, du.data(), rows, vocab, false);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < padded; ++i)
      EXPECT_EQ(dp[r * padded + i], i < vocab ? du[r * vocab + i] : 0.f);
  // A target in the padding is out of range.
  targets[1] = 8;
  EXPECT_EQ(CrossEntropyForward(p.data(), targets.data(), &lp, lsep.data(), rows, padded, vocab), 1);
}

// A vocabulary-parallel embedding: each block's rows (positions added by block 0
// only) sum to the whole embedding; each block's gradient is its rows of the whole.
TEST(CpuKernels, VocabParallelEmbeddingSumsToWhole) {
  const int64_t rows = 8, seq = 4, vocab = 8, c = 3, parts = 2, v = vocab / parts;
  std::vector<int32_t> ids = {0, 7, 3, 4, 4, 1, 6, 2};
  std::vector<float> table = ToFloat(Random(vocab * c, 43)), pos = ToFloat(Random(seq * c, 44));
  std::vector<float> whole(rows * c), sum(rows * c, 0);
  ASSERT_EQ(EmbeddingForward(ids.data(), table.data(), pos.data(), whole.data(), rows, seq, vocab, c),
            -1);
  std::vector<float> dout = ToFloat(Random(rows * c, 45)), dtable(vocab * c, 0);
  EmbeddingBackward(ids.data(), dout.data(), dtable.data(), (float*)nullptr, rows, seq, c);
  for (int64_t p = 0; p < parts; ++p) {
    std::vector<float> out(rows * c, NAN), dblock(v * c, 0);
    ASSERT_EQ(EmbeddingForward(ids.data(), table.data() + p * v * c, p == 0 ? pos.data() : nullptr,
                               out.data(), rows, seq, v, c, p * v, vocab),
              -1);
    for (int64_t i = 0; i < rows * c; ++i) sum[i] += out[i];
    EmbeddingBackward(ids.data(), dout.data(), dblock.data(), (float*)nullptr, rows, seq, c, p * v, v);
    for (int64_t i = 0; i < v * c; ++i) EXPECT_EQ(dblock[i], dtable[p * v * c + i]);
  }
  for (int64_t i = 0; i < rows * c; ++i) EXPECT_EQ(sum[i], whole[i]);
}

TEST(CpuKernels, SumSquaresIsExactAcrossChunks) {
  const int64_t n = (1 << 16) * 3 + 17;  // several reduction chunks and a tail
  std::vector<float> x(n);
  double ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = static_cast<float>((i % 7) - 3) * 0.5f;
    ref += static_cast<double>(x[i]) * x[i];
  }
  EXPECT_DOUBLE_EQ(SumSquares(x.data(), n), ref);
}

// The float path (AVX2 where the CPU has it) sums the squares in the portable
// loop's order: the double instantiation, on the same values (whose squares are
// exact in double either way), gets the same bits.
TEST(CpuKernels, SumSquaresOfFloatsIsThePortableOrder) {
  const int64_t n = (1 << 16) * 2 + 1000 + 13;  // chunks, groups of 8 and a tail
  std::mt19937 gen(64);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> x(n);
  for (float& v : x) v = dist(gen);
  const std::vector<double> wide(x.begin(), x.end());
  for (int64_t len : {int64_t{7}, int64_t{32}, int64_t{45}, int64_t{1 << 16}, n})
    EXPECT_EQ(SumSquares(x.data(), len), SumSquares(wide.data(), len)) << len;
}

TEST(CpuKernels, AdamWFirstStepIsSignedLearningRate) {
  // At step 1 the bias-corrected moments are g and g^2, so the update is
  // lr * (g / (|g| + eps) + wd * p).
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {0.3f, -4.0f, 0.0f};
  std::vector<float> m(3, 0.f), v(3, 0.f);
  const double lr = 0.1, wd = 0.01, eps = 1e-8;
  std::vector<double> expect(3);
  for (int i = 0; i < 3; ++i)
    expect[i] = p[i] - lr * (g[i] / (std::fabs(g[i]) + eps) + wd * p[i]);
  AdamW(p.data(), g.data(), m.data(), v.data(), 3, lr, 0.9, 0.95, eps, wd, 1, 1.0);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i], expect[i], 1e-6);
  EXPECT_NEAR(m[1], 0.1 * -4.0, 1e-6);
  EXPECT_NEAR(v[1], 0.05 * 16.0, 1e-5);
}

// The norm split over ranks (SumSquaresChunks): any cut of the chunks into pieces,
// their partial sums added in order, gives SumSquares' bits.
TEST(CpuKernels, SumSquaresChunksAddUpToSumSquares) {
  const int64_t n = kSumSquaresChunk * 5 + 77;
  std::mt19937 gen(67);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> x(n);
  for (float& v : x) v = dist(gen);
  std::vector<double> partials(6, NAN);
  SumSquaresChunks(x.data(), n, 0, 2, partials.data());
  SumSquaresChunks(x.data(), n, 2, 1, partials.data() + 2);
  SumSquaresChunks(x.data(), n, 3, 3, partials.data() + 3);
  double total = 0;
  for (double p : partials) total += p;
  EXPECT_EQ(total, SumSquares(x.data(), n));
}

// SumCopies (a reduce-scatter between members that share their arenas): the
// member-order float sum, averaged or not, in place or not, and the sum of squares of
// what it wrote bit for bit as SumSquares computes it (chunks, groups of 8, tails).
TEST(CpuKernels, SumCopiesIsTheMemberOrderSumAndItsSumOfSquares) {
  std::mt19937 gen(66);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  for (int count : {2, 3})
    for (int64_t n : {int64_t{5}, int64_t{8}, int64_t{1000}, int64_t{(1 << 16) * 2 + 13}})
      for (bool average : {false, true})
        for (bool in_place : {false, true}) {
          std::vector<std::vector<float>> members(count, std::vector<float>(n));
          for (auto& m : members)
            for (float& v : m) v = dist(gen) * (&m == &members[1] ? 1e4f : 1.0f);
          std::vector<float> expect(n);
          for (int64_t i = 0; i < n; ++i) {
            float v = members[0][i];
            for (int c = 1; c < count; ++c) v += members[c][i];
            expect[i] = average ? v * (1.0f / static_cast<float>(count)) : v;
          }
          std::vector<const float*> copies;
          for (auto& m : members) copies.push_back(m.data());
          std::vector<float> separate(n, NAN);
          float* out = in_place ? members[count - 1].data() : separate.data();
          const double sum = SumCopies(copies.data(), count, out, n, average, true);
          for (int64_t i = 0; i < n; ++i)
            ASSERT_EQ(out[i], expect[i]) << count << " members, n " << n << ", element " << i;
          EXPECT_EQ(sum, SumSquares(expect.data(), n)) << count << " members, n " << n;
          EXPECT_EQ(SumCopies(copies.data(), count, out, n, average, false), 0.0);
        }
}

// Mirrors (ZeRO-1's all_gather done by the update; an update split over dp ranks):
// every copy gets the updated parameters bit for bit, aligned (streamed) or not, tail included, on any thread count, and
// the update itself is the one without mirrors.
TEST(CpuKernels, AdamWMirrorsGetTheUpdatedValuesBitwise) {
  const int64_t n = (1 << 18) + 13;  // parallel, with a tail
  std::mt19937 gen(65);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> p0(n), g(n);
  for (int64_t i = 0; i < n; ++i) p0[i] = dist(gen), g[i] = dist(gen);
  std::vector<float> p = p0, m(n, 0.f), v(n, 0.f);
  for (int step = 1; step <= 2; ++step)
    AdamW(p.data(), g.data(), m.data(), v.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, step, 0.5);
  const int saved = omp_get_max_threads();
  // Room for three 32-byte-aligned copies (streamed); one offset by a float is not.
  const int64_t stride = (n + 7) / 8 * 8;
  std::vector<float> storage(3 * stride + 64, NAN);
  float* aligned = storage.data() + (32 - reinterpret_cast<uintptr_t>(storage.data()) % 32) / 4;
  float* two[2] = {aligned, aligned + stride};
  float* unaligned[1] = {aligned + 1};
  float* three[3] = {aligned, aligned + stride, aligned + 2 * stride};
  const AdamWMirrors<float> configs[] = {{two, 2}, {unaligned, 1}, {three, 3}};
  for (int threads : {1, 2})
    for (const AdamWMirrors<float>& mirrors : configs) {
      omp_set_num_threads(threads);
      std::fill(storage.begin(), storage.end(), NAN);
      std::vector<float> pm = p0, mm(n, 0.f), vm(n, 0.f);
      for (int step = 1; step <= 2; ++step)
        AdamW(pm.data(), g.data(), mm.data(), vm.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, step, 0.5,
              mirrors);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(pm[i], p[i]) << threads << " threads, element " << i;
        ASSERT_EQ(mm[i], m[i]) << i;
        ASSERT_EQ(vm[i], v[i]) << i;
        for (int c = 0; c < mirrors.count; ++c)
          ASSERT_EQ(mirrors.param[c][i], p[i]) << "mirror " << c << ", element " << i;
      }
    }
  omp_set_num_threads(saved);
}

TEST(CpuKernels, AdamWMatchesTwoStepReference) {
  const int64_t n = 64;
  Vec p0 = Random(n, 41), g1 = Random(n, 42), g2 = Random(n, 43);
  const double lr = 3e-4, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, scale = 0.5;
  Vec p = p0, m(n, 0.0), v(n, 0.0);
  for (int step = 1; step <= 2; ++step) {
    const Vec& g = step == 1 ? g1 : g2;
    for (int64_t i = 0; i < n; ++i) {
      double gi = g[i] * scale;
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      double mh = m[i] / (1 - std::pow(b1, step)), vh = v[i] / (1 - std::pow(b2, step));
      p[i] -= lr * (mh / (std::sqrt(vh) + eps) + wd * p[i]);
    }
  }
  auto pf = ToFloat(p0), g1f = ToFloat(g1), g2f = ToFloat(g2);
  std::vector<float> mf(n, 0.f), vf(n, 0.f);
  AdamW(pf.data(), g1f.data(), mf.data(), vf.data(), n, lr, b1, b2, eps, wd, 1, scale);
  AdamW(pf.data(), g2f.data(), mf.data(), vf.data(), n, lr, b1, b2, eps, wd, 2, scale);
  EXPECT_LE(RelDiff(pf, p), kForwardTol);
}

//===----------------------------------------------------------------------===//
// Mixture of experts
//===----------------------------------------------------------------------===//

namespace moe {

// What moe_route produces, in T.
template <typename T>
struct Route {
  std::vector<T> probs, lse, weight, load;
  std::vector<int32_t> choice, pos, counts;
  T aux = 0;
  explicit Route(const MoeRouteShape& s)
      : probs(s.rows * s.experts), lse(s.rows), weight(s.rows * s.top_k), load(2 * s.experts),
        choice(s.rows * s.top_k), pos(s.rows * s.top_k), counts(s.experts) {}
};

template <typename T>
Route<T> RunRoute(const MoeRouteShape& s, const std::vector<T>& x, const std::vector<T>& router,
                  double ac, double zc) {
  Route<T> o(s);
  MoeRoute(s, x.data(), router.data(), ac, zc, o.probs.data(), o.lse.data(), o.choice.data(),
           o.pos.data(), o.weight.data(), o.counts.data(), &o.aux, o.load.data());
  return o;
}

// A straightforward float64 route written from the definition in kernels.h.
Route<double> ReferenceRoute(const MoeRouteShape& s, const Vec& x, const Vec& router, double ac,
                             double zc) {
  const int64_t E = s.experts, K = s.top_k, sequences = s.rows / s.seq;
  Route<double> o(s);
  double z = 0;
  for (int64_t r = 0; r < s.rows; ++r) {
    Vec logit(E, 0.0);
    double mx = -INFINITY, sum = 0;
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t i = 0; i < s.d; ++i) logit[e] += x[r * s.d + i] * router[e * s.d + i];
      mx = std::max(mx, logit[e]);
    }
    for (int64_t e = 0; e < E; ++e) sum += std::exp(logit[e] - mx);
    o.lse[r] = mx + std::log(sum);
    z += o.lse[r] * o.lse[r] / s.rows;
    for (int64_t e = 0; e < E; ++e) o.probs[r * E + e] = std::exp(logit[e] - o.lse[r]);
    std::vector<int64_t> order(E);
    for (int64_t e = 0; e < E; ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return o.probs[r * E + a] > o.probs[r * E + b];
    });
    double total = 0;
    for (int64_t j = 0; j < K; ++j) total += o.probs[r * E + order[j]];
    for (int64_t j = 0; j < K; ++j) {
      o.choice[r * K + j] = static_cast<int32_t>(order[j]);
      o.weight[r * K + j] = o.probs[r * E + order[j]] / total;
    }
  }
  double balance = 0;
  for (int64_t q = 0; q < sequences; ++q) {
    std::vector<int64_t> kept(E, 0);
    Vec routed(E, 0.0), mean_p(E, 0.0);
    for (int64_t r = q * s.seq; r < (q + 1) * s.seq; ++r) {
      for (int64_t j = 0; j < K; ++j) {
        const int64_t slot = r * K + j, e = o.choice[slot];
        routed[e] += 1.0 / static_cast<double>(s.seq * K);
        if (kept[e] < s.capacity) {
          // Packed: the expert's kept slots over all rows, in slot order.
          ++kept[e];
          o.pos[slot] = o.counts[e]++;
          o.load[e] += 1;
        } else {
          o.pos[slot] = -1;
          o.load[E + e] += 1;
        }
      }
      for (int64_t e = 0; e < E; ++e) mean_p[e] += o.probs[r * E + e] / s.seq;
    }
    for (int64_t e = 0; e < E; ++e) balance += routed[e] * mean_p[e] / sequences;
  }
  o.aux = ac * E * balance + zc * z;
  return o;
}

// The smallest gap, over rows, between the k-th largest probability and the next
// one: the margin by which the top-k choices are decided.
template <typename T>
double TopKMargin(const MoeRouteShape& s, const std::vector<T>& probs) {
  double margin = INFINITY;
  for (int64_t r = 0; r < s.rows; ++r) {
    std::vector<double> p(probs.begin() + r * s.experts, probs.begin() + (r + 1) * s.experts);
    std::sort(p.begin(), p.end(), std::greater<double>());
    if (s.top_k < s.experts) margin = std::min(margin, p[s.top_k - 1] - p[s.top_k]);
  }
  return margin;
}

int64_t Dropped(const std::vector<int32_t>& pos) {
  return std::count(pos.begin(), pos.end(), -1);
}

// The parameters and the input of one MoE layer.
template <typename T>
struct Model {
  std::vector<T> x, router, w_in, w_gate, w_out;
};

template <typename T>
Model<T> RandomModel(const MoeRouteShape& rs, const MoeExpertShape& es, uint32_t seed) {
  auto cast = [](const Vec& v) { return std::vector<T>(v.begin(), v.end()); };
  return {cast(Random(rs.rows * rs.d, seed)), cast(Random(rs.experts * rs.d, seed + 1)),
          cast(Random(es.experts * es.f * es.d, seed + 2, 0.5)),
          cast(Random(es.experts * es.f * es.d, seed + 3, 0.5)),
          cast(Random(es.experts * es.d * es.f, seed + 4, 0.5))};
}

// The three shapes of one layer: `capacity` slots per sequence and expert.
struct Shapes {
  MoeRouteShape route;
  MoeSlotShape slot;
  MoeExpertShape expert;
  Shapes(int64_t rows, int64_t d, int64_t f, int64_t experts, int64_t top_k, int64_t seq,
         int64_t capacity, bool swiglu)
      : route{rows, d, experts, top_k, seq, capacity},
        slot{rows, d, experts, top_k, rows / seq * capacity},
        expert{experts, rows / seq * capacity, d, f, swiglu} {}
};

// Every saved value of the layer's forward pass, then every gradient of its
// backward pass.
template <typename T>
struct Layer {
  Route<T> route;
  std::vector<T> buf, pre, gate_pre, act, ybuf, y;
  std::vector<T> dybuf, dweight, dbuf, dx, drouter, dw_in, dw_gate, dw_out;
  explicit Layer(const Shapes& s)
      : route(s.route),
        buf(s.expert.experts * s.expert.tokens * s.expert.d),
        pre(s.expert.experts * s.expert.tokens * s.expert.f),
        gate_pre(pre.size()), act(pre.size()), ybuf(buf.size()), y(s.route.rows * s.route.d),
        dybuf(buf.size()), dweight(s.route.rows * s.route.top_k), dbuf(buf.size()),
        dx(y.size()), drouter(s.route.experts * s.route.d),
        dw_in(s.expert.experts * s.expert.f * s.expert.d), dw_gate(dw_in.size()),
        dw_out(dw_in.size()) {}
};

// y = Combine(Experts(Dispatch(x))) with the route's weights.
template <typename T>
void LayerForward(const Shapes& s, const Model<T>& m, double ac, double zc, Layer<T>& o) {
  const bool sw = s.expert.swiglu;
  o.route = RunRoute(s.route, m.x, m.router, ac, zc);
  const int32_t* choice = o.route.choice.data();
  const int32_t* pos = o.route.pos.data();
  MoeDispatch(s.slot, m.x.data(), choice, pos, o.buf.data());
  MoeExperts(s.expert, o.route.counts.data(), o.buf.data(), m.w_in.data(), sw ? m.w_gate.data() : nullptr,
             m.w_out.data(), o.pre.data(), sw ? o.gate_pre.data() : nullptr, o.act.data(),
             o.ybuf.data());
  MoeCombine(s.slot, o.ybuf.data(), choice, pos, o.route.weight.data(), o.y.data());
}

// The gradients of sum(dy * y) + daux * aux (parameter gradients from zero).
template <typename T>
void LayerBackward(const Shapes& s, const Model<T>& m, const std::vector<T>& dy, double daux,
                   double ac, double zc, Layer<T>& o) {
  const bool sw = s.expert.swiglu;
  const int32_t* choice = o.route.choice.data();
  const int32_t* pos = o.route.pos.data();
  for (auto* v : {&o.drouter, &o.dw_in, &o.dw_gate, &o.dw_out}) std::fill(v->begin(), v->end(), T(0));
  MoeCombineBackward(s.slot, dy.data(), o.ybuf.data(), choice, pos, o.route.weight.data(),
                     o.dybuf.data(), o.dweight.data(), false);
  MoeExpertsBackward(s.expert, o.route.counts.data(), o.dybuf.data(), o.buf.data(), m.w_in.data(),
                     sw ? m.w_gate.data() : nullptr, m.w_out.data(), o.pre.data(),
                     sw ? o.gate_pre.data() : nullptr, o.act.data(), 1.0, o.dbuf.data(),
                     o.dw_in.data(), sw ? o.dw_gate.data() : nullptr, o.dw_out.data(), false);
  MoeDispatchBackward(s.slot, o.dbuf.data(), choice, pos, o.dx.data(), false);
  MoeRouteBackward(s.route, o.dweight.data(), daux, ac, zc, m.x.data(), m.router.data(),
                   o.route.probs.data(), o.route.lse.data(), choice, o.dx.data(),
                   o.drouter.data(), true);
}

}  // namespace moe

// The route against the reference: several sequences, top-1 and top-2, with and
// without dropped slots; the double kernel to rounding, the float one to 1e-5.
TEST(CpuKernels, MoeRouteMatchesReference) {
  struct Case {
    MoeRouteShape shape;
    bool drops;
  };
  const Case cases[] = {
      {{12, 6, 4, 2, 4, 2}, true},   // 3 sequences of 8 slots, 2 per expert and sequence
      {{12, 6, 4, 1, 6, 1}, true},   // 2 sequences of 6 slots over 4 places
      {{12, 6, 4, 1, 3, 3}, false},  // capacity = seq: nothing can drop
      {{8, 5, 3, 2, 8, 8}, false},   // one sequence
      {{10, 4, 5, 3, 5, 2}, true},   // top-3
  };
  uint32_t seed = 70;
  for (const Case& c : cases) {
    const MoeRouteShape& s = c.shape;
    SCOPED_TRACE("rows " + std::to_string(s.rows) + " experts " + std::to_string(s.experts) +
                 " top_k " + std::to_string(s.top_k) + " seq " + std::to_string(s.seq) +
                 " capacity " + std::to_string(s.capacity));
    const Vec x = Random(s.rows * s.d, seed++), router = Random(s.experts * s.d, seed++);
    const double ac = 0.3, zc = 0.01;
    const moe::Route<double> ref = moe::ReferenceRoute(s, x, router, ac, zc);
    ASSERT_GT(moe::TopKMargin(s, ref.probs), 1e-4) << "a near tie: pick another seed";
    EXPECT_EQ(moe::Dropped(ref.pos) > 0, c.drops);
    const moe::Route<double> got = moe::RunRoute(s, x, router, ac, zc);
    EXPECT_EQ(got.choice, ref.choice);
    EXPECT_EQ(got.pos, ref.pos);
    EXPECT_EQ(got.load, ref.load);
    for (size_t i = 0; i < ref.probs.size(); ++i) EXPECT_NEAR(got.probs[i], ref.probs[i], 1e-14);
    for (size_t i = 0; i < ref.lse.size(); ++i) EXPECT_NEAR(got.lse[i], ref.lse[i], 1e-13);
    for (size_t i = 0; i < ref.weight.size(); ++i)
      EXPECT_NEAR(got.weight[i], ref.weight[i], 1e-14);
    EXPECT_NEAR(got.aux, ref.aux, 1e-13);
    double total = 0;
    for (double l : got.load) total += l;
    EXPECT_EQ(total, static_cast<double>(s.rows * s.top_k));

    const moe::Route<float> f = moe::RunRoute(s, ToFloat(x), ToFloat(router), ac, zc);
    EXPECT_EQ(f.choice, ref.choice);
    EXPECT_EQ(f.pos, ref.pos);
    EXPECT_EQ(Vec(f.load.begin(), f.load.end()), ref.load);
    EXPECT_LE(RelDiff(f.probs, ref.probs), kForwardTol);
    EXPECT_LE(RelDiff(f.weight, ref.weight), kForwardTol);
    EXPECT_LE(RelDiff(f.lse, ref.lse), kForwardTol);
    EXPECT_NEAR(f.aux, ref.aux, kForwardTol * std::fabs(ref.aux));
  }
}

// Lower expert index on ties: equal logits route to experts 0 .. k-1.
TEST(CpuKernels, MoeRouteBreaksTiesByLowerExpert) {
  const MoeRouteShape s{2, 3, 4, 2, 2, 1};
  const Vec x(s.rows * s.d, 0.5), router(s.experts * s.d, 0.25);
  const moe::Route<double> o = moe::RunRoute(s, x, router, 0.0, 0.0);
  EXPECT_EQ(o.choice, (std::vector<int32_t>{0, 1, 0, 1}));
  // Capacity 1 per sequence: the second row's slots drop.
  EXPECT_EQ(o.pos, (std::vector<int32_t>{0, 0, -1, -1}));
  EXPECT_EQ(o.load, (Vec{1, 1, 0, 0, 1, 1, 0, 0}));
  for (double w : o.weight) EXPECT_DOUBLE_EQ(w, 0.5);
}

// The steps composed into a layer, differentiated through the route (the
// weights, the balance and z losses) and through dispatch, experts and combine,
// against central differences of loss = sum(r * y) + c * aux with the top-k
// choices and the drops unchanged under the perturbation.
class MoeGradTest : public ::testing::TestWithParam<std::tuple<bool, int>> {};

TEST_P(MoeGradTest, LayerMatchesFiniteDifferences) {
  const auto [swiglu, top_k] = GetParam();
  // 2 sequences of 4 rows; capacity 1 (top-1) or 2 (top-2) per sequence and
  // expert drops slots.
  const moe::Shapes s(8, 5, 3, 4, top_k, 4, top_k, swiglu);
  const double ac = 0.3, zc = 0.2, c = 0.7;  // large coefficients exercise the aux path
  moe::Model<double> m = moe::RandomModel<double>(s.route, s.expert, 80 + top_k);
  const Vec r = Random(s.route.rows * s.route.d, 90);
  moe::Layer<double> base(s);
  moe::LayerForward(s, m, ac, zc, base);
  ASSERT_GT(moe::TopKMargin(s.route, base.route.probs), 1e-3) << "a near tie: pick another seed";
  EXPECT_GT(moe::Dropped(base.route.pos), 0) << "the shape should exercise the capacity limit";
  EXPECT_LT(moe::Dropped(base.route.pos), s.route.rows * top_k);
  bool unchanged = true;
  auto loss = [&] {
    moe::Layer<double> o(s);
    moe::LayerForward(s, m, ac, zc, o);
    unchanged &= o.route.choice == base.route.choice && o.route.pos == base.route.pos;
    return Dot(o.y, r) + c * o.route.aux;
  };
  moe::Layer<double> g(s);
  moe::LayerForward(s, m, ac, zc, g);
  moe::LayerBackward(s, m, r, c, ac, zc, g);
  EXPECT_LE(FiniteDiffError(m.x, g.dx, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(m.router, g.drouter, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(m.w_in, g.dw_in, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(m.w_out, g.dw_out, loss), kGradTol);
  if (swiglu) EXPECT_LE(FiniteDiffError(m.w_gate, g.dw_gate, loss), kGradTol);
  EXPECT_TRUE(unchanged) << "a perturbation changed the routing: the check is not valid";
}

INSTANTIATE_TEST_SUITE_P(ActivationsAndTopK, MoeGradTest,
                         ::testing::Combine(::testing::Values(false, true),
                                            ::testing::Values(1, 2)));

// The route's gradient alone with the balance term only: with dweight = 0 and
// z_coef = 0, dlogits is the softmax backward of daux * aux_coef * E * f_se / rows
// (one sequence's rows share f_se).
TEST(CpuKernels, MoeRouteBalanceGradientMatchesFiniteDifferences) {
  const MoeRouteShape s{9, 4, 3, 1, 3, 1};
  const double ac = 0.5, daux = 1.3;
  Vec x = Random(s.rows * s.d, 95), router = Random(s.experts * s.d, 96);
  const moe::Route<double> base = moe::RunRoute(s, x, router, ac, 0.0);
  ASSERT_GT(moe::TopKMargin(s, base.probs), 1e-3);
  auto loss = [&] { return daux * moe::RunRoute(s, x, router, ac, 0.0).aux; };
  Vec dweight(s.rows * s.top_k, 0.0), dx(x.size()), dr(router.size(), 0.0);
  MoeRouteBackward(s, dweight.data(), daux, ac, 0.0, x.data(), router.data(), base.probs.data(),
                   base.lse.data(), base.choice.data(), dx.data(), dr.data(), false);
  EXPECT_LE(FiniteDiffError(x, dx, loss), kGradTol);
  EXPECT_LE(FiniteDiffError(router, dr, loss), kGradTol);
}

// Only the rows in use count: an expert's rows past the sum of its sources'
// counts are not computed (y's and dx's are zero) and add nothing to the weight
// gradients; the rows in use give what the whole region gives for them.
TEST(CpuKernels, MoeExpertsComputeOnlyTheRowsInUse) {
  for (bool swiglu : {false, true}) {
    SCOPED_TRACE(swiglu ? "swiglu" : "gelu");
    MoeExpertShape whole{3, 6, 4, 5, swiglu};
    MoeExpertShape part = whole;
    part.sources = 2;  // counts per expert: (1, 2), (0, 0), (3, 3)
    const std::vector<int32_t> rows = {1, 2, 0, 0, 3, 3}, all(3, 6);
    const int64_t used[3] = {3, 0, 6};
    const int64_t xn = whole.experts * whole.tokens * whole.d;
    const int64_t hn = whole.experts * whole.tokens * whole.f, wn = whole.experts * whole.f * whole.d;
    Vec x = Random(xn, 110), w_in = Random(wn, 111), w_gate = Random(wn, 112),
        w_out = Random(wn, 113), dy = Random(xn, 114);
    // Rows not in use hold garbage in x and dy: they must not matter.
    for (int64_t e = 0; e < 3; ++e)
      for (int64_t i = used[e] * whole.d; i < whole.tokens * whole.d; ++i)
        x[e * whole.tokens * whole.d + i] = dy[e * whole.tokens * whole.d + i] = 1e6;
    double* gate = swiglu ? w_gate.data() : nullptr;
    Vec pre(hn), gp(hn), act(hn), y(xn, NAN), dx(xn, NAN), din(wn, 0.0), dg(wn, 0.0), dout(wn, 0.0);
    MoeExperts(part, rows.data(), x.data(), w_in.data(), gate, w_out.data(), pre.data(),
               swiglu ? gp.data() : nullptr, act.data(), y.data());
    MoeExpertsBackward(part, rows.data(), dy.data(), x.data(), w_in.data(), gate, w_out.data(),
                       pre.data(), swiglu ? gp.data() : nullptr, act.data(), 1.0, dx.data(),
                       din.data(), swiglu ? dg.data() : nullptr, dout.data(), false);
    // The same experts on just the rows in use, one expert at a time, as whole regions.
    for (int64_t e = 0; e < 3; ++e) {
      if (used[e] == 0) {
        for (int64_t i = 0; i < whole.tokens * whole.d; ++i) {
          EXPECT_EQ(y[e * whole.tokens * whole.d + i], 0.0);
          EXPECT_EQ(dx[e * whole.tokens * whole.d + i], 0.0);
        }
        for (int64_t i = 0; i < whole.f * whole.d; ++i) EXPECT_EQ(din[e * whole.f * whole.d + i], 0.0);
        continue;
      }
      MoeExpertShape one{1, used[e], whole.d, whole.f, swiglu};
      const std::vector<int32_t> n = {static_cast<int32_t>(used[e])};
      const int64_t xo = e * whole.tokens * whole.d, wo = e * whole.f * whole.d;
      Vec p1(used[e] * whole.f), g1(p1.size()), a1(p1.size()), y1(used[e] * whole.d);
      MoeExperts(one, n.data(), x.data() + xo, w_in.data() + wo, swiglu ? gate + wo : nullptr,
                 w_out.data() + wo, p1.data(), swiglu ? g1.data() : nullptr, a1.data(), y1.data());
      Vec dx1(y1.size()), din1(whole.f * whole.d, 0.0), dg1(din1.size(), 0.0), dout1(din1.size(), 0.0);
      MoeExpertsBackward(one, n.data(), dy.data() + xo, x.data() + xo, w_in.data() + wo,
                         swiglu ? gate + wo : nullptr, w_out.data() + wo, p1.data(),
                         swiglu ? g1.data() : nullptr, a1.data(), 1.0, dx1.data(), din1.data(),
                         swiglu ? dg1.data() : nullptr, dout1.data(), false);
      for (int64_t i = 0; i < whole.tokens * whole.d; ++i) {
        const bool in_use = i < used[e] * whole.d;
        EXPECT_NEAR(y[xo + i], in_use ? y1[i] : 0.0, 1e-12);
        EXPECT_NEAR(dx[xo + i], in_use ? dx1[i] : 0.0, 1e-12);
      }
      for (int64_t i = 0; i < whole.f * whole.d; ++i) {
        EXPECT_NEAR(din[wo + i], din1[i], 1e-12);
        EXPECT_NEAR(dout[wo + i], dout1[i], 1e-12);
        if (swiglu) EXPECT_NEAR(dg[wo + i], dg1[i], 1e-12);
      }
    }
  }
}

// dw_scale scales the weight gradients (accumulated) and not dx; accumulate_dx
// adds into dx; without it dx is written whole (whatever it held before).
TEST(CpuKernels, MoeExpertsBackwardScalesWeightGradientsAndAccumulatesDx) {
  for (bool swiglu : {false, true}) {
    SCOPED_TRACE(swiglu ? "swiglu" : "gelu");
    const MoeExpertShape s{3, 5, 4, 6, swiglu};
    const int64_t xn = s.experts * s.tokens * s.d, hn = s.experts * s.tokens * s.f;
    const int64_t wn = s.experts * s.f * s.d;
    Vec x = Random(xn, 100), w_in = Random(wn, 101), w_gate = Random(wn, 102),
        w_out = Random(wn, 103), dy = Random(xn, 104);
    Vec pre(hn), gate_pre(hn), act(hn), y(xn);
    double* gate = swiglu ? w_gate.data() : nullptr;
    double* gp = swiglu ? gate_pre.data() : nullptr;
    const std::vector<int32_t> all(s.experts, static_cast<int32_t>(s.tokens));
    MoeExperts(s, all.data(), x.data(), w_in.data(), gate, w_out.data(), pre.data(), gp, act.data(),
               y.data());
    Vec dx1(xn, NAN), din1(wn, 0.0), dgate1(wn, 0.0), dout1(wn, 0.0);
    MoeExpertsBackward(s, all.data(), dy.data(), x.data(), w_in.data(), gate, w_out.data(), pre.data(), gp,
                       act.data(), 1.0, dx1.data(), din1.data(), swiglu ? dgate1.data() : nullptr,
                       dout1.data(), false);
    for (double v : dx1) ASSERT_TRUE(std::isfinite(v)) << "dx was not written whole";
    Vec dx2 = dx1, din2 = din1, dgate2 = dgate1, dout2 = dout1;
    MoeExpertsBackward(s, all.data(), dy.data(), x.data(), w_in.data(), gate, w_out.data(),
                       pre.data(), gp, act.data(), 0.25, dx2.data(), din2.data(), swiglu ? dgate2.data() : nullptr,
                       dout2.data(), true);
    for (int64_t i = 0; i < xn; ++i) EXPECT_NEAR(dx2[i], 2 * dx1[i], 1e-12 * (1 + std::fabs(dx1[i])));
    for (int64_t i = 0; i < wn; ++i) {
      EXPECT_NEAR(din2[i], 1.25 * din1[i], 1e-12 * (1 + std::fabs(din1[i])));
      EXPECT_NEAR(dout2[i], 1.25 * dout1[i], 1e-12 * (1 + std::fabs(dout1[i])));
      if (swiglu) EXPECT_NEAR(dgate2[i], 1.25 * dgate1[i], 1e-12 * (1 + std::fabs(dgate1[i])));
    }
    if (!swiglu) EXPECT_EQ(dgate1, Vec(wn, 0.0));
  }
}

// Dispatch and the combine's gradient write their buffers whole (zero where no
// slot is); dispatch's gradient, the combine's dweight and the route's dx add in
// with accumulate_dx; drouter always accumulates.
TEST(CpuKernels, MoeStepsWriteWholeOrAccumulate) {
  const moe::Shapes s(8, 4, 3, 4, 2, 4, 2, false);
  const MoeSlotShape& ss = s.slot;
  moe::Model<double> m = moe::RandomModel<double>(s.route, s.expert, 110);
  const moe::Route<double> route = moe::RunRoute(s.route, m.x, m.router, 0.1, 0.01);
  ASSERT_GT(moe::Dropped(route.pos), 0);
  const int32_t* choice = route.choice.data();
  const int32_t* pos = route.pos.data();
  const int64_t bn = ss.experts * ss.slots * ss.d;
  std::vector<bool> taken(ss.experts * ss.slots, false);
  for (int64_t slot = 0; slot < ss.rows * ss.top_k; ++slot)
    if (pos[slot] >= 0) taken[choice[slot] * ss.slots + pos[slot]] = true;
  ASSERT_LT(std::count(taken.begin(), taken.end(), true), ss.experts * ss.slots);

  Vec buf(bn, NAN);
  MoeDispatch(ss, m.x.data(), choice, pos, buf.data());
  for (int64_t row = 0; row < ss.experts * ss.slots; ++row)
    for (int64_t i = 0; i < ss.d; ++i)
      if (!taken[row]) EXPECT_EQ(buf[row * ss.d + i], 0.0);
  for (int64_t slot = 0; slot < ss.rows * ss.top_k; ++slot)
    if (pos[slot] >= 0)
      for (int64_t i = 0; i < ss.d; ++i)
        EXPECT_EQ(buf[(choice[slot] * ss.slots + pos[slot]) * ss.d + i],
                  m.x[slot / ss.top_k * ss.d + i]);

  const Vec dy = Random(ss.rows * ss.d, 111);
  Vec dbuf(bn, NAN), dweight(ss.rows * ss.top_k, NAN);
  MoeCombineBackward(ss, dy.data(), buf.data(), choice, pos, route.weight.data(), dbuf.data(),
                     dweight.data(), false);
  for (int64_t row = 0; row < ss.experts * ss.slots; ++row)
    for (int64_t i = 0; i < ss.d; ++i)
      if (!taken[row]) EXPECT_EQ(dbuf[row * ss.d + i], 0.0);
  for (int64_t slot = 0; slot < ss.rows * ss.top_k; ++slot) {
    if (pos[slot] < 0) {
      EXPECT_EQ(dweight[slot], 0.0);
      continue;
    }
    const int64_t r = slot / ss.top_k, at = choice[slot] * ss.slots + pos[slot];
    double dot = 0;
    for (int64_t i = 0; i < ss.d; ++i) {
      EXPECT_DOUBLE_EQ(dbuf[at * ss.d + i], route.weight[slot] * dy[r * ss.d + i]);
      dot += dy[r * ss.d + i] * buf[at * ss.d + i];
    }
    EXPECT_NEAR(dweight[slot], dot, 1e-14);
  }
  Vec dweight2 = dweight, dbuf2(bn, NAN);
  MoeCombineBackward(ss, dy.data(), buf.data(), choice, pos, route.weight.data(), dbuf2.data(),
                     dweight2.data(), true);
  EXPECT_EQ(dbuf2, dbuf);
  for (size_t i = 0; i < dweight.size(); ++i) EXPECT_DOUBLE_EQ(dweight2[i], 2 * dweight[i]);

  Vec dx(ss.rows * ss.d, NAN);
  MoeDispatchBackward(ss, dbuf.data(), choice, pos, dx.data(), false);
  Vec dx2 = dx;
  MoeDispatchBackward(ss, dbuf.data(), choice, pos, dx2.data(), true);
  for (size_t i = 0; i < dx.size(); ++i) {
    ASSERT_TRUE(std::isfinite(dx[i]));
    EXPECT_DOUBLE_EQ(dx2[i], 2 * dx[i]);
  }

  Vec rdx(ss.rows * ss.d, NAN), dr(s.route.experts * s.route.d, 0.0);
  MoeRouteBackward(s.route, dweight.data(), 0.5, 0.1, 0.01, m.x.data(), m.router.data(),
                   route.probs.data(), route.lse.data(), choice, rdx.data(), dr.data(), false);
  Vec rdx2 = rdx, dr2 = dr;
  MoeRouteBackward(s.route, dweight.data(), 0.5, 0.1, 0.01, m.x.data(), m.router.data(),
                   route.probs.data(), route.lse.data(), choice, rdx2.data(), dr2.data(), true);
  for (size_t i = 0; i < rdx.size(); ++i) {
    ASSERT_TRUE(std::isfinite(rdx[i]));
    EXPECT_NEAR(rdx2[i], 2 * rdx[i], 1e-14 * (1 + std::fabs(rdx[i])));
  }
  for (size_t i = 0; i < dr.size(); ++i) EXPECT_NEAR(dr2[i], 2 * dr[i], 1e-14 * (1 + std::fabs(dr[i])));
}

// The float layer, forward and backward, gives the same bits with 1 and 2 OpenMP
// threads (every output element and reduction by one thread in a fixed order).
TEST(CpuKernels, MoeStepsDoNotDependOnThreadCount) {
  const int saved = omp_get_max_threads();
  for (bool swiglu : {false, true}) {
    SCOPED_TRACE(swiglu ? "swiglu" : "gelu");
    const moe::Shapes s(96, 16, 12, 8, 2, 24, 5, swiglu);
    const moe::Model<float> m = moe::RandomModel<float>(s.route, s.expert, 120);
    const std::vector<float> dy = ToFloat(Random(s.route.rows * s.route.d, 121));
    auto run = [&](int threads) {
      omp_set_num_threads(threads);
      moe::Layer<float> o(s);
      moe::LayerForward(s, m, 0.1, 0.01, o);
      moe::LayerBackward(s, m, dy, 0.5, 0.1, 0.01, o);
      return o;
    };
    const moe::Layer<float> one = run(1), two = run(2);
    EXPECT_GT(moe::Dropped(one.route.pos), 0);
    EXPECT_EQ(one.route.probs, two.route.probs);
    EXPECT_EQ(one.route.choice, two.route.choice);
    EXPECT_EQ(one.route.pos, two.route.pos);
    EXPECT_EQ(one.route.weight, two.route.weight);
    EXPECT_EQ(one.route.load, two.route.load);
    EXPECT_EQ(one.route.aux, two.route.aux);
    EXPECT_EQ(one.y, two.y);
    EXPECT_EQ(one.dx, two.dx);
    EXPECT_EQ(one.drouter, two.drouter);
    EXPECT_EQ(one.dw_in, two.dw_in);
    EXPECT_EQ(one.dw_gate, two.dw_gate);
    EXPECT_EQ(one.dw_out, two.dw_out);
  }
  omp_set_num_threads(saved);
}

//===----------------------------------------------------------------------===//
// The AVX2 paths (vec.h): the float kernels on sizes with tails (n % 8 != 0)
// against double, and the same bits whatever the thread count
//===----------------------------------------------------------------------===//

HEIRETSU_AVX2 void ExpOf(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, vec::Exp(_mm256_loadu_ps(x + i)));
}

TEST(CpuKernels, VecExpIsWithinTwoUlp) {
  if (!vec::HasAvx2()) GTEST_SKIP() << "no AVX2 on this CPU";
  std::vector<float> x;
  for (int64_t i = 0; i <= 1750000; ++i) x.push_back(-87.0f + static_cast<float>(i) * 1e-4f);
  std::mt19937 gen(60);
  std::uniform_real_distribution<float> dist(-87.0f, 88.0f);
  for (int i = 0; i < 200000; ++i) x.push_back(dist(gen));
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 0.5f, -0.5f, 88.0f, -87.0f}) x.push_back(v);
  while (x.size() % 8) x.push_back(1.0f);
  std::vector<float> y(x.size());
  ExpOf(x.data(), y.data(), static_cast<int64_t>(x.size()));
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double ref = std::exp(static_cast<double>(x[i]));
    // Relative error in units of the float spacing at ref (ulp = 2^(e - 23)).
    const double ulp = std::ldexp(1.0, std::ilogb(ref) - 23);
    worst = std::max(worst, std::fabs(y[i] - ref) / std::max(ulp, std::ldexp(1.0, -149)));
  }
  EXPECT_LE(worst, 2.0);
  std::vector<float> special = {-INFINITY, -1000.0f, -87.5f, 88.5f, INFINITY, NAN, 1.0f, 2.0f};
  std::vector<float> out(8);
  ExpOf(special.data(), out.data(), 8);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], INFINITY);
  EXPECT_EQ(out[4], INFINITY);
  EXPECT_TRUE(std::isnan(out[5]));
}

TEST(CpuKernels, FloatActivationsMatchDouble) {
  const int64_t n = 203;  // 25 blocks of 8 and a tail of 3
  Vec x = Random(n, 61, 3.0), u = Random(n, 62), dy = Random(n, 63);
  x[5] = -30.0, x[6] = 30.0;  // saturated
  auto xf = ToFloat(x), uf = ToFloat(u), dyf = ToFloat(dy);
  for (bool acc : {false, true}) {
    SCOPED_TRACE(acc ? "accumulate" : "write");
    const double start = acc ? 0.25 : 0.0;
    Vec y(n), dx(n, start), dg(n, start), du(n, start);
    GeluForward(x.data(), y.data(), n);
    GeluBackward(dy.data(), x.data(), dx.data(), n, acc);
    std::vector<float> yf(n, NAN), dxf(n, acc ? 0.25f : NAN);
    GeluForward(xf.data(), yf.data(), n);
    GeluBackward(dyf.data(), xf.data(), dxf.data(), n, acc);
    EXPECT_LE(RelDiff(yf, y), kForwardTol);
    EXPECT_LE(RelDiff(dxf, dx), kForwardTol);
    SwigluForward(x.data(), u.data(), y.data(), n);
    SwigluBackward(dy.data(), x.data(), u.data(), dg.data(), du.data(), n, acc);
    std::vector<float> dgf(n, acc ? 0.25f : NAN), duf(n, acc ? 0.25f : NAN);
    SwigluForward(xf.data(), uf.data(), yf.data(), n);
    SwigluBackward(dyf.data(), xf.data(), uf.data(), dgf.data(), duf.data(), n, acc);
    EXPECT_LE(RelDiff(yf, y), kForwardTol);
    EXPECT_LE(RelDiff(dgf, dg), kForwardTol);
    EXPECT_LE(RelDiff(duf, du), kForwardTol);
  }
}

// Rows of 37 columns (4 blocks of 8 and a tail), 33 of them classes, targets in the
// first block, a middle one and the tail; written and accumulated; and a block of a
// vocabulary-parallel split whose targets are mostly outside it.
TEST(CpuKernels, FloatCrossEntropyMatchesDouble) {
  const int64_t rows = 5, vocab = 37, valid = 33;
  Vec logits = Random(rows * vocab, 64, 4.0);
  std::vector<int32_t> targets = {0, 7, 8, 32, 20};
  Vec lse(rows);
  double loss = 0;
  ASSERT_EQ(CrossEntropyForward(logits.data(), targets.data(), &loss, lse.data(), rows, vocab,
                                valid),
            -1);
  auto lf = ToFloat(logits);
  std::vector<float> lsef(rows);
  float lossf = 0;
  ASSERT_EQ(CrossEntropyForward(lf.data(), targets.data(), &lossf, lsef.data(), rows, vocab,
                                valid),
            -1);
  EXPECT_NEAR(lossf, loss, kForwardTol * std::fabs(loss));
  EXPECT_LE(RelDiff(lsef, lse), kForwardTol);
  for (bool acc : {false, true}) {
    Vec d(rows * vocab, acc ? 0.5 : 0.0);
    CrossEntropyBackward(logits.data(), targets.data(), lse.data(), 1.5, d.data(), rows, vocab,
                         acc, 0, valid);
    std::vector<float> df(rows * vocab, acc ? 0.5f : NAN);
    CrossEntropyBackward(lf.data(), targets.data(), lsef.data(), 1.5f, df.data(), rows, vocab,
                         acc, 0, valid);
    EXPECT_LE(RelDiff(df, d), kForwardTol) << acc;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = valid; i < vocab; ++i) EXPECT_EQ(df[r * vocab + i], acc ? 0.5f : 0.0f);
  }
  // Columns [20, 37) as the block of a vocabulary-parallel split (13 classes, then
  // padding; targets 0, 7 and 8 outside it), with the lse of the whole rows.
  Vec block(rows * 17);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < 17; ++i) block[r * 17 + i] = logits[r * vocab + 20 + i];
  auto bf = ToFloat(block);
  Vec d(rows * 17);
  CrossEntropyBackward(block.data(), targets.data(), lse.data(), 1.5, d.data(), rows, 17, false,
                       20, valid);
  std::vector<float> df(rows * 17, NAN);
  CrossEntropyBackward(bf.data(), targets.data(), lsef.data(), 1.5f, df.data(), rows, 17, false,
                       20, valid);
  EXPECT_LE(RelDiff(df, d), kForwardTol);
  std::vector<float> maxf(rows), sumf(rows), tf(rows);
  VocabMax(bf.data(), maxf.data(), rows, 17, 20, valid);
  ASSERT_EQ(VocabSumExp(bf.data(), targets.data(), maxf.data(), sumf.data(), tf.data(), rows, 17,
                        20, vocab, valid),
            -1);
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(maxf[r], *std::max_element(bf.begin() + r * 17, bf.begin() + r * 17 + 13));
    double ref = 0;
    for (int64_t i = 0; i < 13; ++i) ref += std::exp(static_cast<double>(bf[r * 17 + i]) - maxf[r]);
    EXPECT_NEAR(sumf[r], ref, 1e-6 * ref);
  }
}

TEST(CpuKernels, AdamWTailMatchesReference) {
  const int64_t n = 67;  // 8 blocks of 8 and a tail of 3
  Vec p0 = Random(n, 65), g1 = Random(n, 66), g2 = Random(n, 67), g3 = Random(n, 68);
  const double lr = 1e-3, b1 = 0.9, b2 = 0.95, eps = 1e-8, wd = 0.1, scale = 0.7;
  Vec p = p0, m(n, 0.0), v(n, 0.0);
  auto pf = ToFloat(p0);
  std::vector<float> mf(n, 0.f), vf(n, 0.f);
  for (int step = 1; step <= 3; ++step) {
    const Vec& g = step == 1 ? g1 : step == 2 ? g2 : g3;
    for (int64_t i = 0; i < n; ++i) {
      double gi = g[i] * scale;
      m[i] = b1 * m[i] + (1 - b1) * gi;
      v[i] = b2 * v[i] + (1 - b2) * gi * gi;
      double mh = m[i] / (1 - std::pow(b1, step)), vh = v[i] / (1 - std::pow(b2, step));
      p[i] -= lr * (mh / (std::sqrt(vh) + eps) + wd * p[i]);
    }
    auto gf = ToFloat(g);
    AdamW(pf.data(), gf.data(), mf.data(), vf.data(), n, lr, b1, b2, eps, wd, step, scale);
  }
  EXPECT_LE(RelDiff(pf, p), kForwardTol);
  EXPECT_LE(RelDiff(mf, m), kForwardTol);
  EXPECT_LE(RelDiff(vf, v), kForwardTol);
}

// Bias and norm-weight gradients over 150 columns: three column blocks of the
// row-order sums, the last one partial.
TEST(CpuKernels, ColumnSumsSpanSeveralBlocks) {
  const int64_t rows = 9, c = 150;
  Vec x = Random(rows * c, 69), dy = Random(rows * c, 70), w = Random(c, 71), b = Random(c, 72);
  Vec mean(rows), rstd(rows), y(rows * c);
  LayerNormForward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, c,
                   1e-5);
  Vec dw_ref(c, 0.0), db_ref(c, 0.0), rms_ref(c, 0.0);
  Vec rrms(rows);
  RMSNormForward(x.data(), w.data(), y.data(), rrms.data(), rows, c, 1e-6);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < c; ++i) {
      dw_ref[i] += dy[r * c + i] * (x[r * c + i] - mean[r]) * rstd[r];
      db_ref[i] += dy[r * c + i];
      rms_ref[i] += dy[r * c + i] * x[r * c + i] * rrms[r];
    }
  auto xf = ToFloat(x), dyf = ToFloat(dy), wf = ToFloat(w), mf = ToFloat(mean),
       rf = ToFloat(rstd), rmsf = ToFloat(rrms);
  std::vector<float> dx(rows * c), dw(c, 0.f), db(c, 0.f), drms(c, 0.f), bias(c, 0.f);
  LayerNormBackward(dyf.data(), xf.data(), wf.data(), mf.data(), rf.data(), dx.data(), dw.data(),
                    db.data(), rows, c, false);
  EXPECT_LE(RelDiff(dw, dw_ref), kForwardTol);
  EXPECT_LE(RelDiff(db, db_ref), kForwardTol);
  RMSNormBackward(dyf.data(), xf.data(), wf.data(), rmsf.data(), dx.data(), drms.data(), rows, c,
                  false);
  EXPECT_LE(RelDiff(drms, rms_ref), kForwardTol);
  // The linear's bias gradient: dy is [rows, out = c].
  std::vector<float> xin = ToFloat(Random(rows * 3, 73)), wl = ToFloat(Random(c * 3, 74));
  LinearBackward(dyf.data(), xin.data(), wl.data(), (float*)nullptr, (float*)nullptr, bias.data(),
                 rows, 3, c, false);
  EXPECT_LE(RelDiff(bias, db_ref), kForwardTol);
}

// The float kernels give the same bits with 1 and 2 OpenMP threads.
TEST(CpuKernels, FloatKernelsDoNotDependOnThreadCount) {
  const int saved = omp_get_max_threads();
  const int64_t batch = 2, seq = 33, heads = 3, hd = 64, rows = batch * seq, c = heads * hd;
  const int64_t vocab = 1001, n = (1 << 16) * 2 + 77;
  const auto q = ToFloat(Random(rows * c, 80)), k = ToFloat(Random(rows * c, 81)),
             v = ToFloat(Random(rows * c, 82)), dout = ToFloat(Random(rows * c, 83)),
             logits = ToFloat(Random(rows * vocab, 84, 3.0)), big = ToFloat(Random(n, 85)),
             w = ToFloat(Random(c, 86)), b = ToFloat(Random(c, 87));
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>((r * 37) % vocab);
  struct Out {
    std::vector<float> out, lse, dq, dk, dv, celse, dlogits, gelu, dgelu, p, m, v, y, dx, dw, db;
    float loss;
    double ss;
  };
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    Out o;
    o.out.resize(rows * c), o.lse.resize(batch * heads * seq);
    AttentionForward(q.data(), k.data(), v.data(), o.out.data(), o.lse.data(), batch, seq, heads,
                     heads, hd);
    o.dq.resize(rows * c), o.dk.resize(rows * c), o.dv.resize(rows * c);
    AttentionBackward(dout.data(), q.data(), k.data(), v.data(), o.out.data(), o.lse.data(),
                      o.dq.data(), o.dk.data(), o.dv.data(), batch, seq, heads, heads, hd, false);
    o.celse.resize(rows), o.dlogits.resize(rows * vocab);
    CrossEntropyForward(logits.data(), targets.data(), &o.loss, o.celse.data(), rows, vocab);
    CrossEntropyBackward(logits.data(), targets.data(), o.celse.data(), 1.0f, o.dlogits.data(),
                         rows, vocab, false);
    o.gelu.resize(n), o.dgelu.resize(n);
    GeluForward(big.data(), o.gelu.data(), n);
    GeluBackward(big.data(), big.data(), o.dgelu.data(), n, false);
    o.ss = SumSquares(big.data(), n);
    o.p = big, o.m.assign(n, 0.f), o.v.assign(n, 0.f);
    AdamW(o.p.data(), o.gelu.data(), o.m.data(), o.v.data(), n, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1,
          0.5);
    std::vector<float> mean(rows), rstd(rows);
    o.y.resize(rows * c), o.dx.resize(rows * c), o.dw.assign(c, 0.f), o.db.assign(c, 0.f);
    LayerNormForward(q.data(), w.data(), b.data(), o.y.data(), mean.data(), rstd.data(), rows, c,
                     1e-5);
    LayerNormBackward(dout.data(), q.data(), w.data(), mean.data(), rstd.data(), o.dx.data(),
                      o.dw.data(), o.db.data(), rows, c, false);
    return o;
  };
  const Out one = run(1), two = run(2);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.out, two.out);
  EXPECT_EQ(one.lse, two.lse);
  EXPECT_EQ(one.dq, two.dq);
  EXPECT_EQ(one.dk, two.dk);
  EXPECT_EQ(one.dv, two.dv);
  EXPECT_EQ(one.loss, two.loss);
  EXPECT_EQ(one.celse, two.celse);
  EXPECT_EQ(one.dlogits, two.dlogits);
  EXPECT_EQ(one.gelu, two.gelu);
  EXPECT_EQ(one.dgelu, two.dgelu);
  EXPECT_EQ(one.ss, two.ss);
  EXPECT_EQ(one.p, two.p);
  EXPECT_EQ(one.m, two.m);
  EXPECT_EQ(one.v, two.v);
  EXPECT_EQ(one.y, two.y);
  EXPECT_EQ(one.dx, two.dx);
  EXPECT_EQ(one.dw, two.dw);
  EXPECT_EQ(one.db, two.db);
}

}  // namespace
}  // namespace heiretsu::cpu
