// Thread settings the CPU backend needs before any kernel runs.
//
// OpenMP (our elementwise kernels) and OpenBLAS (GEMMs, its own pthreads) share the
// cores. GNU OpenMP's idle workers spin after each parallel region by default, and
// on a small machine they steal the cores OpenBLAS's threads need for the GEMM that
// follows: a GPT-2 small step on 2 cores runs 2.5x slower. libgomp reads its wait
// policy once, when it loads, so the only reliable switch is the environment:
// EnsurePassiveOpenMP sets OMP_WAIT_POLICY=PASSIVE and re-executes the program
// unless the user already chose a policy.
#ifndef HEIRETSU_RUNTIME_CPU_THREADING_H_
#define HEIRETSU_RUNTIME_CPU_THREADING_H_

namespace heiretsu::cpu {

// Call first thing in main(). Returns only when the policy is set (possibly
// after re-executing); if re-executing fails it continues with a warning.
void EnsurePassiveOpenMP(char** argv);

}  // namespace heiretsu::cpu

#endif  // HEIRETSU_RUNTIME_CPU_THREADING_H_
