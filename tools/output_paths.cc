#include "tools/output_paths.h"

#include <filesystem>
#include <system_error>

#include "runtime/atomic_file.h"

namespace cellserve::tools {

namespace {

namespace fs = std::filesystem;

bool Given(const std::string& path) { return !path.empty() && path != "-"; }

// The file a path names, to compare two paths: its canonical form as far as it exists.
std::string Identity(const std::string& path) {
  std::error_code ec;
  const fs::path p = fs::weakly_canonical(path, ec);
  return ec ? path : p.string();
}

}  // namespace

Status CheckOutputPaths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [flag, path] = outputs[i];
    if (!Given(path)) continue;
    StatusOr<WriteTarget> target = ResolveWriteTarget(path);
    if (!target.ok()) return InvalidArgument(flag + ": " + target.status().message());
    std::error_code ec;
    if (!target->in_place && !fs::exists(target->path, ec)) {
      const fs::path folder = fs::path(target->path).parent_path();
      if (!folder.empty() && !fs::is_directory(folder, ec))
        return InvalidArgument(flag + " " + path + ": there is no folder " + folder.string() + " (make it first)");
    }
    if (target->in_place) continue;  // /dev/null and the like: any number may write there
    for (size_t j = 0; j < i; ++j)
      if (Given(outputs[j].second) && Identity(outputs[j].second) == Identity(path))
        return InvalidArgument(outputs[j].first + " and " + flag + " name the same file, " + path +
                               ": one would overwrite the other");
    for (const auto& [in_flag, in_path] : inputs)
      if (Given(in_path) && Identity(in_path) == Identity(path))
        return InvalidArgument(flag + " " + path + " is the " + in_flag + " file: writing it would destroy the input");
  }
  return OkStatus();
}

}  // namespace cellserve::tools
