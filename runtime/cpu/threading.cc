// See threading.h for why this exists.
#include "runtime/cpu/threading.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/cpu/kernels.h"

namespace heiretsu::cpu {

void EnsureCpuEnvironment(char** argv) {
  bool changed = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    changed = true;
  }
  const std::string detected = OpenBlasCoreName();
  const std::string core = OpenBlasCoreOverride(detected, CpuHasAvx512(),
                                                std::getenv("OPENBLAS_CORETYPE") != nullptr);
  if (!core.empty()) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    setenv("HEIRETSU_OPENBLAS_DETECTED", detected.c_str(), 1);
    changed = true;
  }
  if (!changed) return;
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "warning: could not re-execute with OMP_WAIT_POLICY=PASSIVE%s (%s); "
                       "CPU steps may run slower\n",
               core.empty() ? "" : (" and OPENBLAS_CORETYPE=" + core).c_str(),
               std::strerror(errno));
}

}  // namespace heiretsu::cpu
