// An emulation of what the CUDA backend's kernels use of CUDA, so that their own
// code runs on the CPU in unit tests (test/unit/flash_attention_test.cc,
// cuda_kernels_emu_test.cc): every thread of a block is a std::thread (threadIdx,
// blockIdx, blockDim, gridDim thread-local or global), the block's and each warp's
// barriers are std::barriers (__syncthreads, __syncwarp, and __shfl_xor_sync through
// a per-warp exchange; __shfl_down_sync alike, atomicMin under a mutex), shared
// memory is static (one array for the dynamic part, DynamicShared; a __shared__
// variable a function static: the blocks of a launch run one after another), and
// a wmma fragment holds its whole 16 x 16 tile in lane 0, which loads, multiplies
// (float32 sums) and stores it for the warp: the other lanes only take part in the
// kernel's own barriers. The 16-bit storages are
// runtime/base/half.h's bit patterns (Bf16, F16). A test includes the kernels'
// headers inside namespace heiretsu::emu, after this one:
//   namespace heiretsu::emu {
//   #include "runtime/cuda/kernel_base.cuh"
//   #include "runtime/cuda/flash_attention.cuh"
//   }
// and runs a kernel with cuda_emu::Launch(blocks, threads, [&] { Kernel(args); }).
// What only a GPU shows (real fragment layouts, memory limits, timing) it cannot.
#ifndef HEIRETSU_TEST_UNIT_CUDA_EMULATION_H_
#define HEIRETSU_TEST_UNIT_CUDA_EMULATION_H_

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include "runtime/base/half.h"

#define __global__
#define __device__
#define __host__
#define __launch_bounds__(n)
#define __shared__ static  // one copy for all threads: the blocks run one at a time
#define __align__(n)       // the one shared array below is aligned itself

namespace cuda_emu {

struct Dim3 {
  unsigned x = 0;
};
inline thread_local Dim3 threadIdx, blockIdx;
inline Dim3 blockDim, gridDim;

// One block's barriers and the warps' shuffle exchange.
struct BlockSync {
  explicit BlockSync(unsigned threads) : block(threads), exchange(threads) {
    for (unsigned w = 0; w < threads / 32; ++w)
      warps.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> block;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<float> exchange;
};
inline thread_local BlockSync* block_sync = nullptr;

inline void __syncthreads() { block_sync->block.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) {
  block_sync->warps[threadIdx.x / 32]->arrive_and_wait();
}
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  const unsigned t = threadIdx.x;
  block_sync->exchange[t] = v;
  __syncwarp();
  const float other =
      block_sync->exchange[(t & ~31u) | ((t & 31u) ^ static_cast<unsigned>(lane_mask))];
  __syncwarp();
  return other;
}
inline float __shfl_down_sync(unsigned, float v, int delta) {
  const unsigned t = threadIdx.x, lane = t & 31u;
  block_sync->exchange[t] = v;
  __syncwarp();
  const float other = lane + delta < 32 ? block_sync->exchange[t + delta] : v;
  __syncwarp();
  return other;
}
// (double through the same exchange, in two halves' worth of floats)
inline double __shfl_down_sync(unsigned mask, double v, int delta) {
  static_assert(sizeof(double) == 2 * sizeof(float));
  float half_values[2];
  std::memcpy(half_values, &v, sizeof v);
  half_values[0] = __shfl_down_sync(mask, half_values[0], delta);
  half_values[1] = __shfl_down_sync(mask, half_values[1], delta);
  double out;
  std::memcpy(&out, half_values, sizeof out);
  return out;
}
inline std::mutex atomics;
inline int atomicMin(int* address, int value) {
  std::lock_guard<std::mutex> lock(atomics);
  const int old = *address;
  if (value < old) *address = value;
  return old;
}
inline bool Lane0() { return threadIdx.x % 32 == 0; }

// Runs `kernel` on `blocks` blocks of `threads` threads, one block after another.
template <class F>
void Launch(unsigned blocks, unsigned threads, F kernel) {
  gridDim.x = blocks;
  blockDim.x = threads;
  for (unsigned b = 0; b < blocks; ++b) {
    BlockSync block(threads);
    std::vector<std::thread> team;
    for (unsigned t = 0; t < threads; ++t)
      team.emplace_back([&, b, t] {
        threadIdx.x = t;
        blockIdx.x = b;
        block_sync = &block;
        kernel();
      });
    for (std::thread& th : team) th.join();
  }
}

struct uint4 {
  uint32_t x, y, z, w;
};
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }

}  // namespace cuda_emu

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// The whole tile, as float32, in lane 0 (the other lanes' copies are never read).
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  float x[256];
};

template <class Use, class T, class L>
void fill_fragment(fragment<Use, 16, 16, 16, T, L>& f, float v) {
  for (float& e : f.x) e = v;
}
// matrix_a: element (row r, column c); matrix_b: (k, n); row or column major in memory.
template <class Use, class T, class L, class S>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const S* p, unsigned ldm) {
  if (!cuda_emu::Lane0()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = ToFloat(std::is_same_v<L, row_major> ? p[r * ldm + c] : p[c * ldm + r]);
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p,
                             unsigned ldm, layout_t layout) {
  if (!cuda_emu::Lane0()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f,
                              unsigned ldm, layout_t layout) {
  if (!cuda_emu::Lane0()) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
}
template <class T, class LA, class LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d,
              const fragment<matrix_a, 16, 16, 16, T, LA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LB>& b,
              const fragment<accumulator, 16, 16, 16, float>& c) {
  if (!cuda_emu::Lane0()) return;
  float out[256];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 16; ++n) {
      float s = c.x[r * 16 + n];
      for (int k = 0; k < 16; ++k) s += a.x[r * 16 + k] * b.x[k * 16 + n];
      out[r * 16 + n] = s;
    }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}

}  // namespace nvcuda::wmma

namespace heiretsu::emu {

using cuda_emu::__shfl_down_sync;
using cuda_emu::__shfl_xor_sync;
using cuda_emu::__syncthreads;
using cuda_emu::__syncwarp;
using cuda_emu::atomicMin;
using cuda_emu::blockDim;
using cuda_emu::blockIdx;
using cuda_emu::gridDim;
using cuda_emu::make_uint4;
using cuda_emu::threadIdx;
using cuda_emu::uint4;

// The two 16-bit storages, as runtime/base/half.h's bit patterns.
struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};
inline float ToFloat(float v) { return v; }
inline float ToFloat(Bf16 v) { return half::Bf16ToFloat(v.bits); }
inline float ToFloat(F16 v) { return half::HalfToFloat(v.bits); }
template <typename S>
S FromFloat(float v);
template <>
inline float FromFloat<float>(float v) {
  return v;
}
template <>
inline Bf16 FromFloat<Bf16>(float v) {
  return {half::FloatToBf16(v)};
}
template <>
inline F16 FromFloat<F16>(float v) {
  return {half::FloatToHalf(v)};
}

// The values rounded into storage S, and *values set to what S holds (the same
// values in both, for a reference computed on the floats).
template <typename S>
std::vector<S> ToStorage(std::vector<float>* values) {
  std::vector<S> out;
  for (float& x : *values) {
    out.push_back(FromFloat<S>(x));
    x = ToFloat(out.back());
  }
  return out;
}

// The kernels' dynamic shared memory (kernel_base.cuh's DynamicShared on a GPU).
alignas(128) inline unsigned char dynamic_shared[192 * 1024];
inline unsigned char* DynamicShared() { return dynamic_shared; }

}  // namespace heiretsu::emu

#endif  // HEIRETSU_TEST_UNIT_CUDA_EMULATION_H_
