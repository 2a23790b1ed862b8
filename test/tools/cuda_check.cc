// heiretsu-cuda-check: the CUDA backend against the CPU backend on a compiled plan.
//   usage: heiretsu-cuda-check PLAN_FILE [--steps N] [--tolerance T] [--rank R]
//                              [--tolerance-bf16 T] [--tolerance-f16 T]
//                              [--train-tolerance T] [--max-blocks B] [--dry-run]
// The plan is loaded first (a bad file is exit 2 on every machine). Then, where
// cudaGetDeviceCount says "no device" (cudaErrorNoDevice, zero devices, or no CUDA
// driver installed at all: runtime/cuda/device_probe.h) it prints "skipped: no GPU
// (why)" and exits 0; any other CUDA failure to count the devices is "FAIL devices:"
// with CUDA's error name and string (exit 1), since it happens on machines that
// have a GPU. stdout is line-buffered, so a crash keeps the lines before it.
//
// The CUDA backend runs in check mode (cuda_backend.h): the stream is waited for
// and checked after every instruction, so a kernel's fault is reported by the
// instruction that caused it. A fault stops the check at once (the device is in
// an unknown state), naming the unit, the index and the opcode.
//
// 1. Every instruction of the plan (both streams) as rank R (default 0) of its
//    mesh runs it, alone: from one random arena state (normal floats; ids within
//    the vocabulary; AdamW second moments, each parameter's exp_avg_sq, and
//    vocab_loss's sums of exponentials non-negative: squares of normal floats, as a
//    mean of squares is; a decode position the last valid one) each backend runs
//    it, and every buffer must agree within a tolerance relative to the buffer's
//    largest magnitude, by the buffer's own dtype (f32: T, default 1e-5, the fp32
//    bound of issue #5; bf16 2^-6, f16 2^-9; a float32 output of a GEMM with
//    16-bit operands half its type's bound: Tolerances says why), with no NaN
//    where the CPU has a number (a NaN difference fails). The step scalars are
//    those of a loss-scaled step (StepScalars: loss scale 1024, clip_adamw's
//    factor fixed as the executor fixes it), so that the GPU's seeds of the
//    backward and its update read the scale as the CPU's do. 16-bit buffers are filled,
//    poisoned and compared as the values they hold. Before it runs, the
//    instruction's operand dtypes must be ones the CUDA backend takes
//    (cuda::CheckOperandStorage: host code, so a dry run checks it too). One line
//    per opcode and 16-bit type shows the dtype ("PASS op linear bf16 (...)").
//    Output buffers are poisoned with NaN on the GPU side
//    first, so an element the CUDA kernel fails to write fails the check; a buffer
//    counts as an output when the CPU result does not depend on its previous
//    contents. Collectives and send / recv are the executor's and are not run.
// 2. N training steps (default 5) from the same initialization and data on both
//    backends: each step's loss and gradient norm, and the final parameters,
//    within T (16-bit plans: --train-tolerance, default 1e-2, measured as
//    Tolerances says; and at loss scale 1024, as fp16 needs: StepOptions); a step
//    non-finite (skipped) on one backend only fails. A plan of more than one rank has collectives that need the job's
//    communicators (heiretsu run): its training check is skipped, saying so
//    (bench/gpu/verify.sh trains such plans on one GPU). A decode program
//    (decode.hplan: KV caches, no loss) is checked by N decode runs instead, at
//    positions 0, seq, ..., each run's logits within T (the caches filled by the
//    earlier runs).
// --max-blocks B caps every grid-stride launch of the CUDA backend at B blocks, so
// that each kernel loops over its range (a check of the grid-stride loops on
// small plans). --dry-run runs everything with the CPU backend in place of the
// CUDA one, on any machine: a check of the tool and the plan (no CPU refusal, the
// inputs valid), which prints DRY where a GPU run prints PASS and checks nothing
// on a GPU.
// Prints one PASS/FAIL line per opcode and per check and exits 1 on any FAIL.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "runtime/base/half.h"
#include "runtime/cuda/cuda_backend.h"
#include "runtime/cuda/devices.h"
#include "runtime/exec/executor.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu {
namespace {

namespace fb = plan::fb;

uint64_t BufferBytes(const fb::Buffer& b) {
  return static_cast<uint64_t>(plan::NumElements(b)) * plan::DTypeSize(b.dtype());
}

// Element i of a float buffer at `p` (its first byte), as float32 (exact), and
// the store of v rounded to the buffer's dtype (nearest even: runtime/base/half.h).
float Element(fb::DType t, const uint8_t* p, int64_t i) {
  if (t == fb::DType_F32) {
    float v;
    std::memcpy(&v, p + 4 * i, sizeof v);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, p + 2 * i, sizeof h);
  return t == fb::DType_BF16 ? half::Bf16ToFloat(h) : half::HalfToFloat(h);
}
void SetElement(fb::DType t, uint8_t* p, int64_t i, float v) {
  if (t == fb::DType_F32) {
    std::memcpy(p + 4 * i, &v, sizeof v);
    return;
  }
  const uint16_t h = t == fb::DType_BF16 ? half::FloatToBf16(v) : half::FloatToHalf(v);
  std::memcpy(p + 2 * i, &h, sizeof h);
}
bool IsFloat(fb::DType t) { return t == fb::DType_F32 || plan::IsHalf(t); }

// Tolerances, per buffer by its own dtype (and, for float32 ones, by whether the
// instruction is a GEMM with 16-bit operands), each relative to the largest
// magnitude of the buffer compared.
//   f32: 1e-5, the fp32 bound of issue #5 (reordered float32 sums).
//   bf16 2^-6 (1.6e-2), f16 2^-9 (2.0e-3): two ulps at the buffer's largest
//   magnitude (bf16 keeps 8 significant bits, so one ulp is at most 2^-7 of a
//   value; float16 11 bits, 2^-10). Both backends compute in float32 from the same
//   16-bit inputs and round each 16-bit output once, but from float32 results
//   that differ a little (summation order; the GPU's GEMMs round their float32
//   operand, the master weight, to 16 bits, which moves a product by up to 2^-8
//   (bf16) / 2^-11 (f16) of itself and a sum of n random ones by about
//   0.6 of that at the largest output), so an output near a rounding boundary
//   rounds to the neighbouring 16-bit value: one ulp, plus the weight copy's
//   share: under two. Those bounds are for 16-bit buffers. A float32 buffer is
//   held to f32's 1e-5 whatever the instruction's type (the norms' statistics,
//   lse, losses, the bias gradient: float32 arithmetic on the same 16-bit inputs
//   on both sides, differing in summation order only), except
//   gemm: a float32 output of a linear or linear_grad with 16-bit operands (dW;
//   y or dx where they stay float32, e.g. tp's partial sums or a residual
//   gradient), half its type's bound: 2^-7 (bf16), 2^-10 (f16). The GPU rounds
//   each float32 GEMM operand (the master weight, a float32 activation) to 16
//   bits, moving a product by up to 2u (u = 2^-8 bf16, 2^-11 f16, with both
//   operands rounded) and a sum of n random products by about 0.6u of the largest
//   output (errors of random sign; tensor cores' float32 accumulation, which
//   truncates as it aligns addends, adds at most about n 2^-24 of the products'
//   magnitudes, a few 1e-5 at these plans' widths); the
//   output is not rounded, so of the 16-bit bound's two ulps (4u) the output's
//   own rounding drops out: 2u, 3x the estimate. --tolerance-bf16 / -f16 scale it
//   too. A layout or indexing mistake is off by O(1), a wrong conversion by far
//   more.
// The training and decode checks (losses, gradient norms, parameters relative in
// L2 after N steps; a decode run's logits), by the plan's 16-bit type:
//   f32: the same 1e-5.
//   bf16 and f16: 1e-2. Measured here (CPU only, gpt-tiny, seq 64, batch 2, 5
//   steps, lr 3e-3): the bf16 plan against the fp32 plan differs by 1.6e-5 in the
//   losses, 3.1e-4 in the gradient norms and 1.1e-3 in the parameters (AdamW's
//   first steps move every weight by about the learning rate whatever the
//   gradient's size, so a gradient element near zero flips its update's sign on
//   any perturbation). The GPU's bf16 step against the CPU's bf16 step is the
//   smaller perturbation (rounding-boundary flips and the GEMMs' 16-bit weight
//   copies instead of rounding every activation), so 1e-2 leaves 9x room over the
//   parameters' measured gap; a wrong kernel moves the loss by far more. Not yet
//   measured on a GPU: --train-tolerance overrides it.
struct Tolerances {
  double f32 = 1e-5;
  double bf16 = 1.0 / 64;
  double f16 = 1.0 / 512;
  double train16 = 1e-2;
  double Of(fb::DType t) const {
    return t == fb::DType_BF16 ? bf16 : t == fb::DType_F16 ? f16 : f32;
  }
  // One buffer of an instruction whose operands' 16-bit type is `half` (F32 for
  // none): by the buffer's own dtype; a float32 buffer of a GEMM (linear,
  // linear_grad) with 16-bit operands gets half of that type's bound (above); an
  // id buffer must be equal.
  double For(fb::DType buffer, fb::DType half, bool gemm) const {
    if (!IsFloat(buffer)) return 0;  // ids: equal byte for byte (Diff: 0 or infinity)
    if (plan::IsHalf(buffer)) return Of(buffer);
    if (gemm && plan::IsHalf(half)) return Of(half) / 2;
    return f32;
  }
  double Train(fb::DType t) const { return plan::IsHalf(t) ? train16 : f32; }
};

// A plan's 16-bit type: that of its first 16-bit buffer, F32 when it has none.
fb::DType PlanHalf(const fb::Plan& p) {
  for (const fb::Buffer* b : *p.buffers())
    if (plan::IsHalf(b->dtype())) return b->dtype();
  return fb::DType_F32;
}

struct Options {
  int64_t steps = 5;
  Tolerances tol;
  int rank = 0;
  unsigned max_blocks = 0;
  bool dry_run = false;
};

// The buffers whose values an instruction needs non-negative, as real ones are:
// the AdamW second moments (each parameter's exp_avg_sq: a signed one makes
// b2 v + (1 - b2) g^2 cancel, which 1 / sqrt(v) amplifies, and the GPU's fused
// multiply-adds round the cancellation differently from the CPU), and the sums of
// exponentials vocab_loss takes the log of (a negative one is NaN, not compared).
std::set<uint32_t> NonNegative(const fb::Plan& p,
                               const std::vector<std::vector<plan::Instruction>>& units) {
  std::set<uint32_t> out;
  for (const fb::Param* param : *p.params()) out.insert(param->exp_avg_sq());
  for (const auto& unit : units)
    for (const plan::Instruction& in : unit)
      if (in.op == fb::Op_VocabLoss) out.insert(plan::Read<plan::op::VocabLoss<uint32_t>>(in).sum);
  return out;
}

// A decode program's context and tokens per run (its cached_attention's), or
// {0, 0} for a training program.
struct DecodeShape {
  int64_t context = 0, seq = 0;
};
DecodeShape DecodeShapeOf(const std::vector<std::vector<plan::Instruction>>& units) {
  DecodeShape d;
  for (const auto& unit : units)
    for (const plan::Instruction& in : unit)
      if (in.op == fb::Op_CachedAttention) {
        const auto a = plan::Read<plan::op::CachedAttention<uint32_t>>(in);
        d.context = a.context;
        d.seq = a.seq;
      }
  return d;
}

// Random contents for the buffers `which` names (all of them when null): normal
// floats (a 16-bit buffer the nearest 16-bit values, as a 16-bit plan's hold), the
// squares of normal floats (a mean of squares is one) in `non_negative`, ids in
// [0, vocab). The memory plan lets buffers that are never live together share
// bytes, so they are written in that order: where buffers share, the ids and then
// the non-negative values win. Where a 16-bit and a float32 buffer share, the
// one written last makes the other's view of those bytes arbitrary (the low half
// of a float read as a bfloat16 may be infinite or NaN): so each instruction's
// own operands are written afresh before it runs (CheckInstructions), and what it
// reads is always what this wrote for it. A decode program's position (i32 [1])
// is the last valid one, context - seq, so that the KV append writes the cache's
// last rows and cached attention reads every row (the cache's other rows are
// random, as if earlier runs had written them).
void Fill(const fb::Plan& p, const std::vector<uint32_t>* which, uint32_t seed,
          const std::set<uint32_t>& non_negative, const DecodeShape& decode,
          std::vector<uint8_t>* out) {
  std::vector<uint8_t>& arena = *out;
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(p.vocab()) - 1);
  std::vector<uint32_t> all;
  if (!which) {
    for (uint32_t index = 0; index < p.buffers()->size(); ++index) all.push_back(index);
    which = &all;
  }
  for (int pass = 0; pass < 3; ++pass) {
    for (uint32_t index : *which) {
      if (index == plan::kNoBuffer) continue;
      const fb::Buffer* b = p.buffers()->Get(index);
      const int kind = b->dtype() == fb::DType_I32 ? 2 : non_negative.count(index) ? 1 : 0;
      if (kind != pass) continue;
      const int64_t n = plan::NumElements(*b);
      if (kind == 2) {
        auto* d = reinterpret_cast<int32_t*>(arena.data() + b->offset());
        for (int64_t i = 0; i < n; ++i) d[i] = id(gen);
        continue;
      }
      // 16-bit buffers hold the nearest 16-bit values, as a 16-bit plan's do.
      uint8_t* d = arena.data() + b->offset();
      for (int64_t i = 0; i < n; ++i) {
        const float x = normal(gen);
        SetElement(b->dtype(), d, i, kind == 1 ? x * x : x);
      }
    }
  }
  if (plan::Has(p.position())) {
    const int32_t position = static_cast<int32_t>(std::max<int64_t>(0, decode.context - decode.seq));
    std::memcpy(arena.data() + p.buffers()->Get(p.position())->offset(), &position,
                sizeof position);
  }
}

// max |a - b| / max |a| over one float buffer (f32, bf16 or f16, compared as the
// float32 values they hold); infinity when b has a NaN where a does not. Elements
// where a is not finite are not compared: *uncompared counts them (the random
// inputs are finite, so a non-zero count is an instruction whose inputs left its
// domain). Other buffers (ids) must be equal byte for byte.
double Diff(const fb::Buffer& b, const uint8_t* ref, const uint8_t* got, int64_t* uncompared) {
  if (!IsFloat(b.dtype()))
    return std::memcmp(ref + b.offset(), got + b.offset(), BufferBytes(b)) == 0 ? 0.0 : INFINITY;
  const uint8_t* r = ref + b.offset();
  const uint8_t* g = got + b.offset();
  double num = 0, den = 0;
  for (int64_t i = 0, n = plan::NumElements(b); i < n; ++i) {
    const float ri = Element(b.dtype(), r, i), gi = Element(b.dtype(), g, i);
    if (std::isfinite(ri) && !std::isfinite(gi)) return INFINITY;
    if (!std::isfinite(ri)) {
      ++*uncompared;
      continue;
    }
    num = std::max(num, std::fabs(static_cast<double>(ri) - gi));
    den = std::max(den, std::fabs(static_cast<double>(ri)));
  }
  return num / std::max(den, 1e-30);
}

// NaN-aware maxima: std::max(worst, d) keeps `worst` when d is NaN, which would let
// a NaN difference pass. Here a NaN counts as worse than any number, and the first
// one stays (a later finite value never replaces it).
bool Worse(double d, double than) {
  if (std::isnan(than)) return false;
  return std::isnan(d) || d > than;
}
void Keep(double d, double* worst) {
  if (Worse(d, *worst)) *worst = d;
}

// How far a difference d is past its tolerance t: d / t (a pass is <= 1); for
// t <= 0 (a forced failure, as cuda.test's ROUTE check makes) 0 when d <= t and
// infinity otherwise. NaN stays NaN, which fails.
double Excess(double d, double t) {
  if (std::isnan(d)) return d;
  if (t > 0) return d / t;
  return d <= t ? 0.0 : INFINITY;
}

// The backend under test: CUDA in check mode, or the CPU one for --dry-run.
Status MakeBackend(const Options& o, std::unique_ptr<exec::Backend>* out) {
  if (o.dry_run) {
    *out = exec::MakeCpuBackend();
  } else {
    cuda::CudaOptions co;
    co.check = true;
    co.max_blocks = o.max_blocks;
    if (auto err = cuda::MakeCudaBackend(0, out, co)) return err;
  }
  // Never the CPU backend against itself by accident (a null backend would make
  // the executor use the CPU one).
  const char* want = o.dry_run ? "cpu" : "cuda";
  if (!*out) return Error::Failure(std::string("no ") + want + " backend was created");
  if (std::strcmp((*out)->name(), want) != 0)
    return Error::Failure(std::string("the backend under test is '") + (*out)->name() +
                          "', not '" + want + "'");
  return std::nullopt;
}

// What a device fault leaves: the check stops there.
struct Fault {};

struct Device {
  std::unique_ptr<exec::Backend> backend;
  uint8_t* arena = nullptr;
  // The backend's sticky error (a failed copy or zeroing) is fatal.
  void Check(const std::string& where) {
    if (auto err = backend->error()) {
      std::printf("FAIL %s: %s\n", where.c_str(), err->message.c_str());
      throw Fault{};
    }
  }
  void Load(const std::vector<uint8_t>& host, const std::string& where) {
    backend->CopyToArena(arena, 0, host.data(), host.size());
    Check(where);
  }
  void Save(std::vector<uint8_t>* host, const std::string& where) {
    backend->CopyToHost(arena, 0, host->data(), host->size());
    Check(where);
  }
};

int CheckInstructions(const fb::Plan& p, Device& gpu, const Options& o) {
  auto cpu = exec::MakeCpuBackend();
  // The buffer furthest past its tolerance (Excess), of one instruction or of all
  // of one opcode and type.
  struct Worst {
    double excess = 0;  // its diff over its tolerance: a pass is <= 1
    double diff = 0, tol = 0;
    std::string buffer;  // its name and dtype
    std::string where;   // the instruction
    int64_t count = 0;
    int64_t uncompared = 0;  // elements the CPU's result left NaN or infinite
    void Note(double d, double t, const std::string& what) {
      const double e = Excess(d, t);
      if (!buffer.empty() && !Worse(e, excess)) return;
      excess = e;
      diff = d;
      tol = t;
      buffer = what;
    }
  };
  // By opcode and the instructions' 16-bit type ("f32" without one).
  std::map<std::pair<std::string, fb::DType>, Worst> worst;
  int failures = 0;
  // Every unit's instructions, prepared for rank o.rank.
  const auto units = plan::PrepareUnits(p, plan::CoordinatesOf(p, o.rank));
  // Each instruction runs as activation slot 0 would, whose copy of every buffer
  // is at the buffer's own offset (the one the comparisons below read).
  const std::vector<uint64_t> offsets = plan::SlotOffsets(p, 0);
  // One random state for all, each instruction's operands written afresh on it
  // (Fill), and the arena-sized copies allocated once: the check's time is mostly
  // the CPU's.
  const std::set<uint32_t> non_negative = NonNegative(p, units);
  const DecodeShape decode = DecodeShapeOf(units);
  std::vector<uint8_t> whole(p.arena_bytes(), 0);
  Fill(p, nullptr, 1, non_negative, decode, &whole);
  std::vector<uint8_t> start(whole.size()), ref(whole.size()), poisoned(whole.size()),
      other(whole.size()), got(whole.size());
  for (size_t u = 0; u < units.size(); ++u) {
    const fb::Unit* unit = p.units()->Get(u);
    for (size_t index = 0; index < units[u].size(); ++index) {
      const plan::Instruction* in = &units[u][index];
      const char* name = plan::OpName(in->op);
      const fb::Op op = in->op;
      if (op == fb::Op_AllReduce || op == fb::Op_ReduceScatter || op == fb::Op_AllGather ||
          op == fb::Op_AllGatherInto || op == fb::Op_ReduceScatterInto ||
          plan::IsBucket(op) || op == fb::Op_Send || op == fb::Op_Recv)
        continue;  // the executor's, not a backend's
      const std::string where = "unit '" + (unit->name() ? unit->name()->str() : "") +
                                "' instruction " + std::to_string(index) + " (" + name + ")";
      // The operand dtypes the CUDA backend runs (host code: checked in a dry run
      // too, so a plan the compiler makes is proven runnable on any machine).
      fb::DType half = fb::DType_F32;
      if (auto refused = cuda::CheckOperandStorage(p, *in, &half)) {
        std::printf("FAIL %s: the CUDA backend would refuse its operands: %s\n", where.c_str(),
                    refused->message.c_str());
        ++failures;
        continue;
      }
      start = whole;
      Fill(p, &in->buffers, static_cast<uint32_t>(2 + u * 100003 + index), non_negative, decode,
           &start);
      ref = start;
      // A loss-scaled step's scalars (backend.h): the backward's seeds
      // (cross_entropy_grad's dloss) are taken times loss_scale, and clip_adamw
      // multiplies each gradient by clip_scale, min(1, clip / norm) / loss_scale,
      // which the executor (not a backend) fixes before the step's first update:
      // set here as it would, with a clip factor of 0.37, so that both backends'
      // use of either scalar is compared.
      exec::StepScalars sc;
      sc.lr = 1e-3;
      sc.weight_decay = 0.1;
      sc.grad_clip = 1.0;
      sc.step = 3;
      sc.loss_scale = 1024;
      sc.clip_scale = 0.37 / 1024;
      sc.clip_ready = true;
      exec::StepScalars cpu_sc = sc, gpu_sc = sc;
      auto err = cpu->Run(p, *in, ref.data(), offsets.data(), cpu_sc);
      if (err) {
        std::printf("FAIL %s: the CPU backend refused it: %s\n", where.c_str(),
                    err->message.c_str());
        ++failures;
        continue;
      }
      // Outputs: buffers the CPU changed whose result does not depend on their
      // previous contents; those are NaN on the GPU side before it runs.
      // The instruction's operands and their bytes: the buffers compared as values
      // (and poisoned). Any other buffer must keep its bytes, unless it shares
      // bytes with an operand (the memory plan's reuse), whose comparison covers them.
      std::set<uint32_t> operands;
      std::vector<std::pair<uint64_t, uint64_t>> ranges;
      for (uint32_t b : in->buffers)
        if (b != plan::kNoBuffer && operands.insert(b).second) {
          const fb::Buffer* buffer = p.buffers()->Get(b);
          ranges.push_back({buffer->offset(), buffer->offset() + BufferBytes(*buffer)});
        }
      auto shares_bytes = [&](const fb::Buffer& b) {
        for (const auto& [begin, end] : ranges)
          if (b.offset() < end && begin < b.offset() + BufferBytes(b)) return true;
        return false;
      };
      poisoned = start;
      for (uint32_t index : operands) {
        const fb::Buffer* b = p.buffers()->Get(index);
        if (!IsFloat(b->dtype()) ||
            std::memcmp(start.data() + b->offset(), ref.data() + b->offset(), BufferBytes(*b)) == 0)
          continue;
        other = start;
        uint8_t* d = other.data() + b->offset();
        const int64_t n = plan::NumElements(*b);
        for (int64_t i = 0; i < n; ++i)
          SetElement(b->dtype(), d, i, Element(b->dtype(), d, i) * 3.f + 1.f);
        exec::StepScalars other_sc = sc;
        if (cpu->Run(p, *in, other.data(), offsets.data(), other_sc)) continue;
        if (std::memcmp(other.data() + b->offset(), ref.data() + b->offset(), BufferBytes(*b)) != 0)
          continue;  // read-modify-write (accumulated): not poisonable
        for (int64_t i = 0; i < n; ++i)
          SetElement(b->dtype(), poisoned.data() + b->offset(), i, NAN);
      }
      gpu.Load(poisoned, where + ": loading its arena");
      err = gpu.backend->Run(p, *in, gpu.arena, offsets.data(), gpu_sc);
      if (err) {
        std::printf("FAIL %s: the %s backend refused it: %s\n", where.c_str(),
                    gpu.backend->name(), err->message.c_str());
        // A device failure (not bad data) leaves the device in an unknown state.
        if (err->kind == Error::Kind::kFailure && !o.dry_run) throw Fault{};
        ++failures;
        continue;
      }
      gpu.Save(&got, where + ": reading its arena back");
      // Each operand at its own dtype's tolerance (Tolerances::For).
      const bool gemm = op == fb::Op_Linear || op == fb::Op_LinearGrad;
      Worst d;
      d.where = where;
      int64_t uncompared = 0;
      std::string stray;  // a buffer written that is not the instruction's
      for (uint32_t index = 0; index < p.buffers()->size(); ++index) {
        const fb::Buffer& b = *p.buffers()->Get(index);
        const std::string what = "'" + b.name()->str() + "' " +
                                 plan::DTypeName(b.dtype());
        if (operands.count(index)) {
          d.Note(Diff(b, ref.data(), got.data(), &uncompared), o.tol.For(b.dtype(), half, gemm),
                 what);
        } else if (!shares_bytes(b) &&
                   std::memcmp(ref.data() + b.offset(), got.data() + b.offset(),
                               BufferBytes(b)) != 0) {
          d.Note(INFINITY, o.tol.Of(b.dtype()), what + " (not an operand)");
          if (stray.empty()) stray = b.name()->str();
        }
      }
      if (!stray.empty())
        std::printf("FAIL %s: the %s backend changed buffer '%s', which is not its operand\n",
                    where.c_str(), gpu.backend->name(), stray.c_str());
      // The accumulated sum of squares (a step scalar): a NaN or infinite one on
      // either side makes this NaN or infinite (std::max passes a NaN first
      // argument on), which fails.
      if (op == fb::Op_GradNormSq)
        d.Note(std::fabs(cpu_sc.grad_norm_sq - gpu_sc.grad_norm_sq) /
                   std::max(cpu_sc.grad_norm_sq, 1e-30),
               o.tol.f32, "the step scalar grad_norm_sq");
      Worst& w = worst[{name, half}];
      ++w.count;
      w.uncompared += uncompared;
      if (w.where.empty() || Worse(d.excess, w.excess)) {
        w.excess = d.excess;
        w.diff = d.diff;
        w.tol = d.tol;
        w.buffer = d.buffer;
        w.where = d.where;
      }
    }
  }
  const char* pass = o.dry_run ? "DRY" : "PASS";
  for (const auto& [key, w] : worst) {
    // The buffer furthest past its own tolerance; NaN compares false and fails.
    const bool ok = w.excess <= 1;
    std::string notes;
    if (!ok) notes += " at " + w.where;
    if (w.uncompared)
      notes += ", " + std::to_string(w.uncompared) +
               " elements not compared (not finite on the CPU)";
    std::printf("%s op %s %s (%lld instruction%s, max rel diff %.2g (%s), tolerance %.2g%s)\n",
                ok ? pass : "FAIL", key.first.c_str(), plan::DTypeName(key.second),
                static_cast<long long>(w.count), w.count == 1 ? "" : "s", w.diff,
                w.buffer.empty() ? "no buffer" : w.buffer.c_str(), w.tol, notes.c_str());
    failures += ok ? 0 : 1;
  }
  return failures;
}

// A decode program (no targets, no loss, no update): o.steps runs (at most as many
// as the context holds) at positions 0, seq, 2 seq, ... from the same parameters on
// both backends, so that each run's cached attention reads the rows the earlier
// runs appended; every run's logits within T of the largest.
int CheckDecode(const plan::LoadedPlan& loaded, const Options& o) {
  const fb::Plan& p = *loaded.plan;
  const DecodeShape shape = DecodeShapeOf(plan::PrepareUnits(p, plan::CoordinatesOf(p, 0)));
  if (shape.seq <= 0) {
    std::printf("FAIL decode: the decode program has no cached_attention\n");
    return 1;
  }
  const int64_t runs = std::min<int64_t>(o.steps, shape.context / shape.seq);
  if (runs <= 0) return 0;
  std::unique_ptr<exec::Backend> backend;
  if (auto err = MakeBackend(o, &backend)) {
    std::printf("FAIL decode: %s\n", err->message.c_str());
    return 1;
  }
  exec::Executor cpu(loaded), gpu(loaded, std::move(backend));
  cpu.InitializeParameters(1234);
  gpu.InitializeParameters(1234);
  const int64_t rows = p.micro_batch_size() * p.seq();
  const int64_t n = plan::NumElements(*p.buffers()->Get(p.logits()));
  std::vector<int32_t> tokens(rows);
  double worst = 0;
  for (int64_t run = 0; run < runs; ++run) {
    for (int64_t i = 0; i < rows; ++i)
      tokens[i] = static_cast<int32_t>((i * 31 + run * 7 + 3) % p.vocab());
    const int32_t position = static_cast<int32_t>(run * shape.seq);
    const float *a = nullptr, *b = nullptr;
    if (auto err = cpu.Decode(tokens.data(), position, &a)) {
      std::printf("FAIL decode: CPU at position %d: %s\n", position, err->message.c_str());
      return 1;
    }
    std::vector<float> ref(a, a + n);
    if (auto err = gpu.Decode(tokens.data(), position, &b)) {
      std::printf("FAIL decode: %s at position %d: %s\n", o.dry_run ? "CPU (dry run)" : "CUDA",
                  position, err->message.c_str());
      return 1;
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
      // A non-finite logit on either side is infinitely bad.
      if (!std::isfinite(b[i]) || !std::isfinite(ref[i])) num = INFINITY;
      num = std::max(num, std::fabs(static_cast<double>(ref[i]) - b[i]));
      den = std::max(den, std::fabs(static_cast<double>(ref[i])));
    }
    Keep(num / std::max(den, 1e-30), &worst);  // a NaN stays
  }
  const double tol = o.tol.Train(PlanHalf(p));
  const bool ok = worst <= tol;  // NaN compares false
  std::printf("%s decode %lld runs of %lld tokens %s (logits max rel diff %.2g, tolerance %.2g)\n",
              ok ? (o.dry_run ? "DRY" : "PASS") : "FAIL", static_cast<long long>(runs),
              static_cast<long long>(shape.seq), plan::DTypeName(PlanHalf(p)), worst, tol);
  return ok ? 0 : 1;
}

int CheckTraining(const plan::LoadedPlan& loaded, const Options& o) {
  const fb::Plan& p = *loaded.plan;
  const int64_t world = plan::WorldSize(*p.mesh());
  if (world > 1) {
    std::printf("SKIP training: the plan has %lld ranks (its collectives need heiretsu run)\n",
                static_cast<long long>(world));
    return 0;
  }
  if (plan::Has(p.position())) return CheckDecode(loaded, o);
  if (o.steps <= 0) return 0;
  std::unique_ptr<exec::Backend> backend;
  if (auto err = MakeBackend(o, &backend)) {
    std::printf("FAIL training: %s\n", err->message.c_str());
    return 1;
  }
  exec::Executor cpu(loaded), gpu(loaded, std::move(backend));
  cpu.InitializeParameters(1234);
  gpu.InitializeParameters(1234);
  const int64_t rows = p.micro_batch_size() * p.seq();
  // 16-bit plans train loss-scaled on both backends (fp16's small gradients would
  // underflow at 1), so that the GPU's scaled seeds, norm and unscaling in the
  // update are compared; a power of two, so bf16 results match the unscaled
  // step's wherever nothing underflows (the tolerance's measurement holds).
  const double loss_scale = plan::IsHalf(PlanHalf(p)) ? 1024 : 1;
  double worst_loss = 0, worst_norm = 0;
  int64_t skipped = 0;  // steps non-finite (not applied) on both backends
  // |a - b| / |a|, NaN when either is NaN, infinite when only one is infinite.
  auto rel = [](double a, double b) {
    if (std::isinf(a) != std::isinf(b)) return static_cast<double>(INFINITY);
    return std::fabs(a - b) / std::max(std::fabs(a), 1e-30);
  };
  for (int64_t step = 1; step <= o.steps; ++step) {
    auto fill = [&](int64_t m, int32_t* tokens, int32_t* targets) {
      for (int64_t i = 0; i < rows; ++i) {
        tokens[i] = static_cast<int32_t>((i * 31 + step * 7 + m * 13) % p.vocab());
        targets[i] = static_cast<int32_t>((tokens[i] * 5 + 3) % p.vocab());
      }
    };
    exec::StepOptions so;
    so.lr = 3e-3;
    so.weight_decay = 0.1;
    so.grad_clip = 1.0;
    so.step = step;
    so.loss_scale = loss_scale;
    exec::StepResult a, b;
    if (auto err = cpu.Step(fill, so, &a)) {
      std::printf("FAIL training: CPU step %lld: %s\n", static_cast<long long>(step),
                  err->message.c_str());
      return 1;
    }
    if (auto err = gpu.Step(fill, so, &b)) {
      std::printf("FAIL training: %s step %lld: %s\n", o.dry_run ? "CPU (dry run)" : "CUDA",
                  static_cast<long long>(step), err->message.c_str());
      return 1;
    }
    const char* other = o.dry_run ? "CPU (dry run)" : "CUDA";
    if (a.nonfinite != b.nonfinite) {
      // One applied the update and the other skipped it: the runs part here.
      std::printf("FAIL training: step %lld is non-finite on the %s backend only (CPU: loss "
                  "%.6g, gradient norm %.6g%s; %s: loss %.6g, gradient norm %.6g%s; loss scale "
                  "%g)\n",
                  static_cast<long long>(step), a.nonfinite ? "CPU" : other, a.loss, a.grad_norm,
                  a.nonfinite ? ", skipped" : "", other, b.loss, b.grad_norm,
                  b.nonfinite ? ", skipped" : "", loss_scale);
      return 1;
    }
    if (a.nonfinite) {
      // Skipped by both, as the same overflow would be: a loss or norm finite on
      // either side must agree with the other's; non-finite on both is no
      // difference (the norm is NaN when the loss was already non-finite).
      ++skipped;
      if (std::isfinite(a.loss) || std::isfinite(b.loss)) Keep(rel(a.loss, b.loss), &worst_loss);
      if (std::isfinite(a.grad_norm) || std::isfinite(b.grad_norm))
        Keep(rel(a.grad_norm, b.grad_norm), &worst_norm);
      continue;
    }
    // Both finite steps: a NaN difference (std::max would drop it) is kept.
    Keep(rel(a.loss, b.loss), &worst_loss);
    Keep(rel(a.grad_norm, b.grad_norm), &worst_norm);
  }
  if (auto err = gpu.PullState()) {
    std::printf("FAIL training: reading the parameters back: %s\n", err->message.c_str());
    return 1;
  }
  double num = 0, den = 0;
  for (const fb::Param* param : *p.params()) {
    const int64_t n = plan::NumElements(*p.buffers()->Get(param->value()));
    const float* x = cpu.F32(param->value());
    const float* y = gpu.F32(param->value());
    for (int64_t i = 0; i < n; ++i) {
      num += (static_cast<double>(x[i]) - y[i]) * (static_cast<double>(x[i]) - y[i]);
      den += static_cast<double>(x[i]) * x[i];
    }
  }
  // A NaN parameter makes the sums NaN; a NaN loss or norm difference was kept as
  // the worst (Keep). NaN compares false, so any of them fails, as does a run in
  // which every step was skipped on both backends (nothing was trained).
  const double params = std::sqrt(num / std::max(den, 1e-30));
  const double tol = o.tol.Train(PlanHalf(p));
  const bool ok = worst_loss <= tol && worst_norm <= tol && params <= tol && skipped < o.steps;
  std::string notes;
  if (skipped)
    notes = ", " + std::to_string(skipped) + " step" + (skipped == 1 ? "" : "s") +
            " non-finite and skipped on both";
  std::printf("%s training %lld steps %s (loss scale %g, losses %.2g, gradient norms %.2g, "
              "parameters %.2g, tolerance %.2g%s)\n",
              ok ? (o.dry_run ? "DRY" : "PASS") : "FAIL", static_cast<long long>(o.steps),
              plan::DTypeName(PlanHalf(p)), loss_scale, worst_loss, worst_norm, params, tol,
              notes.c_str());
  return ok ? 0 : 1;
}

int Usage() {
  std::fprintf(stderr,
               "usage: heiretsu-cuda-check PLAN_FILE [--steps N] [--tolerance T] [--rank R]\n"
               "                           [--tolerance-bf16 T] [--tolerance-f16 T]\n"
               "                           [--train-tolerance T] [--max-blocks B] [--dry-run]\n");
  return 2;
}

}  // namespace
}  // namespace heiretsu

int main(int argc, char** argv) {
  using namespace heiretsu;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc < 2 || argv[1][0] == '-') return Usage();
  Options o;
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--dry-run") {
      o.dry_run = true;
      continue;
    }
    if (i + 1 >= argc) return Usage();
    char* end = nullptr;
    const char* value = argv[++i];
    if (flag == "--steps") {
      o.steps = std::strtoll(value, &end, 10);
    } else if (flag == "--tolerance") {
      o.tol.f32 = std::strtod(value, &end);
    } else if (flag == "--tolerance-bf16") {
      o.tol.bf16 = std::strtod(value, &end);
    } else if (flag == "--tolerance-f16") {
      o.tol.f16 = std::strtod(value, &end);
    } else if (flag == "--train-tolerance") {
      o.tol.train16 = std::strtod(value, &end);
    } else if (flag == "--rank") {
      o.rank = static_cast<int>(std::strtol(value, &end, 10));
    } else if (flag == "--max-blocks") {
      o.max_blocks = static_cast<unsigned>(std::strtoul(value, &end, 10));
    } else {
      return Usage();
    }
    if (end == value || *end != '\0') return Usage();
  }
  plan::LoadedPlan loaded;
  if (auto err = plan::LoadPlan(argv[1], &loaded)) {
    std::fprintf(stderr, "heiretsu-cuda-check: %s\n", err->message.c_str());
    return 2;
  }
  const int64_t world = plan::WorldSize(*loaded.plan->mesh());
  if (o.rank < 0 || o.rank >= world) {
    std::fprintf(stderr, "heiretsu-cuda-check: --rank %d: the plan has ranks 0 to %lld\n", o.rank,
                 static_cast<long long>(world - 1));
    return 2;
  }
  if (!o.dry_run) {
    const cuda::DeviceProbe probe = cuda::ProbeDevices();
    if (probe.failed) {
      std::printf("FAIL devices: %s\n", probe.message.c_str());
      return 1;
    }
    if (probe.count == 0) {
      std::printf("skipped: no GPU (%s)\n", probe.message.c_str());
      return 0;
    }
  }
  int failures = 0;
  try {
    Device gpu;
    if (auto err = MakeBackend(o, &gpu.backend)) {
      std::printf("FAIL backend: %s\n", err->message.c_str());
      return 1;
    }
    gpu.arena = gpu.backend->AllocateArena(loaded.plan->arena_bytes());
    if (!gpu.arena) {
      const Status err = gpu.backend->error();
      std::printf("FAIL backend: no arena of %llu bytes%s%s\n",
                  static_cast<unsigned long long>(loaded.plan->arena_bytes()), err ? ": " : "",
                  err ? err->message.c_str() : "");
      return 1;
    }
    failures += CheckInstructions(*loaded.plan, gpu, o);
    gpu.backend->FreeArena(gpu.arena);
    failures += CheckTraining(loaded, o);
  } catch (const Fault&) {
    std::printf("cuda-check: FAILED (stopped at a device failure)\n");
    return 1;
  }
  if (o.dry_run)
    std::printf("cuda-check: dry run (the CPU backend in place of the CUDA one): %s; nothing was "
                "checked on a GPU\n",
                failures ? "FAILED" : "all passed");
  else
    std::printf("cuda-check: %s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
