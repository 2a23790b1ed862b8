// heiretsu-gradcheck PLAN_FILE: checks a compiled training step's gradients (the
// autodiff pass's output, run by the executor) against finite differences of its
// loss, in float32, along random directions through all parameters at once:
//   (L(p + h v) - L(p - h v)) / 2h  vs  g . v
// with v = g/|g| + r/|r| for random r.
// Prints one line per direction and exits 1 if any relative error exceeds the
// tolerance. Float32 limits the precision to about 1e-3 at h = 1e-2 relative to
// the parameters; an autodiff bug gives errors of order 1.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "runtime/cpu/threading.h"
#include "runtime/exec/executor.h"

using namespace heiretsu;

int main(int argc, char** argv) {
  if (auto err = cpu::PrepareThreads(argv)) {
    std::fprintf(stderr, "%s\n", err->message.c_str());
    return 2;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: heiretsu-gradcheck PLAN_FILE [directions] [tolerance]\n");
    return 2;
  }
  int directions = argc > 2 ? std::atoi(argv[2]) : 4;
  double tolerance = argc > 3 ? std::atof(argv[3]) : 1e-3;
  plan::LoadedPlan loaded;
  if (auto err = plan::LoadPlan(argv[1], &loaded)) {
    std::fprintf(stderr, "%s\n", err->message.c_str());
    return 2;
  }
  const plan::fb::Plan& p = *loaded.plan;
  exec::Executor ex(loaded);
  ex.InitializeParameters(7);
  // A fixed batch of pseudo-random tokens (vocabulary-wide).
  const int64_t n = p.micro_batch_size() * p.seq();
  auto fill = [&](int64_t m, int32_t* tokens, int32_t* targets) {
    std::mt19937 gen(static_cast<uint32_t>(100 + m));
    for (int64_t i = 0; i < n; ++i) {
      tokens[i] = static_cast<int32_t>(gen() % p.vocab());
      targets[i] = static_cast<int32_t>(gen() % p.vocab());
    }
  };
  double loss = 0;
  if (auto err = ex.ComputeGradients(fill, &loss)) {
    std::fprintf(stderr, "%s\n", err->message.c_str());
    return 1;
  }
  // Copy parameters and gradients.
  struct Tensor {
    float* value;
    std::vector<float> saved, grad;
  };
  std::vector<Tensor> params;
  for (const plan::fb::Param* param : *p.params()) {
    int64_t size = plan::NumElements(*p.buffers()->Get(param->value()));
    float* v = ex.F32(param->value());
    float* g = ex.F32(param->grad());
    params.push_back({v, std::vector<float>(v, v + size), std::vector<float>(g, g + size)});
  }
  std::printf("loss %.6f, %zu parameters\n", loss, params.size());
  std::mt19937 gen(2024);
  std::normal_distribution<float> normal(0.f, 1.f);
  int failures = 0;
  for (int d = 0; d < directions; ++d) {
    // Direction: the unit gradient plus an equal-norm random part, so that g . v
    // is of order |g| (a purely random direction in this many dimensions would
    // be nearly orthogonal to g and the check would measure noise).
    double gnorm = 0, rnorm = 0;
    std::vector<std::vector<float>> noise;
    for (Tensor& t : params) {
      noise.emplace_back(t.saved.size());
      for (size_t i = 0; i < t.saved.size(); ++i) {
        noise.back()[i] = normal(gen);
        rnorm += static_cast<double>(noise.back()[i]) * noise.back()[i];
        gnorm += static_cast<double>(t.grad[i]) * t.grad[i];
      }
    }
    gnorm = std::sqrt(gnorm);
    rnorm = std::sqrt(rnorm);
    std::vector<std::vector<float>> dir;
    double gv = 0;
    for (size_t k = 0; k < params.size(); ++k) {
      Tensor& t = params[k];
      dir.emplace_back(t.saved.size());
      for (size_t i = 0; i < t.saved.size(); ++i) {
        dir.back()[i] = static_cast<float>(t.grad[i] / gnorm + noise[k][i] / rnorm);
        gv += static_cast<double>(dir.back()[i]) * t.grad[i];
      }
    }
    const double h = 1e-3;
    double losses[2];
    for (int sign = 0; sign < 2; ++sign) {
      for (size_t k = 0; k < params.size(); ++k)
        for (size_t i = 0; i < params[k].saved.size(); ++i)
          params[k].value[i] =
              params[k].saved[i] + static_cast<float>((sign ? -h : h) * dir[k][i]);
      if (auto err = ex.ComputeGradients(fill, &losses[sign])) {
        std::fprintf(stderr, "%s\n", err->message.c_str());
        return 1;
      }
    }
    for (Tensor& t : params) std::copy(t.saved.begin(), t.saved.end(), t.value);
    double fd = (losses[0] - losses[1]) / (2 * h);
    double rel = std::fabs(fd - gv) / std::max(std::fabs(gv), 1e-12);
    bool ok = rel <= tolerance;
    failures += !ok;
    std::printf("%s direction %d: finite difference %.6e, gradient %.6e, relative error %.2e\n",
                ok ? "PASS" : "FAIL", d, fd, gv, rel);
  }
  std::printf("%d passed, %d failed\n", directions - failures, failures);
  return failures ? 1 : 0;
}
