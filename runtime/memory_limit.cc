#include "runtime/memory_limit.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <limits>

#include "runtime/cpu_quota.h"

namespace cellserve {

namespace {

constexpr double kUnlimited = std::numeric_limits<double>::infinity();

StatusOr<double> ParseBytes(const std::string& text, const char* what) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); }))
    return InvalidArgument(std::string(what) + ": not a byte count: '" + text + "'");
  return std::strtod(text.c_str(), nullptr);
}

}  // namespace

StatusOr<double> ParseCgroupMemoryMax(const std::string& text) {
  if (text == "max") return kUnlimited;
  return ParseBytes(text, "memory.max");
}

StatusOr<double> ParseCgroupV1MemoryLimit(const std::string& text) {
  ASSIGN_OR_RETURN(const double bytes, ParseBytes(text, "memory.limit_in_bytes"));
  // No limit reads as LONG_MAX rounded down to a page (9223372036854771712).
  return bytes >= 0x1p62 ? kUnlimited : bytes;
}

double MemoryLimitOfThisProcess() {
  double limit = kUnlimited;
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) limit = static_cast<double>(pages) * static_cast<double>(page);
  rlimit as{};
  if (::getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY)
    limit = std::min(limit, static_cast<double>(as.rlim_cur));
  for (const CgroupFolder& folder : CgroupFoldersOfThisProcess("memory")) {
    const std::string text = ReadFirstLine(folder.path + (folder.v2 ? "/memory.max" : "/memory.limit_in_bytes"));
    if (text.empty()) continue;
    StatusOr<double> l = folder.v2 ? ParseCgroupMemoryMax(text) : ParseCgroupV1MemoryLimit(text);
    if (l.ok()) limit = std::min(limit, *l);
  }
  return limit;
}

}  // namespace cellserve
