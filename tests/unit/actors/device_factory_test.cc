// MakeDevices: backends by name, "all", and what a machine without a GPU says for --backend cuda.
#include "actors/device_factory.h"

#include <gtest/gtest.h>

#include <thread>

#include "tests/unit/kernels/test_models.h"

namespace cellserve {
namespace {

TEST(DeviceFactoryTest, CpuDevicesByCountAndAll) {
  DeviceOptions o;
  o.backend = "cpu";
  o.devices = 2;
  auto two = MakeDevices(o, {});
  ASSERT_TRUE(two.ok()) << two.status().ToString();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0]->name(), "cpu:0");
  EXPECT_EQ((*two)[1]->name(), "cpu:1");
  o.devices = 0;
  auto all = MakeDevices(o, {});
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), std::max(1u, std::thread::hardware_concurrency()));
}

TEST(DeviceFactoryTest, BadOptionsAreInvalidArgument) {
  DeviceOptions o;
  o.backend = "tpu";
  auto bad = MakeDevices(o, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("cpu, sim or cuda"), std::string::npos);
  o.backend = "sim";
  auto no_profile = MakeDevices(o, {});
  ASSERT_FALSE(no_profile.ok());
  EXPECT_NE(no_profile.status().message().find("--sim-profile"), std::string::npos);
  o.backend = "cpu";
  o.devices = -1;
  EXPECT_EQ(MakeDevices(o, {}).status().code(), StatusCode::kInvalidArgument);
}

// On a machine without a usable GPU (CI), --backend cuda says why and what to do; with
// --cpu-fallback it serves on the CPU. On a GPU machine it makes one device per GPU.
TEST(DeviceFactoryTest, CudaWithoutGpuSaysWhatToDoOrFallsBack) {
  auto model = testing_models::Make(ModelKind::kLstm);
  DeviceOptions o;
  o.backend = "cuda";
  o.devices = 0;
  auto gpus = MakeDevices(o, {model});
  if (gpus.ok()) {
    ASSERT_FALSE(gpus->empty());
    EXPECT_EQ((*gpus)[0]->name(), "cuda:0");
    GTEST_SKIP() << "this machine has a GPU: the no-GPU answer is not reachable";
  }
  EXPECT_EQ(gpus.status().code(), StatusCode::kUnavailable) << gpus.status().ToString();
  EXPECT_NE(gpus.status().message().find("--backend cpu"), std::string::npos) << gpus.status().message();
  EXPECT_NE(gpus.status().message().find("--cpu-fallback"), std::string::npos);
  o.cpu_fallback = true;
  o.devices = 1;
  auto cpu = MakeDevices(o, {model});
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  ASSERT_EQ(cpu->size(), 1u);
  EXPECT_EQ((*cpu)[0]->name(), "cpu:0");
}

TEST(DeviceFactoryTest, CudaPrecisionIsChecked) {
  if (!HaveCudaBackend()) GTEST_SKIP() << "built without CUDA";
  DeviceOptions o;
  o.backend = "cuda";
  o.gpu_precision = "fp8";
  auto bad = MakeDevices(o, {});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("fp32, fp16 or bf16"), std::string::npos);
}

}  // namespace
}  // namespace cellserve
