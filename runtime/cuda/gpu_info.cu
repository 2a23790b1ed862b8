// heiretsu-gpu-info: reports the CUDA devices this process can see, or that there
// are none. It is the first CUDA target, so every build with a CUDA toolkit proves
// the nvcc/cudart plumbing (sm_80 and sm_90a) that the CUDA backend builds on.
// Exit 0 in both cases: GPU tests skip cleanly on machines without a GPU.
#include <cuda_runtime.h>

#include <cstdio>

int main() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    std::printf("skipped: no GPU (%s)\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return 0;
  }
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::printf("cuda driver %d, runtime %d, %d device(s)\n", driver, runtime, count);
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    std::printf("  device %d: %s, sm_%d%d, %zu MiB, %d SMs\n", i, prop.name, prop.major,
                prop.minor, prop.totalGlobalMem >> 20, prop.multiProcessorCount);
  }
  return 0;
}
