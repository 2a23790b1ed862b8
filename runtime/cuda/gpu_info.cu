// heiretsu-gpu-info: reports the CUDA devices this process can see, or that there
// are none. It is the first CUDA target, so every build with a CUDA toolkit proves
// the nvcc/cudart plumbing (sm_80 and sm_90a) that the CUDA backend builds on.
// No device or no driver (runtime/cuda/devices.h): "skipped: no GPU (why)", exit 0,
// so GPU tests skip cleanly on machines without a GPU. Any other CUDA failure (an
// old driver, a stub libcuda, a device in a bad state): "error: ...", exit 1.
#include <cuda_runtime.h>

#include <cstdio>

#include "runtime/cuda/devices.h"

int main() {
  const heiretsu::cuda::DeviceProbe probe = heiretsu::cuda::ProbeDevices();
  if (probe.failed) {
    std::printf("error: %s\n", probe.message.c_str());
    return 1;
  }
  if (probe.count == 0) {
    std::printf("skipped: no GPU (%s)\n", probe.message.c_str());
    return 0;
  }
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::printf("cuda driver %d, runtime %d, %d device(s)\n", driver, runtime, probe.count);
  int bad = 0;
  for (int i = 0; i < probe.count; ++i) {
    cudaDeviceProp prop;
    if (cudaError_t e = cudaGetDeviceProperties(&prop, i); e != cudaSuccess) {
      std::printf("error: device %d: cudaGetDeviceProperties: %s\n", i, cudaGetErrorString(e));
      ++bad;
      continue;
    }
    std::printf("  device %d: %s, sm_%d%d, %zu MiB, %d SMs\n", i, prop.name, prop.major,
                prop.minor, prop.totalGlobalMem >> 20, prop.multiProcessorCount);
  }
  return bad ? 1 : 0;
}
