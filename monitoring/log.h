// The serving processes' log: lines for standard error, written by a thread of their own, so a
// stalled log pipe (a log collector that fell behind, a paused terminal) never blocks the thread
// that logs: the kj RPC loop, the router's or a node's actor (on CAF's network thread), a device.
// Before, a full pipe froze `serve`'s RPC loop and a router's message delivery at the next line.
//
// LogLine formats at once and queues the line; the writer writes queued lines in order, each with
// one write() where it can (whole lines, never torn). When kMaxQueuedLogBytes are queued, further
// lines are dropped and counted (LogLinesDropped; cellserve_log_lines_dropped_total), and once it
// can write again the writer says how many were lost. Memory: the queue and one batch being
// written, so at most twice kMaxQueuedLogBytes. Thread-safe; the process's writer thread starts
// with its first line and is never joined (it may be blocked in write() at exit).
//
// FlushLog waits, at most `max_wait`, for every line queued before it to be written (true if
// they were): call it before lines written to stderr directly, so they come after. It also runs
// at exit (atexit, registered at static initialization), for up to a second, and before an
// uncaught exception ends the process. Neither it nor LogLinesDropped starts the writer.
// Lost: lines queued just before a fatal signal or abort() (no flush can run there), and the
// lines of a forked child (it has no writer thread; nothing here forks). Not through here: CAF's
// and kj's own output, kernels/cpu's one warning about CELLSERVE_GEMM_ISA, and the CUDA plugin's
// two (a shape that cannot be captured as a CUDA graph, once per shape; a failed NCCL broadcast,
// at load): the plugin is a library of its own.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace cellserve::monitoring {

constexpr size_t kMaxQueuedLogBytes = size_t{256} << 10;
constexpr size_t kMaxLogLineBytes = 4096;  // longer lines are cut there (a pipe's atomic write)

void LogLine(const char* format, ...) __attribute__((format(printf, 1, 2)));
bool FlushLog(std::chrono::milliseconds max_wait);
int64_t LogLinesDropped();

// The writer behind LogLine, on a file descriptor of the caller's (tests use a pipe). Owns its
// thread; the destructor waits for it, so destroy it only once its fd takes writes or is closed.
class LogWriter {
 public:
  LogWriter(int fd, size_t max_queued_bytes);
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // Queues `line` (a newline is added if it has none); false if it was dropped.
  bool Add(std::string line);
  bool Flush(std::chrono::milliseconds max_wait);
  int64_t dropped() const;

 private:
  void Run();

  const int fd_;
  const size_t max_queued_bytes_;
  mutable std::mutex mu_;
  std::condition_variable wake_;     // the writer: lines queued, or stopping
  std::condition_variable written_;  // Flush: a batch was written
  std::deque<std::string> queue_;    // GUARDED_BY(mu_)
  size_t queued_bytes_ = 0;          // GUARDED_BY(mu_)
  uint64_t added_ = 0;               // GUARDED_BY(mu_): lines queued so far
  uint64_t done_ = 0;                // GUARDED_BY(mu_): of those, written (or failed to be)
  int64_t dropped_ = 0;              // GUARDED_BY(mu_)
  int64_t dropped_said_ = 0;         // GUARDED_BY(mu_): dropped lines the writer has reported
  bool stopping_ = false;            // GUARDED_BY(mu_)
  std::thread thread_;  // last: it starts once the members above are made
};

}  // namespace cellserve::monitoring
