// Model versions behind a router: the names its placement policy places by ("cls" for any version,
// "cls@2" for one), which of them a request is placed by, and the versions it lists to clients.
// Pure functions of their arguments; no state, no threads. Used by cluster/router.cc's actor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/model_spec.h"
#include "runtime/status.h"

namespace cellserve {

// The policy's name for `model` at `version`: the model's own name for 0 (any version), else
// "name@version". Model names cannot hold '@' (ModelSpec::Validate), so the two never collide.
std::string VersionKey(const std::string& model, int64_t version);
bool IsVersionKey(const std::string& key);

// The names a node serving `models` is placed by: each model's name, then its VersionKey.
std::vector<std::string> PlacementKeys(const std::vector<ModelSpec>& models);

// The version of `model` among `served` (0 when it is not there).
int64_t VersionServed(const std::vector<ModelSpec>& served, const std::string& model);

// The version a request must run on (0: any). One asked for a version runs on it; so does one
// whose earlier attempt streamed tokens to its client (`placed_version` made them): a retry
// resumes those tokens, so it has to be the model that made them.
int64_t PinnedVersion(int64_t asked_version, int64_t placed_version, int64_t tokens_forwarded);

// `s`, a failure to place a request pinned to `version` of `model`, in the caller's words: the
// policy's messages name its key ('cls@2'), the caller asked for 'cls' version 2. NOT_FOUND
// (the policy forgot the key: no node serves that version) becomes "no node serves model ...".
// Other statuses pass through, their key renamed. `version` 0 returns `s` unchanged.
Status InCallersWords(const Status& s, const std::string& model, int64_t version);
// 'cls', or 'cls' version 2: how messages name what a request asked for.
std::string DescribeModel(const std::string& model, int64_t version);

// The versions the live nodes serve, by name: each (name, version) once, as the first node in
// `nodes` that serves it registered it; a name's versions in the order they were first seen.
using LiveVersions = std::map<std::string, std::vector<ModelSpec>>;
LiveVersions CollectLiveVersions(const std::vector<std::vector<ModelSpec>>& nodes);

// What a router lists to clients: every live version of every model, and for each model in
// `remembered` (one spec per name, kept after its last node left) that no live node serves, that
// spec, so its requests are UNAVAILABLE rather than NOT_FOUND. Sorted by name, then version.
std::vector<ModelSpec> ListedVersions(const LiveVersions& live, const std::vector<ModelSpec>& remembered);

}  // namespace cellserve
