#include "tools/thread_placement.h"

#include <cstdio>
#include <string>

#include "monitoring/log.h"
#include "runtime/cpu_plan.h"
#include "runtime/this_thread.h"

namespace cellserve::tools {

void AddThreadPlacementFlags(Flags& flags, const char* others) {
  flags
      .AddBool("pin-threads", std::string("each device thread on a core of its own (the last ones this process may "
                                          "use; cuda: one core for the GPUs' completion threads), the actors and ") +
                                  others +
                                  " on the rest, where their caches stay warm (needs device threads + 1 cores; "
                                  "docs/OPERATIONS.md says when it pays)");
  AddIdlePollFlags(flags, "the actors' cores (with --pin-threads; else every core this process may use)");
}

void AddIdlePollFlags(Flags& flags, const char* cores) {
  flags
      .AddBool("idle-poll",
               std::string("keep ") + cores +
                   " out of the idle loop: a lowest-priority thread spins on each, so a request at low load does "
                   "not wait for halted cores to wake (tens of microseconds each on a VM); those cores show as "
                   "busy in top (docs/OPERATIONS.md)")
      .Add("idle-poll-below", "8",
           "with --idle-poll: spin only while fewer requests than this are unanswered; at higher load the cores "
           "are busy anyway and the spinning threads sleep (0: spin always)");
}

StatusOr<IdlePollSettings> ReadIdlePollFlags(const Flags& flags) {
  IdlePollSettings settings;
  settings.on = flags.GetBool("idle-poll");
  ASSIGN_OR_RETURN(settings.below, flags.GetIntIn("idle-poll-below", 0, INT64_MAX));
  return settings;
}

Status ApplyThreadPlacement(const Flags& flags, LocalClusterOptions& options, const char* command) {
  if (flags.GetBool("pin-threads")) {
    ASSIGN_OR_RETURN(CpuPlan plan, LocalCluster::PinCallerApartFromDevices(options));
    options.device_cpus = plan.device_cpus;
    monitoring::LogLine("cellserve %s: --pin-threads: %s\n", command, DescribeCpuPlan(plan).c_str());
  }
  ASSIGN_OR_RETURN(IdlePollSettings idle, ReadIdlePollFlags(flags));
  options.idle_poll = idle.on;
  options.idle_poll_below = idle.below;
  if (options.idle_poll) {  // the cluster polls the CPUs of the thread that starts it: this one's
    RETURN_IF_ERROR(LocalCluster::CheckIdlePollQuota(options));
    monitoring::LogLine("cellserve %s: --idle-poll: %s kept out of the idle loop (threads cs-idle-poll:N)\n",
                        command, DescribeCpus(ThisThreadCpus()).c_str());
  }
  return OkStatus();
}

}  // namespace cellserve::tools
