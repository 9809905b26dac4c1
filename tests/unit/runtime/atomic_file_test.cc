#include "runtime/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cellserve_atomic_file_test." + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // Names in the folder: a temporary left behind counts.
  int Entries() const {
    int n = 0;
    for (auto it = fs::directory_iterator(dir_); it != fs::directory_iterator(); ++it) ++n;
    return n;
  }
  fs::path dir_;
};

TEST_F(AtomicFileTest, ReplacesAFileAndLeavesNoTemporary) {
  const fs::path p = dir_ / "out.json";
  ASSERT_TRUE(WriteFileAtomically(p.string(), "one").ok());
  ASSERT_TRUE(WriteFileAtomically(p.string(), "two").ok());
  EXPECT_EQ(Read(p), "two");
  EXPECT_EQ(Entries(), 1);
}

// A link is written through: its target gets the bytes, the link stays a link.
TEST_F(AtomicFileTest, WritesThroughASymbolicLink) {
  const fs::path target = dir_ / "target.txt", link = dir_ / "link.txt";
  ASSERT_TRUE(WriteFileAtomically(target.string(), "old").ok());
  fs::create_symlink(target, link);
  ASSERT_TRUE(WriteFileAtomically(link.string(), "new").ok());
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(Read(target), "new");
  EXPECT_EQ(Entries(), 2);
  // A relative link to a file not made yet: the file is made.
  const fs::path later = dir_ / "later.txt", relative = dir_ / "relative.txt";
  fs::create_symlink("later.txt", relative);
  ASSERT_TRUE(WriteFileAtomically(relative.string(), "made").ok());
  EXPECT_TRUE(fs::is_symlink(relative));
  EXPECT_EQ(Read(later), "made");
}

// A FIFO is written to, not replaced by a file. (Opened for reading and writing here first, so
// that neither side blocks: a regression that replaced it fails, it does not hang.)
TEST_F(AtomicFileTest, WritesIntoAFifoInPlace) {
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int fd = ::open(fifo.c_str(), O_RDWR | O_NONBLOCK);
  ASSERT_GE(fd, 0);
  const Status s = WriteFileAtomically(fifo.string(), "through the pipe");
  char buf[64] = {};
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<size_t>(n) : 0), "through the pipe");
  EXPECT_TRUE(fs::is_fifo(fifo)) << "the FIFO was replaced";
  EXPECT_EQ(Entries(), 1);
}

// /dev/fd/N is the descriptor this process has: a file the shell opened for appending keeps its
// lines and gets the new ones after them (reopening truncated it; renaming replaced it).
TEST_F(AtomicFileTest, WritesToAnInheritedDescriptor) {
  const fs::path log = dir_ / "log.txt";
  std::ofstream(log) << "kept\n";
  const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(fd, 0);
  const Status s = WriteFileAtomically("/dev/fd/" + std::to_string(fd), "added\n");
  ::close(fd);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(Read(log), "kept\nadded\n");
  EXPECT_EQ(Entries(), 1);
}

TEST_F(AtomicFileTest, ADirectoryOrAMissingFolderIsAClearError) {
  const Status dir = WriteFileAtomically(dir_.string(), "x");
  EXPECT_EQ(dir.code(), StatusCode::kInvalidArgument) << dir.ToString();
  EXPECT_NE(dir.message().find("is a directory"), std::string::npos) << dir.ToString();
  const Status missing = WriteFileAtomically((dir_ / "no" / "such.json").string(), "x");
  EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing.ToString();
  EXPECT_EQ(Entries(), 0);
}

// A link planted at the next temporary names (they are predictable: PATH.tmp.PID.N) is never
// written through: the write takes a name of its own, and the file the links point to keeps its
// bytes. Before, the bytes went into that file and `path` became the link.
TEST_F(AtomicFileTest, ALinkPlantedAtTheTemporaryNameIsNotWrittenThrough) {
  const fs::path p = dir_ / "weights.bin", victim = dir_ / "victim.txt";
  ASSERT_TRUE(WriteFileAtomically(victim.string(), "precious").ok());
  // The counter is per process: the next names follow the one this call takes.
  const std::string probe = TemporaryBeside(p.string());
  const std::string stem = probe.substr(0, probe.rfind('.') + 1);
  const uint64_t next = std::stoull(probe.substr(probe.rfind('.') + 1)) + 1;
  for (uint64_t n = next; n < next + 3; ++n) fs::create_symlink(victim, stem + std::to_string(n));
  ASSERT_TRUE(WriteFileAtomically(p.string(), "weights").ok());
  EXPECT_EQ(Read(victim), "precious");
  EXPECT_FALSE(fs::is_symlink(p));
  EXPECT_EQ(Read(p), "weights");
}

// The file a write replaces keeps its mode (a spec an operator made private stays private).
TEST_F(AtomicFileTest, AReplacedFileKeepsItsMode) {
  const fs::path p = dir_ / "spec.json";
  ASSERT_TRUE(WriteFileAtomically(p.string(), "one").ok());
  ASSERT_EQ(::chmod(p.c_str(), 0600), 0);
  ASSERT_TRUE(WriteFileAtomically(p.string(), "two").ok());
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(Read(p), "two");
}

TEST_F(AtomicFileTest, TemporariesAreUniquePerCall) {
  EXPECT_NE(TemporaryBeside("a"), TemporaryBeside("a"));
}

// A writer killed mid-write (a `model init` interrupted) left its temporary: the next write of the
// same file removes it once it is an hour old and its process is gone; nothing else goes.
TEST_F(AtomicFileTest, AnHourOldTemporaryOfADeadWriterIsRemovedByTheNextWrite) {
  const pid_t child = ::fork();
  if (child == 0) std::_Exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // its pid names no process now
  const std::string dead = std::to_string(child), me = std::to_string(::getpid());
  auto make = [&](const std::string& name, bool old) {
    std::ofstream(dir_ / name) << "half a file";
    if (old) fs::last_write_time(dir_ / name, fs::file_time_type::clock::now() - std::chrono::hours(2));
  };
  make("weights.safetensors.tmp." + dead + ".0", true);    // removed
  make("weights.safetensors.tmp." + dead + ".1", false);   // too recent: its writer may live elsewhere
  make("weights.safetensors.tmp." + me + ".7", true);      // this process's
  make("weights.safetensors.tmp.1.0", true);               // pid 1 runs
  make("weights.safetensors.tmp.x.0", true);               // not a name we give
  make("spec.json.tmp." + dead + ".0", true);              // another file's: left to its own writes
  ASSERT_TRUE(WriteFileAtomically((dir_ / "weights.safetensors").string(), "new").ok());
  std::set<std::string> left;
  for (const auto& e : fs::directory_iterator(dir_)) left.insert(e.path().filename().string());
  EXPECT_EQ(left, (std::set<std::string>{"weights.safetensors", "weights.safetensors.tmp." + dead + ".1",
                                         "weights.safetensors.tmp." + me + ".7", "weights.safetensors.tmp.1.0",
                                         "weights.safetensors.tmp.x.0", "spec.json.tmp." + dead + ".0"}));
}

}  // namespace
}  // namespace cellserve
