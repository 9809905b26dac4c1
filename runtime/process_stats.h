// What this process uses, as Prometheus's standard process metrics report it (process_* in
// monitoring/metrics.h): CPU time, open and allowed file descriptors, start time. Its resident
// and virtual memory come with the memory readings (runtime/memory_limit.h: VmRSS, VmSize). The parsers are pure; ReadProcessStats reads /proc/self and /proc/stat.
// Nothing here fails: what cannot be read is -1 (kUnread), so a caller can keep the last value
// (out of file descriptors, /proc cannot be opened: 0 open descriptors would be a lie).
#pragma once

#include <cstdint>
#include <string>

#include "runtime/status.h"

namespace cellserve {

struct ProcessStats {
  static constexpr double kUnread = -1;
  double cpu_seconds = kUnread;         // user + system
  double start_time_seconds = kUnread;  // since the Unix epoch
  double open_fds = kUnread;
  double max_fds = kUnread;             // RLIMIT_NOFILE's soft limit
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
