// Thread settings the CPU backend needs before any kernel runs.
//
// OpenMP (our elementwise kernels) and OpenBLAS (GEMMs, its own pthreads) share the
// cores. GNU OpenMP's idle workers spin after each parallel region by default, and
// on a small machine they steal the cores OpenBLAS's threads need for the GEMM that
// follows: a GPT-2 small step on 2 cores runs 2.5x slower. libgomp reads its wait
// policy once, when it loads, so the only reliable switch is the environment:
// EnsureCpuEnvironment sets OMP_WAIT_POLICY=PASSIVE unless the user already chose a
// policy. OpenBLAS likewise picks its kernels once, when it loads, from its own
// table of CPUs, which does not know every CPU (kernels.h: OpenBlasCoreOverride):
// on a CPU with AVX-512 it detected as one without, OPENBLAS_CORETYPE=SkylakeX is
// set (and HEIRETSU_OPENBLAS_DETECTED to what it detected, which the run's "blas:"
// line reports) unless the user set OPENBLAS_CORETYPE. If anything was set, the
// program re-executes itself once to load the libraries with it.
#ifndef HEIRETSU_RUNTIME_CPU_THREADING_H_
#define HEIRETSU_RUNTIME_CPU_THREADING_H_

namespace heiretsu::cpu {

// Call first thing in main(). Returns only when the environment is set (possibly
// after re-executing); if re-executing fails it continues with a warning.
void EnsureCpuEnvironment(char** argv);

}  // namespace heiretsu::cpu

#endif  // HEIRETSU_RUNTIME_CPU_THREADING_H_
