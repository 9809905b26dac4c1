#include "runtime/cgroup.h"

#include <fstream>
#include <sstream>

namespace cellserve {

std::vector<std::string> CgroupAndAncestors(const std::string& path) {
  std::vector<std::string> out;
  std::string p = path.empty() ? "/" : path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  for (;;) {
    out.push_back(p);
    if (p == "/") break;
    const size_t slash = p.rfind('/');
    p = slash == 0 || slash == std::string::npos ? "/" : p.substr(0, slash);
  }
  return out;
}

std::vector<CgroupFolder> CgroupFoldersOfThisProcess(const std::string& v1_controller) {
  std::vector<CgroupFolder> out;
  std::ifstream cgroups("/proc/self/cgroup");
  // Lines "ID:CONTROLLERS:PATH": "0::/a/b" (v2), "4:cpu,cpuacct:/a/b" (v1).
  for (std::string line; std::getline(cgroups, line);) {
    const size_t c1 = line.find(':'), c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    const std::string controllers = line.substr(c1 + 1, c2 - c1 - 1), path = line.substr(c2 + 1);
    const bool v2 = line.rfind("0::", 0) == 0;
    const bool v1 = ("," + controllers + ",").find("," + v1_controller + ",") != std::string::npos;
    if (!v2 && !v1) continue;
    for (const std::string& level : CgroupAndAncestors(path)) {
      const std::string dir = level == "/" ? "" : level;
      out.push_back({v2, v2 ? "/sys/fs/cgroup" + dir : "/sys/fs/cgroup/" + controllers + dir});
    }
  }
  return out;
}

std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace cellserve
