// See threading.h for why this exists.
#include "runtime/cpu/threading.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/base/env.h"
#include "runtime/cpu/kernels.h"

namespace heiretsu::cpu {
namespace {

// Set by PrepareThreads before it re-executes: the share it chose, so the second
// run tells its own choice from the user's.
constexpr char kChosen[] = "HEIRETSU_THREADS_CHOSEN";

// How long GNU OpenMP's idle workers spin before they sleep when oneDNN runs the
// GEMMs (its parallel regions follow each other closely). Measured on the Xeon
// (2 cores, 2026-12-01, heiretsu-bench-cpu B4 T64): GPT-2 small 1700 / 1014 / 1031 /
// 1044 ms per step at 0 (PASSIVE) / 10000 / 300000 (the default) / ACTIVE (spin
// forever), gpt-tiny 28.9 / 15.6 / 15.4 / 14.1 ms; 10000 is near the best and
// yields a shared core soonest.
constexpr char kOneDnnSpinCount[] = "10000";

int CoresAvailable() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
}

// Ranks of the job on this machine, from the first launcher variable set; 1 if none.
Status LocalRanks(int64_t* out) {
  *out = 1;
  for (const char* name : {"LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"}) {
    if (!std::getenv(name)) continue;
    return env::Integer(name, 1, 1 << 20, "ranks", out);
  }
  return std::nullopt;
}

}  // namespace

Status PrepareThreads(char** argv) {
  const char* blas_choice = std::getenv("HEIRETSU_BLAS");
  Blas blas = Blas::kOpenBlas;
  if (!ChooseBlas(blas_choice, CpuHasAvx512(), &blas))
    return Error::BadInput(std::string("HEIRETSU_BLAS='") + blas_choice +
                           "' is not openblas, onednn or auto (set it to one, or unset it for "
                           "auto: oneDNN on CPUs with AVX-512, OpenBLAS elsewhere)");
  bool changed = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && std::getenv("GOMP_SPINCOUNT") == nullptr) {
    if (blas == Blas::kOneDnn)
      setenv("GOMP_SPINCOUNT", kOneDnnSpinCount, 1);
    else
      setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    changed = true;
  }
  int64_t local = 1;
  if (auto err = LocalRanks(&local)) return err;
  const bool user = std::getenv("OMP_NUM_THREADS") || std::getenv("OPENBLAS_NUM_THREADS");
  if (local > 1 && !user) {
    const int cores = CoresAvailable();
    const std::string share = std::to_string(std::max<int64_t>(1, cores / local));
    setenv("OMP_NUM_THREADS", share.c_str(), 1);
    setenv("OPENBLAS_NUM_THREADS", share.c_str(), 1);
    setenv(kChosen, (share + " " + std::to_string(cores) + " " + std::to_string(local)).c_str(), 1);
    changed = true;
  }
  // OpenBLAS's kernels for this CPU's features (kernels.h: OpenBlasCoreOverride).
  const std::string detected = OpenBlasCoreName();
  const std::string core = OpenBlasCoreOverride(detected, CpuHasAvx512(),
                                                std::getenv("OPENBLAS_CORETYPE") != nullptr);
  if (!core.empty()) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    setenv("HEIRETSU_OPENBLAS_DETECTED", detected.c_str(), 1);
    changed = true;
  }
  if (!changed) return std::nullopt;
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "warning: could not re-execute with the OpenMP / OpenBLAS settings (%s); "
                       "CPU steps may run slower\n", std::strerror(errno));
  return std::nullopt;
}

std::string DescribeThreads() {
  if (const char* chosen = std::getenv(kChosen)) {
    int threads = 0, cores = 0, local = 0;
    if (std::sscanf(chosen, "%d %d %d", &threads, &cores, &local) == 3)
      return std::to_string(threads) + " OpenMP / OpenBLAS thread" + (threads == 1 ? "" : "s") +
             " per rank (" + std::to_string(cores) + " cores shared by " + std::to_string(local) +
             " local ranks; OMP_NUM_THREADS or OPENBLAS_NUM_THREADS override)";
  }
  for (const char* name : {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"})
    if (const char* v = std::getenv(name))
      return std::string(name) + "=" + v + " (set by the user)";
  return "every available core (" + std::to_string(CoresAvailable()) + ") for each rank";
}

}  // namespace heiretsu::cpu
