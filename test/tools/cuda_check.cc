// heiretsu-cuda-check: the CUDA backend against the CPU backend on a compiled plan.
//   usage: heiretsu-cuda-check PLAN_FILE [--steps N] [--tolerance T]
// Without a CUDA device it prints "skipped: no GPU" and exits 0.
//
// 1. Every instruction of the plan (both streams), alone: from one random arena
//    state (ids within the vocabulary) each backend runs it, and every buffer must
//    agree within T relative to the buffer's largest magnitude (the default 1e-5 is
//    the fp32 bound of issue #5), with no NaN where the CPU has a number. Output
//    buffers are poisoned with NaN on the GPU side first, so an element the CUDA
//    kernel fails to write fails the check; a buffer counts as an output when the
//    CPU result does not depend on its previous contents.
// 2. N training steps from the same initialization and data on both backends: each
//    step's loss and gradient norm, and the final parameters, within T.
// Prints one PASS/FAIL line per opcode and per check and exits 1 on any FAIL.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "runtime/cuda/cuda_backend.h"
#include "runtime/exec/executor.h"
#include "runtime/plan/ops.h"
#include "runtime/plan/plan.h"

namespace heiretsu {
namespace {

namespace fb = plan::fb;

uint64_t BufferBytes(const fb::Buffer& b) {
  return static_cast<uint64_t>(plan::NumElements(b)) * plan::DTypeSize(b.dtype());
}

// Random contents for every buffer: normal floats, ids in [0, vocab).
std::vector<uint8_t> RandomArena(const fb::Plan& p, uint32_t seed) {
  std::vector<uint8_t> arena(p.arena_bytes(), 0);
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(p.vocab()) - 1);
  for (const fb::Buffer* b : *p.buffers()) {
    const int64_t n = plan::NumElements(*b);
    if (b->dtype() == fb::DType_I32) {
      auto* d = reinterpret_cast<int32_t*>(arena.data() + b->offset());
      for (int64_t i = 0; i < n; ++i) d[i] = id(gen);
    } else {
      auto* d = reinterpret_cast<float*>(arena.data() + b->offset());
      for (int64_t i = 0; i < n; ++i) d[i] = normal(gen);
    }
  }
  return arena;
}

// max |a - b| / max |a| over one f32 buffer; infinity when b has a NaN where a
// does not.
double Diff(const fb::Buffer& b, const uint8_t* ref, const uint8_t* got) {
  if (b.dtype() != fb::DType_F32)
    return std::memcmp(ref + b.offset(), got + b.offset(), BufferBytes(b)) == 0 ? 0.0 : INFINITY;
  const float* r = reinterpret_cast<const float*>(ref + b.offset());
  const float* g = reinterpret_cast<const float*>(got + b.offset());
  double num = 0, den = 0;
  for (int64_t i = 0, n = plan::NumElements(b); i < n; ++i) {
    if (std::isfinite(r[i]) && !std::isfinite(g[i])) return INFINITY;
    if (!std::isfinite(r[i])) continue;
    num = std::max(num, std::fabs(static_cast<double>(r[i]) - g[i]));
    den = std::max(den, std::fabs(static_cast<double>(r[i])));
  }
  return num / std::max(den, 1e-30);
}

struct Device {
  std::unique_ptr<exec::Backend> backend;
  uint8_t* arena = nullptr;
  void Load(const std::vector<uint8_t>& host) {
    backend->CopyToArena(arena, 0, host.data(), host.size());
  }
  void Save(std::vector<uint8_t>* host) { backend->CopyToHost(arena, 0, host->data(), host->size()); }
};

int CheckInstructions(const fb::Plan& p, Device& gpu, double tol) {
  auto cpu = exec::MakeCpuBackend();
  std::map<std::string, double> worst;
  int failures = 0;
  // Every unit's instructions, prepared for rank 0.
  std::vector<const plan::Instruction*> all;
  const auto units = plan::PrepareUnits(p, plan::CoordinatesOf(p, 0));
  for (const auto& unit : units)
    for (const plan::Instruction& in : unit) all.push_back(&in);
  // Each instruction runs as activation slot 0 would, whose copy of every buffer
  // is at the buffer's own offset (the one the comparisons below read).
  const std::vector<uint64_t> offsets = plan::SlotOffsets(p, 0);
  uint32_t seed = 1;
  for (const plan::Instruction* in : all) {
    const char* name = plan::OpName(in->op);
    const fb::Op op = in->op;
    if (op == fb::Op_AllReduce || op == fb::Op_ReduceScatter || op == fb::Op_AllGather ||
        op == fb::Op_AllGatherInto || op == fb::Op_ReduceScatterInto ||
        op == fb::Op_BucketAllReduce || op == fb::Op_Send || op == fb::Op_Recv)
      continue;  // the executor's, not a backend's
    const std::vector<uint8_t> start = RandomArena(p, seed++);
    std::vector<uint8_t> ref = start;
    exec::StepScalars sc;
    sc.lr = 1e-3;
    sc.weight_decay = 0.1;
    sc.grad_clip = 1.0;
    sc.step = 3;
    exec::StepScalars cpu_sc = sc, gpu_sc = sc;
    auto err = cpu->Run(p, *in, ref.data(), offsets.data(), cpu_sc);
    if (err) {
      std::printf("FAIL %s: the CPU backend refused it: %s\n", name, err->message.c_str());
      ++failures;
      continue;
    }
    // Outputs: buffers the CPU changed whose result does not depend on their
    // previous contents; those are NaN on the GPU side before it runs.
    std::vector<uint8_t> poisoned = start;
    for (const fb::Buffer* b : *p.buffers()) {
      if (b->dtype() != fb::DType_F32 ||
          std::memcmp(start.data() + b->offset(), ref.data() + b->offset(), BufferBytes(*b)) == 0)
        continue;
      std::vector<uint8_t> other = start;
      auto* d = reinterpret_cast<float*>(other.data() + b->offset());
      for (int64_t i = 0, n = plan::NumElements(*b); i < n; ++i) d[i] = d[i] * 3.f + 1.f;
      exec::StepScalars other_sc = sc;
      if (cpu->Run(p, *in, other.data(), offsets.data(), other_sc)) continue;
      if (std::memcmp(other.data() + b->offset(), ref.data() + b->offset(), BufferBytes(*b)) != 0)
        continue;  // read-modify-write (accumulated): not poisonable
      auto* q = reinterpret_cast<float*>(poisoned.data() + b->offset());
      for (int64_t i = 0, n = plan::NumElements(*b); i < n; ++i) q[i] = NAN;
    }
    gpu.Load(poisoned);
    err = gpu.backend->Run(p, *in, gpu.arena, offsets.data(), gpu_sc);
    if (err) {
      std::printf("FAIL %s: the CUDA backend refused it: %s\n", name, err->message.c_str());
      ++failures;
      continue;
    }
    std::vector<uint8_t> got(start.size());
    gpu.Save(&got);
    double d = 0;
    for (const fb::Buffer* b : *p.buffers()) d = std::max(d, Diff(*b, ref.data(), got.data()));
    if (op == fb::Op_GradNormSq)
      d = std::max(d, std::fabs(cpu_sc.grad_norm_sq - gpu_sc.grad_norm_sq) /
                          std::max(cpu_sc.grad_norm_sq, 1e-30));
    worst[name] = std::max(worst[name], d);
  }
  for (const auto& [name, d] : worst) {
    const bool ok = d <= tol;
    std::printf("%s op %s (max rel diff %.2g)\n", ok ? "PASS" : "FAIL", name.c_str(), d);
    failures += ok ? 0 : 1;
  }
  return failures;
}

int CheckTraining(const plan::LoadedPlan& loaded, int64_t steps, double tol) {
  const fb::Plan& p = *loaded.plan;
  std::unique_ptr<exec::Backend> backend;
  if (auto err = cuda::MakeCudaBackend(0, &backend)) {
    std::printf("FAIL training: %s\n", err->message.c_str());
    return 1;
  }
  exec::Executor cpu(loaded), gpu(loaded, std::move(backend));
  cpu.InitializeParameters(1234);
  gpu.InitializeParameters(1234);
  const int64_t rows = p.micro_batch_size() * p.seq();
  double worst_loss = 0, worst_norm = 0;
  for (int64_t step = 1; step <= steps; ++step) {
    auto fill = [&](int64_t m, int32_t* tokens, int32_t* targets) {
      for (int64_t i = 0; i < rows; ++i) {
        tokens[i] = static_cast<int32_t>((i * 31 + step * 7 + m * 13) % p.vocab());
        targets[i] = static_cast<int32_t>((tokens[i] * 5 + 3) % p.vocab());
      }
    };
    exec::StepOptions o;
    o.lr = 3e-3;
    o.weight_decay = 0.1;
    o.grad_clip = 1.0;
    o.step = step;
    exec::StepResult a, b;
    if (auto err = cpu.Step(fill, o, &a)) {
      std::printf("FAIL training: CPU step %lld: %s\n", static_cast<long long>(step), err->message.c_str());
      return 1;
    }
    if (auto err = gpu.Step(fill, o, &b)) {
      std::printf("FAIL training: CUDA step %lld: %s\n", static_cast<long long>(step), err->message.c_str());
      return 1;
    }
    worst_loss = std::max(worst_loss, std::fabs(a.loss - b.loss) / std::fabs(a.loss));
    worst_norm = std::max(worst_norm, std::fabs(a.grad_norm - b.grad_norm) / a.grad_norm);
  }
  gpu.PullState();
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
  const bool ok = worst_loss <= tol && worst_norm <= tol && params <= tol;
  std::printf("%s training %lld steps (losses %.2g, gradient norms %.2g, parameters %.2g)\n",
              ok ? "PASS" : "FAIL", static_cast<long long>(steps), worst_loss, worst_norm, params);
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace heiretsu

int main(int argc, char** argv) {
  using namespace heiretsu;
  if (argc < 2) {
    std::fprintf(stderr, "usage: heiretsu-cuda-check PLAN_FILE [--steps N] [--tolerance T]\n");
    return 2;
  }
  int64_t steps = 5;
  double tol = 1e-5;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--steps") == 0) steps = std::atoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--tolerance") == 0) tol = std::atof(argv[i + 1]);
  }
  if (cuda::DeviceCount() == 0) {
    std::printf("skipped: no GPU\n");
    return 0;
  }
  plan::LoadedPlan loaded;
  if (auto err = plan::LoadPlan(argv[1], &loaded)) {
    std::fprintf(stderr, "heiretsu-cuda-check: %s\n", err->message.c_str());
    return 2;
  }
  Device gpu;
  if (auto err = cuda::MakeCudaBackend(0, &gpu.backend)) {
    std::fprintf(stderr, "heiretsu-cuda-check: %s\n", err->message.c_str());
    return 1;
  }
  gpu.arena = gpu.backend->AllocateArena(loaded.plan->arena_bytes());
  int failures = CheckInstructions(*loaded.plan, gpu, tol);
  gpu.backend->FreeArena(gpu.arena);
  failures += CheckTraining(loaded, steps, tol);
  std::printf("cuda-check: %s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
