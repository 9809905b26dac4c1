// Where this process's cgroup files are: the folders under /sys/fs/cgroup of its cgroup and its
// ancestors (v2, or a v1 controller's hierarchy), and readers for such files. Used by cpu_quota.h
// (a Kubernetes CPU limit), memory_limit.h (a memory limit) and process_stats.h.
// CgroupAndAncestors is pure; the others read /proc/self/cgroup and the files named. Nothing here
// fails: what cannot be read is left out (an empty list, an empty line).
#pragma once

#include <string>
#include <vector>

namespace cellserve {

// The cgroup folder of each level from `path` ("/a/b") up to the root: "/a/b", "/a", "/".
std::vector<std::string> CgroupAndAncestors(const std::string& path);

// The folders under /sys/fs/cgroup of this process's cgroup and its ancestors that hold
// `v1_controller`'s files: for v2 ("0::/a/b") /sys/fs/cgroup/a/b, /sys/fs/cgroup/a, ...; for v1
// ("4:cpu,cpuacct:/a/b") /sys/fs/cgroup/cpu,cpuacct/a/b, ... . `v2` says which layout a folder has.
struct CgroupFolder {
  bool v2 = false;
  std::string path;
};
std::vector<CgroupFolder> CgroupFoldersOfThisProcess(const std::string& v1_controller);

// The first line of a file, or all of it ("" if it cannot be read): for /proc and /sys files.
std::string ReadFirstLine(const std::string& path);
std::string ReadWholeFile(const std::string& path);

}  // namespace cellserve
