// Standalone fp32 GEMM benchmark of heiretsu's linear-layer shapes (issue #15, item 1:
// choose the CPU BLAS by measurement). No heiretsu library is used: one source, built
// once per library by bench/run-blas.sh with exactly one of
//   -DBENCH_OPENBLAS  cblas_sgemm from OpenBLAS (what runtime/cpu/kernels.cc calls)
//   -DBENCH_BLIS      bli_sgemm, BLIS's typed API (row stride = ld, column stride 1)
//   -DBENCH_DNNL      dnnl_sgemm from oneDNN (row-major by definition)
//
// The GEMMs, row-major as in kernels.cc, for a linear layer W[out,in] on x[rows,in]:
//   fwd  y[rows,out]  = x[rows,in] W[out,in]^T          (N,T; m=rows n=out k=in)
//   dx   dx[rows,in]  = dy[rows,out] W[out,in]          (N,N; m=rows n=in  k=out)
//   dW   dW[out,in]  += dy[rows,out]^T x[rows,in]       (T,N; m=out  n=in  k=rows; beta 1)
//
// usage: blas_gemm            time every shape; one JSON object per (shape, GEMM) on stdout
//        blas_gemm --info     the library, its version and kernel, its threads
//        blas_gemm --check    compare the three GEMMs of one shape with a float64
//                             reference; exit 1 if the error is above 1e-5
// Timing: 2 warm-up reps, then the median of 7 reps. A rep is one call, or for small
// GEMMs as many back-to-back calls as fill >= 20 ms (calibrated on the warm-ups),
// reported per call.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#if defined(BENCH_OPENBLAS) + defined(BENCH_BLIS) + defined(BENCH_DNNL) != 1
#error "define exactly one of BENCH_OPENBLAS, BENCH_BLIS, BENCH_DNNL"
#endif

#if defined(BENCH_OPENBLAS)
#include <cblas.h>
#elif defined(BENCH_BLIS)
#include <blis.h>
#else
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#endif

namespace {

// C[m,n] = op(A) op(B) + beta C, all row-major; op(A) is m x k, op(B) is k x n.
void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
#if defined(BENCH_OPENBLAS)
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
#elif defined(BENCH_BLIS)
  float alpha = 1.0f;
  // The strides describe the stored matrix (k x m for a transposed A).
  bli_sgemm(ta ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, tb ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, m,
            n, k, &alpha, const_cast<float*>(a), lda, 1, const_cast<float*>(b), ldb, 1, &beta, c,
            ldc, 1);
#else
  if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc) !=
      dnnl_success) {
    std::fprintf(stderr, "dnnl_sgemm failed\n");
    std::exit(2);
  }
#endif
}

std::string Library() {
#if defined(BENCH_OPENBLAS)
  return "openblas";
#elif defined(BENCH_BLIS)
  return "blis";
#else
  return "onednn";
#endif
}

std::string Version() {
#if defined(BENCH_OPENBLAS)
  std::string v = openblas_get_config();
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
#elif defined(BENCH_BLIS)
  return std::string("BLIS ") + bli_info_get_version_str();
#else
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) + (v->cpu_runtime == DNNL_RUNTIME_OMP ? " (OpenMP)" : "");
#endif
}

// The kernel family the library picked for this CPU.
std::string Kernel() {
#if defined(BENCH_OPENBLAS)
  return openblas_get_corename();
#elif defined(BENCH_BLIS)
  return bli_arch_string(bli_arch_query_id());
#else
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "isa " + std::to_string(static_cast<int>(dnnl_get_effective_cpu_isa()));
  }
#endif
}

int Threads() {
#if defined(BENCH_OPENBLAS)
  return openblas_get_num_threads();
#elif defined(BENCH_BLIS)
  return static_cast<int>(bli_thread_get_num_threads());
#else
  return omp_get_max_threads();
#endif
}

struct Shape {
  const char* model;
  const char* layer;
  int64_t rows, in, out;
};

// GPT-2 small (d 768, hidden 3072, llm.c's padded vocab 50304) and gpt-tiny
// (examples/gpt-tiny.hr: d 128, hidden 4 * d = 512, vocab 256), rows = micro-batch x seq.
std::vector<Shape> Shapes() {
  std::vector<Shape> s;
  struct Layer { const char* name; int64_t in, out; };
  const Layer tiny[] = {{"qkv", 128, 384}, {"attn_out", 128, 128}, {"mlp_up", 128, 512},
                        {"mlp_down", 512, 128}, {"head", 128, 256}};
  const Layer small[] = {{"qkv", 768, 2304}, {"attn_out", 768, 768}, {"mlp_up", 768, 3072},
                         {"mlp_down", 3072, 768}, {"head", 768, 50304}};
  for (const Layer& l : tiny) s.push_back({"gpt-tiny", l.name, 256, l.in, l.out});
  for (int64_t rows : {256, 4096})
    for (const Layer& l : small) s.push_back({"gpt2-small", l.name, rows, l.in, l.out});
  return s;
}

float* Alloc(int64_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, 64, static_cast<size_t>(n) * sizeof(float)) != 0) {
    std::fprintf(stderr, "out of memory (%lld floats)\n", static_cast<long long>(n));
    std::exit(2);
  }
  return static_cast<float*>(p);
}

void Fill(float* p, int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) p[i] = u(gen);
}

struct Buffers {
  int64_t rows, in, out;
  float *x, *w, *y, *dy, *dx, *dw;
  explicit Buffers(const Shape& s) : rows(s.rows), in(s.in), out(s.out) {
    x = Alloc(rows * in); w = Alloc(out * in); y = Alloc(rows * out);
    dy = Alloc(rows * out); dx = Alloc(rows * in); dw = Alloc(out * in);
    Fill(x, rows * in, 1); Fill(w, out * in, 2); Fill(dy, rows * out, 3);
    std::memset(y, 0, sizeof(float) * rows * out);
    std::memset(dx, 0, sizeof(float) * rows * in);
    Fill(dw, out * in, 4);
  }
  ~Buffers() { for (float* p : {x, w, y, dy, dx, dw}) std::free(p); }
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
};

const char* const kOps[] = {"fwd", "dx", "dW"};

void Run(Buffers& b, int op) {
  switch (op) {
    case 0: Gemm(false, true, b.rows, b.out, b.in, b.x, b.in, b.w, b.in, 0.0f, b.y, b.out); break;
    case 1: Gemm(false, false, b.rows, b.in, b.out, b.dy, b.out, b.w, b.in, 0.0f, b.dx, b.in); break;
    default: Gemm(true, false, b.out, b.in, b.rows, b.dy, b.out, b.x, b.in, 1.0f, b.dw, b.in); break;
  }
}

double Seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Max over elements of |c - ref| / sum_k |a_ik b_kj| (the scale of a float dot
// product's rounding error, defined even where ref is near 0), in float64.
double CheckOp(Buffers& b, int op) {
  const int64_t m = op == 0 ? b.rows : op == 1 ? b.rows : b.out;
  const int64_t n = op == 0 ? b.out : b.in;
  const int64_t k = op == 0 ? b.in : op == 1 ? b.out : b.rows;
  std::vector<float> c0;
  if (op == 2) c0.assign(b.dw, b.dw + b.out * b.in);
  Run(b, op);
  const float* c = op == 0 ? b.y : op == 1 ? b.dx : b.dw;
  auto A = [&](int64_t i, int64_t p) -> double {
    return op == 0 ? b.x[i * b.in + p] : op == 1 ? b.dy[i * b.out + p] : b.dy[p * b.out + i];
  };
  auto B = [&](int64_t p, int64_t j) -> double {
    return op == 0 ? b.w[j * b.in + p] : op == 1 ? b.w[p * b.in + j] : b.x[p * b.in + j];
  };
  double worst = 0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = op == 2 ? c0[i * n + j] : 0.0, scale = op == 2 ? std::fabs(ref) : 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double t = A(i, p) * B(p, j);
        ref += t;
        scale += std::fabs(t);
      }
      worst = std::max(worst, std::fabs(c[i * n + j] - ref) / std::max(scale, 1e-30));
    }
  return worst;
}

std::string Common() {
  return "\"library\": \"" + Library() + "\", \"version\": \"" + Version() +
         "\", \"kernel\": \"" + Kernel() + "\", \"threads\": " + std::to_string(Threads());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--info") == 0) {
    std::printf("{%s}\n", Common().c_str());
    return 0;
  }
  const bool check = argc > 1 && std::strcmp(argv[1], "--check") == 0;
  if (check) {
    // GPT-2 small's MLP up at rows 256: k = 768 (fwd), 3072 (dx), 256 (dW).
    Buffers b(Shape{"gpt2-small", "mlp_up", 256, 768, 3072});
    double worst = 0;
    std::string per;
    for (int op = 0; op < 3; ++op) {
      const double e = CheckOp(b, op);
      worst = std::max(worst, e);
      char buf[64];
      std::snprintf(buf, sizeof buf, "%s\"%s\": %.3g", op ? ", " : "", kOps[op], e);
      per += buf;
    }
    std::printf("{%s, \"check\": \"gpt2-small mlp_up rows 256 vs float64\", "
                "\"max_rel_err\": {%s}, \"ok\": %s}\n",
                Common().c_str(), per.c_str(), worst <= 1e-5 ? "true" : "false");
    return worst <= 1e-5 ? 0 : 1;
  }
  for (const Shape& s : Shapes()) {
    Buffers b(s);
    for (int op = 0; op < 3; ++op) {
      int64_t calls = 1;
      double warm = 1e30;
      for (int w = 0; w < 2; ++w) {
        const double t0 = Seconds();
        Run(b, op);
        warm = std::min(warm, Seconds() - t0);
      }
      if (warm < 0.02) calls = std::min<int64_t>(10000, static_cast<int64_t>(std::ceil(0.02 / warm)));
      std::vector<double> reps;
      for (int r = 0; r < 7; ++r) {
        const double t0 = Seconds();
        for (int64_t c = 0; c < calls; ++c) Run(b, op);
        reps.push_back((Seconds() - t0) / static_cast<double>(calls));
      }
      std::sort(reps.begin(), reps.end());
      const double t = reps[3];
      const double m = op == 2 ? s.out : s.rows, n = op == 0 ? s.out : s.in,
                   k = op == 0 ? s.in : op == 1 ? s.out : s.rows;
      const double gflops = 2.0 * m * n * k / t / 1e9;
      std::printf("{%s, \"model\": \"%s\", \"layer\": \"%s\", \"gemm\": \"%s\", \"rows\": %lld, "
                  "\"in\": %lld, \"out\": %lld, \"m\": %.0f, \"n\": %.0f, \"k\": %.0f, "
                  "\"calls_per_rep\": %lld, \"median_ms\": %.4f, \"min_ms\": %.4f, "
                  "\"gflops\": %.1f}\n",
                  Common().c_str(), s.model, s.layer, kOps[op], static_cast<long long>(s.rows),
                  static_cast<long long>(s.in), static_cast<long long>(s.out), m, n, k,
                  static_cast<long long>(calls), t * 1e3, reps[0] * 1e3, gflops);
      std::fflush(stdout);
    }
  }
  return 0;
}
