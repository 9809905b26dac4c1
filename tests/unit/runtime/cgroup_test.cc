// Where this process's cgroup files are (runtime/cgroup.h).
#include "runtime/cgroup.h"

#include <filesystem>

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
    ASSERT_FALSE(folders.empty()) << controller << ": /proc/self/cgroup always has a line for it (v2's 0::)";
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
