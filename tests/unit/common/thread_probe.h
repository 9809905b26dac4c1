// Where this process's named threads may run, as the OS reports it (/proc/self/task/*/status),
// for tests of thread naming and pinning (runtime/this_thread.h). Linux only.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

namespace cellserve::testing_threads {

// The /proc/self/task/TID folder of the thread of this process named `name`; empty if none.
inline std::filesystem::path TaskNamed(const std::string& name) {
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::string comm;
    std::getline(std::ifstream(task.path() / "comm"), comm);
    if (comm == name) return task.path();
  }
  return {};
}

// The CPUs a thread of this process named `name` may run on ("1", "0-3"); "" if none is named so.
inline std::string AllowedCpusNow(const std::string& name) {
  const std::filesystem::path task = TaskNamed(name);
  if (!task.empty()) {
    std::ifstream status(task / "status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("Cpus_allowed_list:", 0) == 0) return line.substr(line.find_first_not_of(" \t", 18));
  }
  return "";
}

// The same, giving a thread that names itself as it starts up to 5 s to do so.
inline std::string AllowedCpusOfThread(const std::string& name) {
  for (int i = 0; i < 500; ++i) {
    if (std::string cpus = AllowedCpusNow(name); !cpus.empty()) return cpus;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "";
}

// Whether the thread named `name` is gone from /proc, giving it up to 5 s. A joined thread can
// still be listed there for a while: join returns when the thread clears its id, and the kernel
// removes its task only later, which a preempted (say SCHED_IDLE) thread may take long to reach.
inline bool ThreadGone(const std::string& name) {
  for (int i = 0; i < 500; ++i) {
    if (TaskNamed(name).empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return TaskNamed(name).empty();
}

}  // namespace cellserve::testing_threads
