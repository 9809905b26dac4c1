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

// ListModels, and with `strict` false the same without its errors for single folders (what
// LoadModel's NOT_FOUND lists: a bad sibling folder must not stop a model named on its own).
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
    // Hidden folders and a volume's lost+found (root's, unreadable to the server's user) are not
    // models; any other folder that cannot be looked into may be one: serving without it would
    // answer its requests NOT_FOUND with every probe green.
    const bool never_a_model = name == "lost+found" || name[0] == '.';
    auto cannot_look_into = [&](const std::error_code& why) {
      return Unavailable("cannot look into model folder '" + it->path().string() + "': " + why.message() +
                         "; give the server's user access, or move the folder out of the repository");
    };
    std::error_code entry_ec;
    const bool folder = it->is_directory(entry_ec);  // through a link: its target's
    // A link whose target cannot be reached (no permission); one that points nowhere or in a loop
    // is no folder.
    const bool broken_link = entry_ec == std::errc::no_such_file_or_directory ||
                             entry_ec == std::errc::not_a_directory ||
                             entry_ec == std::errc::too_many_symbolic_link_levels;
    if (entry_ec && !broken_link && strict && !never_a_model) return cannot_look_into(entry_ec);
    if (!folder) continue;
    const bool has_spec = fs::exists(it->path() / "spec.json", entry_ec);
    if (entry_ec && strict && !never_a_model) return cannot_look_into(entry_ec);
    if (has_spec) {
      names.push_back(name);
      continue;
    }
    if (!strict || never_a_model) continue;
    // Triton's layout (NAME/1/spec.json): the model would be skipped in silence.
    for (fs::directory_iterator sub(it->path(), entry_ec); !entry_ec && sub != end; sub.increment(entry_ec)) {
      std::error_code sub_ec;
      const std::string version = sub->path().filename().string();
      if (!version.empty() && version.find_first_not_of("0123456789") == std::string::npos &&
          fs::exists(sub->path() / "spec.json", sub_ec))
        return InvalidArgument("model folder '" + it->path().string() + "' holds a version folder ('" + version +
                               "/spec.json'), as Triton's repositories do; here a model's folder holds spec.json and "
                               "weights.safetensors itself, and the version is spec.json's \"version\": move " +
                               name + "/" + version + "/* up into " + name + "/");
    }
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
    std::string have;
    for (const auto& n : names) have += (have.empty() ? "" : ", ") + n;
    std::error_code ec;
    const bool folder = !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
                        fs::is_directory(fs::path(repo) / name, ec);
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
