// Where this process's cgroup files are (runtime/cgroup.h).
#include "runtime/cgroup.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(CgroupTest, WalksFromACgroupUpToTheRoot) {
  EXPECT_EQ(CgroupAndAncestors("/a/b/c"), (std::vector<std::string>{"/a/b/c", "/a/b", "/a", "/"}));
  EXPECT_EQ(CgroupAndAncestors("/a/"), (std::vector<std::string>{"/a", "/"}));
  EXPECT_EQ(CgroupAndAncestors("/"), (std::vector<std::string>{"/"}));
  EXPECT_EQ(CgroupAndAncestors(""), (std::vector<std::string>{"/"}));
}

TEST(CgroupTest, ThisProcessesCgroupFoldersAreThere) {
  // Read from the real machine: every folder is under /sys/fs/cgroup, and a v1 one exists and is
  // its controller's (a v2 one may not exist: hybrid mode mounts v2 elsewhere).
  for (const char* controller : {"cpu", "memory"}) {
    const std::vector<CgroupFolder> folders = CgroupFoldersOfThisProcess(controller);
    std::ifstream self("/proc/self/cgroup");
    const std::string table((std::istreambuf_iterator<char>(self)), std::istreambuf_iterator<char>());
    if (table.rfind("0::", 0) == 0 || table.find("\n0::") != std::string::npos)  // v2 (or hybrid): a folder
      ASSERT_FALSE(folders.empty()) << controller << ": /proc/self/cgroup has a 0:: line:\n" << table;
    for (size_t i = 0; i < folders.size(); ++i) {
      EXPECT_EQ(folders[i].path.rfind("/sys/fs/cgroup", 0), 0u) << folders[i].path;
      if (!folders[i].v2) {
        EXPECT_TRUE(std::filesystem::is_directory(folders[i].path)) << folders[i].path;
        EXPECT_NE(folders[i].path.find(controller), std::string::npos) << folders[i].path;
      }
    }
  }
}

TEST(CgroupTest, AFileThatCannotBeReadReadsAsAnEmptyLine) {
  EXPECT_EQ(ReadFirstLine("/nonexistent/cellserve/file"), "");
  EXPECT_FALSE(ReadFirstLine("/proc/self/status").empty());
}

}  // namespace
}  // namespace cellserve
