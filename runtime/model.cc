#include "runtime/model.h"

#include <cmath>
#include <new>

#include "runtime/memory_limit.h"

namespace cellserve {

namespace {

std::string L(const std::string& prefix, int64_t layer, const char* what) {
  return prefix + "." + std::to_string(layer) + "." + what;
}

// Whether `name` is one a model of some kind and size has (RequiredTensors' names: "lstm.3.weight",
// "decoder.embedding", "tree.leaf.bias", ...), so that a file holding it under a spec that does
// not use it is a spec that does not describe the file. Other names are not the layout's.
bool InModelLayout(const std::string& name) {
  for (const char* exact : {"embedding", "encoder.embedding", "decoder.embedding", "head.weight", "head.bias",
                            "proj.weight", "proj.bias", "tree.leaf.weight", "tree.leaf.bias", "tree.internal.weight",
                            "tree.internal.bias"})
    if (name == exact) return true;
  for (const char* stack : {"lstm.", "encoder.", "decoder."}) {  // STACK.<layer>.weight / .bias
    if (name.rfind(stack, 0) != 0) continue;
    const std::string rest = name.substr(std::string(stack).size());
    const size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string::npos || rest.find_first_not_of("0123456789") != dot) continue;
    const std::string what = rest.substr(dot + 1);
    if (what == "weight" || what == "bias") return true;
  }
  return false;
}

}  // namespace

std::map<std::string, std::vector<int64_t>> Model::RequiredTensors(const ModelSpec& s) {
  std::map<std::string, std::vector<int64_t>> t;
  const int64_t E = s.embed_dim, H = s.hidden;
  auto stack = [&](const std::string& prefix) {
    for (int64_t l = 0; l < s.layers; ++l) {
      t[L(prefix, l, "weight")] = {4 * H, (l == 0 ? E : H) + H};
      t[L(prefix, l, "bias")] = {4 * H};
    }
  };
  switch (s.kind) {
    case ModelKind::kLstm:
      t["embedding"] = {s.vocab_size, E};
      stack("lstm");
      t["head.weight"] = {s.classes, H};
      t["head.bias"] = {s.classes};
      break;
    case ModelKind::kSeq2Seq:
      t["encoder.embedding"] = {s.vocab_size, E};
      stack("encoder");
      t["decoder.embedding"] = {s.target_vocab_size, E};
      stack("decoder");
      t["proj.weight"] = {s.target_vocab_size, H};
      t["proj.bias"] = {s.target_vocab_size};
      break;
    case ModelKind::kTreeLstm:
      t["embedding"] = {s.vocab_size, E};
      t["tree.leaf.weight"] = {3 * H, E};
      t["tree.leaf.bias"] = {3 * H};
      t["tree.internal.weight"] = {5 * H, 2 * H};
      t["tree.internal.bias"] = {5 * H};
      t["head.weight"] = {s.classes, H};
      t["head.bias"] = {s.classes};
      break;
  }
  return t;
}

Status Model::CheckTensors(const ModelSpec& s, const SafetensorsFile& weights) {
  RETURN_IF_ERROR(s.Validate());
  ASSIGN_OR_RETURN(DType dtype, ParseDType(s.dtype));
  const auto required = RequiredTensors(s);
  for (const auto& [name, shape] : required) {
    auto it = weights.tensors.find(name);
    if (it == weights.tensors.end()) {
      std::string has;  // what the file does hold: other names (a raw state_dict) say what happened
      int listed = 0;
      // Some names of cellserve's layout: the spec, not the file, is off; unless names that only a
      // PyTorch state_dict has show up too (its head.weight is also one of ours).
      bool ours = false, pytorch = false;
      const std::string kEmbedding = "embedding.weight";  // nn.Embedding's; ours is "embedding"
      for (const auto& [held, tensor] : weights.tensors) {
        ours = ours || InModelLayout(held);
        pytorch = pytorch || held.find("weight_ih_l") != std::string::npos ||
                  held.find("weight_hh_l") != std::string::npos ||
                  (held.size() >= kEmbedding.size() &&
                   held.compare(held.size() - kEmbedding.size(), kEmbedding.size(), kEmbedding) == 0);
      }
      if (pytorch) ours = false;
      for (const auto& held : weights.tensors) {
        if (listed++ == 6) {
          has += ", ...";
          break;
        }
        has += (has.empty() ? "'" : ", '") + held.first + "'";
      }
      return InvalidArgument("weights are missing tensor '" + name + "' (shape " + ShapeToString(shape) + ") that a " +
                             ModelKindName(s.kind) + " model needs; the file holds " +
                             (has.empty() ? std::string("no tensors") : has) +
                             (ours ? " (does spec.json describe these weights? check its \"kind\" and \"layers\")"
                                   : " (a PyTorch state_dict saved as is? tools/export_pytorch.py writes it in "
                                     "cellserve's layout)"));
    }
    if (it->second.shape != shape)
      return InvalidArgument("tensor '" + name + "' has shape " + ShapeToString(it->second.shape) +
                             " but the spec needs " + ShapeToString(shape));
    if (it->second.dtype != dtype)
      return InvalidArgument("tensor '" + name + "' is " + DTypeName(it->second.dtype) +
                             " but the spec says dtype " + s.dtype);
  }
  for (const auto& [name, tensor] : weights.tensors)
    if (InModelLayout(name) && required.count(name) == 0)
      return InvalidArgument("weights hold tensor '" + name + "' " + ShapeToString(tensor.shape) +
                             ", which a " + ModelKindName(s.kind) + " model with layers " +
                             std::to_string(s.layers) +
                             " does not have: spec.json does not describe these weights (check its \"kind\" and "
                             "\"layers\"; tools/export_pytorch.py writes both from the model)");
  return OkStatus();
}

StatusOr<std::shared_ptr<const Model>> Model::Create(ModelSpec spec, const SafetensorsFile& weights) {
  return Build(std::move(spec), weights, nullptr);
}

StatusOr<std::shared_ptr<const Model>> Model::Create(ModelSpec spec, SafetensorsFile&& weights) {
  return Build(std::move(spec), weights, &weights);
}

StatusOr<std::shared_ptr<const Model>> Model::Build(ModelSpec spec, const SafetensorsFile& weights,
                                                    SafetensorsFile* release) {
  RETURN_IF_ERROR(CheckTensors(spec, weights));
  std::shared_ptr<Model> m(new Model());
  m->spec_ = std::move(spec);
  const ModelSpec& s = m->spec_;
  for (const auto& [name, shape] : RequiredTensors(s)) {
    Tensor t = weights.tensors.at(name).ToFloat();
    if (release) release->tensors.erase(name);  // `weights` is *release: its entry goes too
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < t.size(); ++i)
      if (!std::isfinite(t.data()[i]) && bad++ == 0) first = i;
    if (bad > 0)
      return InvalidArgument("tensor '" + name + "' has " + std::to_string(bad) +
                             " values that are not finite (NaN or infinity), the first at index " +
                             std::to_string(first) + ": every answer would be NaN; the weights are corrupt or "
                             "overflowed their dtype");
    m->tensors_.emplace(name, std::move(t));
  }
  const int64_t E = s.embed_dim, H = s.hidden;
  auto add = [&](std::string name, CellOp op, const char* emb, const std::string& w, int64_t in,
                 int64_t outputs) {
    CellType t;
    t.name = std::move(name);
    t.op = op;
    t.embedding = emb ? &m->tensors_.at(emb) : nullptr;
    t.weight = &m->tensors_.at(w + ".weight");
    t.bias = &m->tensors_.at(w + ".bias");
    t.input_dim = in;
    t.hidden = H;
    t.outputs = outputs;
    t.max_batch = s.max_batch;
    m->cell_types_.push_back(t);
    return static_cast<int>(m->cell_types_.size()) - 1;
  };
  auto stack = [&](const std::string& prefix, const char* emb) {
    int first = -1;
    for (int64_t l = 0; l < s.layers; ++l) {
      std::string name = prefix + "." + std::to_string(l);
      int idx = add(name, CellOp::kLstm, l == 0 ? emb : nullptr, name, l == 0 ? E : H, 4 * H);
      if (l == 0) first = idx;
    }
    return first;
  };
  switch (s.kind) {
    case ModelKind::kLstm:
      m->first_layer_type_ = stack("lstm", "embedding");
      m->head_type_ = add("head", CellOp::kHeadLogits, nullptr, "head", H, s.classes);
      break;
    case ModelKind::kSeq2Seq:
      m->first_layer_type_ = stack("encoder", "encoder.embedding");
      m->first_decoder_type_ = stack("decoder", "decoder.embedding");
      m->head_type_ = add("proj", CellOp::kHeadArgmax, nullptr, "proj", H, s.target_vocab_size);
      break;
    case ModelKind::kTreeLstm:
      m->leaf_type_ = add("tree.leaf", CellOp::kTreeLeaf, "embedding", "tree.leaf", E, 3 * H);
      m->internal_type_ = add("tree.internal", CellOp::kTreeInternal, nullptr, "tree.internal", 2 * H, 5 * H);
      m->head_type_ = add("head", CellOp::kHeadLogits, nullptr, "head", H, s.classes);
      break;
  }
  return std::shared_ptr<const Model>(std::move(m));
}

StatusOr<std::shared_ptr<const Model>> Model::Load(const std::string& dir) {
  ASSIGN_OR_RETURN(ModelSpec spec, ReadModelSpec(dir + "/spec.json"));
  const std::string path = dir + "/weights.safetensors";
  ASSIGN_OR_RETURN(SafetensorsFile weights, ReadSafetensors(path));
  // A spec that does not describe the file says so, not that its sizes would not fit in memory.
  if (Status s = CheckTensors(spec, weights); !s.ok()) return s.WithContext(path);
  // The model holds its weights as floats, made while the file's tensors are still held (twice
  // their size for 16-bit weights): more than this process may take would end in the OOM killer.
  double float_bytes = 0;  // of the tensors the model keeps (a file may hold more)
  for (const auto& [name, shape] : RequiredTensors(spec))
    float_bytes += static_cast<double>(ShapeNumElements(shape)) * sizeof(float);
  RETURN_IF_ERROR(CheckHeadroom(float_bytes, ReservableHeadroomOfThisProcess(),
                                path + ": its weights as floats take " + MiBText(float_bytes) + " MiB"));
  try {  // the last guard: an allocation that fails all the same is an error, not a crash
    auto model = Create(std::move(spec), std::move(weights));
    if (!model.ok()) return model.status().WithContext(path);
    return model;
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(path + ": its weights as floats (" + MiBText(float_bytes) +
                             " MiB) do not fit in the memory this process may use");
  }
}

}  // namespace cellserve
