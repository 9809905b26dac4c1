// ConfigureActorSystem: the CAF settings every actor system of ours uses (LocalCluster, Router,
// NodeAgent), in one place. CAF's work-stealing workers spin (aggressive, then moderate polling
// with 50 us sleeps) before they sleep; on a small machine that spinning takes the cores the
// device threads need, and a timer every few ms keeps them spinning forever (measured: an idle
// node process burned 0.3 cores). So: no spinning, sleep at once; logging quiet.
// `threads` > 0 sets the scheduler's worker threads; 0: one per CPU the calling thread may use.
#pragma once

#include <cstddef>

#include <caf/all.hpp>

#include "runtime/this_thread.h"

namespace cellserve::actors {

inline void ConfigureActorSystem(caf::actor_system_config& config, int threads) {
  config.set("logger.file-verbosity", caf::atom("quiet"));
  config.set("logger.console-verbosity", caf::atom("quiet"));
  // CAF's own default is the host's core count, which in a container limited to a few CPUs (a
  // cpuset) starts many more workers than it can run.
  if (threads <= 0) threads = UsableCpuCount();
  config.set("scheduler.max-threads", static_cast<size_t>(threads));
  config.set("work-stealing.aggressive-poll-attempts", static_cast<size_t>(0));
  config.set("work-stealing.moderate-poll-attempts", static_cast<size_t>(0));
}

}  // namespace cellserve::actors
