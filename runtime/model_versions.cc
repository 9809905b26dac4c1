// Model versions behind a router (see model_versions.h).
#include "runtime/model_versions.h"

#include <algorithm>

namespace cellserve {

std::string VersionKey(const std::string& model, int64_t version) {
  return version == 0 ? model : model + "@" + std::to_string(version);
}

bool IsVersionKey(const std::string& key) { return key.find('@') != std::string::npos; }

std::vector<std::string> PlacementKeys(const std::vector<ModelSpec>& models) {
  std::vector<std::string> keys;
  for (const ModelSpec& spec : models) {
    keys.push_back(spec.name);
    keys.push_back(VersionKey(spec.name, spec.version));
  }
  return keys;
}

int64_t VersionServed(const std::vector<ModelSpec>& served, const std::string& model) {
  for (const ModelSpec& spec : served)
    if (spec.name == model) return spec.version;
  return 0;
}

int64_t PinnedVersion(int64_t asked_version, int64_t placed_version, int64_t tokens_forwarded) {
  if (asked_version != 0) return asked_version;
  return tokens_forwarded > 0 ? placed_version : 0;
}

std::string DescribeModel(const std::string& model, int64_t version) {
  return "'" + model + "'" + (version != 0 ? " version " + std::to_string(version) : "");
}

Status InCallersWords(const Status& s, const std::string& model, int64_t version) {
  if (version == 0 || s.ok()) return s;
  const std::string what = DescribeModel(model, version);
  if (s.code() == StatusCode::kNotFound) return NotFound("no node serves model " + what + " now");
  const std::string quoted_key = "'" + VersionKey(model, version) + "'";
  std::string message(s.message());
  if (size_t at = message.find(quoted_key); at != std::string::npos) message.replace(at, quoted_key.size(), what);
  return Status(s.code(), message);
}

LiveVersions CollectLiveVersions(const std::vector<std::vector<ModelSpec>>& nodes) {
  LiveVersions live;
  for (const std::vector<ModelSpec>& served : nodes) {
    for (const ModelSpec& spec : served) {
      std::vector<ModelSpec>& versions = live[spec.name];
      if (std::none_of(versions.begin(), versions.end(),
                       [&](const ModelSpec& v) { return v.version == spec.version; }))
        versions.push_back(spec);
    }
  }
  return live;
}

std::vector<ModelSpec> ListedVersions(const LiveVersions& live, const std::vector<ModelSpec>& remembered) {
  std::vector<ModelSpec> listed;
  for (const auto& [name, versions] : live) listed.insert(listed.end(), versions.begin(), versions.end());
  for (const ModelSpec& spec : remembered)
    if (!live.count(spec.name)) listed.push_back(spec);
  std::sort(listed.begin(), listed.end(), [](const ModelSpec& a, const ModelSpec& b) {
    return a.name != b.name ? a.name < b.name : a.version < b.version;
  });
  return listed;
}

}  // namespace cellserve
