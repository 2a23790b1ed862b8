// What the CUDA backend's kernels share, with the CPU emulation they also run under
// (test/unit/cuda_emulation.h): the grid-stride loops, the View of an operand in
// storage S, the warp sum and (on a GPU) DynamicShared. Included by cuda_backend.cu and by the
// emulated tests inside their own namespace, after ToFloat(S) and FromFloat<S>(float) (exact to
// float32, rounded to nearest even from it) and, in the tests, stand-ins for threadIdx, blockIdx,
// blockDim, gridDim, __shfl_xor_sync and DynamicShared.
#ifndef HEIRETSU_RUNTIME_CUDA_KERNEL_BASE_CUH_
#define HEIRETSU_RUNTIME_CUDA_KERNEL_BASE_CUH_

// Thread i of the grid takes elements i, i + threads, ...
#define GRID_STRIDE(i, n)                                                                \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// The same over warps (blockDim.x a multiple of 32): warp w of the grid takes items
// w, w + warps, ...; all 32 lanes of a warp take the same items, so the warp's
// shuffles always see every lane.
#define WARP_STRIDE(w, n)                                                                       \
  for (int64_t w = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32; w < (n); \
       w += static_cast<int64_t>(blockDim.x) * gridDim.x / 32)

// The same over blocks: block k of the grid takes rows k, k + blocks, ... (every
// thread of a block the same rows, so the block's reductions see every thread).
#define BLOCK_STRIDE(r, n) for (int64_t r = blockIdx.x; r < (n); r += gridDim.x)

// One activation operand of a kernel in storage S: x[i] loads element i as float32,
// set(i, v) stores v rounded to S, put(i, v, acc) stores v or adds it to what is
// there (in float32, then one rounding). Passed by value; null for an absent one.
template <typename S>
struct View {
  S* p = nullptr;
  __host__ __device__ explicit operator bool() const { return p != nullptr; }
  __device__ float operator[](int64_t i) const { return ToFloat(p[i]); }
  __device__ void set(int64_t i, float v) const { p[i] = FromFloat<S>(v); }
  __device__ void put(int64_t i, float v, bool acc) const { set(i, acc ? (*this)[i] + v : v); }
};

#ifdef __CUDACC__
// The block's dynamic shared memory (the launch's third argument), 128-byte aligned.
__device__ inline unsigned char* DynamicShared() {
  extern __shared__ __align__(128) unsigned char dynamic_shared[];
  return dynamic_shared;
}
#endif

__device__ inline float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

#endif  // HEIRETSU_RUNTIME_CUDA_KERNEL_BASE_CUH_
