// How much more memory this process may take before an allocation fails or the OOM killer ends
// it: its headroom. Used to refuse, with a clear error, allocations that could only end in the
// OOM killer: a CPU device's state slots and prepared weights (--state-slots, --fold-max-mib), a
// weights file and the model made from it. Memory taken and touched counts, and so does memory
// reserved untouched (ZeroFloats: state slots, whose pages are taken as they fill), so CPU devices
// that register one after another are checked against what the earlier ones took.
// The headroom is the least of: the machine's memory (MemTotal) and each cgroup limit of this
// process's cgroup and its ancestors (v2 memory.max, v1 memory.limit_in_bytes: a Kubernetes
// memory limit), less the anonymous memory this process holds (RssAnon: the process is taken to be
// its container's main user, and the page cache it has read is reclaimed before anything is
// killed); and its address-space limit (RLIMIT_AS) less what it has mapped (VmSize). Other
// processes' memory is not subtracted (not even MemAvailable's view of it): the kernel, swap or
// the kubelet may take it back, and refusing a start that would have worked is worse than
// allowing one that might not.
// The parsers and MemoryHeadroom are pure; the ...OfThisProcess functions read /proc and
// /sys/fs/cgroup. Errors: INVALID_ARGUMENT for text that is not a limit. Unlimited is +infinity.
#pragma once

#include <limits>
#include <string>

#include "runtime/status.h"

namespace cellserve {

// cgroup v2 memory.max: "max" (no limit) or a byte count.
StatusOr<double> ParseCgroupMemoryMax(const std::string& text);

// cgroup v1 memory.limit_in_bytes: a byte count; the kernel's "no limit" is a value near 2^63.
StatusOr<double> ParseCgroupV1MemoryLimit(const std::string& text);

// A "Name:   123 kB" line's value in bytes, from /proc/meminfo or /proc/self/status text.
// INVALID_ARGUMENT when the text has no such line or its value is not a kB count.
StatusOr<double> ParseProcKbField(const std::string& text, const std::string& name);

// What the headroom is computed from, in bytes (kNone, +infinity: no such limit), and the
// resident memory beside it (what the process metrics and the start-up line report).
struct MemoryReadings {
  static constexpr double kNone = std::numeric_limits<double>::infinity();
  static constexpr double kUnread = -1;  // resident when /proc could not be read
  double machine_total = kNone;        // MemTotal
  double cgroup_limit = kNone;         // the least limit along the cgroup's path
  double anon_resident = 0;            // RssAnon
  double address_space_limit = kNone;  // RLIMIT_AS
  double address_space = 0;            // VmSize
  double resident = 0;                 // VmRSS
};
MemoryReadings ReadMemoryOfThisProcess();

// min(machine_total, cgroup_limit) - anon_resident, or address_space_limit - address_space if
// less (never below 0).
double MemoryHeadroom(const MemoryReadings& readings);
double MemoryHeadroomOfThisProcess();

// The headroom counting reservations as taken: MemoryHeadroom less what is reserved and not
// resident yet (`reserved`: ZeroFloats::UntouchedBytes()), on the machine's or cgroup's side
// (VmSize, the address-space side, holds the mappings already). Never below 0. What the up-front
// checks and cellserve_memory_headroom_bytes use: it does not move as reserved slots fill.
double ReservableHeadroom(const MemoryReadings& readings, double reserved);
double ReservableHeadroomOfThisProcess();  // with this process's readings and ZeroFloats::UntouchedBytes()

// The limit that headroom is measured against: min(machine_total, cgroup_limit), or
// address_space_limit where that term leaves less. +infinity where nothing was read.
double MemoryLimit(const MemoryReadings& readings);

// "123" (MiB, rounded) for messages.
std::string MiBText(double bytes);

// One line for a start-up log: "M MiB resident; H MiB more may be taken, of a L MiB limit (the
// cgroup's)", where the limit is the machine's memory, its cgroup's limit or the address-space
// limit, whichever MemoryLimit says binds.
// With `reserved` > 0 (untouched reservations) the resident part reads "M MiB resident (and R MiB
// of state slots reserved, taken as they fill)", and the headroom counts them as taken.
std::string MemorySummary(const MemoryReadings& readings, double reserved = 0);

// The up-front check before a large allocation: OK when `bytes` are at most `headroom`; else
// RESOURCE_EXHAUSTED "`what`, more than the memory this process may still take (H MiB: what the
// headroom is)", then "; `what_to_do`" when given.
Status CheckHeadroom(double bytes, double headroom, const std::string& what, const std::string& what_to_do = "");

}  // namespace cellserve
