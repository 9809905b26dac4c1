// What this process uses, as Prometheus's standard process metrics report it (process_* in
// monitoring/metrics.h): resident and virtual memory, CPU time, open and allowed file
// descriptors, start time. The parsers are pure; ReadProcessStats reads /proc/self and /proc/stat.
// Nothing here fails: what cannot be read stays 0.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/status.h"

namespace cellserve {

struct ProcessStats {
  double resident_bytes = 0;      // VmRSS
  double virtual_bytes = 0;       // VmSize
  double cpu_seconds = 0;         // user + system
  double start_time_seconds = 0;  // since the Unix epoch
  int64_t open_fds = 0;
  int64_t max_fds = 0;            // RLIMIT_NOFILE's soft limit
};

// /proc/self/stat: utime + stime (fields 14 and 15) in seconds and starttime (field 22) in seconds
// since boot, at `ticks_per_second`. The command name (field 2) may hold spaces and parentheses:
// fields are counted from its last ')'. INVALID_ARGUMENT for text that is not such a line.
struct ProcStatTimes {
  double cpu_seconds = 0, start_since_boot_seconds = 0;
};
StatusOr<ProcStatTimes> ParseProcStat(const std::string& text, double ticks_per_second);

// /proc/stat's "btime N" line: the boot time in seconds since the Unix epoch.
StatusOr<double> ParseBootTime(const std::string& text);

ProcessStats ReadProcessStats();

}  // namespace cellserve
