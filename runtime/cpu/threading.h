// Thread settings the CPU backend needs before any kernel runs.
//
// OpenMP (our elementwise kernels) and OpenBLAS (GEMMs, its own pthreads) share the
// cores. GNU OpenMP's idle workers spin after each parallel region by default, and
// on a small machine they steal the cores OpenBLAS's threads need for the GEMM that
// follows: a GPT-2 small step on 2 cores runs 2.5x slower. And several ranks on one
// machine, each with threads for every core, oversubscribe it (4 ranks on 2 cores:
// 8+ busy threads). OpenBLAS also picks its kernels from its own table of CPUs,
// which does not know every CPU. Both libraries read their settings once, when they
// load, so the
// only reliable switch is the environment: PrepareThreads sets
//   OMP_WAIT_POLICY=PASSIVE when OpenBLAS runs the GEMMs (its pthreads need the
//   cores), or GOMP_SPINCOUNT=10000 (a short spin) when oneDNN does (its OpenMP
//   regions follow each other closely: kernels.h, ActiveBlas), unless the user set
//   OMP_WAIT_POLICY or GOMP_SPINCOUNT;
//   OMP_NUM_THREADS and OPENBLAS_NUM_THREADS to this rank's share of the cores it may
//   run on (sched_getaffinity) when several ranks of the job run on this machine,
//   max(1, cores / local ranks), unless the user set either;
//   OPENBLAS_CORETYPE=SkylakeX on a CPU with AVX-512 that OpenBLAS detected as one
//   without (kernels.h: OpenBlasCoreOverride), unless the user set it, with
//   HEIRETSU_OPENBLAS_DETECTED naming what OpenBLAS detected (the "blas:" line);
// and re-executes the program once. It also refuses a HEIRETSU_BLAS that is not
// openblas, onednn or auto (kernels.h: ActiveBlas). The local rank count comes from LOCAL_WORLD_SIZE
// (heiretsu run, torchrun), OMPI_COMM_WORLD_LOCAL_SIZE (Open MPI) or MPI_LOCALNRANKS
// (MPICH), validated like flags.
#ifndef HEIRETSU_RUNTIME_CPU_THREADING_H_
#define HEIRETSU_RUNTIME_CPU_THREADING_H_

#include <string>

#include "runtime/base/error.h"

namespace heiretsu::cpu {

// Call first thing in main(). Returns only when the settings are in place (possibly
// after re-executing; if re-executing fails it continues with a warning), or with
// a bad-input error naming a malformed variable.
Status PrepareThreads(char** argv);

// What PrepareThreads chose, for the run's first lines: "2 OpenMP / OpenBLAS threads
// per rank (2 cores, 1 local rank)"; "... set by OMP_NUM_THREADS" when the user's.
std::string DescribeThreads();

}  // namespace heiretsu::cpu

#endif  // HEIRETSU_RUNTIME_CPU_THREADING_H_
