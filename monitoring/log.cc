// The serving processes' log (see log.h).
#include "monitoring/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include "runtime/this_thread.h"

namespace cellserve::monitoring {
namespace {

// Writes all of `text` to `fd`; false if the fd fails (the text is then lost).
bool WriteAll(int fd, const std::string& text) {
  size_t off = 0;
  while (off < text.size()) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

std::string DroppedNotice(int64_t lines) {
  return "cellserve: " + std::to_string(lines) +
         " log line(s) dropped: standard error was not being read (cellserve_log_lines_dropped_total)\n";
}

std::atomic<LogWriter*> g_started{nullptr};  // the process's writer, once its first line came

// The exit flush, registered at static initialization rather than with the first line: exit
// runs it after the destructors of the statics made after it, whose lines it then still writes.
[[maybe_unused]] const bool g_flush_at_exit = [] {
  std::atexit([] { (void)FlushLog(std::chrono::seconds(1)); });
  return true;
}();

std::terminate_handler g_previous_terminate = nullptr;

LogWriter& ProcessLog() {
  // Never destroyed: its thread may be blocked in write() when the process exits.
  static LogWriter* writer = [] {
    auto* w = new LogWriter(STDERR_FILENO, kMaxQueuedLogBytes);
    g_started.store(w);
    // An uncaught exception ends the process without exit's flush: the lines before it first.
    g_previous_terminate = std::set_terminate([] {
      (void)FlushLog(std::chrono::milliseconds(200));
      if (g_previous_terminate) g_previous_terminate();
      std::abort();
    });
    return w;
  }();
  return *writer;
}

}  // namespace

LogWriter::LogWriter(int fd, size_t max_queued_bytes)
    : fd_(fd), max_queued_bytes_(max_queued_bytes), thread_([this] { Run(); }) {}

LogWriter::~LogWriter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

bool LogWriter::Add(std::string line) {
  if (line.size() > kMaxLogLineBytes) line.resize(kMaxLogLineBytes - 4), line += "...";
  if (line.empty() || line.back() != '\n') line += '\n';
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queued_bytes_ + line.size() > max_queued_bytes_) {
      ++dropped_;
      return false;
    }
    queued_bytes_ += line.size();
    queue_.push_back(std::move(line));
    ++added_;
  }
  wake_.notify_one();
  return true;
}

bool LogWriter::Flush(std::chrono::milliseconds max_wait) {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = added_;
  return written_.wait_for(lock, max_wait, [&] { return done_ >= target; });
}

int64_t LogWriter::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void LogWriter::Run() {
  NameThisThread("cs-log");
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, with everything written
    std::deque<std::string> batch;
    batch.swap(queue_);
    queued_bytes_ = 0;
    lock.unlock();
    for (const std::string& line : batch) (void)WriteAll(fd_, line);  // a failing fd loses lines, not the process
    lock.lock();
    done_ += batch.size();
    // Dropped while this batch was being written or before: say so, after the lines kept.
    if (dropped_ > dropped_said_) {
      const int64_t lost = dropped_ - dropped_said_;
      dropped_said_ = dropped_;
      lock.unlock();
      (void)WriteAll(fd_, DroppedNotice(lost));
      lock.lock();
    }
    written_.notify_all();
  }
}

void LogLine(const char* format, ...) {
  char buffer[kMaxLogLineBytes];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(buffer, sizeof(buffer), format, args);
  va_end(args);
  if (n < 0) return;
  std::string line(buffer, std::min<size_t>(static_cast<size_t>(n), sizeof(buffer) - 1));
  if (static_cast<size_t>(n) >= sizeof(buffer)) line.replace(line.size() - 4, 4, "...\n");
  (void)ProcessLog().Add(std::move(line));
}

bool FlushLog(std::chrono::milliseconds max_wait) {
  LogWriter* writer = g_started.load();
  return writer == nullptr || writer->Flush(max_wait);
}

int64_t LogLinesDropped() {
  LogWriter* writer = g_started.load();
  return writer == nullptr ? 0 : writer->dropped();
}

}  // namespace cellserve::monitoring
