// See threading.h for why this exists.
#include "runtime/cpu/threading.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace heiretsu::cpu {

void EnsurePassiveOpenMP(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "warning: could not re-execute with OMP_WAIT_POLICY=PASSIVE (%s); "
                       "CPU steps may run slower\n", std::strerror(errno));
}

}  // namespace heiretsu::cpu
