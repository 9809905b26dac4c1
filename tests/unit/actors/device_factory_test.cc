// MakeDevices: backends by name, "all", and what a machine without a GPU says for --backend cuda
// (and a CUDA plugin that is not this build's).
#include "actors/device_factory.h"

#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "runtime/this_thread.h"
#include "tests/unit/common/thread_probe.h"
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
  EXPECT_EQ(all->size(), static_cast<size_t>(UsableCpuCount()));
}

// "All" counts the CPUs this process may use (a container's cpuset), not the host's cores.
TEST(DeviceFactoryTest, AllCpuDevicesFollowTheCpusAllowed) {
  const std::vector<int> cpus = ThisThreadCpus();
  ASSERT_FALSE(cpus.empty());
  size_t made = 0;
  Status status;
  std::thread in_one_cpu([&] {
    status = PinThisThread({cpus.front()});
    if (!status.ok()) return;
    DeviceOptions o;
    o.backend = "cpu";
    o.devices = 0;
    EXPECT_EQ(DeviceThreads(o), 1);
    auto all = MakeDevices(o, {});
    if (all.ok()) made = all->size();
    else status = all.status();
  });
  in_one_cpu.join();
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_EQ(made, 1u);
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
  o.devices = 1;
  o.gpu_precision = "fp16";  // a GPU flag on the CPU is refused, not ignored
  const Status gpu_flag = MakeDevices(o, {}).status();
  EXPECT_EQ(gpu_flag.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(gpu_flag.message().find("--gpu-precision fp16 applies to --backend cuda only"), std::string::npos)
      << gpu_flag.message();
}

TEST(DeviceFactoryTest, CpuPrecisionAppliesToCpuDevicesOnly) {
  DeviceOptions o;
  o.cpu_bf16 = true;  // a CPU flag on GPUs or the simulator is refused, not ignored
  for (const char* backend : {"cuda", "sim"}) {
    o.backend = backend;
    const Status s = MakeDevices(o, {}).status();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << backend;
    EXPECT_NE(s.message().find("--cpu-precision bf16 applies to --backend cpu only"), std::string::npos) << s.message();
  }
  EXPECT_TRUE(CheckCpuPrecisionApplies("cpu", false, true).ok());
  EXPECT_TRUE(CheckCpuPrecisionApplies("cuda", true, true).ok());  // the fallback's CPU devices use it
  EXPECT_TRUE(CheckCpuPrecisionApplies("sim", false, false).ok());
}

using testing_threads::AllowedCpusOfThread;

TEST(DeviceFactoryTest, DeviceThreadsAreNamedAndRunOnTheCpusPlanned) {
  const std::vector<int> cpus = ThisThreadCpus();
  ASSERT_FALSE(cpus.empty());
  const int last = cpus.back();
  DeviceOptions o;
  o.backend = "cpu";
  o.devices = 1;
  o.device_cpus = {last};
  auto pinned = MakeDevices(o, {});
  ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
  EXPECT_EQ(AllowedCpusOfThread("cs-cpu:0"), std::to_string(last));
  pinned->clear();
  EXPECT_TRUE(testing_threads::ThreadGone("cs-cpu:0"));  // joined

  // The sim backend's one timer thread for all its devices.
  const std::string profile = ::testing::TempDir() + "/device_factory_sim_profile.json";
  std::ofstream(profile) << R"({"name": "t", "default": {"a_us": 0, "c_us": 10}})";
  o.backend = "sim";
  o.devices = 2;
  o.sim_profile = profile;
  auto sim = MakeDevices(o, {});
  ASSERT_TRUE(sim.ok()) << sim.status().ToString();
  EXPECT_EQ(AllowedCpusOfThread("cs-sim-timer"), std::to_string(last));
  sim->clear();
  std::remove(profile.c_str());

  // Unpinned, a device thread may go wherever this thread may.
  o.backend = "cpu";
  o.devices = 1;
  o.device_cpus.clear();
  auto free = MakeDevices(o, {});
  ASSERT_TRUE(free.ok());
  EXPECT_NE(AllowedCpusOfThread("cs-cpu:0"), "");
  if (cpus.size() > 1) {
    EXPECT_NE(AllowedCpusOfThread("cs-cpu:0"), std::to_string(last));
  }
}

TEST(DeviceFactoryTest, DeviceThreadsAndTooFewCpusForThem) {
  DeviceOptions o;
  o.backend = "cpu";
  o.devices = 3;
  EXPECT_EQ(DeviceThreads(o), 3);
  o.devices = 0;
  EXPECT_EQ(DeviceThreads(o), UsableCpuCount());
  o.backend = "sim";
  EXPECT_EQ(DeviceThreads(o), 1);
  o.backend = "cuda";
  EXPECT_EQ(DeviceThreads(o), 1);
  o.backend = "tpu";
  EXPECT_EQ(DeviceThreads(o), 0);

  o.backend = "cpu";
  o.devices = 2;
  o.device_cpus = {0};
  auto short_list = MakeDevices(o, {});
  ASSERT_FALSE(short_list.ok());
  EXPECT_EQ(short_list.status().code(), StatusCode::kInvalidArgument);
  o.devices = 1;
  o.device_cpus = {-5};
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

// These two run in every build: CELLSERVE_CUDA_PLUGIN is honoured whether or not this build has
// CUDA (fakecuda.serving_path loads the fake runtime's plugin that way).
// In a death test's child (the plugin is loaded once per process): asks for cuda devices with
// CELLSERVE_CUDA_PLUGIN at `plugin`, and exits 0 when the error names each of `parts` (else says
// what it got and exits 1).
void ExitZeroIfPluginRefusedSaying(const std::string& plugin, const std::vector<std::string>& parts) {
  setenv("CELLSERVE_CUDA_PLUGIN", plugin.c_str(), 1);
  DeviceOptions o;
  o.backend = "cuda";
  auto r = MakeDevices(o, {testing_models::Make(ModelKind::kLstm)});
  const std::string message = r.ok() ? "" : r.status().message();
  bool says_why = !r.ok();
  for (const std::string& part : parts) says_why = says_why && message.find(part) != std::string::npos;
  if (!says_why) std::fprintf(stderr, "got: %s\n", r.ok() ? "devices" : message.c_str());
  std::_Exit(says_why ? 0 : 1);
}

TEST(DeviceFactoryDeathTest, APluginThatIsNotThisBuildsSaysWhy) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Dl_info libm{};  // the C math library: a shared library at a path this machine has, and no plugin
  ASSERT_NE(dladdr(reinterpret_cast<void*>(static_cast<double (*)(double)>(&std::cos)), &libm), 0);
  ASSERT_NE(libm.dli_fname, nullptr);
  const std::string path = libm.dli_fname;
  EXPECT_EXIT(ExitZeroIfPluginRefusedSaying(path, {"lacks the symbol cellserve_cuda_abi_tag"}),
              ::testing::ExitedWithCode(0), "");
}

// A plugin built from other boundary headers (or by another compiler) has another ABI tag:
// refused by it, naming both tags, and never called (the stand-in aborts if it is).
TEST(DeviceFactoryDeathTest, APluginFromAnotherBuildIsRefusedByItsTag) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ExitZeroIfPluginRefusedSaying(STALE_CUDA_PLUGIN_PATH, {"its ABI tag is stale-build, this binary's ",
                                                                     "rebuild it with the binary"}),
              ::testing::ExitedWithCode(0), "");
}

TEST(DeviceFactoryTest, CudaPrecisionIsChecked) {
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
