// The serving processes' log (monitoring/log.h) on a pipe the test reads, or does not: lines come
// whole and in order; a pipe nobody reads never blocks the caller, and what did not fit is
// counted and reported once the pipe drains.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "monitoring/log.h"

namespace cellserve::monitoring {
namespace {

using std::chrono::milliseconds;

class Pipe {
 public:
  Pipe() {
    int fds[2];
    if (::pipe(fds) != 0) std::abort();
    read_ = fds[0];
    write_ = fds[1];
  }
  ~Pipe() {
    ::close(read_);
    ::close(write_);
  }
  int write_end() const { return write_; }
  // Fills the pipe as a log collector that fell behind leaves it; returns the bytes it holds.
  std::string Fill() {
    ::fcntl(write_, F_SETFL, O_NONBLOCK);
    std::string filler;
    const std::string line(99, 'f');
    while (::write(write_, (line + "\n").data(), 100) == 100) filler += line + "\n";
    ::fcntl(write_, F_SETFL, 0);
    return filler;
  }
  // Everything written so far (reading until the pipe is empty).
  std::string Drain() {
    ::fcntl(read_, F_SETFL, O_NONBLOCK);
    std::string out;
    char chunk[1 << 16];
    for (ssize_t n; (n = ::read(read_, chunk, sizeof(chunk))) > 0;) out.append(chunk, static_cast<size_t>(n));
    return out;
  }

 private:
  int read_ = -1, write_ = -1;
};

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(text.substr(start, nl - start));
  return lines;
}

TEST(LogWriterTest, LinesComeWholeAndInOrder) {
  Pipe pipe;
  LogWriter log(pipe.write_end(), 1 << 20);
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(log.Add("line " + std::to_string(i)));
  ASSERT_TRUE(log.Flush(milliseconds(5000)));
  const std::vector<std::string> lines = Lines(pipe.Drain());
  ASSERT_EQ(lines.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(lines[i], "line " + std::to_string(i));
  EXPECT_EQ(log.dropped(), 0);
}

// The pipe is full and nobody reads it: the writer blocks, the caller does not. What is over the
// queue's bound is dropped and counted; once the pipe is read, every kept line arrives, and lines
// that say how many were lost.
TEST(LogWriterTest, AStalledPipeNeverBlocksTheCallerAndDroppedLinesAreCountedAndSaid) {
  Pipe pipe;
  const std::string filler = pipe.Fill();
  constexpr size_t kQueue = 16 << 10;
  LogWriter log(pipe.write_end(), kQueue);
  const std::string body(99, 'x');  // 100 bytes a line with its newline
  const auto start = std::chrono::steady_clock::now();
  int kept = 0;
  constexpr int kLines = 3000;  // 300 KB: a batch and the queue hold less
  for (int i = 0; i < kLines; ++i) kept += log.Add(body) ? 1 : 0;
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(2)) << "Add blocked on the full pipe";
  EXPECT_GT(log.dropped(), 0);
  EXPECT_EQ(log.dropped() + kept, kLines);
  EXPECT_FALSE(log.Flush(milliseconds(100))) << "nothing reads the pipe, so the lines cannot all be written";

  EXPECT_LE(kept * 100, static_cast<int>(2 * kQueue)) << "the queue and the batch being written hold the rest";
  std::string out;
  for (int tries = 0; tries < 500 && out.find("dropped") == std::string::npos; ++tries) {
    out += pipe.Drain();
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_TRUE(log.Flush(milliseconds(5000)));
  out += pipe.Drain();
  // A notice follows the batch during which lines were dropped (one or more batches).
  const std::string notice_end =
      " log line(s) dropped: standard error was not being read (cellserve_log_lines_dropped_total)";
  int bodies = 0, notices = 0;
  int64_t said = 0;
  ASSERT_EQ(out.rfind(filler, 0), 0u) << "the filler comes first";
  for (const std::string& line : Lines(out.substr(filler.size()))) {
    if (line == body) {
      ++bodies;
      continue;
    }
    ASSERT_EQ(line.rfind("cellserve: ", 0), 0u) << line;
    ASSERT_EQ(line.substr(line.size() - notice_end.size()), notice_end) << line;
    said += std::stoll(line.substr(11));
    ++notices;
  }
  EXPECT_EQ(bodies, kept);
  EXPECT_GE(notices, 1);
  EXPECT_EQ(said, log.dropped());
}

TEST(LogWriterTest, ALongLineIsCutToOnePipeWrite) {
  Pipe pipe;
  LogWriter log(pipe.write_end(), 1 << 20);
  EXPECT_TRUE(log.Add(std::string(100000, 'y')));
  EXPECT_TRUE(log.Add("next\n"));
  ASSERT_TRUE(log.Flush(milliseconds(5000)));
  const std::vector<std::string> lines = Lines(pipe.Drain());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].size() + 1, kMaxLogLineBytes);
  EXPECT_EQ(lines[0].substr(lines[0].size() - 3), "...");
  EXPECT_EQ(lines[1], "next");
}

// The process's log: a line queued just before an uncaught exception ends the process is written
// (the terminate handler flushes), as is one queued just before exit.
TEST(ProcessLogDeathTest, LinesBeforeAnUncaughtExceptionOrExitAreWritten) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      [] {
        // 200 KB queued first: without a flush at the end, the last line would not be written.
        for (int i = 0; i < 2000; ++i) LogLine("%s\n", std::string(99, 'x').c_str());
        LogLine("a line just before an uncaught exception\n");
        std::terminate();  // what an uncaught exception calls
      }(),
      "a line just before an uncaught exception");
  EXPECT_EXIT(
      {
        for (int i = 0; i < 2000; ++i) LogLine("%s\n", std::string(99, 'x').c_str());
        LogLine("a line just before exit\n");
        std::exit(3);
      },
      ::testing::ExitedWithCode(3), "a line just before exit");
}

}  // namespace
}  // namespace cellserve::monitoring
