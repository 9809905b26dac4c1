#include "runtime/this_thread.h"

#include <cerrno>
#include <cstring>

#ifdef __linux__
#include <pthread.h>
#include <sched.h>
#endif

namespace cellserve {

void NameThisThread(const std::string& name) {
#ifdef __linux__
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
#else
  (void)name;
#endif
}

std::string ThisThreadName() {
#ifdef __linux__
  char buf[16] = {};
  if (pthread_getname_np(pthread_self(), buf, sizeof(buf)) == 0) return buf;
#endif
  return "";
}

namespace {

#ifdef __linux__
Status Pin(pthread_t thread, const std::vector<int>& cpus) {
  if (cpus.empty()) return InvalidArgument("cannot pin a thread to no CPUs");
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int cpu : cpus) {
    if (cpu < 0 || cpu >= CPU_SETSIZE)
      return InvalidArgument("CPU " + std::to_string(cpu) + " is out of range [0, " + std::to_string(CPU_SETSIZE) + ")");
    CPU_SET(cpu, &set);
  }
  const int rc = pthread_setaffinity_np(thread, sizeof(set), &set);
  if (rc != 0) {
    std::string list;
    for (int cpu : cpus) list += (list.empty() ? "" : ",") + std::to_string(cpu);
    return InvalidArgument("cannot pin a thread to CPUs " + list + ": " + std::strerror(rc) +
                           " (are they online and allowed to this process?)");
  }
  return OkStatus();
}
#endif

}  // namespace

Status PinThisThread(const std::vector<int>& cpus) {
#ifdef __linux__
  return Pin(pthread_self(), cpus);
#else
  (void)cpus;
  return Unavailable("pinning threads to CPUs needs Linux");
#endif
}

Status PinThread(std::thread& thread, const std::vector<int>& cpus) {
#ifdef __linux__
  if (!thread.joinable()) return InvalidArgument("cannot pin a thread that is not running");
  return Pin(thread.native_handle(), cpus);
#else
  (void)thread;
  (void)cpus;
  return Unavailable("pinning threads to CPUs needs Linux");
#endif
}

std::vector<int> ThisThreadCpus() {
  std::vector<int> cpus;
#ifdef __linux__
  cpu_set_t set;
  CPU_ZERO(&set);
  if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) != 0) return cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
#endif
  return cpus;
}

int UsableCpuCount() {
  const size_t allowed = ThisThreadCpus().size();
  if (allowed > 0) return static_cast<int>(allowed);
  const unsigned machine = std::thread::hardware_concurrency();
  return machine > 0 ? static_cast<int>(machine) : 1;
}

}  // namespace cellserve
