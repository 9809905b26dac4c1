#include "runtime/cpu_quota.h"

#include <algorithm>
#include <limits>
#include <sstream>

#include "runtime/cgroup.h"

namespace cellserve {

namespace {

constexpr double kUnlimited = std::numeric_limits<double>::infinity();

// A whole number, the whole text (spaces around allowed); callers check its range.
bool ParseMicros(const std::string& text, long long* out) {
  std::istringstream in(text);
  long long v = 0;
  std::string rest;
  if (!(in >> v) || (in >> rest)) return false;
  *out = v;
  return true;
}

}  // namespace

StatusOr<double> ParseCgroupCpuMax(const std::string& text) {
  std::istringstream in(text);
  std::string quota, period, rest;
  if (!(in >> quota >> period) || (in >> rest))
    return InvalidArgument("cpu.max should be \"max PERIOD\" or \"QUOTA PERIOD\", got \"" + text + "\"");
  long long p = 0, q = 0;
  if (!ParseMicros(period, &p) || p <= 0) return InvalidArgument("cpu.max period is not a positive number: " + text);
  if (quota == "max") return kUnlimited;
  if (!ParseMicros(quota, &q) || q <= 0) return InvalidArgument("cpu.max quota is not a positive number: " + text);
  return static_cast<double>(q) / static_cast<double>(p);
}

StatusOr<double> ParseCfsQuota(const std::string& quota_text, const std::string& period_text) {
  long long q = 0, p = 0;
  if (!ParseMicros(quota_text, &q) || !ParseMicros(period_text, &p) || p <= 0 || (q <= 0 && q != -1))
    return InvalidArgument("cpu.cfs_quota_us / cpu.cfs_period_us should be numbers (quota -1: none), got \"" +
                           quota_text + "\" / \"" + period_text + "\"");
  if (q == -1) return kUnlimited;
  return static_cast<double>(q) / static_cast<double>(p);
}

Status CheckQuotaAllowsIdlePoll(int process_cpus, int polled_cpus, double quota) {
  if (quota >= static_cast<double>(process_cpus)) return OkStatus();
  std::ostringstream q;
  q << quota;
  const std::string rest = polled_cpus < process_cpus ? ", the device threads may use the rest" : "";
  return InvalidArgument("--idle-poll spins on " + std::to_string(polled_cpus) + " CPU(s)" + rest +
                         ": this process may keep all " +
                         std::to_string(process_cpus) + " CPU(s) it may run on busy, but its CPU quota (its cgroup's "
                         "cpu.max or cpu.cfs_quota_us: a Kubernetes CPU limit) is " + q.str() +
                         " CPU(s): the spinning would use it up and the kernel would throttle the whole server. "
                         "Give it whole CPUs as a cpuset with a quota to match (a Guaranteed pod under the static "
                         "CPU manager policy), raise the limit to " + std::to_string(process_cpus) +
                         ", or run without --idle-poll");
}

double CpuQuotaOfThisProcess() {
  double quota = kUnlimited;
  for (const CgroupFolder& folder : CgroupFoldersOfThisProcess("cpu")) {
    StatusOr<double> q = kUnlimited;
    if (folder.v2) {
      const std::string max = ReadFirstLine(folder.path + "/cpu.max");
      if (max.empty()) continue;
      q = ParseCgroupCpuMax(max);
    } else {
      const std::string quota_text = ReadFirstLine(folder.path + "/cpu.cfs_quota_us");
      if (quota_text.empty()) continue;
      q = ParseCfsQuota(quota_text, ReadFirstLine(folder.path + "/cpu.cfs_period_us"));
    }
    if (q.ok()) quota = std::min(quota, *q);
  }
  return quota;
}

}  // namespace cellserve
