#include "runtime/model_repository.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <system_error>

#include "runtime/atomic_file.h"
#include "runtime/tensor.h"

namespace cellserve {

namespace fs = std::filesystem;

namespace {

const std::string kF16Hint = " (largest " + std::to_string(static_cast<int>(kF16Max)) + "); try BF16";

// Whether the repository entry `path` (named `name`) is a model folder: true when it holds a
// spec.json, false when it is no model. With `strict`, an entry that may be a model but cannot be
// used is an error instead of false: a folder (or a link's target) the server cannot look into, a
// link that leads nowhere, Triton's layout (NAME/1/spec.json). Serving without it would answer
// its requests NOT_FOUND with every probe green. Hidden entries and a volume's lost+found (root's,
// unreadable to the server's user) are never models.
StatusOr<bool> IsModelFolder(const fs::path& path, const std::string& name, bool strict) {
  if (name.empty() || name == "lost+found" || name[0] == '.') return false;
  auto cannot_look_into = [&](const std::error_code& why) {
    return Unavailable("cannot look into model folder '" + path.string() + "': " + why.message() +
                       "; give the server's user access, or move the folder out of the repository");
  };
  std::error_code ec;
  const bool folder = fs::is_directory(path, ec);  // through a link: its target's
  if (ec && strict) {
    std::error_code link_ec;
    if (fs::is_symlink(fs::symlink_status(path, link_ec)) && ec != std::errc::permission_denied)
      return Unavailable("model folder '" + path.string() + "' is a link that leads nowhere (" + ec.message() +
                         "): mount or copy what it points to, or remove the link");
    if (ec != std::errc::no_such_file_or_directory) return cannot_look_into(ec);
  }
  if (!folder) return false;
  const bool has_spec = fs::exists(path / "spec.json", ec);
  if (ec && strict) return cannot_look_into(ec);
  if (has_spec || !strict) return has_spec;
  // Triton's layout (NAME/1/spec.json): the model would be skipped in silence.
  fs::directory_iterator sub(path, ec), end;
  for (; !ec && sub != end; sub.increment(ec)) {
    std::error_code sub_ec;
    const std::string version = sub->path().filename().string();
    if (!version.empty() && version.find_first_not_of("0123456789") == std::string::npos &&
        fs::exists(sub->path() / "spec.json", sub_ec))
      return InvalidArgument("model folder '" + path.string() + "' holds a version folder ('" + version +
                             "/spec.json'), as Triton's repositories do; here a model's folder holds spec.json and "
                             "weights.safetensors itself, and the version is spec.json's \"version\": move " + name +
                             "/" + version + "/* up into " + name + "/");
  }
  return false;
}

// ListModels, and with `strict` false the same without IsModelFolder's errors (what LoadModel's
// NOT_FOUND lists: a bad sibling folder must not stop a model named on its own).
StatusOr<std::vector<std::string>> ListModelFolders(const std::string& repo, bool strict) {
  std::error_code ec;
  if (!fs::is_directory(repo, ec))
    return NotFound("model repository '" + repo + "' does not exist (create one with `cellserve model init`)");
  std::vector<std::string> names;
  // error_code overloads throughout: an unreadable entry (a symlink loop, no permission) must not
  // throw. A repository that cannot be read is an error, not an empty one.
  fs::directory_iterator it(repo, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    ASSIGN_OR_RETURN(const bool model, IsModelFolder(it->path(), name, strict));
    if (model) names.push_back(name);
  }
  if (ec) return Unavailable("cannot read the model repository '" + repo + "': " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

StatusOr<std::vector<std::string>> ListModels(const std::string& repo) { return ListModelFolders(repo, true); }

StatusOr<std::shared_ptr<const Model>> LoadModel(const std::string& repo, const std::string& name) {
  // The model's own folder only: other folders of the repository (unreadable, laid out otherwise)
  // are ListModels' business, not this model's.
  ASSIGN_OR_RETURN(std::vector<std::string> names, ListModelFolders(repo, /*strict=*/false));
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    const bool plain_name = !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
    // Its own folder's trouble (unreadable, a dangling link, Triton's layout) is the answer.
    if (plain_name) RETURN_IF_ERROR(IsModelFolder(fs::path(repo) / name, name, /*strict=*/true).status());
    std::string have;
    for (const auto& n : names) have += (have.empty() ? "" : ", ") + n;
    std::error_code ec;
    const bool folder = plain_name && fs::is_directory(fs::path(repo) / name, ec);
    return NotFound("model '" + name + "' is not in repository '" + repo + "' (it has: " +
                    (have.empty() ? "no models" : have) + ")" +
                    (folder ? "; its folder is there but has no spec.json" : ""));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<const Model> model, Model::Load(repo + "/" + name));
  if (model->spec().name != name)  // a copied or renamed folder: two names for one model
    return InvalidArgument("folder '" + repo + "/" + name + "' holds model '" + model->spec().name +
                           "' (the name in its spec.json): a model's folder must carry its name; rename the "
                           "folder to '" + model->spec().name + "', or move it out of the repository");
  return model;
}

Status WriteModel(const std::string& repo, const ModelSpec& spec, const SafetensorsFile& weights) {
  RETURN_IF_ERROR(Model::Create(spec, weights).status());
  const fs::path dir = fs::path(repo) / spec.name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Unavailable("cannot create " + dir.string() + ": " + ec.message());
  RETURN_IF_ERROR(WriteSafetensors((dir / "weights.safetensors").string(), weights));
  return WriteFileAtomically((dir / "spec.json").string(), ModelSpecToJson(spec));
}

StatusOr<SafetensorsFile> RandomWeights(const ModelSpec& spec, uint64_t seed, float scale) {
  RETURN_IF_ERROR(spec.Validate());
  ASSIGN_OR_RETURN(DType dtype, ParseDType(spec.dtype));
  if (!(scale > 0) || !std::isfinite(scale))
    return InvalidArgument("the init scale must be a positive finite number, got " + std::to_string(scale));
  if (dtype == DType::kF16 && scale > kF16Max)
    return InvalidArgument("an init scale of " + std::to_string(scale) + " does not fit in F16" + kF16Hint);
  if (dtype == DType::kBF16 && !std::isfinite(BFloat16ToFloat(FloatToBFloat16(scale))))
    return InvalidArgument("an init scale of " + std::to_string(scale) + " does not fit in BF16 (it rounds to infinity)");
  SafetensorsFile file;
  file.metadata["format"] = "cellserve";
  file.metadata["init"] = "uniform(-" + std::to_string(scale) + ", " + std::to_string(scale) +
                          "), seed " + std::to_string(seed);
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&]() {  // splitmix64: identical on every platform
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  for (const auto& [name, shape] : Model::RequiredTensors(spec)) {
    Tensor t(shape);
    for (float& v : t.values()) {
      const float u = static_cast<float>(next() >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      v = (2.0f * u - 1.0f) * scale;
    }
    file.tensors[name] = RawTensor::FromFloat(t, dtype);
  }
  return file;
}

StatusOr<SafetensorsFile> ConvertWeights(const Model& model, const std::string& dtype_name,
                                         WeightConversion* report) {
  ASSIGN_OR_RETURN(DType dtype, ParseDType(dtype_name));
  WeightConversion r;
  SafetensorsFile file;
  file.metadata["format"] = "cellserve";
  file.metadata["converted"] = "from " + model.spec().dtype + " to " + std::string(DTypeName(dtype));
  for (const auto& [name, shape] : Model::RequiredTensors(model.spec())) {
    const Tensor& t = model.tensor(name);
    RawTensor raw = RawTensor::FromFloat(t, dtype);
    const Tensor back = raw.ToFloat();
    for (int64_t i = 0; i < t.size(); ++i) {
      const float old_value = t.data()[i], new_value = back.data()[i];
      if (std::isfinite(old_value) && !std::isfinite(new_value))
        return InvalidArgument("tensor '" + name + "': " + std::to_string(old_value) + " does not fit in " +
                               DTypeName(dtype) + (dtype == DType::kF16 ? kF16Hint : ""));
      const double change = std::fabs(double(new_value) - double(old_value));
      if (change > 0) {
        ++r.changed;
        r.max_abs_change = std::max(r.max_abs_change, change);
        if (old_value != 0.0f) r.max_rel_change = std::max(r.max_rel_change, change / std::fabs(double(old_value)));
      }
    }
    r.weights += t.size();
    file.tensors[name] = std::move(raw);
  }
  if (report) *report = r;
  return file;
}

}  // namespace cellserve
