// Model: a loaded model (spec + fp32 weights) and its cell types. A cell type is one piece of
// computation with one set of weights (DESIGN.md §2); only cells of one type share a batch.
//   lstm:     lstm.0 .. lstm.{L-1}, head            (head: logits over classes)
//   seq2seq:  encoder.0.., decoder.0.., proj         (proj: argmax over the target vocabulary)
//   treelstm: tree.leaf, tree.internal, head
// Model::Create checks that every tensor the kind needs is present with the exact shape and the
// dtype the spec names, and that the file holds no tensor of the layout the spec leaves out (a
// third layer under a spec of two: loaded, it would answer wrongly); the first mismatch is
// INVALID_ARGUMENT. Tensors outside the layout's names (an optimizer's step) are ignored. A Model is immutable
// after creation and shared (std::shared_ptr<const Model>) by every request and device: reading it
// from many threads is safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model_spec.h"
#include "runtime/safetensors.h"
#include "runtime/status.h"
#include "runtime/tensor.h"

namespace cellserve {

enum class CellOp {
  kLstm,          // (x, h, c) -> (h', c'); x from an embedding row or the h of a cell below
  kTreeLeaf,      // x (embedding row) -> (h, c)
  kTreeInternal,  // (h_l, c_l, h_r, c_r) -> (h, c)
  kHeadLogits,    // h -> logits [outputs] and their argmax (classifier heads)
  kHeadArgmax,    // h -> argmax over [outputs] and its logit only (decoder projection)
};

struct CellType {
  std::string name;                  // "lstm.0", "decoder.1", "tree.internal", "head", ...
  CellOp op = CellOp::kLstm;
  const Tensor* embedding = nullptr; // x = embedding[token] for token-fed cells; else nullptr
  const Tensor* weight = nullptr;    // [gates * hidden, input_dim + recurrent] or [outputs, hidden]
  const Tensor* bias = nullptr;      // [rows of weight]
  int64_t input_dim = 0;             // x width (lstm, leaf), 2H (internal), H (heads)
  int64_t hidden = 0;                // H
  int64_t outputs = 0;               // heads: classes or target vocabulary; cells: gates * H
  int64_t max_batch = 0;             // from the spec
};

class Model {
 public:
  // Validates the spec and the weights (shapes, dtype, every value finite) and builds the cell types.
  static StatusOr<std::shared_ptr<const Model>> Create(ModelSpec spec, const SafetensorsFile& weights);
  // The same, letting go of each of the file's tensors once it is converted (a load holds the
  // file's tensors and the floats together one tensor at a time, not whole).
  static StatusOr<std::shared_ptr<const Model>> Create(ModelSpec spec, SafetensorsFile&& weights);
  // Loads DIR/spec.json and DIR/weights.safetensors. RESOURCE_EXHAUSTED (never an exception) when
  // the file, or its weights as floats beside it, are more than this process may still take
  // (runtime/memory_limit.h).
  static StatusOr<std::shared_ptr<const Model>> Load(const std::string& dir);
  // Not copied: the cell types point into this model's tensors.
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelSpec& spec() const { return spec_; }
  const std::vector<CellType>& cell_types() const { return cell_types_; }
  const CellType& cell_type(int index) const { return cell_types_[index]; }
  // Indices into cell_types() by role.
  int layer_type(int layer) const { return first_layer_type_ + layer; }   // lstm / encoder
  int decoder_layer_type(int layer) const { return first_decoder_type_ + layer; }
  int head_type() const { return head_type_; }
  int leaf_type() const { return leaf_type_; }
  int internal_type() const { return internal_type_; }
  const Tensor& tensor(const std::string& name) const { return tensors_.at(name); }

  // The tensors a model of this spec needs, with their shapes (also used by `model init`).
  static std::map<std::string, std::vector<int64_t>> RequiredTensors(const ModelSpec& spec);
  // Create's checks of names, shapes and dtypes (not of values): cheap, so Load makes them before
  // it sizes memory by the spec.
  static Status CheckTensors(const ModelSpec& spec, const SafetensorsFile& weights);

 private:
  Model() = default;
  // Create's work; `release`, if given, is `weights` itself: each tensor is erased from it once
  // converted.
  static StatusOr<std::shared_ptr<const Model>> Build(ModelSpec spec, const SafetensorsFile& weights,
                                                      SafetensorsFile* release);
  ModelSpec spec_;
  std::map<std::string, Tensor> tensors_;  // node-based: CellType pointers stay valid
  std::vector<CellType> cell_types_;
  int first_layer_type_ = -1, first_decoder_type_ = -1, head_type_ = -1, leaf_type_ = -1,
      internal_type_ = -1;
};

}  // namespace cellserve
