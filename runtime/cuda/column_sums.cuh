// The CUDA backend's reductions over the rows of a [rows, c] matrix into c columns:
// a bias gradient (column sums of dy), a norm's weight and bias gradients (column
// sums of dy * xhat and of dy), an embedding's table and position gradients
// (scatter-adds of dout's rows). One thread per column walking every row is
// deterministic but leaves a GPU nearly idle (GPT-2 small: 768 threads, each over
// 8192 rows, for every layernorm). Here, still deterministic (no atomics, a fixed
// order per element):
//   - column sums in two passes: ColumnSumPartials / NormParamPartials sum chunks
//     of kColumnChunk rows per column, in row order, into float32 partials
//     (chunks x c: the backend's scratch rows), AddColumnPartials adds each
//     column's partials in chunk order to the gradient. The float32 sum's order
//     differs from one pass over all rows (within 1e-6 of it relative for these
//     sizes), not from run to run;
//   - the position gradient, one thread per (position, column) over that
//     position's rows in row order, and the table gradient, one thread per (id
//     shard, column): each thread adds the rows whose id falls in its shard (id mod
//     kEmbeddingShards), in row order, so every table element receives its rows in
//     row order as before: bitwise the one-thread-per-column kernel.
// Every kernel loops with GRID_STRIDE, so a capped grid covers everything. Included
// by cuda_backend.cu inside its namespace after kernel_base.cuh, and by
// test/unit/cuda_kernels_emu_test.cc under its emulation (checked there against
// float64 sums and, for the embedding, bitwise against row-order float32 adds).
#ifndef HEIRETSU_RUNTIME_CUDA_COLUMN_SUMS_CUH_
#define HEIRETSU_RUNTIME_CUDA_COLUMN_SUMS_CUH_

constexpr int64_t kColumnChunk = ::heiretsu::cuda::kColumnChunkRows;  // device_memory.h
constexpr int64_t kEmbeddingShards = 64;  // id shards of the table gradient

// The partial sums a column reduction over `rows` rows keeps per column.
__host__ __device__ inline int64_t ColumnChunks(int64_t rows) {
  return (rows + kColumnChunk - 1) / kColumnChunk;
}

// partial[j * c + i] = the sum over chunk j's rows, in order, of dy[r * c + i].
template <class V>
__global__ void ColumnSumPartials(V dy, float* partial, int64_t rows, int64_t c) {
  GRID_STRIDE(k, ColumnChunks(rows) * c) {
    const int64_t i = k % c, j = k / c, first = j * kColumnChunk;
    const int64_t end = first + kColumnChunk < rows ? first + kColumnChunk : rows;
    float s = 0;
    for (int64_t r = first; r < end; ++r) s += dy[r * c + i];
    partial[k] = s;
  }
}

// The same for a norm's parameters: pw of dy * xhat, pb of dy (pb null: RMSNorm,
// whose mean is null too and xhat = x * rstd).
template <class V>
__global__ void NormParamPartials(V dy, V x, const float* mean, const float* rstd, float* pw,
                                  float* pb, int64_t rows, int64_t c) {
  GRID_STRIDE(k, ColumnChunks(rows) * c) {
    const int64_t i = k % c, j = k / c, first = j * kColumnChunk;
    const int64_t end = first + kColumnChunk < rows ? first + kColumnChunk : rows;
    float sw = 0, sb = 0;
    for (int64_t r = first; r < end; ++r) {
      const float xhat = (x[r * c + i] - (mean ? mean[r] : 0.f)) * rstd[r];
      const float g = dy[r * c + i];
      sw += g * xhat;
      sb += g;
    }
    pw[k] = sw;
    if (pb) pb[k] = sb;
  }
}

// dst[i] += the sum of column i's `chunks` partials, in chunk order.
__global__ void AddColumnPartials(const float* partial, int64_t chunks, int64_t c, float* dst) {
  GRID_STRIDE(i, c) {
    float s = 0;
    for (int64_t j = 0; j < chunks; ++j) s += partial[j * c + i];
    dst[i] += s;
  }
}

// dpos[p * c + i] += dout[r * c + i] for the rows r of position p (r mod seq), in
// row order.
template <class V>
__global__ void EmbeddingPositionGrad(V dout, float* dpos, int64_t rows, int64_t seq, int64_t c) {
  GRID_STRIDE(k, seq * c) {
    const int64_t p = k / c, i = k % c;
    for (int64_t r = p; r < rows; r += seq) dpos[k] += dout[r * c + i];
  }
}

// dtable[id * c + i] += dout[r * c + i] for every row r whose id (ids[r] - begin)
// is in [0, vocab), in row order; thread (shard s, column i) takes the ids with
// id mod kEmbeddingShards = s.
template <class V>
__global__ void EmbeddingTableGrad(const int32_t* ids, V dout, float* dtable, int64_t rows,
                                   int64_t vocab, int64_t c, int64_t begin) {
  GRID_STRIDE(k, kEmbeddingShards * c) {
    const int64_t s = k / c, i = k % c;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t id = static_cast<int64_t>(ids[r]) - begin;
      if (id >= 0 && id < vocab && id % kEmbeddingShards == s)
        dtable[id * c + i] += dout[r * c + i];
    }
  }
}

#endif  // HEIRETSU_RUNTIME_CUDA_COLUMN_SUMS_CUH_
