#include "runtime/process_stats.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <sstream>
#include <vector>

#include "runtime/cgroup.h"

namespace cellserve {

namespace {

double CountOpenFds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (!dir) return ProcessStats::kUnread;  // e.g. out of descriptors
  int64_t n = 0;
  while (const dirent* entry = ::readdir(dir))
    if (entry->d_name[0] != '.') ++n;
  ::closedir(dir);
  return static_cast<double>(n - 1);  // less the descriptor reading the folder
}

}  // namespace

StatusOr<ProcStatTimes> ParseProcStat(const std::string& text, double ticks_per_second) {
  const size_t close = text.rfind(')');
  if (close == std::string::npos || ticks_per_second <= 0)
    return InvalidArgument("not a /proc/PID/stat line: '" + text.substr(0, 80) + "'");
  // After "PID (COMM) ": field 3 (state) onwards.
  std::istringstream in(text.substr(close + 1));
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  if (fields.size() < 20) return InvalidArgument("a /proc/PID/stat line with too few fields");
  auto number = [&](size_t field) -> StatusOr<double> {  // field numbers as proc(5) counts them
    const std::string& f = fields[field - 3];
    char* end = nullptr;
    const double v = std::strtod(f.c_str(), &end);
    if (f.empty() || *end || v < 0) return InvalidArgument("/proc/PID/stat field " + std::to_string(field) + ": '" + f + "'");
    return v;
  };
  ASSIGN_OR_RETURN(const double utime, number(14));
  ASSIGN_OR_RETURN(const double stime, number(15));
  ASSIGN_OR_RETURN(const double start, number(22));
  return ProcStatTimes{(utime + stime) / ticks_per_second, start / ticks_per_second};
}

StatusOr<double> ParseBootTime(const std::string& text) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("btime ", 0) != 0) continue;
    char* end = nullptr;
    const double v = std::strtod(line.c_str() + 6, &end);
    if (end == line.c_str() + 6 || *end || v <= 0) return InvalidArgument("/proc/stat: '" + line + "'");
    return v;
  }
  return InvalidArgument("/proc/stat has no btime line");
}

ProcessStats ReadProcessStats() {
  ProcessStats s;
  const long ticks = ::sysconf(_SC_CLK_TCK);
  if (auto times = ParseProcStat(ReadWholeFile("/proc/self/stat"), static_cast<double>(ticks)); times.ok()) {
    s.cpu_seconds = times->cpu_seconds;
    // The boot time does not change: read once it has been read (/proc/stat has a line per CPU);
    // a failed read (out of descriptors at that scrape) is tried again at the next.
    static std::atomic<double> boot{0};
    if (boot.load() == 0)
      if (StatusOr<double> read = ParseBootTime(ReadWholeFile("/proc/stat")); read.ok()) boot = *read;
    if (boot.load() > 0) s.start_time_seconds = boot.load() + times->start_since_boot_seconds;
  }
  s.open_fds = CountOpenFds();
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0)
    s.max_fds = files.rlim_cur == RLIM_INFINITY ? 0x1p63 : static_cast<double>(files.rlim_cur);
  return s;
}

}  // namespace cellserve
