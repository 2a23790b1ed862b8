// heiretsu-cuda-check: the CUDA backend against the CPU backend on a compiled plan.
//   usage: heiretsu-cuda-check PLAN_FILE [--steps N] [--tolerance T] [--rank R]
//                              [--max-blocks B] [--dry-run]
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
//    it, and every buffer must agree within T relative to the buffer's largest
//    magnitude (the default 1e-5 is the fp32 bound of issue #5), with no NaN where
//    the CPU has a number. Output buffers are poisoned with NaN on the GPU side
//    first, so an element the CUDA kernel fails to write fails the check; a buffer
//    counts as an output when the CPU result does not depend on its previous
//    contents. Collectives and send / recv are the executor's and are not run.
// 2. N training steps (default 5) from the same initialization and data on both
//    backends: each step's loss and gradient norm, and the final parameters,
//    within T. A plan of more than one rank has collectives that need the job's
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

struct Options {
  int64_t steps = 5;
  double tol = 1e-5;
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

// Random contents for every buffer: normal floats, the squares of normal floats (a
// mean of squares is one) in `non_negative`, ids in [0, vocab). The memory plan
// lets buffers that are never live together share bytes, so they are written in
// that order: where buffers share, the ids and then the non-negative values win.
// A decode program's position (i32 [1]) is the last valid one, context - seq, so
// that the KV append writes the cache's last rows and cached attention reads every
// row (the cache's other rows are random, as if earlier runs had written them).
std::vector<uint8_t> RandomArena(const fb::Plan& p, uint32_t seed,
                                 const std::set<uint32_t>& non_negative,
                                 const DecodeShape& decode) {
  std::vector<uint8_t> arena(p.arena_bytes(), 0);
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(p.vocab()) - 1);
  for (int pass = 0; pass < 3; ++pass) {
    for (uint32_t index = 0; index < p.buffers()->size(); ++index) {
      const fb::Buffer* b = p.buffers()->Get(index);
      const int kind = b->dtype() == fb::DType_I32 ? 2 : non_negative.count(index) ? 1 : 0;
      if (kind != pass) continue;
      const int64_t n = plan::NumElements(*b);
      if (kind == 2) {
        auto* d = reinterpret_cast<int32_t*>(arena.data() + b->offset());
        for (int64_t i = 0; i < n; ++i) d[i] = id(gen);
        continue;
      }
      auto* d = reinterpret_cast<float*>(arena.data() + b->offset());
      for (int64_t i = 0; i < n; ++i) {
        const float x = normal(gen);
        d[i] = kind == 1 ? x * x : x;
      }
    }
  }
  if (plan::Has(p.position())) {
    const int32_t position = static_cast<int32_t>(std::max<int64_t>(0, decode.context - decode.seq));
    std::memcpy(arena.data() + p.buffers()->Get(p.position())->offset(), &position,
                sizeof position);
  }
  return arena;
}

// max |a - b| / max |a| over one f32 buffer; infinity when b has a NaN where a
// does not. Elements where a is not finite are not compared: *uncompared counts
// them (the random inputs are finite, so a non-zero count is an instruction whose
// inputs left its domain).
double Diff(const fb::Buffer& b, const uint8_t* ref, const uint8_t* got, int64_t* uncompared) {
  if (b.dtype() != fb::DType_F32)
    return std::memcmp(ref + b.offset(), got + b.offset(), BufferBytes(b)) == 0 ? 0.0 : INFINITY;
  const float* r = reinterpret_cast<const float*>(ref + b.offset());
  const float* g = reinterpret_cast<const float*>(got + b.offset());
  double num = 0, den = 0;
  for (int64_t i = 0, n = plan::NumElements(b); i < n; ++i) {
    if (std::isfinite(r[i]) && !std::isfinite(g[i])) return INFINITY;
    if (!std::isfinite(r[i])) {
      ++*uncompared;
      continue;
    }
    num = std::max(num, std::fabs(static_cast<double>(r[i]) - g[i]));
    den = std::max(den, std::fabs(static_cast<double>(r[i])));
  }
  return num / std::max(den, 1e-30);
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
  struct Worst {
    double diff = 0;
    int64_t count = 0;
    int64_t uncompared = 0;  // elements the CPU's result left NaN or infinite
    std::string where;  // of the largest difference
  };
  std::map<std::string, Worst> worst;
  int failures = 0;
  // Every unit's instructions, prepared for rank o.rank.
  const auto units = plan::PrepareUnits(p, plan::CoordinatesOf(p, o.rank));
  // Each instruction runs as activation slot 0 would, whose copy of every buffer
  // is at the buffer's own offset (the one the comparisons below read).
  const std::vector<uint64_t> offsets = plan::SlotOffsets(p, 0);
  // One random state for all (each instruction reads buffers of its own), and the
  // arena-sized copies allocated once: the check's time is mostly the CPU's.
  const std::vector<uint8_t> start =
      RandomArena(p, 1, NonNegative(p, units), DecodeShapeOf(units));
  std::vector<uint8_t> ref(start.size()), poisoned(start.size()), other(start.size()),
      got(start.size());
  for (size_t u = 0; u < units.size(); ++u) {
    const fb::Unit* unit = p.units()->Get(u);
    for (size_t index = 0; index < units[u].size(); ++index) {
      const plan::Instruction* in = &units[u][index];
      const char* name = plan::OpName(in->op);
      const fb::Op op = in->op;
      if (op == fb::Op_AllReduce || op == fb::Op_ReduceScatter || op == fb::Op_AllGather ||
          op == fb::Op_AllGatherInto || op == fb::Op_ReduceScatterInto ||
          op == fb::Op_BucketAllReduce || op == fb::Op_Send || op == fb::Op_Recv)
        continue;  // the executor's, not a backend's
      const std::string where = "unit '" + (unit->name() ? unit->name()->str() : "") +
                                "' instruction " + std::to_string(index) + " (" + name + ")";
      ref = start;
      exec::StepScalars sc;
      sc.lr = 1e-3;
      sc.weight_decay = 0.1;
      sc.grad_clip = 1.0;
      sc.step = 3;
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
      poisoned = start;
      for (const fb::Buffer* b : *p.buffers()) {
        if (b->dtype() != fb::DType_F32 ||
            std::memcmp(start.data() + b->offset(), ref.data() + b->offset(), BufferBytes(*b)) == 0)
          continue;
        other = start;
        auto* d = reinterpret_cast<float*>(other.data() + b->offset());
        for (int64_t i = 0, n = plan::NumElements(*b); i < n; ++i) d[i] = d[i] * 3.f + 1.f;
        exec::StepScalars other_sc = sc;
        if (cpu->Run(p, *in, other.data(), offsets.data(), other_sc)) continue;
        if (std::memcmp(other.data() + b->offset(), ref.data() + b->offset(), BufferBytes(*b)) != 0)
          continue;  // read-modify-write (accumulated): not poisonable
        auto* q = reinterpret_cast<float*>(poisoned.data() + b->offset());
        for (int64_t i = 0, n = plan::NumElements(*b); i < n; ++i) q[i] = NAN;
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
      double d = 0;
      int64_t uncompared = 0;
      for (const fb::Buffer* b : *p.buffers())
        d = std::max(d, Diff(*b, ref.data(), got.data(), &uncompared));
      if (op == fb::Op_GradNormSq)
        d = std::max(d, std::fabs(cpu_sc.grad_norm_sq - gpu_sc.grad_norm_sq) /
                            std::max(cpu_sc.grad_norm_sq, 1e-30));
      Worst& w = worst[name];
      ++w.count;
      w.uncompared += uncompared;
      if (d > w.diff || w.where.empty()) {
        w.diff = std::max(w.diff, d);
        w.where = where;
      }
    }
  }
  const char* pass = o.dry_run ? "DRY" : "PASS";
  for (const auto& [name, w] : worst) {
    const bool ok = w.diff <= o.tol;
    std::string notes;
    if (!ok) notes += " at " + w.where;
    if (w.uncompared)
      notes += ", " + std::to_string(w.uncompared) +
               " elements not compared (not finite on the CPU)";
    std::printf("%s op %s (%lld instruction%s, max rel diff %.2g%s)\n", ok ? pass : "FAIL",
                name.c_str(), static_cast<long long>(w.count), w.count == 1 ? "" : "s", w.diff,
                notes.c_str());
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
      if (!std::isfinite(b[i])) num = INFINITY;
      num = std::max(num, std::fabs(static_cast<double>(ref[i]) - b[i]));
      den = std::max(den, std::fabs(static_cast<double>(ref[i])));
    }
    worst = std::max(worst, num / std::max(den, 1e-30));
  }
  const bool ok = worst <= o.tol;  // NaN compares false
  std::printf("%s decode %lld runs of %lld tokens (logits max rel diff %.2g)\n",
              ok ? (o.dry_run ? "DRY" : "PASS") : "FAIL", static_cast<long long>(runs),
              static_cast<long long>(shape.seq), worst);
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
  double worst_loss = 0, worst_norm = 0;
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
    worst_loss = std::max(worst_loss, std::fabs(a.loss - b.loss) / std::fabs(a.loss));
    worst_norm = std::max(worst_norm, std::fabs(a.grad_norm - b.grad_norm) / a.grad_norm);
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
  const double params = std::sqrt(num / std::max(den, 1e-30));
  // NaN compares false: a NaN loss, norm or parameter fails.
  const bool ok = worst_loss <= o.tol && worst_norm <= o.tol && params <= o.tol;
  std::printf("%s training %lld steps (losses %.2g, gradient norms %.2g, parameters %.2g)\n",
              ok ? (o.dry_run ? "DRY" : "PASS") : "FAIL", static_cast<long long>(o.steps),
              worst_loss, worst_norm, params);
  return ok ? 0 : 1;
}

int Usage() {
  std::fprintf(stderr,
               "usage: heiretsu-cuda-check PLAN_FILE [--steps N] [--tolerance T] [--rank R]\n"
               "                           [--max-blocks B] [--dry-run]\n");
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
      o.tol = std::strtod(value, &end);
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
