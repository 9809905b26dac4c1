#include "runtime/memory_limit.h"

#include <sys/resource.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "runtime/cgroup.h"
#include "runtime/zero_floats.h"

namespace cellserve {

namespace {

constexpr double kUnlimited = std::numeric_limits<double>::infinity();

bool AllDigits(const std::string& text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); });
}

StatusOr<double> ParseBytes(const std::string& text, const char* what) {
  if (!AllDigits(text)) return InvalidArgument(std::string(what) + ": not a byte count: '" + text + "'");
  return std::strtod(text.c_str(), nullptr);
}

double Or(const StatusOr<double>& value, double otherwise) { return value.ok() ? *value : otherwise; }

}  // namespace

Status CheckHeadroom(double bytes, double headroom, const std::string& what, const std::string& what_to_do) {
  if (bytes <= headroom) return OkStatus();
  return ResourceExhausted(what + ", more than the memory this process may still take (" + MiBText(headroom) +
                           " MiB: the machine's memory or its cgroup's limit, the less, less what this process "
                           "holds; or its address-space limit less what it has mapped, if that is less)" +
                           (what_to_do.empty() ? "" : "; " + what_to_do));
}

StatusOr<double> ParseCgroupMemoryMax(const std::string& text) {
  if (text == "max") return kUnlimited;
  return ParseBytes(text, "memory.max");
}

StatusOr<double> ParseCgroupV1MemoryLimit(const std::string& text) {
  ASSIGN_OR_RETURN(const double bytes, ParseBytes(text, "memory.limit_in_bytes"));
  // No limit reads as LONG_MAX rounded down to a page (9223372036854771712).
  return bytes >= 0x1p62 ? kUnlimited : bytes;
}

StatusOr<double> ParseProcKbField(const std::string& text, const std::string& name) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(name.size() + 1));
    std::string value, unit, rest;
    if (!(fields >> value >> unit) || (fields >> rest) || unit != "kB" || !AllDigits(value))
      return InvalidArgument(name + ": not a kB count: '" + line + "'");
    return std::strtod(value.c_str(), nullptr) * 1024.0;
  }
  return InvalidArgument("no " + name + " line");
}

MemoryReadings ReadMemoryOfThisProcess() {
  MemoryReadings r;
  r.machine_total = Or(ParseProcKbField(ReadWholeFile("/proc/meminfo"), "MemTotal"), kUnlimited);
  const std::string status = ReadWholeFile("/proc/self/status");
  r.anon_resident = Or(ParseProcKbField(status, "RssAnon"), 0);
  r.resident = Or(ParseProcKbField(status, "VmRSS"), MemoryReadings::kUnread);
  r.address_space = Or(ParseProcKbField(status, "VmSize"), 0);
  rlimit as{};
  r.address_space_limit = ::getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY
                              ? static_cast<double>(as.rlim_cur)
                              : kUnlimited;
  for (const CgroupFolder& folder : CgroupFoldersOfThisProcess("memory")) {
    const std::string text = ReadFirstLine(folder.path + (folder.v2 ? "/memory.max" : "/memory.limit_in_bytes"));
    if (text.empty()) continue;
    StatusOr<double> l = folder.v2 ? ParseCgroupMemoryMax(text) : ParseCgroupV1MemoryLimit(text);
    if (l.ok()) r.cgroup_limit = std::min(r.cgroup_limit, *l);
  }
  return r;
}

namespace {

// The limit that leaves the less, and what it leaves: the machine's memory or the cgroup's limit,
// less the anonymous memory held; or the address-space limit, less what is mapped.
struct Binding {
  double limit, left;
};
// `reserved`: memory reserved and not resident yet, which counts on the memory side only (the
// address-space side holds its mapping already).
Binding BindingLimit(const MemoryReadings& r, double reserved = 0) {
  const double memory = std::min(r.machine_total, r.cgroup_limit);
  const Binding by_memory{memory, memory - r.anon_resident - reserved};
  const Binding by_address_space{r.address_space_limit, r.address_space_limit - r.address_space};
  return by_address_space.left < by_memory.left ? by_address_space : by_memory;
}

}  // namespace

double MemoryHeadroom(const MemoryReadings& r) { return std::max(BindingLimit(r).left, 0.0); }

double MemoryLimit(const MemoryReadings& r) { return BindingLimit(r).limit; }

double MemoryHeadroomOfThisProcess() { return MemoryHeadroom(ReadMemoryOfThisProcess()); }

double ReservableHeadroom(const MemoryReadings& r, double reserved) {
  return std::max(BindingLimit(r, reserved).left, 0.0);
}

double ReservableHeadroomOfThisProcess() {
  return ReservableHeadroom(ReadMemoryOfThisProcess(), static_cast<double>(ZeroFloats::UntouchedBytes()));
}

std::string MemorySummary(const MemoryReadings& r, double reserved) {
  const std::string held =
      MiBText(r.resident) + " MiB resident" +
      (reserved > 0 ? " (and " + MiBText(reserved) + " MiB of state slots reserved, taken as they fill)" : "");
  const Binding binding = BindingLimit(r, reserved);
  if (std::isinf(binding.limit)) return held + "; no memory limit could be read";
  const char* whose = binding.limit == r.address_space_limit ? "the address-space limit"
                      : binding.limit == r.cgroup_limit      ? "the cgroup's"
                                                             : "the machine's";
  return held + "; " + MiBText(std::max(binding.left, 0.0)) + " MiB more may be taken, of a " +
         MiBText(binding.limit) + " MiB limit (" + whose + ")";
}

std::string MiBText(double bytes) {
  if (std::isinf(bytes)) return "unlimited";
  char text[32];
  std::snprintf(text, sizeof(text), "%.0f", bytes / (1 << 20));
  return text;
}

}  // namespace cellserve
