#include "runtime/cell_graph.h"

#include <algorithm>

namespace cellserve {

CellId RequestGraph::Add(const Cell& cell) {
  cells_.push_back(cell);
  return static_cast<CellId>(cells_.size()) - 1;
}

std::vector<CellId> RequestGraph::AddLstmStep(int first_type, int32_t x_token,
                                              const std::vector<CellId>& prev,
                                              int consumers_above_top, bool has_next_step) {
  const int layers = static_cast<int>(model_->spec().layers);
  std::vector<CellId> ids(layers);
  for (int l = 0; l < layers; ++l) {
    Cell c;
    c.type = first_type + l;
    if (l == 0) c.token = x_token;
    else c.x_from = ids[l - 1];
    if (!prev.empty()) c.state_from[0] = prev[l];
    c.consumers = (l + 1 < layers ? 1 : consumers_above_top) + (has_next_step ? 1 : 0);
    ids[l] = Add(c);
  }
  return ids;
}

namespace {

Status CheckTokens(const std::vector<int32_t>& tokens, int64_t vocab, int64_t max_tokens) {
  if (tokens.empty()) return InvalidArgument("empty input: a request needs at least one token");
  if (static_cast<int64_t>(tokens.size()) > max_tokens)
    return InvalidArgument("input has " + std::to_string(tokens.size()) +
                           " tokens; this model accepts at most " + std::to_string(max_tokens));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return InvalidArgument("token " + std::to_string(tokens[i]) + " at position " +
                             std::to_string(i) + " is outside the vocabulary (0.." +
                             std::to_string(vocab - 1) + ")");
  }
  return OkStatus();
}

void SetLogitsResult(RequestResult* r, const HeadOutput& out) {
  r->logits.assign(out.logits, out.logits + out.count);
  r->label = out.argmax;
}

// lstm: embedding -> L layers over the tokens -> head on the top layer's last h.
class LstmGraph final : public RequestGraph {
 public:
  LstmGraph(std::shared_ptr<const Model> m, const std::vector<int32_t>& tokens)
      : RequestGraph(std::move(m)) {
    input_length_ = static_cast<int64_t>(tokens.size());
    std::vector<CellId> prev;
    for (size_t t = 0; t < tokens.size(); ++t) {
      const bool last = t + 1 == tokens.size();
      prev = AddLstmStep(model_->layer_type(0), tokens[t], prev, last ? 1 : 0, !last);
    }
    Cell head;
    head.type = model_->head_type();
    head.x_from = prev.back();
    Add(head);
  }
  void OnHeadOutput(CellId, const HeadOutput& out) override {
    SetLogitsResult(&result_, out);
    finished_ = true;
  }
};

// seq2seq: encoder over the source, then one decoder step (L cells + projection) at a time.
class Seq2SeqGraph final : public RequestGraph {
 public:
  Seq2SeqGraph(std::shared_ptr<const Model> m, const std::vector<int32_t>& tokens, int64_t max_len)
      : RequestGraph(std::move(m)), max_len_(max_len) {
    input_length_ = static_cast<int64_t>(tokens.size());
    // Every encoder step has a next step: the following token's, or, after the last token,
    // decoder step 0, which starts from the encoder's final (h, c) at every layer.
    std::vector<CellId> prev;
    for (int32_t token : tokens) prev = AddLstmStep(model_->layer_type(0), token, prev, 0, true);
    AddDecoderStep(static_cast<int32_t>(model_->spec().bos_id), prev);
  }

  void OnHeadOutput(CellId, const HeadOutput& out) override {
    result_.tokens.push_back(out.argmax);
    result_.scores.push_back(out.max_value);
    if (out.argmax == model_->spec().eos_id || static_cast<int64_t>(result_.tokens.size()) >= max_len_) {
      finished_ = true;  // the last step's "next step" consumers are released by the runner
      return;
    }
    AddDecoderStep(out.argmax, last_step_);
  }

 private:
  void AddDecoderStep(int32_t token, const std::vector<CellId>& prev) {
    // Every decoder cell may feed the next step; if decoding stops, the runner frees the slots.
    last_step_ = AddLstmStep(model_->decoder_layer_type(0), token, prev, 1, true);
    Cell proj;
    proj.type = model_->head_type();
    proj.x_from = last_step_.back();
    Add(proj);
  }

  int64_t max_len_;
  std::vector<CellId> last_step_;
};

// treelstm: leaves from the embedding, internal cells from two children, head at the root.
class TreeGraph final : public RequestGraph {
 public:
  TreeGraph(std::shared_ptr<const Model> m, const TreeInput& tree, int32_t root)
      : RequestGraph(std::move(m)) {
    // Iterative post-order: children get smaller cell ids than their parent.
    std::vector<CellId> cell_of(tree.nodes.size(), -1);
    std::vector<std::pair<int32_t, bool>> stack = {{root, false}};
    while (!stack.empty()) {
      auto [node, expanded] = stack.back();
      stack.pop_back();
      const TreeNode& n = tree.nodes[node];
      if (n.children.empty()) {
        ++input_length_;
        Cell leaf;
        leaf.type = model_->leaf_type();
        leaf.token = n.token;
        leaf.consumers = 1;
        cell_of[node] = Add(leaf);
      } else if (expanded) {
        Cell in;
        in.type = model_->internal_type();
        in.state_from[0] = cell_of[n.children[0]];
        in.state_from[1] = cell_of[n.children[1]];
        in.consumers = 1;
        cell_of[node] = Add(in);
      } else {
        stack.push_back({node, true});
        stack.push_back({n.children[1], false});
        stack.push_back({n.children[0], false});
      }
    }
    Cell head;
    head.type = model_->head_type();
    head.x_from = cell_of[root];
    Add(head);
  }
  void OnHeadOutput(CellId, const HeadOutput& out) override {
    SetLogitsResult(&result_, out);
    finished_ = true;
  }
};

}  // namespace

StatusOr<std::unique_ptr<RequestGraph>> BuildRequestGraph(std::shared_ptr<const Model> model,
                                                          const RequestInput& input) {
  const ModelSpec& s = model->spec();
  if (s.kind == ModelKind::kTreeLstm) {
    if (!input.has_tree)
      return InvalidArgument("model '" + s.name + "' is a treelstm: send a tree, not tokens");
    TreeLimits limits;
    limits.vocab_size = s.vocab_size;
    limits.max_leaves = s.max_input_tokens;
    ASSIGN_OR_RETURN(int32_t root, ValidateTree(input.tree, limits));
    return std::unique_ptr<RequestGraph>(new TreeGraph(std::move(model), input.tree, root));
  }
  if (input.has_tree)
    return InvalidArgument("model '" + s.name + "' is a " + ModelKindName(s.kind) +
                           ": send tokens, not a tree");
  RETURN_IF_ERROR(CheckTokens(input.tokens, s.vocab_size, s.max_input_tokens));
  if (s.kind == ModelKind::kLstm)
    return std::unique_ptr<RequestGraph>(new LstmGraph(std::move(model), input.tokens));
  if (input.max_decode_len < 0) return InvalidArgument("max_decode_len must not be negative");
  int64_t max_len = input.max_decode_len == 0 ? s.max_decode_len
                                              : std::min(input.max_decode_len, s.max_decode_len);
  return std::unique_ptr<RequestGraph>(new Seq2SeqGraph(std::move(model), input.tokens, max_len));
}

int64_t EstimateCells(const ModelSpec& spec, const RequestInput& input) {
  const int64_t layers = std::max<int64_t>(spec.layers, 1);
  if (input.has_tree) return static_cast<int64_t>(input.tree.nodes.size()) + 1;
  const int64_t n = static_cast<int64_t>(input.tokens.size());
  switch (spec.kind) {
    case ModelKind::kLstm:
      return n * layers + 1;
    case ModelKind::kSeq2Seq: {
      // The decoder's length is unknown until it runs: guess it is as long as the source.
      int64_t cap = spec.max_decode_len;
      if (input.max_decode_len > 0) cap = std::min(cap, input.max_decode_len);
      return n * layers + std::min(n + 1, cap) * (layers + 1);
    }
    case ModelKind::kTreeLstm:
      return 2 * n;
  }
  return n;
}


}  // namespace cellserve
