// What cudaGetDeviceCount says, for tools and tests that skip on machines without
// a GPU: header-only, so heiretsu-gpu-info (cudart alone), heiretsu-cuda-check and
// the CUDA backend (DeviceCount, MakeCudaBackend, hence heiretsu run --backend
// cuda) share one rule, ClassifyDeviceCount (device_probe.h: only "no device", or
// no CUDA driver at all, may skip; every other failure is an error with CUDA's
// error name and string).
#ifndef HEIRETSU_RUNTIME_CUDA_DEVICES_H_
#define HEIRETSU_RUNTIME_CUDA_DEVICES_H_

#include <cuda_runtime.h>

#include <string>

#include "runtime/cuda/device_probe.h"

namespace heiretsu::cuda {

inline DeviceProbe ProbeDevices() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess) return ClassifyDeviceCount(CountAnswer::kSuccess, count, "", 0, 0);
  (void)cudaGetLastError();  // not left behind for the next caller's check
  const std::string what = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  int driver = -1;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = -1;
  (void)cudaGetLastError();
  const CountAnswer answer = e == cudaErrorNoDevice             ? CountAnswer::kNoDevice
                             : e == cudaErrorInsufficientDriver ? CountAnswer::kInsufficientDriver
                                                                : CountAnswer::kOther;
  return ClassifyDeviceCount(answer, count, what, driver, CUDART_VERSION);
}

}  // namespace heiretsu::cuda

#endif  // HEIRETSU_RUNTIME_CUDA_DEVICES_H_
