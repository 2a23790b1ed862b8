// MoE expert-layer benchmark: times the grouped-GEMM experts (cpu::MoeExperts,
// cpu::MoeExpertsBackward) on random inputs and compares their GEMM rate with
// OpenBLAS sgemm (cpu::Gemm<float>) measured in the same run on the same shapes.
//
// Defaults: the MoE layer of examples/moe-gpt2-small.hr at micro-batch 4, seq 64:
// d = 768, f = 3072, 8 experts, top-2, capacity factor 1.25, so each expert gets
// ceil(1.25 * 64 * 2 / 8) = 20 slots per sequence, 4 sequences -> 80 rows.
//
// FLOPs count only the GEMMs: forward 2 (3 with swiglu) GEMMs of 2 * tokens * f * d
// per expert; backward twice that (dx and the weight gradients).
// The sgemm reference, per shape, runs the experts' own GEMMs one after the other
// through cpu::Gemm<float> on the experts' own operands (`sgemm_gflops`: the same
// memory traffic as the layer, each expert's weights read once), and the same
// number of calls on expert 0's operands only (`sgemm_hot_gflops`: its weights stay
// in the cache, as in heiretsu-bench-cpu's sgemm). The mean over shapes weights
// each shape by its FLOPs: total FLOPs / total time.
// Each repetition times the forward, the backward and every sgemm shape in turn, so
// the machine's drift affects them alike; the figures are medians over repetitions.
// `breakdown_ms` splits the layer's time: its GEMMs (sum of the per-shape sgemm
// medians times their counts), the activation (GeluForward / SwigluForward,
// GeluBackward / SwigluBackward over all rows), and the rest (buffers, zeroing).
//
// usage: heiretsu-bench-moe [--experts 8] [--tokens 80] [--d 768] [--f 3072]
//                           [--swiglu 0|1] [--reps 10] [--warmup 2]
// Prints one JSON object.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/cpu/kernels.h"
#include "runtime/cpu/threading.h"

using namespace heiretsu;
using Clock = std::chrono::steady_clock;

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double Seconds(F&& f) {
  auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Uniform in [-scale, scale), splitmix64: fast enough for the ~10^8 weights.
void Fill(std::vector<float>* v, float scale, uint64_t seed) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& x : *v) {
    z += 0x9E3779B97F4A7C15ull;
    uint64_t r = z;
    r = (r ^ (r >> 30)) * 0xBF58476D1CE4E5B9ull;
    r = (r ^ (r >> 27)) * 0x94D049BB133111EBull;
    r ^= r >> 31;
    x = scale * (static_cast<float>(r >> 40) / static_cast<float>(1ull << 23) - 1.f);
  }
}

// The experts' kernels with every row of each expert's region in use (one count
// per expert: `tokens`).
void Forward(const cpu::MoeExpertShape& s, const int32_t* rows, const float* x, const float* w_in,
             const float* w_gate, const float* w_out, float* pre, float* gate_pre, float* act,
             float* y) {
  cpu::MoeExperts<float>(s, rows, x, w_in, w_gate, w_out, pre, gate_pre, act, y);
}

void Backward(const cpu::MoeExpertShape& s, const int32_t* rows, const float* dy, const float* x,
              const float* w_in, const float* w_gate, const float* w_out, const float* pre,
              const float* gate_pre, const float* act, float* dx, float* dw_in, float* dw_gate,
              float* dw_out) {
  cpu::MoeExpertsBackward<float>(s, rows, dy, x, w_in, w_gate, w_out, pre, gate_pre, act, 1.0,
                                 dx, dw_in, dw_gate, dw_out, false);
}

// One GEMM shape of the layer: C[m,n] = op(A) op(B) (+ C), `count` calls per expert
// (2 for the w_in shapes with swiglu: w_in and w_gate).
struct Shape {
  const char* name;
  const char* pass;  // "forward" or "backward"
  bool ta, tb;
  int64_t m, n, k;
  float beta;
  int count;
  // Operands of expert e.
  const float* (*a)(int64_t e);
  const float* (*b)(int64_t e);
  float* (*c)(int64_t e);
  std::vector<double> cold, hot;  // GFLOP/s per repetition
  double Flops() const { return 2.0 * m * n * k; }
};

}  // namespace

// The layer's buffers, global so the shapes' operand functions can reach them.
static std::vector<float> g_x, g_w_in, g_w_gate, g_w_out, g_pre, g_gate_pre, g_act, g_y;
static std::vector<float> g_dy, g_dx, g_dw_in, g_dw_gate, g_dw_out, g_dact, g_dpre, g_dgate;
static int64_t g_xs, g_hs, g_ws;

int main(int argc, char** argv) {
  if (auto err = cpu::PrepareThreads(argv)) {
    std::fprintf(stderr, "%s\n", err->message.c_str());
    return 2;
  }
  int64_t experts = 8, tokens = 80, d = 768, f = 3072, reps = 10, warmup = 2;
  bool swiglu = false;
  for (int i = 1; i < argc; i += 2) {
    std::string flag = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "flag %s needs a value\n", flag.c_str());
      return 2;
    }
    int64_t v = std::atoll(argv[i + 1]);
    if (flag == "--experts") experts = v;
    else if (flag == "--tokens") tokens = v;
    else if (flag == "--d") d = v;
    else if (flag == "--f") f = v;
    else if (flag == "--swiglu") swiglu = v != 0;
    else if (flag == "--reps") reps = v;
    else if (flag == "--warmup") warmup = v;
    else {
      std::fprintf(stderr,
                   "unknown flag %s\nusage: heiretsu-bench-moe [--experts E] [--tokens T] [--d D] "
                   "[--f F] [--swiglu 0|1] [--reps N] [--warmup W]\n",
                   flag.c_str());
      return 2;
    }
  }
  if (experts < 1 || tokens < 1 || d < 1 || f < 1 || reps < 1 || warmup < 0) {
    std::fprintf(stderr, "--experts, --tokens, --d, --f and --reps must be positive\n");
    return 2;
  }
  g_xs = tokens * d;
  g_hs = tokens * f;
  g_ws = f * d;
  const int64_t E = experts;
  g_x.resize(E * g_xs);
  g_dy.resize(E * g_xs);
  g_w_in.resize(E * g_ws);
  g_w_out.resize(E * g_ws);
  Fill(&g_x, 1.f, 1);
  Fill(&g_dy, 1e-2f, 2);
  Fill(&g_w_in, 0.035f, 3);  // ~ N(0, 0.02) in scale
  Fill(&g_w_out, 0.035f, 4);
  if (swiglu) {
    g_w_gate.resize(E * g_ws);
    Fill(&g_w_gate, 0.035f, 5);
    g_gate_pre.resize(E * g_hs);
    g_dw_gate.assign(E * g_ws, 0.f);
    g_dgate.resize(E * g_hs);
  }
  g_pre.resize(E * g_hs);
  g_act.resize(E * g_hs);
  g_y.resize(E * g_xs);
  g_dx.resize(E * g_xs);
  g_dw_in.assign(E * g_ws, 0.f);
  g_dw_out.assign(E * g_ws, 0.f);
  g_dact.resize(E * g_hs);
  g_dpre.resize(E * g_hs);
  const std::vector<int32_t> rows(E, static_cast<int32_t>(tokens));  // every row in use
  cpu::MoeExpertShape s{experts, tokens, d, f, swiglu};
  float* const gate = swiglu ? g_gate_pre.data() : nullptr;
  const float* const w_gate = swiglu ? g_w_gate.data() : nullptr;
  float* const dw_gate = swiglu ? g_dw_gate.data() : nullptr;

  // The layer's GEMMs, as MoeExperts / MoeExpertsBackward issue them per expert.
  std::vector<Shape> shapes = {
      {"x w_in^T: [tokens x d] [f x d]^T", "forward", false, true, tokens, f, d, 0.f,
       swiglu ? 2 : 1, [](int64_t e) -> const float* { return g_x.data() + e * g_xs; },
       [](int64_t e) -> const float* { return g_w_in.data() + e * g_ws; },
       [](int64_t e) { return g_pre.data() + e * g_hs; }, {}, {}},
      {"act w_out^T: [tokens x f] [d x f]^T", "forward", false, true, tokens, d, f, 0.f, 1,
       [](int64_t e) -> const float* { return g_act.data() + e * g_hs; },
       [](int64_t e) -> const float* { return g_w_out.data() + e * g_ws; },
       [](int64_t e) { return g_y.data() + e * g_xs; }, {}, {}},
      {"dw_out += dy^T act: [tokens x d]^T [tokens x f]", "backward", true, false, d, f, tokens,
       1.f, 1, [](int64_t e) -> const float* { return g_dy.data() + e * g_xs; },
       [](int64_t e) -> const float* { return g_act.data() + e * g_hs; },
       [](int64_t e) { return g_dw_out.data() + e * g_ws; }, {}, {}},
      {"dact = dy w_out: [tokens x d] [d x f]", "backward", false, false, tokens, f, d, 0.f, 1,
       [](int64_t e) -> const float* { return g_dy.data() + e * g_xs; },
       [](int64_t e) -> const float* { return g_w_out.data() + e * g_ws; },
       [](int64_t e) { return g_dact.data() + e * g_hs; }, {}, {}},
      {"dw_in += dpre^T x: [tokens x f]^T [tokens x d]", "backward", true, false, f, d, tokens,
       1.f, swiglu ? 2 : 1, [](int64_t e) -> const float* { return g_dpre.data() + e * g_hs; },
       [](int64_t e) -> const float* { return g_x.data() + e * g_xs; },
       [](int64_t e) { return g_dw_in.data() + e * g_ws; }, {}, {}},
      {"dx = dpre w_in: [tokens x f] [f x d]", "backward", false, false, tokens, d, f, 0.f,
       swiglu ? 2 : 1, [](int64_t e) -> const float* { return g_dpre.data() + e * g_hs; },
       [](int64_t e) -> const float* { return g_w_in.data() + e * g_ws; },
       [](int64_t e) { return g_dx.data() + e * g_xs; }, {}, {}},
  };

  std::vector<double> fwd_s, bwd_s, act_f_s, act_b_s;
  const int64_t n_act = E * g_hs;
  for (int64_t rep = 0; rep < warmup + reps; ++rep) {
    const bool keep = rep >= warmup;
    double t = Seconds([&] {
      Forward(s, rows.data(), g_x.data(), g_w_in.data(), w_gate, g_w_out.data(), g_pre.data(),
              gate, g_act.data(), g_y.data());
    });
    if (keep) fwd_s.push_back(t);
    t = Seconds([&] {
      Backward(s, rows.data(), g_dy.data(), g_x.data(), g_w_in.data(), w_gate, g_w_out.data(),
               g_pre.data(), gate, g_act.data(), g_dx.data(), g_dw_in.data(), dw_gate,
               g_dw_out.data());
    });
    if (keep) bwd_s.push_back(t);
    for (Shape& sh : shapes) {
      // Each expert's GEMM once, on its own operands (count calls in all: the
      // swiglu shapes twice, as the layer does).
      const int64_t calls = E * sh.count;
      t = Seconds([&] {
        for (int64_t i = 0; i < calls; ++i) {
          const int64_t e = i % E;
          cpu::Gemm<float>(sh.ta, sh.tb, sh.m, sh.n, sh.k, 1.f, sh.a(e), sh.b(e), sh.beta,
                           sh.c(e));
        }
      });
      if (keep) sh.cold.push_back(calls * sh.Flops() / t / 1e9);
      t = Seconds([&] {
        for (int64_t i = 0; i < calls; ++i)
          cpu::Gemm<float>(sh.ta, sh.tb, sh.m, sh.n, sh.k, 1.f, sh.a(0), sh.b(0), sh.beta,
                           sh.c(0));
      });
      if (keep) sh.hot.push_back(calls * sh.Flops() / t / 1e9);
    }
    t = Seconds([&] {
      if (swiglu)
        cpu::SwigluForward(g_gate_pre.data(), g_pre.data(), g_act.data(), n_act);
      else
        cpu::GeluForward(g_pre.data(), g_act.data(), n_act);
    });
    if (keep) act_f_s.push_back(t);
    t = Seconds([&] {
      if (swiglu)
        cpu::SwigluBackward(g_dact.data(), g_gate_pre.data(), g_pre.data(), g_dgate.data(),
                            g_dpre.data(), n_act, false);
      else
        cpu::GeluBackward(g_dact.data(), g_pre.data(), g_dpre.data(), n_act, false);
    });
    if (keep) act_b_s.push_back(t);
  }

  // FLOPs and GEMM time (at the sgemm medians) per pass.
  struct Pass {
    double flops = 0, cold_s = 0, hot_s = 0;
  } fwd, bwd;
  std::string shape_json;
  for (const Shape& sh : shapes) {
    const double flops = E * sh.count * sh.Flops();
    const double cold = Median(sh.cold), hot = Median(sh.hot);
    Pass& p = std::string(sh.pass) == "forward" ? fwd : bwd;
    p.flops += flops;
    p.cold_s += flops / (cold * 1e9);
    p.hot_s += flops / (hot * 1e9);
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "%s{\"pass\": \"%s\", \"gemm\": \"%s\", \"m\": %lld, \"n\": %lld, \"k\": %lld, "
                  "\"calls\": %lld, \"sgemm_gflops\": %.2f, \"sgemm_hot_gflops\": %.2f}",
                  shape_json.empty() ? "" : ", ", sh.pass, sh.name, static_cast<long long>(sh.m),
                  static_cast<long long>(sh.n), static_cast<long long>(sh.k),
                  static_cast<long long>(E * sh.count), cold, hot);
    shape_json += buf;
  }
  const double f_s = Median(fwd_s), b_s = Median(bwd_s);
  const double f_g = fwd.flops / f_s / 1e9, b_g = bwd.flops / b_s / 1e9;
  const double all_g = (fwd.flops + bwd.flops) / (f_s + b_s) / 1e9;
  const double sg_f = fwd.flops / fwd.cold_s / 1e9, sg_b = bwd.flops / bwd.cold_s / 1e9;
  const double sg_all = (fwd.flops + bwd.flops) / (fwd.cold_s + bwd.cold_s) / 1e9;
  const double sh_f = fwd.flops / fwd.hot_s / 1e9, sh_b = bwd.flops / bwd.hot_s / 1e9;
  const double sh_all = (fwd.flops + bwd.flops) / (fwd.hot_s + bwd.hot_s) / 1e9;
  const double af = Median(act_f_s), ab = Median(act_b_s);
  std::string advice;
  const std::string blas = cpu::DescribeBlas(&advice);
  std::printf(
      "{\"bench\": \"moe_experts\", \"experts\": %lld, \"tokens\": %lld, \"d\": %lld, \"f\": %lld, "
      "\"swiglu\": %s, \"reps\": %lld, \"shapes\": [%s], "
      "\"forward_ms\": %.2f, \"backward_ms\": %.2f, \"forward_gflops\": %.2f, "
      "\"backward_gflops\": %.2f, \"gflops\": %.2f, "
      "\"sgemm_gflops\": {\"forward\": %.2f, \"backward\": %.2f, \"overall\": %.2f}, "
      "\"sgemm_hot_gflops\": {\"forward\": %.2f, \"backward\": %.2f, \"overall\": %.2f}, "
      "\"fraction\": {\"forward\": %.3f, \"backward\": %.3f, \"overall\": %.3f}, "
      "\"fraction_of_hot\": {\"forward\": %.3f, \"backward\": %.3f, \"overall\": %.3f}, "
      "\"breakdown_ms\": {\"forward\": {\"gemm\": %.2f, \"activation\": %.2f, \"rest\": %.2f}, "
      "\"backward\": {\"gemm\": %.2f, \"activation\": %.2f, \"rest\": %.2f}}, "
      "\"blas\": \"%s\"}\n",
      static_cast<long long>(experts), static_cast<long long>(tokens), static_cast<long long>(d),
      static_cast<long long>(f), swiglu ? "true" : "false", static_cast<long long>(reps),
      shape_json.c_str(), f_s * 1e3, b_s * 1e3, f_g, b_g, all_g, sg_f, sg_b, sg_all, sh_f, sh_b,
      sh_all, f_g / sg_f, b_g / sg_b, all_g / sg_all, f_g / sh_f, b_g / sh_b, all_g / sh_all,
      fwd.cold_s * 1e3, af * 1e3, (f_s - fwd.cold_s - af) * 1e3, bwd.cold_s * 1e3, ab * 1e3,
      (b_s - bwd.cold_s - ab) * 1e3, blas.c_str());
  if (!advice.empty()) std::fprintf(stderr, "warning: %s\n", advice.c_str());
  return 0;
}
