// CPU training-step benchmark: runs a compiled plan's full optimizer step
// (forward, backward, AdamW) on random tokens and reports tokens/s and achieved
// GFLOP/s, with the model FLOPs per token 6N + 12 L H Q T (N parameters, L layers,
// H heads, Q head dim, T sequence length), beside OpenBLAS sgemm GFLOP/s measured in
// the same run on the model's own GEMM shapes.
//
// usage: heiretsu-bench-cpu PLAN_FILE --layers L --heads H --head-dim Q
//                           [--steps N] [--warmup W] [--profile 1]
// Prints one JSON object.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "runtime/cpu/kernels.h"
#include "runtime/cpu/threading.h"
#include "runtime/exec/executor.h"

using namespace heiretsu;
using Clock = std::chrono::steady_clock;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median sgemm GFLOP/s of C[m,n] = A[m,k] B[n,k]^T (the forward linear's shape).
double SgemmGflops(int64_t m, int64_t n, int64_t k) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  std::vector<double> rates;
  for (int rep = 0; rep < 7; ++rep) {
    auto t0 = Clock::now();
    cpu::Gemm<float>(false, true, m, n, k, 1.f, a.data(), b.data(), 0.f, c.data());
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (rep > 0) rates.push_back(2.0 * m * n * k / s / 1e9);
  }
  return Median(rates);
}

}  // namespace

int main(int argc, char** argv) {
  if (auto err = cpu::PrepareThreads(argv)) {
    std::fprintf(stderr, "%s\n", err->message.c_str());
    return 2;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: heiretsu-bench-cpu PLAN_FILE --layers L --heads H --head-dim Q "
                         "[--steps N] [--warmup W]\n");
    return 2;
  }
  int64_t layers = 0, heads = 0, head_dim = 0, steps = 10, warmup = 2;
  bool profile = false;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string f = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (f == "--layers") layers = v;
    else if (f == "--heads") heads = v;
    else if (f == "--head-dim") head_dim = v;
    else if (f == "--steps") steps = v;
    else if (f == "--warmup") warmup = v;
    else if (f == "--profile") profile = v != 0;
    else {
      std::fprintf(stderr, "unknown flag %s\n", f.c_str());
      return 2;
    }
  }
  plan::LoadedPlan loaded;
  if (auto err = plan::LoadPlan(argv[1], &loaded)) {
    std::fprintf(stderr, "%s\n", err->message.c_str());
    return 2;
  }
  const plan::fb::Plan& p = *loaded.plan;
  exec::Executor ex(loaded);
  ex.InitializeParameters(1);
  int64_t params = 0;
  for (const plan::fb::Param* param : *p.params())
    params += plan::NumElements(*p.buffers()->Get(param->value()));
  const int64_t seq = p.seq(), tokens_per_step = p.micro_batch_size() * p.microbatches() * seq;
  std::mt19937 gen(3);
  auto fill = [&](int64_t, int32_t* t, int32_t* y) {
    for (int64_t i = 0; i < p.micro_batch_size() * seq; ++i) {
      t[i] = static_cast<int32_t>(gen() % p.vocab());
      y[i] = static_cast<int32_t>(gen() % p.vocab());
    }
  };
  ex.set_profiling(profile);
  std::vector<double> times;
  for (int64_t s = 1; s <= warmup + steps; ++s) {
    exec::StepOptions o;
    o.lr = 1e-4;
    o.step = s;
    exec::StepResult r;
    auto t0 = Clock::now();
    if (auto err = ex.Step(fill, o, &r)) {
      std::fprintf(stderr, "%s\n", err->message.c_str());
      return 1;
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s > warmup) times.push_back(secs);
  }
  const double step_s = Median(times);
  const double flops_per_token = 6.0 * params + 12.0 * layers * heads * head_dim * seq;
  const double tok_s = tokens_per_step / step_s;
  const double gflops = flops_per_token * tok_s / 1e9;
  const int64_t rows = p.micro_batch_size() * seq, d = heads * head_dim;
  const double sgemm_dd = SgemmGflops(rows, d, d);
  const double sgemm_up = SgemmGflops(rows, 4 * d, d);
  std::string advice;
  const std::string blas = cpu::DescribeBlas(&advice);
  std::printf("{\"model\": \"%s\", \"params\": %lld, \"micro_batch_size\": %lld, \"seq\": %lld, "
              "\"step_ms\": %.2f, \"tokens_per_s\": %.1f, \"gflops\": %.2f, "
              "\"sgemm_gflops_d_d\": %.2f, \"sgemm_gflops_d_4d\": %.2f, "
              "\"fraction_of_sgemm\": %.3f, \"blas\": \"%s\"}\n",
              p.model()->c_str(), static_cast<long long>(params),
              static_cast<long long>(p.micro_batch_size()), static_cast<long long>(seq),
              step_s * 1e3, tok_s, gflops, sgemm_dd, sgemm_up,
              gflops / std::max(sgemm_dd, sgemm_up), blas.c_str());
  if (!advice.empty()) std::fprintf(stderr, "warning: %s\n", advice.c_str());
  if (profile) std::fprintf(stderr, "time by kernel:\n%s", ex.ProfileReport().c_str());
  return 0;
}
