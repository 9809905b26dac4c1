// How many CPUs of time this process may use per period: the CFS quota of its cgroup and their
// ancestors (cgroup v2 cpu.max; v1 cpu.cfs_quota_us / cpu.cfs_period_us), the smallest along the
// way. A Kubernetes CPU limit is such a quota. Used by --idle-poll: a spinning thread uses its
// core's whole time, and a process that spins past its quota is throttled, every thread of it.
// The parsers are pure; CpuQuotaOfThisProcess reads /proc/self/cgroup and /sys/fs/cgroup.
// Errors: INVALID_ARGUMENT for text that is not a quota. Unlimited is +infinity.
#pragma once

#include <string>

#include "runtime/status.h"

namespace cellserve {

// cgroup v2 cpu.max: "max 100000" (no limit) or "QUOTA PERIOD" in microseconds.
StatusOr<double> ParseCgroupCpuMax(const std::string& text);

// cgroup v1: cpu.cfs_quota_us ("-1": no limit) and cpu.cfs_period_us.
StatusOr<double> ParseCfsQuota(const std::string& quota_text, const std::string& period_text);

// --idle-poll's check: spinning on `polled_cpus` of the `process_cpus` this process may use can
// keep all of them busy, so the quota must cover every one. INVALID_ARGUMENT saying so, with the
// numbers and what to do, when it does not.
Status CheckQuotaAllowsIdlePoll(int process_cpus, int polled_cpus, double quota);

// This process's quota in CPUs, +infinity where there is none or it cannot be read (no cgroup
// file system, an unknown layout): then nothing is known to limit it.
double CpuQuotaOfThisProcess();

}  // namespace cellserve
