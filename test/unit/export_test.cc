// Weights out and in (runtime/export): the RoPE row permutation between heiretsu's
// interleaved pairs and Hugging Face Llama's halves preserves attention scores (against
// a float64 rotate_half of HF's form), file tensors go out and back bit for bit, and
// the small JSON reader and number formats behave as the formats need.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/cpu/kernels.h"
#include "runtime/export/io.h"
#include "runtime/export/json.h"
#include "runtime/export/layout.h"

namespace heiretsu::weights {
namespace {

// y = x W^T + b for x [rows, in], W [out, in] (float values), in float64.
std::vector<double> Linear(const std::vector<double>& x, const std::vector<float>& w,
                           const std::vector<float>& b, int64_t rows, int64_t in, int64_t out) {
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[static_cast<size_t>(o)];
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

// Hugging Face Llama's rotary embedding, written from its definition in float64:
// inv_freq[i] = theta^(-2i/hd); x * cos + rotate_half(x) * sin, rotate_half(x) =
// cat(-x[hd/2:], x[:hd/2]), with cos and sin repeated over both halves.
std::vector<double> RotateHalf(const std::vector<double>& x, int64_t seq, int64_t heads,
                               int64_t hd, double theta) {
  std::vector<double> y(x.size());
  const int64_t half = hd / 2;
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const double* v = &x[(t * heads + h) * hd];
      double* out = &y[(t * heads + h) * hd];
      for (int64_t j = 0; j < hd; ++j) {
        const int64_t i = j % half;
        const double angle = static_cast<double>(t) * std::pow(theta, -2.0 * i / hd);
        const double rotated = j < half ? -v[j + half] : v[j - half];
        out[j] = v[j] * std::cos(angle) + rotated * std::sin(angle);
      }
    }
  return y;
}

// scores[h][t][s] = q[t, h] . k[s, h / group] (grouped-query attention, before scaling).
std::vector<double> Scores(const std::vector<double>& q, const std::vector<double>& k, int64_t seq,
                           int64_t heads, int64_t kv, int64_t hd) {
  std::vector<double> s;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t u = 0; u < seq; ++u) {
        double dot = 0;
        for (int64_t j = 0; j < hd; ++j)
          dot += q[(t * heads + h) * hd + j] * k[(u * kv + h / (heads / kv)) * hd + j];
        s.push_back(dot);
      }
  return s;
}

TEST(ExportRope, PermutedProjectionsGiveHuggingFaceTheSameScores) {
  const int64_t d = 24, heads = 4, kv = 2, hd = 6, seq = 7;
  const double theta = 10000.0;
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  auto random = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = normal(gen);
    return v;
  };
  Values ours = {{"wq", random(heads * hd * d)}, {"bq", random(heads * hd)},
                 {"wk", random(kv * hd * d)},    {"bk", random(kv * hd)}};
  std::vector<double> x(static_cast<size_t>(seq * d));
  for (double& v : x) v = normal(gen);

  // heiretsu: its projections, then its own RoPE kernel (interleaved pairs).
  std::vector<double> q = Linear(x, ours["wq"], ours["bq"], seq, d, heads * hd);
  std::vector<double> k = Linear(x, ours["wk"], ours["bk"], seq, d, kv * hd);
  std::vector<double> q_rot(q.size()), k_rot(k.size());
  cpu::RopeForward<double>(q.data(), q_rot.data(), 1, seq, heads, hd, theta);
  cpu::RopeForward<double>(k.data(), k_rot.data(), 1, seq, kv, hd, theta);
  const std::vector<double> want = Scores(q_rot, k_rot, seq, heads, kv, hd);

  // Hugging Face: the exported (row-permuted) q_proj, k_proj and biases, rotate_half.
  auto file_tensor = [&](const char* param, int64_t rows, int64_t cols, int64_t rope) {
    FileTensor t;
    t.name = param;
    t.shape = cols == 1 ? std::vector<int64_t>{rows} : std::vector<int64_t>{rows, cols};
    t.cols = cols;
    t.pieces = {{param, rows, rope}};
    return t;
  };
  auto exported = [&](const FileTensor& t) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    Gather(t, ours, v.data());
    return v;
  };
  for (int64_t rope : {hd, int64_t{0}}) {
    const FileTensor tq = file_tensor("wq", heads * hd, d, rope), tbq = file_tensor("bq", heads * hd, 1, rope);
    const FileTensor tk = file_tensor("wk", kv * hd, d, rope), tbk = file_tensor("bk", kv * hd, 1, rope);
    const std::vector<double> hq =
        RotateHalf(Linear(x, exported(tq), exported(tbq), seq, d, heads * hd), seq, heads, hd, theta);
    const std::vector<double> hk =
        RotateHalf(Linear(x, exported(tk), exported(tbk), seq, d, kv * hd), seq, kv, hd, theta);
    const std::vector<double> got = Scores(hq, hk, seq, heads, kv, hd);
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i)
      worst = std::max(worst, std::fabs(got[i] - want[i]) / (1 + std::fabs(want[i])));
    if (rope) {
      EXPECT_LT(worst, 1e-12) << "the permuted projections under rotate_half differ";
    } else {
      // Without the permutation the two rotations disagree: the test can fail.
      EXPECT_GT(worst, 1e-3) << "unpermuted rows should not match";
    }
    if (!rope) continue;
    // And back: the import's scatter restores heiretsu's rows bit for bit.
    Values back = {{"wq", std::vector<float>(ours["wq"].size())}, {"bq", std::vector<float>(ours["bq"].size())},
                   {"wk", std::vector<float>(ours["wk"].size())}, {"bk", std::vector<float>(ours["bk"].size())}};
    for (const FileTensor* t : {&tq, &tbq, &tk, &tbk}) Scatter(*t, exported(*t).data(), &back);
    EXPECT_EQ(back, ours);
  }
}

TEST(ExportRope, FirstRowsOfAHeadFollowTheRule) {
  // HF row i <- ours 2i, HF row hd/2 + i <- ours 2i + 1, per head (hd = 4, 2 heads).
  Values ours = {{"w", {0, 1, 2, 3, 4, 5, 6, 7}}};
  FileTensor t{"w", {8}, 1, {{"w", 8, 4}}, false};
  std::vector<float> out(8);
  Gather(t, ours, out.data());
  EXPECT_EQ(out, (std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7}));
}

TEST(ExportLayout, TransposedStackAndZeroPadding) {
  // Conv1D's [in, out] of q, k, v stacked along the output; then zero rows.
  Values ours = {{"a", {1, 2, 3, 4}}, {"b", {5, 6}}};  // a [2, 2], b [1, 2]
  FileTensor fused{"f", {2, 3}, 2, {{"a", 2, 0}, {"b", 1, 0}}, true};
  std::vector<float> out(6);
  Gather(fused, ours, out.data());
  EXPECT_EQ(out, (std::vector<float>{1, 3, 5, 2, 4, 6}));
  FileTensor padded{"p", {4, 2}, 2, {{"a", 1, 0}, {"", 3, 0}}, false};
  std::vector<float> out2(8, -1.f);
  Gather(padded, ours, out2.data());
  EXPECT_EQ(out2, (std::vector<float>{1, 2, 0, 0, 0, 0, 0, 0}));
  Values back = {{"a", std::vector<float>(4)}, {"b", std::vector<float>(2)}};
  Scatter(fused, out.data(), &back);
  EXPECT_EQ(back, ours);
}

TEST(ExportJson, ParsesAndRefuses) {
  JsonValue v;
  ASSERT_FALSE(ParseJson(R"({"a": [1, -2.5e1, "x\u00e9\ud83d\ude00"], "b": {"c": null}})", &v));
  ASSERT_EQ(v.kind, JsonValue::Kind::kObject);
  const JsonValue* a = v.Find("a");
  ASSERT_TRUE(a && a->items.size() == 3);
  EXPECT_TRUE(a->items[0].integral);
  EXPECT_EQ(a->items[0].integer, 1);
  EXPECT_FALSE(a->items[1].integral);
  EXPECT_EQ(a->items[1].number, -25.0);
  EXPECT_EQ(a->items[2].text, "x\xc3\xa9\xf0\x9f\x98\x80");
  EXPECT_EQ(v.Find("b")->Find("c")->kind, JsonValue::Kind::kNull);
  Status err = ParseJson(R"({"a": 1,})", &v);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->message, "JSON at byte 8: expected a member name (a string), found '}'");
  err = ParseJson(R"({"a": 1, "a": 2})", &v);
  ASSERT_TRUE(err);
  EXPECT_NE(err->message.find("appears twice"), std::string::npos);
  EXPECT_TRUE(ParseJson("[1] x", &v));
  EXPECT_TRUE(ParseJson("\"\\ud800\"", &v));  // a lone surrogate
  EXPECT_TRUE(ParseJson(std::string(100, '['), &v));  // too deep, not a crash
}

TEST(ExportJson, NumbersAsPythonWritesThem) {
  EXPECT_EQ(JsonNumber(1e-5), "1e-05");
  EXPECT_EQ(JsonNumber(10000.0), "10000.0");
  EXPECT_EQ(JsonNumber(0.02), "0.02");
  EXPECT_EQ(JsonNumber(500000.0), "500000.0");
  EXPECT_EQ(JsonNumber(1e16), "1e+16");
  EXPECT_EQ(JsonNumber(0.0001), "0.0001");
  EXPECT_EQ(JsonNumber(1.5e-7), "1.5e-07");
  EXPECT_EQ(JsonNumber(0.0), "0.0");
  EXPECT_EQ(JsonQuote("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
}

TEST(ExportIo, HalfAndBFloat16) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(HalfToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
  EXPECT_EQ(BFloat16ToFloat(0xc0a0), -5.0f);
}

}  // namespace
}  // namespace heiretsu::weights
