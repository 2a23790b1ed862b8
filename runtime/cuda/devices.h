// What cudaGetDeviceCount says, for tools and tests that skip on machines without
// a GPU: header-only, so heiretsu-gpu-info (cudart alone) and the CUDA backend
// share one rule. Only two answers mean "no GPU here" and may skip:
//   - cudaErrorNoDevice: a driver, but no device (or CUDA_VISIBLE_DEVICES hides
//     them all);
//   - cudaErrorInsufficientDriver with cudaDriverGetVersion reporting 0: no CUDA
//     driver is installed at all (what the runtime answers on a machine without
//     one; a GPU-less build machine is the case).
// Every other failure is an error with CUDA's own words: a driver older than the
// runtime (insufficient driver, version > 0), the stub libcuda picked up in place
// of the real one, a device in a bad state, an out-of-memory or initialization
// error. Those happen on machines that do have a GPU, where a skip would hide it.
#ifndef HEIRETSU_RUNTIME_CUDA_DEVICES_H_
#define HEIRETSU_RUNTIME_CUDA_DEVICES_H_

#include <cuda_runtime.h>

#include <string>

namespace heiretsu::cuda {

struct DeviceProbe {
  int count = 0;        // the devices this process can use
  bool failed = false;  // an error (message): neither devices nor "no GPU"
  std::string message;  // why count is 0 (no GPU), or the error
};

inline DeviceProbe ProbeDevices() {
  DeviceProbe probe;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess) {
    probe.count = count;
    if (count == 0) probe.message = "0 devices";
    return probe;
  }
  (void)cudaGetLastError();  // not left behind for the next caller's check
  const std::string what = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  if (e == cudaErrorNoDevice) {
    probe.message = what;
    return probe;
  }
  int driver = -1;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = -1;
  if (e == cudaErrorInsufficientDriver && driver == 0) {
    probe.message = "no CUDA driver is installed";
    return probe;
  }
  probe.failed = true;
  probe.message = "cudaGetDeviceCount failed: " + what;
  if (driver >= 0)
    probe.message += " (driver " + std::to_string(driver) + ", runtime " +
                     std::to_string(CUDART_VERSION) + ")";
  return probe;
}

}  // namespace heiretsu::cuda

#endif  // HEIRETSU_RUNTIME_CUDA_DEVICES_H_
