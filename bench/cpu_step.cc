// CPU training-step benchmark: runs a compiled plan's full optimizer step
// (forward, backward, AdamW) on random tokens and reports tokens/s and achieved
// GFLOP/s, with the model FLOPs per token 6N + 12 L H Q T (N parameters, L layers,
// H heads, Q head dim, T sequence length), beside OpenBLAS sgemm GFLOP/s measured in
// the same run on the model's own GEMM shapes (after every timed step, so drift and
// other load hit both).
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
#include <utility>
#include <vector>

#include "runtime/cpu/kernels.h"
#include "runtime/cpu/threading.h"
#include "runtime/cpu/vec.h"
#include "runtime/exec/executor.h"

using namespace heiretsu;
using Clock = std::chrono::steady_clock;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One measurement of sgemm GFLOP/s on C = op(A) op(B) (row-major, as the
// linears call it): as many calls as fill `min_s` seconds, after one untimed call.
struct Sgemm {
  bool ta, tb;
  int64_t m, n, k;
  float beta;
  std::vector<float> a, b, c;
  Sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float beta)
      : ta(ta), tb(tb), m(m), n(n), k(k), beta(beta), a(m * k, 0.5f), b(n * k, 0.25f),
        c(m * n, 0.f) {}
  double Flops() const { return 2.0 * m * n * k; }
  void Call() {
    cpu::Gemm<float>(ta, tb, m, n, k, 1.f, a.data(), b.data(), beta, c.data());
  }
  // Seconds per call.
  double Time(double min_s) {
    Call();
    int calls = 0;
    auto t0 = Clock::now();
    double s = 0;
    do {
      Call();
      ++calls;
      s = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (s < min_s);
    return s / calls;
  }
};

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
  // The sgemm references, measured after every timed step (so that the machine's
  // drift, and other load, hits steps and references alike):
  //   d_d, d_4d: the forward linear's shape [rows x d] x [d x d]^T and [d x 4d]^T;
  //   step: every GEMM of the step once (forward y = x W^T, dx = dy W, dW += dy^T x
  //   for QKV d->3d, the projection d->d, MLP up d->4d and down 4d->d, the head
  //   d->vocab), the FLOP-weighted rate (total FLOPs / total time).
  const int64_t rows = p.micro_batch_size() * seq, d = heads * head_dim;
  Sgemm ref_dd(false, true, rows, d, d, 0.f), ref_d4d(false, true, rows, 4 * d, d, 0.f);
  std::vector<Sgemm> step_gemms;
  for (auto [in, out] : std::vector<std::pair<int64_t, int64_t>>{
           {d, 3 * d}, {d, d}, {d, 4 * d}, {4 * d, d}, {d, static_cast<int64_t>(p.vocab())}}) {
    step_gemms.emplace_back(false, true, rows, out, in, 0.f);  // y = x W^T
    step_gemms.emplace_back(false, false, rows, in, out, 0.f);  // dx = dy W
    step_gemms.emplace_back(true, false, out, in, rows, 1.f);   // dW += dy^T x
  }
  std::vector<double> times, rate_dd, rate_d4d, rate_step;
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
    if (s <= warmup) continue;
    times.push_back(secs);
    rate_dd.push_back(ref_dd.Flops() / ref_dd.Time(0.05) / 1e9);
    rate_d4d.push_back(ref_d4d.Flops() / ref_d4d.Time(0.05) / 1e9);
    double flops = 0, t = 0;
    for (Sgemm& g : step_gemms) {
      flops += g.Flops();
      t += g.Time(0.01);
    }
    rate_step.push_back(flops / t / 1e9);
  }
  const double step_s = Median(times);
  const double flops_per_token = 6.0 * params + 12.0 * layers * heads * head_dim * seq;
  const double tok_s = tokens_per_step / step_s;
  const double gflops = flops_per_token * tok_s / 1e9;
  const double sgemm_dd = Median(rate_dd), sgemm_up = Median(rate_d4d);
  const double sgemm_step = Median(rate_step);
  std::string advice;
  const std::string blas = cpu::DescribeBlas(&advice);
  std::string steps_ms;
  for (double t : times) steps_ms += (steps_ms.empty() ? "" : ", ") + std::to_string(t * 1e3);
  std::printf("{\"model\": \"%s\", \"params\": %lld, \"micro_batch_size\": %lld, \"seq\": %lld, "
              "\"step_ms\": %.2f, \"tokens_per_s\": %.1f, \"gflops\": %.2f, "
              "\"sgemm_gflops_d_d\": %.2f, \"sgemm_gflops_d_4d\": %.2f, "
              "\"fraction_of_sgemm\": %.3f, \"sgemm_gflops_step_shapes\": %.2f, "
              "\"fraction_of_step_shapes\": %.3f, \"step_ms_each\": [%s], "
              "\"cpu_kernels\": \"%s\", \"blas\": \"%s\"}\n",
              p.model()->c_str(), static_cast<long long>(params),
              static_cast<long long>(p.micro_batch_size()), static_cast<long long>(seq),
              step_s * 1e3, tok_s, gflops, sgemm_dd, sgemm_up,
              gflops / std::max(sgemm_dd, sgemm_up), sgemm_step, gflops / sgemm_step,
              steps_ms.c_str(), cpu::vec::HasAvx2() ? "avx2" : "portable", blas.c_str());
  if (!advice.empty()) std::fprintf(stderr, "warning: %s\n", advice.c_str());
  if (profile) std::fprintf(stderr, "time by kernel:\n%s", ex.ProfileReport().c_str());
  return 0;
}
