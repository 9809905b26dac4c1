#include "runtime/cpu_plan.h"

#include <algorithm>
#include <string>

#include "runtime/this_thread.h"

namespace cellserve {

StatusOr<CpuPlan> PlanCpus(std::vector<int> allowed, int device_threads) {
  if (device_threads < 1) return InvalidArgument("pinning threads needs at least one device thread");
  std::sort(allowed.begin(), allowed.end());
  allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
  const size_t devices = static_cast<size_t>(device_threads);
  if (allowed.size() < devices + 1)
    return InvalidArgument("--pin-threads gives each device thread a CPU of its own and the rest one more: " +
                           std::to_string(device_threads) + " device thread(s) need " +
                           std::to_string(device_threads + 1) + " CPUs, this process may use " +
                           std::to_string(allowed.size()) + " (use fewer --devices, or run without --pin-threads)");
  CpuPlan plan;
  plan.other_cpus.assign(allowed.begin(), allowed.end() - static_cast<std::ptrdiff_t>(devices));
  plan.device_cpus.assign(allowed.end() - static_cast<std::ptrdiff_t>(devices), allowed.end());
  return plan;
}

std::string DescribeCpus(const std::vector<int>& cpus) {
  if (cpus.empty()) return "no CPUs";
  if (cpus.size() == 1) return "CPU " + std::to_string(cpus[0]);
  const bool range = cpus.back() - cpus.front() + 1 == static_cast<int>(cpus.size());
  if (range && cpus.size() > 2) return "CPUs " + std::to_string(cpus.front()) + "-" + std::to_string(cpus.back());
  std::string out = "CPUs ";
  for (size_t i = 0; i < cpus.size(); ++i) out += (i ? ", " : "") + std::to_string(cpus[i]);
  return out;
}

std::string DescribeCpuPlan(const CpuPlan& plan) {
  if (plan.device_cpus.empty() || plan.other_cpus.empty()) return "not pinned";
  return "device threads on " + DescribeCpus(plan.device_cpus) + "; everything else on " + DescribeCpus(plan.other_cpus);
}

StatusOr<CpuPlan> PinThisThreadApartFromDevices(int device_threads) {
  ASSIGN_OR_RETURN(CpuPlan plan, PlanCpus(ThisThreadCpus(), device_threads));
  RETURN_IF_ERROR(PinThisThread(plan.other_cpus));
  return plan;
}

}  // namespace cellserve
