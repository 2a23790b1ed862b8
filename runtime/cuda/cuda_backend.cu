// The CUDA backend; see cuda_backend.h. Each opcode's formula is the CPU kernel's
// (runtime/cpu/kernels.h); where the CPU sums in double so does this. Reductions run
// in a fixed order (block trees; column sums in chunks of rows, then the chunks in
// order, column_sums.cuh), so results do not change from run to run. Every kernel
// but the single-block ones (MeanOfRows, VocabLossKernel, AddPartials: one block
// loops over everything) and
// SumSquaresPartial (a fixed kPartials blocks, grid-stride) is launched on a capped
// grid (Grid, Blocks) and loops over its whole range: GRID_STRIDE over elements,
// WARP_STRIDE over attention's queries or keys (one warp each), BLOCK_STRIDE over
// the rows of the norms and the losses (one block each) and over the tiled
// attention's tiles. So the cap (CudaOptions::max_blocks) never leaves an element
// out.
//
// Storage (issue #13). A float operand is float32, bfloat16 or float16 (plan.fbs
// DType). The operands that may be 16-bit are the activations the precision pass
// (compiler/transforms/Precision.cpp) narrows, plan::Takes16Bit's (opcode, slot)
// pairs; every other float operand (parameters and
// their gradients, AdamW moments, norm statistics, lse, losses, KV caches) must be
// float32, and CheckOperandStorage refuses a plan that says otherwise, naming the
// operand. Kernels are templates on the storage of their activation operands: each
// reads and writes them through a View<S> (S = float, __nv_bfloat16, __half), which
// loads to float32 and stores rounded to nearest even (__float2bfloat16_rn,
// __float2half_rn: runtime/base/half.h's rounding). All arithmetic is float32 (or
// double where the CPU uses double), as the CPU backend's widened copies do, and
// an accumulated 16-bit output is read, added to in float32 and rounded once. When
// an instruction's activation operands all have one storage (the usual case) the
// kernel is instantiated for it; when they mix (a float32 activation the precision
// pass kept wide because it is also communicated or accumulated, beside 16-bit
// ones) it runs View<Dyn>, which switches on each operand's dtype at every access
// (uniform across the grid, so no divergence; a few instructions more per element).
// So each kernel has four instantiations, not one per combination of operands (the
// tiled attention two: bf16 and fp16 only).
//
// GEMMs. float32 linears (every operand float32) run cublasSgemm with
// CUBLAS_PEDANTIC_MATH (no TF32), exactly as before mixed precision: the fp32
// reference matches the CPU backend to 1e-5. A linear or linear_grad with any
// 16-bit activation operand runs its GEMMs in that 16-bit type on the tensor cores
// through cuBLASLt (CUBLAS_COMPUTE_32F: products and sums in float32, one rounding
// of the output): its float32 operands (always the master weight; sometimes an
// activation kept wide, e.g. a residual gradient the executor accumulates) are
// first rounded into a 16-bit scratch copy (ToHalf). The output is the output
// buffer's dtype: y and dx 16-bit or float32, dW always float32, accumulated with
// beta = 1 (cuBLASLt reads C in float32 and adds before rounding). The bias is
// cuBLASLt's BIAS epilogue (in float32 for a float32 output; for a 16-bit one
// cuBLASLt takes the bias in the output's type, so it is rounded to 16 bits first);
// if no algorithm takes the epilogue, a separate kernel adds it (a 16-bit y is then
// rounded twice). Algorithms are chosen once per shape, dtypes and operand
// alignments (the heuristic's first, cached).
//
// The cost of the weight copies (a first version; a copy kept per parameter and
// invalidated by clip_adamw and host copies would remove it): each 16-bit linear
// rounds its weight (read 4 bytes, write 2 per element) once in the forward and
// once more for dx in the backward, 12 bytes of traffic per weight element per
// microbatch beside 6 * rows bytes of GEMM FLOPs per element: for GPT-2 small at
// 8 x 1024 rows on an H100-class GPU (~3 TB/s, ~700 TFLOP/s bf16), about 3-6% of
// the GEMM time, more at small batches. The rounding of the weight also makes the
// GPU's 16-bit GEMM differ from the CPU backend's (which multiplies the widened
// 16-bit activations by the float32 weight) by about 2^-9 (bf16) / 2^-12 (fp16) of
// the output's scale: heiretsu-cuda-check's 16-bit tolerances allow for it.
#include "runtime/cuda/cuda_backend.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <type_traits>

#include "runtime/cuda/device_memory.h"
#include "runtime/cuda/devices.h"
#include "runtime/plan/explain.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu::cuda {
namespace {

namespace fb = plan::fb;
namespace op = plan::op;

constexpr int kThreads = 256;
constexpr int kPartials = 256;  // blocks of the sum-of-squares pass
constexpr unsigned kMaxBlocks = 65535 * 16;  // the default cap of a grid-stride launch

// Blocks of `per_block` items for `n` items, at most `cap`: the kernels launched
// so loop (GRID_STRIDE, WARP_STRIDE) over whatever the grid does not cover.
unsigned Blocks(int64_t n, int per_block, unsigned cap) {
  int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, cap)));
}

// ---------------------------------------------------------------- storage

// Conversions: exact to float32; from float32 rounded to nearest even.
__device__ inline float ToFloat(float v) { return v; }
__device__ inline float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline float ToFloat(__half v) { return __half2float(v); }
template <typename S>
__device__ inline S FromFloat(float v);
template <>
__device__ inline float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ inline __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ inline __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

#include "runtime/cuda/kernel_base.cuh"

// Storage known only when the kernel runs: an instruction whose activation operands
// mix float32 and one 16-bit type. kind: 0 float32, 1 bfloat16, 2 float16.
struct Dyn {};
template <>
struct View<Dyn> {
  void* p = nullptr;
  int kind = 0;
  __host__ __device__ explicit operator bool() const { return p != nullptr; }
  __device__ float operator[](int64_t i) const {
    if (kind == 1) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    if (kind == 2) return __half2float(static_cast<const __half*>(p)[i]);
    return static_cast<const float*>(p)[i];
  }
  __device__ void set(int64_t i, float v) const {
    if (kind == 1)
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
    else if (kind == 2)
      static_cast<__half*>(p)[i] = __float2half_rn(v);
    else
      static_cast<float*>(p)[i] = v;
  }
  __device__ void put(int64_t i, float v, bool acc) const { set(i, acc ? (*this)[i] + v : v); }
};

template <typename S>
View<S> MakeView(void* p, fb::DType) {
  return View<S>{static_cast<S*>(p)};
}
template <>
View<Dyn> MakeView<Dyn>(void* p, fb::DType t) {
  return View<Dyn>{p, t == fb::DType_BF16 ? 1 : t == fb::DType_F16 ? 2 : 0};
}

// The storage an instruction's activation operands share, or kMixed.
enum class Storage { kF32, kBf16, kF16, kMixed };
template <typename S>
struct Tag {
  using type = S;
};
// Calls body(Tag<S>{}) with S the storage type of `st`.
template <class F>
void WithStorage(Storage st, F&& body) {
  switch (st) {
    case Storage::kF32: body(Tag<float>{}); break;
    case Storage::kBf16: body(Tag<__nv_bfloat16>{}); break;
    case Storage::kF16: body(Tag<__half>{}); break;
    case Storage::kMixed: body(Tag<Dyn>{}); break;
  }
}

#include "runtime/cuda/kernels.cuh"
#include "runtime/cuda/flash_attention.cuh"
#include "runtime/cuda/column_sums.cuh"

}  // namespace

// ---------------------------------------------------------------- 16-bit operands

// The operands this backend reads and writes in 16 bits are plan::Takes16Bit's, all
// of them: the kernels above take exactly these through a View; any other float
// operand is float32.
Status CheckOperandStorage(const fb::Plan& plan, const plan::Instruction& in, fb::DType* half) {
  if (half) *half = fb::DType_F32;
  // Most instructions have no 16-bit operand: answer those without building the
  // signature (Run calls this for every instruction of every step).
  bool any = false;
  for (uint32_t b : in.buffers)
    any = any || (b != plan::kNoBuffer && plan::IsHalf(plan.buffers()->Get(b)->dtype()));
  if (!any) return std::nullopt;
  const plan::Signature sig = plan::OpSignature(in.op, in.ints);
  fb::DType found = fb::DType_F32;
  for (size_t i = 0; i < in.buffers.size(); ++i) {
    const uint32_t b = in.buffers[i];
    if (b == plan::kNoBuffer) continue;
    const fb::Buffer& buffer = *plan.buffers()->Get(b);
    if (!plan::IsHalf(buffer.dtype())) continue;
    const bool slotted = !sig.variadic && i < sig.buffers.size();
    const std::string what = std::string(plan::OpName(in.op)) + ": " +
                             (slotted ? "operand '" + std::string(sig.buffers[i].name) + "'"
                                      : "operand " + std::to_string(i)) +
                             " (buffer '" + buffer.name()->str() + "') is " +
                             plan::DTypeName(buffer.dtype());
    if (!slotted || !plan::Takes16Bit(in.op, sig.buffers[i].name))
      return Error::Failure(what + ", which the CUDA backend reads in float32 only (its 16-bit "
                                   "operands are the activations compiler/transforms/"
                                   "Precision.cpp narrows)");
    if (found != fb::DType_F32 && found != buffer.dtype())
      return Error::Failure(what + " beside " + plan::DTypeName(found) +
                            " operands: the CUDA backend runs one 16-bit type per instruction");
    found = buffer.dtype();
  }
  if (half) *half = found;
  return std::nullopt;
}

namespace {

// ---------------------------------------------------------------- the backend

// Of a block of `vocab` logits starting at logical column `begin`, how many are
// classes when the first `valid` logical columns are (the rest: vocabulary padding).
int64_t ClassesIn(int64_t vocab, int64_t begin, int64_t valid) {
  return std::max<int64_t>(0, std::min(vocab, valid - begin));
}

Error CudaError(const std::string& what, cudaError_t e) {
  return Error::Failure("CUDA: " + what + ": " + cudaGetErrorString(e));
}

cudaDataType_t CudaType(fb::DType t) {
  return t == fb::DType_BF16 ? CUDA_R_16BF : t == fb::DType_F16 ? CUDA_R_16F : CUDA_R_32F;
}

// The largest power of two (at most 256) dividing a device address: what
// cuBLASLt's heuristic must be told (it assumes 256 unless told less).
uint32_t AlignmentOf(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && u % a != 0) a >>= 1;
  return a;
}


class CudaBackend final : public exec::Backend {
 public:
  CudaBackend(int device, const CudaOptions& options)
      : device_(device),
        check_(options.check),
        max_blocks_(options.max_blocks ? options.max_blocks : kMaxBlocks),
        attention_rows_(options.attention_rows) {}
  ~CudaBackend() override {
    cudaSetDevice(device_);
    for (auto& [key, g] : lt_plans_) {
      if (g.a) cublasLtMatrixLayoutDestroy(g.a);
      if (g.b) cublasLtMatrixLayoutDestroy(g.b);
      if (g.c) cublasLtMatrixLayoutDestroy(g.c);
      if (g.desc) cublasLtMatmulDescDestroy(g.desc);
    }
    if (lt_) cublasLtDestroy(lt_);
    if (blas_) cublasDestroy(blas_);
    if (scratch_) cudaFree(scratch_);
    if (workspace_) cudaFree(workspace_);
    for (void* p : copies_)
      if (p) cudaFree(p);
    if (stream_) cudaStreamDestroy(stream_);
  }

  Status Init() {
    if (auto e = cudaSetDevice(device_); e != cudaSuccess) return CudaError("cudaSetDevice", e);
    if (auto e = cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking); e != cudaSuccess)
      return CudaError("cudaStreamCreate", e);
    if (cublasCreate(&blas_) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: cublasCreate failed");
    if (cublasSetStream(blas_, stream_) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: cublasSetStream failed");
    // Plain fp32 GEMMs (no TF32): the reference slice matches the CPU backend.
    if (cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: cublasSetMathMode failed");
    if (cublasLtCreate(&lt_) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLASLt: cublasLtCreate failed");
    // The tiled attention's head_dim 128 kernels take up to 121 KB: more than an
    // sm_86 / sm_89 / sm_120 part grants a block (99 KB), which then runs rows.
    int shared = 0;
    if (auto e = cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_);
        e != cudaSuccess)
      return CudaError("cudaDeviceGetAttribute (shared memory per block)", e);
    max_shared_ = static_cast<size_t>(shared);
    return std::nullopt;
  }

  const char* name() const override { return "cuda"; }
  bool host_visible() const override { return false; }

  uint8_t* AllocateArena(uint64_t bytes) override {
    const uint64_t size = std::max<uint64_t>(bytes, 64);
    void* p = nullptr;
    cudaError_t e = cudaSetDevice(device_);
    if (e == cudaSuccess) e = cudaMalloc(&p, size);
    if (e == cudaSuccess) e = cudaMemset(p, 0, size);
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
      Record(CudaError("allocating a " + std::to_string(size) + "-byte arena", e));
      if (p) cudaFree(p);
      return nullptr;
    }
    return static_cast<uint8_t*>(p);
  }
  void FreeArena(uint8_t* arena) override {
    if (auto e = cudaFree(arena); e != cudaSuccess) Record(SyncError("freeing the arena", e));
  }
  // Everything device_memory.h says the program takes beyond the arena, now. Run
  // asks for each instruction's own sizes, so a need device_memory.cc misjudged is
  // an error in check mode (Grow), not an overrun.
  void Reserve(const fb::Plan& plan, const std::vector<std::vector<plan::Instruction>>& units)
      override {
    if (error_) return;
    if (auto e = cudaSetDevice(device_); e != cudaSuccess)
      return Record(CudaError("cudaSetDevice", e));
    const CudaExtras x = ProgramExtras(plan, units);
    if (auto err = Scratch(x.scratch_rows)) return Record(*err);
    for (int slot = 0; slot < 3; ++slot)
      if (x.copies[slot] > 0)
        if (auto err = Grow(&copies_[slot], &copy_bytes_[slot], x.copies[slot],
                            "a 16-bit operand copy"))
          return Record(*err);
    if (x.workspace > 0)
      if (auto err = Grow(&workspace_, &workspace_bytes_, x.workspace, "cuBLASLt's workspace"))
        return Record(*err);
    reserved_ = true;
  }

  // The copies and Zero return nothing: a failure is recorded (error()), and once
  // one is, they do nothing and every Run returns it.
  void CopyToHost(const uint8_t* arena, uint64_t offset, void* dst, uint64_t bytes) override {
    if (error_) return;
    cudaError_t e = cudaMemcpyAsync(dst, arena + offset, bytes, cudaMemcpyDeviceToHost, stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) Record(SyncError(Copy("from", bytes, offset), e));
  }
  void CopyToArena(uint8_t* arena, uint64_t offset, const void* src, uint64_t bytes) override {
    if (error_) return;
    cudaError_t e = cudaMemcpyAsync(arena + offset, src, bytes, cudaMemcpyHostToDevice, stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);  // `src` may change after this
    if (e != cudaSuccess) Record(SyncError(Copy("to", bytes, offset), e));
  }
  void Zero(uint8_t* arena, uint64_t offset, uint64_t bytes) override {
    if (error_) return;
    const std::string what = "zeroing " + std::to_string(bytes) + " bytes at arena offset " +
                             std::to_string(offset);
    cudaError_t e = cudaMemsetAsync(arena + offset, 0, bytes, stream_);
    if (e == cudaSuccess && check_) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) Record(check_ ? CudaError(what, e) : SyncError(what, e));
  }
  Status error() const override { return error_; }

  Status Run(const fb::Plan& plan, const plan::Instruction& in, uint8_t* arena,
             const uint64_t* offsets, exec::StepScalars& s) override;

 private:
  // The first failure of a call that returns none (sticky: see cuda_backend.h).
  // The runtime's last error is cleared too, so no later cudaGetLastError blames an
  // instruction for it.
  void Record(Error e) {
    (void)cudaGetLastError();
    if (!error_) error_ = std::move(e);
  }
  static std::string Copy(const char* direction, uint64_t bytes, uint64_t offset) {
    return std::string("copying ") + std::to_string(bytes) + " bytes " + direction +
           " the arena (offset " + std::to_string(offset) + ")";
  }
  // A failure seen where the host waits for the stream. In check mode every
  // earlier instruction and Zero was waited for already, so it is `what`'s own;
  // otherwise it may be any work queued before (kernels run asynchronously).
  Error SyncError(const std::string& what, cudaError_t e) const {
    if (check_) return CudaError(what, e);
    return Error::Failure("CUDA: " + what + ", or work queued before it: " +
                          cudaGetErrorString(e) +
                          " (kernels run asynchronously; heiretsu-cuda-check synchronizes after "
                          "every instruction and names the one that failed)");
  }
  // Blocks for `n` items of `per_block` each, within the launch cap.
  unsigned Grid(int64_t n, int per_block = kThreads) const {
    return Blocks(n, per_block, max_blocks_);
  }

  // Device scratch, grown on first need: the sum-of-squares partials and total and
  // the bad-id flag (the first 4096 bytes), then Rows(): per-row loss terms, the
  // column sums' partials, the tiled attention's row dots (one instruction's at a
  // time; the stream orders them).
  Status Scratch(uint64_t row_bytes) {
    return Grow(&scratch_, &scratch_bytes_, kScratchHeader + row_bytes, "the scratch");
  }
  // Device buffer *p of *bytes, at least `want` bytes from now on. After Reserve it
  // never grows (device_memory.h sized it): growing then is this file's mistake,
  // an error in check mode (heiretsu-cuda-check), else done.
  Status Grow(void** p, uint64_t* bytes, uint64_t want, const char* what) {
    if (want <= *bytes) return std::nullopt;
    if (reserved_ && check_)
      return Error::Failure(std::string("CUDA: ") + what + " needs " + std::to_string(want) +
                            " bytes, past the " + std::to_string(*bytes) +
                            " reserved for the program (runtime/cuda/device_memory.cc's "
                            "mistake)");
    // Queued kernels may still use the old one: wait for them before freeing it.
    if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess)
      return SyncError(std::string("growing ") + what, e);
    if (*p) cudaFree(*p);
    *p = nullptr;
    *bytes = 0;
    if (auto e = cudaMalloc(p, want); e != cudaSuccess)
      return CudaError(std::string("cudaMalloc of ") + what, e);
    *bytes = want;
    return std::nullopt;
  }
  double* Partials() { return reinterpret_cast<double*>(scratch_); }
  double* Total() { return reinterpret_cast<double*>(scratch_) + kPartials; }
  int* Bad() { return reinterpret_cast<int*>(reinterpret_cast<double*>(scratch_) + kPartials + 1); }
  float* Rows() { return reinterpret_cast<float*>(static_cast<uint8_t*>(scratch_) + 4096); }

  // Runs CheckIds and returns the first bad index, or -1 (waits for the stream);
  // `what` names the instruction.
  Status FirstBadId(const char* what, const int32_t* ids, int64_t n, int64_t limit,
                    int64_t* bad) {
    if (auto err = Scratch(0)) return err;
    const int big = INT_MAX;
    if (auto e = cudaMemcpyAsync(Bad(), &big, sizeof big, cudaMemcpyHostToDevice, stream_);
        e != cudaSuccess)
      return CudaError(what, e);
    CheckIds<<<Grid(n), kThreads, 0, stream_>>>(ids, n, limit, Bad());
    if (auto e = cudaGetLastError(); e != cudaSuccess) return CudaError(what, e);
    int host = INT_MAX;
    if (auto e = cudaMemcpyAsync(&host, Bad(), sizeof host, cudaMemcpyDeviceToHost, stream_);
        e != cudaSuccess)
      return CudaError(what, e);
    if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return SyncError(what, e);
    *bad = host == INT_MAX ? -1 : host;
    return std::nullopt;
  }

  // float32 GEMM (cuBLAS, column-major): C = op(A) op(B) + beta C.
  Status Gemm(bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b,
              int ldb, float beta, float* c, int ldc) {
    const float one = 1.f;
    if (cublasSgemm(blas_, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                    k, &one, a, lda, b, ldb, &beta, c, ldc) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLAS: sgemm failed");
    return std::nullopt;
  }

  // 16-bit copy `slot` (0..2: the operands of one instruction in use at once) of n
  // float32 elements, rounded to nearest even; grown on first need, after the
  // stream's queued work (which may read the old copy) is done.
  Status ToHalf(int slot, const float* src, int64_t n, fb::DType half, const void** out) {
    const uint64_t want = static_cast<uint64_t>(std::max<int64_t>(n, 1)) * 2;
    if (auto err = Grow(&copies_[slot], &copy_bytes_[slot], want, "a 16-bit operand copy"))
      return err;
    if (half == fb::DType_BF16)
      FromF32<<<Grid(n), kThreads, 0, stream_>>>(src, static_cast<__nv_bfloat16*>(copies_[slot]), n);
    else
      FromF32<<<Grid(n), kThreads, 0, stream_>>>(src, static_cast<__half*>(copies_[slot]), n);
    *out = copies_[slot];
    return std::nullopt;
  }

  // One cuBLASLt GEMM of a shape, its dtypes and its operands' alignments: the
  // descriptors and the heuristic's algorithm, made once.
  struct LtPlan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool found = false;  // the heuristic returned an algorithm
  };

  // Column-major D = C = op(A) op(B) + beta C, A and B in 16-bit `ab`, C in `ct`
  // (float32 or `ab`), products and sums in float32; `bias` (of C's type, length m)
  // through the BIAS epilogue when not null. *fused says whether the bias was
  // added (false when no algorithm takes the epilogue: the caller adds it).
  Status LtGemm(bool ta, bool tb, int m, int n, int k, const void* a, int lda, const void* b,
                int ldb, fb::DType ab, float beta, void* c, fb::DType ct, int ldc,
                const void* bias, bool* fused) {
    if (fused) *fused = false;
    if (auto err = Grow(&workspace_, &workspace_bytes_, kLtWorkspace, "cuBLASLt's workspace"))
      return err;
    const std::array<int64_t, 15> key = {ta,
                                         tb,
                                         m,
                                         n,
                                         k,
                                         lda,
                                         ldb,
                                         ldc,
                                         static_cast<int64_t>(ab),
                                         static_cast<int64_t>(ct),
                                         bias != nullptr,
                                         AlignmentOf(a),
                                         AlignmentOf(b),
                                         AlignmentOf(c),
                                         bias ? AlignmentOf(bias) : 0};
    auto it = lt_plans_.find(key);
    if (it == lt_plans_.end()) {
      LtPlan g;
      if (auto err = MakeLtPlan(ta, tb, m, n, k, a, lda, b, ldb, ab, c, ct, ldc, bias, &g)) {
        if (g.a) cublasLtMatrixLayoutDestroy(g.a);
        if (g.b) cublasLtMatrixLayoutDestroy(g.b);
        if (g.c) cublasLtMatrixLayoutDestroy(g.c);
        if (g.desc) cublasLtMatmulDescDestroy(g.desc);
        return err;
      }
      it = lt_plans_.emplace(key, g).first;
    }
    LtPlan& g = it->second;
    if (!g.found) {
      if (bias)  // no algorithm takes the epilogue: the same GEMM without it
        return LtGemm(ta, tb, m, n, k, a, lda, b, ldb, ab, beta, c, ct, ldc, nullptr, nullptr);
      return Error::Failure("cuBLASLt: no algorithm for a " + std::to_string(m) + " x " +
                            std::to_string(n) + " x " + std::to_string(k) + " " +
                            plan::DTypeName(ab) + " GEMM into " + plan::DTypeName(ct));
    }
    if (bias && cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                               sizeof bias) != CUBLAS_STATUS_SUCCESS)
      return Error::Failure("cuBLASLt: setting the bias pointer failed");
    const float alpha = 1.f;
    const cublasStatus_t st = cublasLtMatmul(lt_, g.desc, &alpha, a, g.a, b, g.b, &beta, c, g.c,
                                             c, g.c, &g.algo, workspace_, kLtWorkspace, stream_);
    if (st != CUBLAS_STATUS_SUCCESS)
      return Error::Failure(std::string("cuBLASLt: cublasLtMatmul failed: ") +
                            cublasGetStatusString(st));
    if (fused) *fused = bias != nullptr;
    return std::nullopt;
  }

  Status MakeLtPlan(bool ta, bool tb, int m, int n, int k, const void* a, int lda,
                    const void* b, int ldb, fb::DType ab, const void* c, fb::DType ct, int ldc,
                    const void* bias, LtPlan* g) {
    auto fail = [](const char* what) { return Error::Failure(std::string("cuBLASLt: ") + what); };
    if (cublasLtMatmulDescCreate(&g->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) !=
        CUBLAS_STATUS_SUCCESS)
      return fail("cublasLtMatmulDescCreate failed");
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb) !=
            CUBLAS_STATUS_SUCCESS)
      return fail("setting the transposes failed");
    if (bias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      if (cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                         sizeof epilogue) != CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                         sizeof bias) != CUBLAS_STATUS_SUCCESS)
        return fail("setting the bias epilogue failed");
    }
    // Stored shapes: op(A) is m x k, op(B) k x n, C m x n.
    if (cublasLtMatrixLayoutCreate(&g->a, CudaType(ab), ta ? k : m, ta ? m : k, lda) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&g->b, CudaType(ab), tb ? n : k, tb ? k : n, ldb) !=
            CUBLAS_STATUS_SUCCESS ||
        cublasLtMatrixLayoutCreate(&g->c, CudaType(ct), m, n, ldc) != CUBLAS_STATUS_SUCCESS)
      return fail("cublasLtMatrixLayoutCreate failed");
    cublasLtMatmulPreference_t pref = nullptr;
    if (cublasLtMatmulPreferenceCreate(&pref) != CUBLAS_STATUS_SUCCESS)
      return fail("cublasLtMatmulPreferenceCreate failed");
    const uint64_t workspace = kLtWorkspace;
    const uint32_t align_a = AlignmentOf(a), align_b = AlignmentOf(b), align_c = AlignmentOf(c);
    bool ok = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                   &workspace, sizeof workspace) ==
              CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                    &align_a, sizeof align_a) ==
                   CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                    &align_b, sizeof align_b) ==
                   CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                    &align_c, sizeof align_c) ==
                   CUBLAS_STATUS_SUCCESS;
    ok = ok && cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                    &align_c, sizeof align_c) ==
                   CUBLAS_STATUS_SUCCESS;
    if (!ok) {
      cublasLtMatmulPreferenceDestroy(pref);
      return fail("setting the preferences failed");
    }
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt_, g->desc, g->a, g->b, g->c, g->c,
                                                             pref, 1, &result, &returned);
    cublasLtMatmulPreferenceDestroy(pref);
    // No algorithm is not an error here: LtGemm says what it does about it.
    if (st == CUBLAS_STATUS_SUCCESS && returned > 0) {
      g->algo = result.algo;
      g->found = true;
    } else if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) {
      return Error::Failure(std::string("cuBLASLt: cublasLtMatmulAlgoGetHeuristic failed: ") +
                            cublasGetStatusString(st));
    }
    return std::nullopt;
  }

  int device_;
  bool check_;           // synchronize and check after every instruction and Zero
  unsigned max_blocks_;  // the grid cap of Grid
  bool attention_rows_;  // the per-query attention kernels only (CudaOptions)
  size_t max_shared_ = 0;  // the device's opt-in shared memory per block
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;  // cuBLASLt's, kLtWorkspace bytes where a 16-bit GEMM runs
  uint64_t workspace_bytes_ = 0;
  bool reserved_ = false;  // Reserve sized the scratch, copies and workspace
  std::map<std::array<int64_t, 15>, LtPlan> lt_plans_;
  std::array<void*, 3> copies_{};  // ToHalf's 16-bit copies
  std::array<uint64_t, 3> copy_bytes_{};
  void* scratch_ = nullptr;
  uint64_t scratch_bytes_ = 0;
  Status error_;  // sticky: the first failure of a copy, Zero or AllocateArena
};

Status CudaBackend::Run(const fb::Plan& plan, const plan::Instruction& in, uint8_t* arena,
                        const uint64_t* offsets, exec::StepScalars& s) {
  // After a failed copy, Zero or allocation nothing runs (the data is not there).
  if (error_) return error_->Within("not run after an earlier failure");
  const char* name = plan::OpName(in.op);
  // 16-bit operands only where the kernels take them (plan::Takes16Bit), one 16-bit
  // type per instruction: `half` (F32 when it has none).
  fb::DType half = fb::DType_F32;
  if (auto err = CheckOperandStorage(plan, in, &half)) return err;
  auto dtype = [&](uint32_t b) { return plan.buffers()->Get(b)->dtype(); };
  auto ptr = [&](uint32_t b) -> void* {
    return b == plan::kNoBuffer ? nullptr : static_cast<void*>(BufferAt(arena, offsets[b]));
  };
  // A float32 operand (at the run's slot's offset), null for an absent one. Only
  // for operands CheckOperandStorage keeps float32; a 16-bit one here is this
  // file's mistake, reported after the launch (`misread`).
  std::string misread;
  auto f = [&](uint32_t b) -> float* {
    if (b != plan::kNoBuffer && dtype(b) != fb::DType_F32 && misread.empty())
      misread = plan.buffers()->Get(b)->name()->str();
    return static_cast<float*>(ptr(b));
  };
  auto ids = [&](uint32_t b) -> const int32_t* {
    return reinterpret_cast<const int32_t*>(BufferAt(arena, offsets[b]));
  };
  // The storage an instruction's activation operands share (absent ones aside).
  auto storage = [&](std::initializer_list<uint32_t> group) {
    bool any = false;
    fb::DType t = fb::DType_F32;
    for (uint32_t b : group) {
      if (b == plan::kNoBuffer) continue;
      if (any && dtype(b) != t) return Storage::kMixed;
      t = dtype(b);
      any = true;
    }
    return t == fb::DType_BF16 ? Storage::kBf16 : t == fb::DType_F16 ? Storage::kF16 : Storage::kF32;
  };
  // Runs body(tag) with tag's type the group's storage; v(tag, b) is operand b's view.
  auto with = [&](std::initializer_list<uint32_t> group, auto&& body) {
    WithStorage(storage(group), body);
  };
  auto v = [&](auto tag, uint32_t b) {
    using S = typename decltype(tag)::type;
    return MakeView<S>(ptr(b), b == plan::kNoBuffer ? fb::DType_F32 : dtype(b));
  };
  Status err;
  // The first id of `n` outside [0, limit), as a message; nullopt when all are in.
  auto check_ids = [&](const char* what, const int32_t* id, int64_t n,
                       int64_t limit) -> Status {
    int64_t bad = -1;
    if (auto e = FirstBadId(name, id, n, limit, &bad)) return e;
    if (bad < 0) return std::nullopt;
    int32_t value = 0;
    cudaError_t e = cudaMemcpyAsync(&value, id + bad, sizeof value, cudaMemcpyDeviceToHost,
                                    stream_);
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) return SyncError(name, e);
    return Error::BadInput(std::string(what) + " id " + std::to_string(value) + " at position " +
                           std::to_string(bad) + " is outside the vocabulary [0, " +
                           std::to_string(limit) + ")");
  };
  // A decode program's position (one int32 in the arena), read on the host.
  auto read_position = [&](uint32_t buffer, int64_t* out) -> Status {
    int32_t value = 0;
    if (auto e = cudaMemcpyAsync(&value, ids(buffer), sizeof value, cudaMemcpyDeviceToHost,
                                 stream_);
        e != cudaSuccess)
      return CudaError(name, e);
    if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return SyncError(name, e);
    *out = value;
    return std::nullopt;
  };
  // A 16-bit GEMM's operand: buffer b itself when it is stored in `half`, else its
  // float32 elements rounded into 16-bit copy `slot`.
  auto as_half = [&](int slot, uint32_t b, int64_t n, const void** out) -> Status {
    if (dtype(b) == half) {
      *out = ptr(b);
      return std::nullopt;
    }
    return ToHalf(slot, f(b), n, half, out);
  };
  switch (in.op) {
    case fb::Op_Zero: {
      const auto z = plan::Read<op::Zero<uint32_t>>(in);
      const fb::Buffer& b = *plan.buffers()->Get(z.buffer);
      if (auto e = cudaMemsetAsync(ptr(z.buffer), 0,
                                   plan::NumElements(b) * plan::DTypeSize(b.dtype()), stream_);
          e != cudaSuccess)
        return SyncError(name, e);
      break;
    }
    case fb::Op_Embedding: {
      const auto e = plan::Read<op::Embedding<uint32_t>>(in);
      if ((err = check_ids("token", ids(e.ids), e.rows, e.vocab_total))) return err;
      int64_t offset = 0;
      if (plan::Has(e.offset)) {
        if ((err = read_position(e.offset, &offset))) return err;
        if ((err = exec::CheckDecodePosition(offset, e.seq, e.context))) return err;
      }
      with({e.out}, [&](auto t) {
        EmbeddingFwd<<<Grid(e.rows * e.c), kThreads, 0, stream_>>>(
            ids(e.ids), f(e.table), f(e.positions), v(t, e.out), e.rows, e.seq, e.vocab, e.c,
            e.vocab_begin, offset);
      });
      break;
    }
    case fb::Op_EmbeddingGrad: {
      const auto e = plan::Read<op::EmbeddingGrad<uint32_t>>(in);
      with({e.dout}, [&](auto t) {
        EmbeddingTableGrad<<<Grid(kEmbeddingShards * e.c), kThreads, 0, stream_>>>(
            ids(e.ids), v(t, e.dout), f(e.dtable), e.rows, e.vocab_rows, e.c, e.vocab_begin);
        if (f(e.dpositions))
          EmbeddingPositionGrad<<<Grid(e.seq * e.c), kThreads, 0, stream_>>>(
              v(t, e.dout), f(e.dpositions), e.rows, e.seq, e.c);
      });
      break;
    }
    case fb::Op_Linear: {
      const auto l = plan::Read<op::Linear<uint32_t>>(in);
      const int rows = static_cast<int>(l.rows), inw = static_cast<int>(l.in),
                out = static_cast<int>(l.out);
      // Row-major y = x W^T is column-major y^T = W x^T (see the file comment).
      if (half == fb::DType_F32) {
        if ((err = Gemm(true, false, out, rows, inw, f(l.w), inw, f(l.x), inw, 0.f, f(l.y), out)))
          return err;
        if (f(l.bias))
          BiasAdd<<<Grid(l.rows * l.out), kThreads, 0, stream_>>>(View<float>{f(l.y)}, f(l.bias),
                                                                  l.rows, l.out);
        break;
      }
      const void *x16 = nullptr, *w16 = nullptr, *bias = nullptr;
      if ((err = as_half(0, l.x, l.rows * l.in, &x16))) return err;
      if ((err = ToHalf(1, f(l.w), l.out * l.in, half, &w16))) return err;
      // The epilogue's bias is of the output's type (cublasLt.h): float32 for a
      // float32 y, else rounded to 16 bits.
      if (plan::Has(l.bias)) {
        if (dtype(l.y) == fb::DType_F32)
          bias = f(l.bias);
        else if ((err = ToHalf(2, f(l.bias), l.out, half, &bias)))
          return err;
      }
      bool fused = false;
      if ((err = LtGemm(true, false, out, rows, inw, w16, inw, x16, inw, half, 0.f, ptr(l.y),
                        dtype(l.y), out, bias, &fused)))
        return err;
      if (bias && !fused)
        with({l.y}, [&](auto t) {
          BiasAdd<<<Grid(l.rows * l.out), kThreads, 0, stream_>>>(v(t, l.y), f(l.bias), l.rows,
                                                                  l.out);
        });
      break;
    }
    case fb::Op_LinearGrad: {
      const auto l = plan::Read<op::LinearGrad<uint32_t>>(in);
      const int rows = static_cast<int>(l.rows), inw = static_cast<int>(l.in),
                out = static_cast<int>(l.out);
      if (half == fb::DType_F32) {
        if (f(l.dx) && (err = Gemm(false, false, inw, rows, out, f(l.w), inw, f(l.dy), out,
                                   l.accumulate_dx ? 1.f : 0.f, f(l.dx), inw)))
          return err;
        if (f(l.dw) && (err = Gemm(false, true, inw, out, rows, f(l.x), inw, f(l.dy), out, 1.f,
                                   f(l.dw), inw)))
          return err;
      } else {
        const void* dy16 = nullptr;
        if ((err = as_half(0, l.dy, l.rows * l.out, &dy16))) return err;
        if (plan::Has(l.dx)) {  // dx = dy W, into dx's dtype (accumulated in float32)
          const void* w16 = nullptr;
          if ((err = ToHalf(1, f(l.w), l.out * l.in, half, &w16))) return err;
          if ((err = LtGemm(false, false, inw, rows, out, w16, inw, dy16, out, half,
                            l.accumulate_dx ? 1.f : 0.f, ptr(l.dx), dtype(l.dx), inw, nullptr,
                            nullptr)))
            return err;
        }
        if (plan::Has(l.dw)) {  // dW += dy^T x, into the float32 gradient
          const void* x16 = nullptr;
          if ((err = as_half(2, l.x, l.rows * l.in, &x16))) return err;
          if ((err = LtGemm(false, true, inw, out, rows, x16, inw, dy16, out, half, 1.f, f(l.dw),
                            fb::DType_F32, inw, nullptr, nullptr)))
            return err;
        }
      }
      // The bias gradient sums dy as stored (not its 16-bit copy), in two passes
      // (column_sums.cuh) through the scratch rows.
      if (plan::Has(l.dbias)) {
        const int64_t chunks = ColumnChunks(l.rows);
        if ((err = Scratch(4 * static_cast<uint64_t>(chunks * l.out)))) return err;
        with({l.dy}, [&](auto t) {
          ColumnSumPartials<<<Grid(chunks * l.out), kThreads, 0, stream_>>>(v(t, l.dy), Rows(),
                                                                           l.rows, l.out);
        });
        AddColumnPartials<<<Grid(l.out), kThreads, 0, stream_>>>(Rows(), chunks, l.out,
                                                                 f(l.dbias));
      }
      break;
    }
    case fb::Op_LayerNorm: {
      const auto n = plan::Read<op::LayerNorm<uint32_t>>(in);
      with({n.x, n.y}, [&](auto t) {
        LayerNormFwd<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(
            v(t, n.x), f(n.w), f(n.b), v(t, n.y), f(n.mean), f(n.rstd), n.rows, n.c, n.eps);
      });
      break;
    }
    case fb::Op_LayerNormGrad: {
      const auto n = plan::Read<op::LayerNormGrad<uint32_t>>(in);
      // dw and db in two passes (column_sums.cuh) through the scratch rows.
      const int64_t chunks = ColumnChunks(n.rows);
      if ((err = Scratch(8 * static_cast<uint64_t>(chunks * n.c)))) return err;
      float *pw = Rows(), *pb = f(n.db) ? Rows() + chunks * n.c : nullptr;
      with({n.dy, n.x, n.dx}, [&](auto t) {
        NormBwdRows<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(
            v(t, n.dy), v(t, n.x), f(n.w), f(n.mean), f(n.rstd), v(t, n.dx), n.rows, n.c,
            n.accumulate_dx != 0);
        NormParamPartials<<<Grid(chunks * n.c), kThreads, 0, stream_>>>(
            v(t, n.dy), v(t, n.x), f(n.mean), f(n.rstd), pw, pb, n.rows, n.c);
      });
      AddColumnPartials<<<Grid(n.c), kThreads, 0, stream_>>>(pw, chunks, n.c, f(n.dw));
      if (pb) AddColumnPartials<<<Grid(n.c), kThreads, 0, stream_>>>(pb, chunks, n.c, f(n.db));
      break;
    }
    case fb::Op_RMSNorm: {
      const auto n = plan::Read<op::RMSNorm<uint32_t>>(in);
      with({n.x, n.y}, [&](auto t) {
        RMSNormFwd<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(v(t, n.x), f(n.w), v(t, n.y),
                                                               f(n.rstd), n.rows, n.c, n.eps);
      });
      break;
    }
    case fb::Op_RMSNormGrad: {
      const auto n = plan::Read<op::RMSNormGrad<uint32_t>>(in);
      const int64_t chunks = ColumnChunks(n.rows);
      if ((err = Scratch(4 * static_cast<uint64_t>(chunks * n.c)))) return err;
      with({n.dy, n.x, n.dx}, [&](auto t) {
        NormBwdRows<<<Grid(n.rows, 1), kThreads, 0, stream_>>>(
            v(t, n.dy), v(t, n.x), f(n.w), nullptr, f(n.rstd), v(t, n.dx), n.rows, n.c,
            n.accumulate_dx != 0);
        NormParamPartials<<<Grid(chunks * n.c), kThreads, 0, stream_>>>(
            v(t, n.dy), v(t, n.x), nullptr, f(n.rstd), Rows(), nullptr, n.rows, n.c);
      });
      AddColumnPartials<<<Grid(n.c), kThreads, 0, stream_>>>(Rows(), chunks, n.c, f(n.dw));
      break;
    }
    case fb::Op_Gelu: {
      const auto g = plan::Read<op::Gelu<uint32_t>>(in);
      with({g.x, g.y}, [&](auto t) {
        GeluFwd<<<Grid(g.n), kThreads, 0, stream_>>>(v(t, g.x), v(t, g.y), g.n);
      });
      break;
    }
    case fb::Op_GeluGrad: {
      const auto g = plan::Read<op::GeluGrad<uint32_t>>(in);
      with({g.dy, g.x, g.dx}, [&](auto t) {
        GeluBwd<<<Grid(g.n), kThreads, 0, stream_>>>(v(t, g.dy), v(t, g.x), v(t, g.dx), g.n,
                                                       g.accumulate_dx != 0);
      });
      break;
    }
    case fb::Op_Swiglu: {
      const auto g = plan::Read<op::Swiglu<uint32_t>>(in);
      with({g.gate, g.up, g.y}, [&](auto t) {
        SwigluFwd<<<Grid(g.n), kThreads, 0, stream_>>>(v(t, g.gate), v(t, g.up), v(t, g.y), g.n);
      });
      break;
    }
    case fb::Op_SwigluGrad: {
      const auto g = plan::Read<op::SwigluGrad<uint32_t>>(in);
      with({g.dy, g.gate, g.up, g.dgate, g.dup}, [&](auto t) {
        SwigluBwd<<<Grid(g.n), kThreads, 0, stream_>>>(v(t, g.dy), v(t, g.gate), v(t, g.up),
                                                         v(t, g.dgate), v(t, g.dup), g.n,
                                                         g.accumulate_dx != 0);
      });
      break;
    }
    case fb::Op_Add: {
      const auto a = plan::Read<op::Add<uint32_t>>(in);
      with({a.a, a.b, a.y}, [&](auto t) {
        AddFwd<<<Grid(a.n), kThreads, 0, stream_>>>(v(t, a.a), v(t, a.b), v(t, a.y), a.n);
      });
      break;
    }
    case fb::Op_Accumulate: {
      const auto a = plan::Read<op::Accumulate<uint32_t>>(in);
      AccumulateKernel<<<Grid(a.n), kThreads, 0, stream_>>>(f(a.src), f(a.dst), a.n,
                                                              a.accumulate_dx != 0);
      break;
    }
    case fb::Op_Rope: {
      const auto r = plan::Read<op::Rope<uint32_t>>(in);
      int64_t offset = 0;
      if (plan::Has(r.offset))
        if ((err = read_position(r.offset, &offset))) return err;
      with({r.x, r.y}, [&](auto t) {
        Rope<<<Grid(r.batch * r.seq * r.heads * (r.head_dim / 2)), kThreads, 0, stream_>>>(
            v(t, r.x), v(t, r.y), r.batch * r.seq, r.seq, r.heads, r.head_dim, r.theta, 1.0,
            false, offset);
      });
      break;
    }
    case fb::Op_RopeGrad: {
      const auto r = plan::Read<op::RopeGrad<uint32_t>>(in);
      with({r.dy, r.dx}, [&](auto t) {
        Rope<<<Grid(r.batch * r.seq * r.heads * (r.head_dim / 2)), kThreads, 0, stream_>>>(
            v(t, r.dy), v(t, r.dx), r.batch * r.seq, r.seq, r.heads, r.head_dim, r.theta, -1.0,
            r.accumulate_dx != 0);
      });
      break;
    }
    case fb::Op_CachedAttention: {
      const auto a = plan::Read<op::CachedAttention<uint32_t>>(in);
      int64_t position = 0;
      if ((err = read_position(a.position, &position))) return err;
      if ((err = exec::CheckDecodePosition(position, a.seq, a.context))) return err;
      const int64_t kw = a.kv_heads * a.head_dim;
      KvAppend<<<Grid(a.batch * a.seq * kw), kThreads, 0, stream_>>>(
          f(a.k), f(a.v), f(a.k_cache), f(a.v_cache), a.batch, a.seq, kw, a.context, position);
      CachedAttentionFwd<<<Grid(a.batch * a.heads * a.seq), kThreads, 0, stream_>>>(
          f(a.q), f(a.k_cache), f(a.v_cache), f(a.out), a.batch, a.seq, a.heads, a.kv_heads,
          a.head_dim, a.context, position,
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(a.head_dim))));
      break;
    }
    case fb::Op_Attention:
    case fb::Op_AttentionGrad: {
      // The backward's first operands are the forward's, named alike.
      const bool forward = in.op == fb::Op_Attention;
      const auto fw = forward ? plan::Read<op::Attention<uint32_t>>(in) : op::Attention<uint32_t>{};
      const auto bw = forward ? op::AttentionGrad<uint32_t>{} : plan::Read<op::AttentionGrad<uint32_t>>(in);
      const int64_t b = forward ? fw.batch : bw.batch, t = forward ? fw.seq : bw.seq;
      const int64_t h = forward ? fw.heads : bw.heads, kv = forward ? fw.kv_heads : bw.kv_heads;
      const int64_t hd = forward ? fw.head_dim : bw.head_dim;
      if (hd > kMaxHeadDim)
        return Error::Failure("attention: head_dim " + std::to_string(hd) +
                              " is above the CUDA kernel's " + std::to_string(kMaxHeadDim));
      const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
      const int warps_per_block = kThreads / 32;
      // In tiles on the tensor cores where flash_attention.cuh's kernels take it.
      const Storage st =
          forward ? storage({fw.q, fw.k, fw.v, fw.out})
                  : storage({bw.dout, bw.q, bw.k, bw.v, bw.out, bw.dq, bw.dk, bw.dv});
      const bool tiled =
          !attention_rows_ && (st == Storage::kBf16 || st == Storage::kF16) && FlashHeadDim(hd) &&
          FlashSharedBytes(hd, forward) <= max_shared_ &&
          (forward ? FlashAligned({ptr(fw.q), ptr(fw.k), ptr(fw.v), ptr(fw.out)})
                   : FlashAligned({ptr(bw.dout), ptr(bw.q), ptr(bw.k), ptr(bw.v), ptr(bw.out),
                                   ptr(bw.dq), ptr(bw.dk), ptr(bw.dv)}));
      if (tiled && !forward && (err = Scratch(4 * static_cast<uint64_t>(b * h * t)))) return err;
      cudaError_t launched = cudaSuccess;
      auto flash = [&](auto tag, auto dim) {
        using S = typename decltype(tag)::type;
        constexpr int D = decltype(dim)::value;
        if constexpr (std::is_same_v<S, __nv_bfloat16> || std::is_same_v<S, __half>) {
          auto p = [&](uint32_t buf) { return static_cast<S*>(ptr(buf)); };
          if (forward)
            launched = FlashForward<S, D>(stream_, max_blocks_, p(fw.q), p(fw.k), p(fw.v),
                                          v(tag, fw.out), f(fw.lse), b, t, h, kv, scale);
          else
            launched = FlashBackward<S, D>(
                stream_, max_blocks_, v(tag, bw.dout), p(bw.q), p(bw.k), p(bw.v), v(tag, bw.out),
                f(bw.lse), Rows(), v(tag, bw.dq), v(tag, bw.dk), v(tag, bw.dv), b, t, h, kv, scale,
                bw.accumulate_dx != 0);
        }
      };
      if (tiled) {
        WithStorage(st, [&](auto tag) {
          if (hd == 32) flash(tag, std::integral_constant<int, 32>{});
          if (hd == 64) flash(tag, std::integral_constant<int, 64>{});
          if (hd == 128) flash(tag, std::integral_constant<int, 128>{});
        });
        if (launched != cudaSuccess) return CudaError(name, launched);
      } else if (forward) {
        with({fw.q, fw.k, fw.v, fw.out}, [&](auto tag) {
          AttentionFwd<<<Grid(b * h * t, warps_per_block), kThreads, 0, stream_>>>(
              v(tag, fw.q), v(tag, fw.k), v(tag, fw.v), v(tag, fw.out), f(fw.lse), b, t, h, kv,
              hd, scale);
        });
      } else {
        const bool acc = bw.accumulate_dx != 0;
        with({bw.dout, bw.q, bw.k, bw.v, bw.out, bw.dq, bw.dk, bw.dv}, [&](auto tag) {
          AttentionBwdQ<<<Grid(b * h * t, warps_per_block), kThreads, 0, stream_>>>(
              v(tag, bw.dout), v(tag, bw.q), v(tag, bw.k), v(tag, bw.v), v(tag, bw.out),
              f(bw.lse), v(tag, bw.dq), b, t, h, kv, hd, scale, acc);
          AttentionBwdKV<<<Grid(b * kv * t, warps_per_block), kThreads, 0, stream_>>>(
              v(tag, bw.dout), v(tag, bw.q), v(tag, bw.k), v(tag, bw.v), v(tag, bw.out),
              f(bw.lse), v(tag, bw.dk), v(tag, bw.dv), b, t, h, kv, hd, scale, acc);
        });
      }
      break;
    }
    case fb::Op_CrossEntropy: {
      const auto ce = plan::Read<op::CrossEntropy<uint32_t>>(in);
      if ((err = check_ids("target", ids(ce.targets), ce.rows, ce.valid))) return err;
      if ((err = Scratch(4 * static_cast<uint64_t>(ce.rows)))) return err;
      with({ce.logits}, [&](auto t) {
        CrossEntropyRows<<<Grid(ce.rows, 1), kThreads, 0, stream_>>>(
            v(t, ce.logits), ids(ce.targets), f(ce.lse), Rows(), ce.rows, ce.vocab, ce.valid);
      });
      MeanOfRows<<<1, kThreads, 0, stream_>>>(Rows(), f(ce.loss), ce.rows);
      break;
    }
    case fb::Op_CrossEntropyGrad: {
      const auto ce = plan::Read<op::CrossEntropyGrad<uint32_t>>(in);
      const int64_t classes = ClassesIn(ce.vocab, ce.vocab_begin, ce.valid);
      const float scale =
          static_cast<float>(ce.dloss * s.loss_scale) / static_cast<float>(ce.rows);
      with({ce.logits, ce.dlogits}, [&](auto t) {
        CrossEntropyBwd<<<Grid(ce.rows * ce.vocab), kThreads, 0, stream_>>>(
            v(t, ce.logits), ids(ce.targets), f(ce.lse), scale, v(t, ce.dlogits), ce.rows,
            ce.vocab, ce.vocab_begin, classes, ce.accumulate_dx != 0);
      });
      break;
    }
    case fb::Op_VocabMax: {
      const auto vo = plan::Read<op::VocabMax<uint32_t>>(in);
      const int64_t classes = ClassesIn(vo.vocab, vo.vocab_begin, vo.valid);
      VocabMaxRows<<<Grid(vo.rows, 1), kThreads, 0, stream_>>>(f(vo.logits), f(vo.max), vo.rows,
                                                               vo.vocab, classes);
      break;
    }
    case fb::Op_VocabSumExp: {
      const auto vo = plan::Read<op::VocabSumExp<uint32_t>>(in);
      if ((err = check_ids("target", ids(vo.targets), vo.rows, std::min(vo.vocab_total, vo.valid))))
        return err;
      const int64_t classes = ClassesIn(vo.vocab, vo.vocab_begin, vo.valid);
      VocabSumExpRows<<<Grid(vo.rows, 1), kThreads, 0, stream_>>>(
          f(vo.logits), ids(vo.targets), f(vo.max), f(vo.sum), f(vo.target), vo.rows, vo.vocab,
          vo.vocab_begin, classes);
      break;
    }
    case fb::Op_VocabLoss: {
      const auto vo = plan::Read<op::VocabLoss<uint32_t>>(in);
      VocabLossKernel<<<1, kThreads, 0, stream_>>>(f(vo.max), f(vo.sum), f(vo.target), f(vo.loss),
                                                   f(vo.lse), vo.rows);
      break;
    }
    case fb::Op_GradNormSq: {
      if ((err = Scratch(0))) return err;
      if (auto e = cudaMemsetAsync(Total(), 0, sizeof(double), stream_); e != cudaSuccess)
        return SyncError(name, e);
      // Each buffer's range: all of it, or this rank's ZeRO-1 shard (prepared).
      for (size_t i = 0; i < in.buffers.size(); ++i) {
        SumSquaresPartial<<<kPartials, kThreads, 0, stream_>>>(
            f(in.buffers[i]) + in.ranges[i].begin, in.ranges[i].size, Partials());
        AddPartials<<<1, kThreads, 0, stream_>>>(Partials(), kPartials, Total());
      }
      if (auto e = cudaGetLastError(); e != cudaSuccess) return CudaError(name, e);
      double total = 0;
      if (auto e = cudaMemcpyAsync(&total, Total(), sizeof total, cudaMemcpyDeviceToHost, stream_);
          e != cudaSuccess)
        return SyncError(name, e);
      if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return SyncError(name, e);
      s.grad_norm_sq += total;
      break;
    }
    case fb::Op_ClipAndAdamW: {
      const auto u = plan::Read<op::ClipAndAdamW<uint32_t>>(in);
      // Mirrors come only with arenas shared between processes (host memory).
      if (!in.mirrors.empty())
        return Error::Failure("clip_adamw: the CUDA backend cannot write mirrored parameters");
      const fb::Optimizer* opt = plan.optimizer();
      const double b1 = opt ? opt->beta1() : 0.9, b2 = opt ? opt->beta2() : 0.95;
      const double eps = opt ? opt->eps() : 1e-8;
      const double step = static_cast<double>(s.step);
      // [begin, begin + size) of the parameter, and of the moments unless they
      // hold just a ZeRO-1 shard (op_table.h).
      AdamWKernel<<<Grid(u.size), kThreads, 0, stream_>>>(
          f(u.param) + u.begin, f(u.grad) + u.begin, f(u.exp_avg) + (u.shard ? 0 : u.begin),
          f(u.exp_avg_sq) + (u.shard ? 0 : u.begin), u.size,
          static_cast<float>(b1), static_cast<float>(b2), static_cast<float>(1.0 - b1),
          static_cast<float>(1.0 - b2), static_cast<float>(s.clip_scale),
          static_cast<float>(s.lr / (1.0 - std::pow(b1, step))),
          static_cast<float>(1.0 / (1.0 - std::pow(b2, step))),
          static_cast<float>(s.lr * (u.weight_decay ? s.weight_decay : 0.0)),
          static_cast<float>(eps));
      break;
    }
    case fb::Op_MoeRoute:
    case fb::Op_MoeRouteGrad:
    case fb::Op_MoeDispatch:
    case fb::Op_MoeDispatchGrad:
    case fb::Op_MoeExperts:
    case fb::Op_MoeExpertsGrad:
    case fb::Op_MoeCombine:
    case fb::Op_MoeCombineGrad:
      return Error::Failure("the CUDA backend has no MoE kernel yet: run MoE models with "
                            "--backend cpu");
    default:
      return Error::Failure(std::string("the CUDA backend cannot run '") + plan::OpName(in.op) +
                            "' (collectives belong to the executor)");
  }
  if (!misread.empty())
    return Error::Failure(std::string(name) + ": internal error: the CUDA kernel read the 16-bit "
                          "buffer '" + misread + "' as float32");
  // A launch's own failure (a bad configuration) shows here at once; one of the
  // kernel's execution (a fault) only where the host next waits for the stream,
  // which check mode does now, so that it is this instruction's.
  if (auto e = cudaGetLastError(); e != cudaSuccess) return CudaError(name, e);
  if (check_)
    if (auto e = cudaStreamSynchronize(stream_); e != cudaSuccess) return CudaError(name, e);
  return std::nullopt;
}

}  // namespace

Status DeviceCount(int* count) {
  const DeviceProbe probe = ProbeDevices();
  *count = probe.count;
  if (probe.failed) return Error::Failure("CUDA: " + probe.message);
  return std::nullopt;
}

namespace {

// Environment variable `name`: `on` sets *flag, `off` or unset leaves it; any other
// value is refused, naming both.
Status EnvSwitch(const char* name, const char* on, const char* off, bool* flag) {
  const char* v = std::getenv(name);
  if (!v || !*v || std::strcmp(v, off) == 0) return std::nullopt;
  if (std::strcmp(v, on) == 0) {
    *flag = true;
    return std::nullopt;
  }
  return Error::BadInput(std::string(name) + "=" + v + ": expected '" + on + "' or '" + off +
                         "' (the default)");
}

}  // namespace

Status CheckDeviceMemory(int device, uint64_t arena, uint64_t beyond, std::string* summary) {
  size_t free = 0, total = 0;
  cudaDeviceProp prop;
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaMemGetInfo(&free, &total);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) return CudaError("device " + std::to_string(device) + " memory", e);
  // CUDA's and cuBLAS's own (the context, the handles, cuBLAS's workspace for fp32
  // GEMMs, module code) come on top: a margin for them.
  constexpr uint64_t kMargin = 256ull << 20;
  const uint64_t need = arena + beyond;
  const std::string device_name = "device " + std::to_string(device) + " (" + prop.name +
                                  ", sm_" + std::to_string(prop.major) +
                                  std::to_string(prop.minor) + ")";
  const std::string takes = plan::FormatBytes(need) + " (the arena " + plan::FormatBytes(arena) +
                            " and " + plan::FormatBytes(beyond) + " beyond it)";
  if (need + kMargin > free)
    return Error::Failure("--backend cuda: this rank's program takes " + takes + " on " +
                          device_name + ", which has " + plan::FormatBytes(free) + " free of " +
                          plan::FormatBytes(total) + ", and CUDA's own need some " +
                          plan::FormatBytes(kMargin) +
                          " more (heiretsu explain PLAN_DIR shows the split); use a smaller "
                          "--micro-batch-size or more microbatches, or split the model over "
                          "more GPUs (--tp, --pp)");
  if (summary)
    *summary = device_name + ": " + plan::FormatBytes(free) + " free of " +
               plan::FormatBytes(total) + "; this program takes " + takes;
  return std::nullopt;
}

Status MakeCudaBackend(int device, std::unique_ptr<exec::Backend>* out,
                       const CudaOptions& options) {
  int count = 0;
  if (auto err = DeviceCount(&count)) return err;
  if (device < 0 || device >= count)
    return Error::Failure("--backend cuda: no CUDA device " + std::to_string(device) +
                          " (this process sees " + std::to_string(count) + ")");
  CudaOptions chosen = options;
  if (auto err = EnvSwitch("HEIRETSU_CUDA_CHECK", "1", "0", &chosen.check)) return err;
  if (auto err = EnvSwitch("HEIRETSU_CUDA_ATTENTION", "rows", "tiles", &chosen.attention_rows))
    return err;
  auto backend = std::make_unique<CudaBackend>(device, chosen);
  if (auto err = backend->Init()) return err;
  *out = std::move(backend);
  return std::nullopt;
}

}  // namespace heiretsu::cuda
