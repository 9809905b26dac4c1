// This thread's name and CPU placement, as operators see them (top -H, ps -L, /proc/PID/task).
// Linux only in effect; elsewhere naming is a no-op and pinning says UNAVAILABLE.
// Affects only the thread named (the caller unless said); creates no threads. Thread-safe.
#pragma once

#include <string>
#include <thread>
#include <vector>

#include "runtime/status.h"

namespace cellserve {

// Names the calling thread (cut to the 15 characters Linux keeps). Never fails.
void NameThisThread(const std::string& name);

// The calling thread's name, or "" where the OS has none.
std::string ThisThreadName();

// Restricts the calling thread to `cpus` (CPU numbers as the OS counts them). INVALID_ARGUMENT
// for an empty set or a number out of range; the OS's error (with the CPUs) when it refuses.
Status PinThisThread(const std::vector<int>& cpus);

// The same for another thread of this process (before or while it runs).
Status PinThread(std::thread& thread, const std::vector<int>& cpus);

// The CPUs the calling thread may run on, in increasing order (empty where unknown).
std::vector<int> ThisThreadCpus();

// How many CPUs the calling thread may use: its affinity (a container's cpuset, taskset), not
// the machine's count, which std::thread::hardware_concurrency gives. At least 1.
int UsableCpuCount();

}  // namespace cellserve
