// The rule that decides when a GPU check may skip (runtime/cuda/device_probe.h):
// only "no device" (or no CUDA driver at all) is "no GPU"; every other
// cudaGetDeviceCount failure is an error that names CUDA's error.
#include "runtime/cuda/device_probe.h"

#include <gtest/gtest.h>

namespace heiretsu::cuda {
namespace {

TEST(DeviceProbe, DevicesAreCounted) {
  const DeviceProbe p = ClassifyDeviceCount(CountAnswer::kSuccess, 8, "", 0, 0);
  EXPECT_FALSE(p.failed);
  EXPECT_EQ(p.count, 8);
}

TEST(DeviceProbe, ZeroDevicesWithoutAnErrorIsNoGpu) {
  const DeviceProbe p = ClassifyDeviceCount(CountAnswer::kSuccess, 0, "", 12080, 13000);
  EXPECT_FALSE(p.failed);
  EXPECT_EQ(p.count, 0);
  EXPECT_EQ(p.message, "0 devices");
}

TEST(DeviceProbe, NoDeviceIsNoGpu) {
  const DeviceProbe p = ClassifyDeviceCount(
      CountAnswer::kNoDevice, 0, "cudaErrorNoDevice: no CUDA-capable device is detected", 13000,
      13000);
  EXPECT_FALSE(p.failed);
  EXPECT_EQ(p.count, 0);
  EXPECT_EQ(p.message, "cudaErrorNoDevice: no CUDA-capable device is detected");
}

TEST(DeviceProbe, NoDriverInstalledIsNoGpu) {
  // What cudart answers where libcuda.so.1 is absent: insufficient driver, version 0.
  const DeviceProbe p = ClassifyDeviceCount(CountAnswer::kInsufficientDriver, 0,
                                            "cudaErrorInsufficientDriver: CUDA driver version "
                                            "is insufficient for CUDA runtime version",
                                            0, 13000);
  EXPECT_FALSE(p.failed);
  EXPECT_EQ(p.count, 0);
  EXPECT_EQ(p.message, "no CUDA driver is installed");
}

TEST(DeviceProbe, AnOldDriverIsAnError) {
  const DeviceProbe p = ClassifyDeviceCount(
      CountAnswer::kInsufficientDriver, 0,
      "cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version",
      12020, 13000);
  EXPECT_TRUE(p.failed);
  EXPECT_EQ(p.count, 0);
  EXPECT_EQ(p.message,
            "cudaGetDeviceCount failed: cudaErrorInsufficientDriver: CUDA driver version is "
            "insufficient for CUDA runtime version (driver 12020, runtime 13000)");
}

TEST(DeviceProbe, InsufficientDriverWithUnknownVersionIsAnError) {
  const DeviceProbe p = ClassifyDeviceCount(CountAnswer::kInsufficientDriver, 0,
                                            "cudaErrorInsufficientDriver: x", -1, 13000);
  EXPECT_TRUE(p.failed);
  EXPECT_EQ(p.message, "cudaGetDeviceCount failed: cudaErrorInsufficientDriver: x");
}

TEST(DeviceProbe, EveryOtherErrorIsAnErrorNamingIt) {
  for (const char* e :
       {"cudaErrorStubLibrary: CUDA driver is a stub library",
        "cudaErrorInitializationError: initialization error",
        "cudaErrorDevicesUnavailable: CUDA-capable device(s) is/are busy or unavailable",
        "cudaErrorSystemDriverMismatch: system has unsupported display driver / cuda driver "
        "combination",
        "cudaErrorMemoryAllocation: out of memory"}) {
    const DeviceProbe p = ClassifyDeviceCount(CountAnswer::kOther, 0, e, 13000, 13000);
    EXPECT_TRUE(p.failed) << e;
    EXPECT_EQ(p.count, 0) << e;
    EXPECT_NE(p.message.find(e), std::string::npos) << p.message;
    EXPECT_EQ(p.message.rfind("cudaGetDeviceCount failed: ", 0), 0u) << p.message;
  }
  // Even with no driver version: only the insufficient-driver answer may mean "none".
  EXPECT_TRUE(ClassifyDeviceCount(CountAnswer::kOther, 0, "cudaErrorUnknown: x", 0, 13000).failed);
}

}  // namespace
}  // namespace heiretsu::cuda
