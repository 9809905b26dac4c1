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

// CAF 0.17 keeps a strong reference to an actor system's logger in a thread-local of every thread
// that made the system, spawned an actor in it or made a scoped_actor there, and the system's
// destructor waits until that logger is gone. So a system destroyed while such a thread lives on
// waits for good: `serve` hung at SIGTERM after one health call had run a report (a scoped_actor)
// on a long-lived thread, and a NodeAgent left from a thread other than the one that started it
// hung 11 minutes, until killed. Every function of ours that does one of those on a caller's
// thread calls this before it returns, unless it destroys the system itself on that thread (the
// destructor lets go of its own thread's reference) or the thread is joined before the system
// goes (NodeAgent's connector). We log nothing through CAF (quiet, above), so the thread loses
// nothing.
inline void ReleaseThisThreadsCafLogger() { caf::logger::set_current_actor_system(nullptr); }

}  // namespace cellserve::actors
