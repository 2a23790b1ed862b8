// The rule that decides what a failed cudaGetDeviceCount means, as a pure function
// without CUDA headers (so the unit tests, built on every machine, test it:
// test/unit/device_probe_test.cc); devices.h feeds it CUDA's answers.
//
// Only "no GPU here" may skip, and it has two spellings:
//   - cudaErrorNoDevice: a driver, but no device (or CUDA_VISIBLE_DEVICES hides
//     them all);
//   - cudaErrorInsufficientDriver with cudaDriverGetVersion reporting 0: no CUDA
//     driver is installed at all. That is what the runtime answers on a machine
//     without a GPU (this build machine), and such a machine has no device either,
//     so it counts as "no device".
// Every other failure is an error naming CUDA's own words: a driver older than the
// runtime (insufficient driver with a version > 0), the stub libcuda in place of the
// real one, a device in a bad state, an out-of-memory or initialization error.
// Those happen on machines that do have a GPU, where a skip would hide it.
#ifndef HEIRETSU_RUNTIME_CUDA_DEVICE_PROBE_H_
#define HEIRETSU_RUNTIME_CUDA_DEVICE_PROBE_H_

#include <string>

namespace heiretsu::cuda {

struct DeviceProbe {
  int count = 0;        // the devices this process can use
  bool failed = false;  // an error (message): neither devices nor "no GPU"
  std::string message;  // why count is 0 (no GPU), or the error
};

// What cudaGetDeviceCount returned, as far as the rule cares.
enum class CountAnswer { kSuccess, kNoDevice, kInsufficientDriver, kOther };

// `count`: the count it reported (used on kSuccess); `error`: CUDA's name and
// string for the error ("cudaErrorX: text"); `driver`: what cudaDriverGetVersion
// reported (-1 when that failed too); `runtime`: CUDART_VERSION.
inline DeviceProbe ClassifyDeviceCount(CountAnswer answer, int count, const std::string& error,
                                       int driver, int runtime) {
  DeviceProbe probe;
  if (answer == CountAnswer::kSuccess) {
    probe.count = count < 0 ? 0 : count;
    if (probe.count == 0) probe.message = "0 devices";
    return probe;
  }
  if (answer == CountAnswer::kNoDevice) {
    probe.message = error;
    return probe;
  }
  if (answer == CountAnswer::kInsufficientDriver && driver == 0) {
    probe.message = "no CUDA driver is installed";
    return probe;
  }
  probe.failed = true;
  probe.message = "cudaGetDeviceCount failed: " + error;
  if (driver >= 0)
    probe.message += " (driver " + std::to_string(driver) + ", runtime " +
                     std::to_string(runtime) + ")";
  return probe;
}

}  // namespace heiretsu::cuda

#endif  // HEIRETSU_RUNTIME_CUDA_DEVICE_PROBE_H_
