// The CUDA backend's column reductions (runtime/cuda/column_sums.cuh: bias and norm
// parameter gradients in two passes, the embedding's table and position gradients)
// run on the CPU under test/unit/cuda_emulation.h, on capped grids (every kernel
// loops), against float64 column sums and, for the embedding, bitwise against
// float32 adds in row order (what one thread per column walking every row did).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "test/unit/cuda_emulation.h"

namespace heiretsu::emu {

#include "runtime/cuda/kernel_base.cuh"
#include "runtime/cuda/column_sums.cuh"

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
  std::vector<float> partial(static_cast<size_t>(chunks * c), NAN), dst(static_cast<size_t>(c), start);
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
  std::vector<Bf16> dy16;
  for (float& x : dy) {
    dy16.push_back(FromFloat<Bf16>(x));
    x = ToFloat(dy16.back());  // the same values in both storages
  }
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
    if (layernorm) ExpectColumnSums(db, sb, mb, 2.f);
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
  std::vector<float> table = Normal(static_cast<size_t>(vocab * c), 7), pos = Normal(static_cast<size_t>(seq * c), 8);
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

}  // namespace heiretsu::emu
