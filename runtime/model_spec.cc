#include "runtime/model_spec.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/tensor.h"
#include "runtime/text.h"

namespace cellserve {

using nlohmann::json;

const char* ModelKindName(ModelKind kind) {
  switch (kind) {
    case ModelKind::kLstm: return "lstm";
    case ModelKind::kSeq2Seq: return "seq2seq";
    case ModelKind::kTreeLstm: return "treelstm";
  }
  return "?";
}

StatusOr<ModelKind> ParseModelKind(const std::string& name) {
  if (name == "lstm") return ModelKind::kLstm;
  if (name == "seq2seq") return ModelKind::kSeq2Seq;
  if (name == "treelstm") return ModelKind::kTreeLstm;
  return InvalidArgument("unknown model kind '" + name + "' (kinds: lstm, seq2seq, treelstm)");
}

namespace {

Status CheckPositive(const char* field, int64_t value, int64_t max_value = int64_t{1} << 24) {
  if (value <= 0 || value > max_value)
    return InvalidArgument(std::string("spec field '") + field + "' must be in 1.." +
                           std::to_string(max_value) + ", got " + std::to_string(value));
  return OkStatus();
}

// `field` of `j` (an integer or a string, as T), or `fallback` when `j` does not have it; a field
// without a fallback (kRequired) must be there.
template <typename T>
StatusOr<T> ReadField(const json& j, const char* field, const std::optional<T>& fallback) {
  auto it = j.find(field);
  if (it == j.end()) {
    if (!fallback) return InvalidArgument(std::string("spec is missing field '") + field + "'");
    return *fallback;
  }
  constexpr bool kInteger = std::is_same_v<T, int64_t>;
  if (kInteger ? !it->is_number_integer() : !it->is_string())
    return InvalidArgument(std::string("spec field '") + field + "' must be " + (kInteger ? "an integer" : "a string"));
  return it->get<T>();
}
constexpr std::nullopt_t kRequired = std::nullopt;

StatusOr<int64_t> ReadInt(const json& j, const char* field, const std::optional<int64_t>& fallback) {
  return ReadField<int64_t>(j, field, fallback);
}
StatusOr<std::string> ReadString(const json& j, const char* field, const std::optional<std::string>& fallback) {
  return ReadField<std::string>(j, field, fallback);
}

}  // namespace

Status ModelSpec::Validate() const {
  if (name.empty()) return InvalidArgument("spec field 'name' must not be empty");
  for (char ch : name) {
    if (!(isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.'))
      return InvalidArgument("model name '" + name + "' may use only letters, digits, '_', '-', '.'");
  }
  // The name is the model's folder in the repository: "." and ".." would point outside it, and a
  // folder whose name starts with '.' is hidden (the repository's scan skips it, as `ls` does).
  if (name == "." || name == "..")
    return InvalidArgument("model name '" + name + "' is not a valid folder name");
  if (name[0] == '.')
    return InvalidArgument("model name '" + name + "' must not start with '.' (a hidden folder, which the "
                           "repository's scan skips)");
  if (name.size() > kMaxModelNameBytes)
    return InvalidArgument("model name '" + name.substr(0, 40) + "...' is " + std::to_string(name.size()) +
                           " characters long; at most " + std::to_string(kMaxModelNameBytes));
  RETURN_IF_ERROR(CheckPositive("version", version, int64_t{1} << 40));
  // Ids 0..kFirstWordId-1 are reserved (padding, BOS, EOS, unknown; runtime/text.h) and text's
  // words hash into the rest: a vocabulary without room for one word could serve no text.
  if (vocab_size <= kFirstWordId || vocab_size > (int64_t{1} << 24))
    return InvalidArgument("spec field 'vocab_size' must be in " + std::to_string(kFirstWordId + 1) + ".." +
                           std::to_string(int64_t{1} << 24) + " (ids 0.." + std::to_string(kFirstWordId - 1) +
                           " are reserved: padding, BOS, EOS, unknown; words take the rest), got " +
                           std::to_string(vocab_size));
  RETURN_IF_ERROR(CheckPositive("hidden", hidden, 1 << 16));
  RETURN_IF_ERROR(CheckPositive("embed_dim", embed_dim, 1 << 16));
  RETURN_IF_ERROR(CheckPositive("layers", layers, 64));
  RETURN_IF_ERROR(CheckPositive("max_input_tokens", max_input_tokens, 1 << 20));
  RETURN_IF_ERROR(CheckPositive("max_batch", max_batch, 1 << 16));
  if (auto d = ParseDType(dtype); !d.ok()) return d.status().WithContext("spec field 'dtype'");
  switch (kind) {
    case ModelKind::kLstm:
    case ModelKind::kTreeLstm:
      RETURN_IF_ERROR(CheckPositive("classes", classes));
      break;
    case ModelKind::kSeq2Seq:
      RETURN_IF_ERROR(CheckPositive("target_vocab_size", target_vocab_size));
      RETURN_IF_ERROR(CheckPositive("max_decode_len", max_decode_len, 1 << 16));
      if (bos_id < 0 || bos_id >= target_vocab_size)
        return InvalidArgument("spec field 'bos_id' must be in 0.." + std::to_string(target_vocab_size - 1));
      if (eos_id < 0 || eos_id >= target_vocab_size)
        return InvalidArgument("spec field 'eos_id' must be in 0.." + std::to_string(target_vocab_size - 1));
      break;
  }
  return OkStatus();
}

namespace {

const char* const kSpecFields[] = {"name", "kind", "version", "vocab_size", "embed_dim", "hidden", "layers", "classes",
                                   "target_vocab_size", "bos_id", "eos_id", "max_decode_len", "max_input_tokens",
                                   "max_batch", "dtype"};

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// A field the spec does not have is an error, not ignored: a misspelt "max_input_token" would
// leave the limit at its default without a word.
Status CheckFieldsKnown(const json& j) {
  for (const auto& [key, value] : j.items()) {
    const char* nearest = nullptr;
    size_t best = 3;  // suggest only close ones
    bool known = false;
    for (const char* field : kSpecFields) {
      if (key == field) known = true;
      const size_t d = EditDistance(key, field);
      if (d < best) best = d, nearest = field;
    }
    if (known) continue;
    std::string fields;
    for (const char* field : kSpecFields) fields += std::string(fields.empty() ? "" : ", ") + field;
    return InvalidArgument("spec has an unknown field \"" + key + "\"" +
                           (nearest ? std::string(" (did you mean \"") + nearest + "\"?)" : std::string()) +
                           "; a spec's fields: " + fields);
  }
  return OkStatus();
}

}  // namespace

StatusOr<ModelSpec> ParseModelSpec(const std::string& json_text) {
  // A field given twice (one appended to change it): JSON keeps the last silently, so say so.
  std::set<std::string> keys;
  std::string duplicate;
  json j;
  try {
    j = json::parse(json_text, [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1 && duplicate.empty()) {
        const std::string key = parsed.get<std::string>();
        if (!keys.insert(key).second) duplicate = key;
      }
      return true;
    });
  } catch (const json::exception& e) {  // says where: "syntax error while parsing ... at line 3, column 5"
    return InvalidArgument(std::string("spec is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return InvalidArgument("spec must be a JSON object");
  if (!duplicate.empty()) return InvalidArgument("spec gives \"" + duplicate + "\" twice; give each field once");
  RETURN_IF_ERROR(CheckFieldsKnown(j));
  ModelSpec spec;  // its defaults are the fallbacks
  ASSIGN_OR_RETURN(spec.name, ReadString(j, "name", kRequired));
  ASSIGN_OR_RETURN(const std::string kind, ReadString(j, "kind", kRequired));
  ASSIGN_OR_RETURN(spec.kind, ParseModelKind(kind));
  const bool s2s = spec.kind == ModelKind::kSeq2Seq;
  auto required_if = [](bool required, int64_t fallback) -> std::optional<int64_t> {
    if (required) return kRequired;
    return fallback;
  };
  ASSIGN_OR_RETURN(spec.version, ReadInt(j, "version", spec.version));
  ASSIGN_OR_RETURN(spec.vocab_size, ReadInt(j, "vocab_size", kRequired));
  ASSIGN_OR_RETURN(spec.embed_dim, ReadInt(j, "embed_dim", kRequired));
  ASSIGN_OR_RETURN(spec.hidden, ReadInt(j, "hidden", kRequired));
  ASSIGN_OR_RETURN(spec.layers, ReadInt(j, "layers", spec.layers));
  ASSIGN_OR_RETURN(spec.classes, ReadInt(j, "classes", required_if(!s2s, spec.classes)));
  ASSIGN_OR_RETURN(spec.target_vocab_size, ReadInt(j, "target_vocab_size", required_if(s2s, spec.target_vocab_size)));
  ASSIGN_OR_RETURN(spec.bos_id, ReadInt(j, "bos_id", spec.bos_id));
  ASSIGN_OR_RETURN(spec.eos_id, ReadInt(j, "eos_id", spec.eos_id));
  ASSIGN_OR_RETURN(spec.max_decode_len, ReadInt(j, "max_decode_len", spec.max_decode_len));
  ASSIGN_OR_RETURN(spec.max_input_tokens, ReadInt(j, "max_input_tokens", spec.max_input_tokens));
  ASSIGN_OR_RETURN(spec.max_batch, ReadInt(j, "max_batch", spec.max_batch));
  ASSIGN_OR_RETURN(spec.dtype, ReadString(j, "dtype", spec.dtype));
  RETURN_IF_ERROR(spec.Validate());
  return spec;
}

std::string ModelSpecToJson(const ModelSpec& spec) {
  json j = {{"name", spec.name},
            {"version", spec.version},
            {"kind", ModelKindName(spec.kind)},
            {"vocab_size", spec.vocab_size},
            {"embed_dim", spec.embed_dim},
            {"hidden", spec.hidden},
            {"layers", spec.layers},
            {"max_input_tokens", spec.max_input_tokens},
            {"max_batch", spec.max_batch},
            {"dtype", spec.dtype}};
  if (spec.kind == ModelKind::kSeq2Seq) {
    j["target_vocab_size"] = spec.target_vocab_size;
    j["bos_id"] = spec.bos_id;
    j["eos_id"] = spec.eos_id;
    j["max_decode_len"] = spec.max_decode_len;
  } else {
    j["classes"] = spec.classes;
  }
  return j.dump(2) + "\n";
}

StatusOr<ModelSpec> ReadModelSpec(const std::string& path) {
  // Checked before opening: a FIFO would wait for a writer, and a huge file (weights copied over
  // the spec) would be read whole before the JSON is found wanting.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    const std::string msg = "cannot open model spec " + path + ": " + std::strerror(err);
    return err == ENOENT ? NotFound(msg) : Unavailable(msg);
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(path + ": not a regular file");
  if (st.st_size > kMaxModelSpecBytes)
    return InvalidArgument(path + ": " + std::to_string(st.st_size) + " bytes; a spec is a few hundred (at most " +
                           std::to_string(kMaxModelSpecBytes) + "): is this the right file?");
  std::ifstream in(path);
  if (!in) return Unavailable("cannot open model spec " + path + ": " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  auto spec = ParseModelSpec(ss.str());
  if (!spec.ok()) return spec.status().WithContext(path);
  return spec;
}

}  // namespace cellserve
