// Per-request cell graphs (DESIGN.md §2-3). A RequestGraph owns the cells one request needs, in
// topological order (a cell's inputs always have smaller ids), and its result. It is built and
// validated from the request's input by BuildRequestGraph (the request actor builds it); the
// Scheduler that runs it (a worker's, or SyncExecutor's) owns it after Admit and reports each
// head cell's output back through OnHeadOutput. A seq2seq graph grows there: each decoder step
// appends the next one until EOS or max_decode_len. Not thread-safe: one owner at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/model.h"
#include "runtime/status.h"
#include "runtime/tree.h"

namespace cellserve {

using CellId = int32_t;

struct Cell {
  int32_t type = -1;                   // index into Model::cell_types()
  int32_t token = -1;                  // x = embedding[token] (first-layer and leaf cells)
  CellId x_from = -1;                  // x = h of this cell (upper layers, heads)
  CellId state_from[2] = {-1, -1};     // (h, c) inputs: previous step, or left/right children
  int32_t consumers = 0;               // cells reading this cell's output (0 for heads)

  bool is_head() const { return consumers == 0; }
};

// What a request asks for: tokens (lstm, seq2seq) or a tree (treelstm).
struct RequestInput {
  std::vector<int32_t> tokens;
  TreeInput tree;
  bool has_tree = false;
  int64_t max_decode_len = 0;  // seq2seq: 0 = the model's max_decode_len; larger is clamped to it
  // The model version asked for; 0 = any. A node serves one version of each model and answers
  // NOT_FOUND for another; a router places the request on a node that serves it.
  int64_t model_version = 0;
};

struct RequestResult {
  std::vector<float> logits;           // lstm, treelstm: head logits
  int32_t label = -1;                  // lstm, treelstm: argmax of the logits
  std::vector<int32_t> tokens;         // seq2seq: decoded tokens (EOS included when produced)
  std::vector<float> scores;           // seq2seq: the winning logit of each step
  // The version of the model that ran it, where the backend serves several (a router whose nodes
  // are part way through an upgrade); 0 = the one version the backend lists.
  int64_t model_version = 0;
};

// One head cell's output, as the backend reports it.
struct HeadOutput {
  int32_t argmax = -1;
  float max_value = 0.0f;
  const float* logits = nullptr;       // kHeadLogits: `count` values; kHeadArgmax: nullptr
  int64_t count = 0;
};

class RequestGraph {
 public:
  virtual ~RequestGraph() = default;

  const Model& model() const { return *model_; }
  const std::vector<Cell>& cells() const { return cells_; }
  bool finished() const { return finished_; }
  // Input size: tokens (lstm, seq2seq source) or leaves (treelstm). Used to bucket requests.
  int64_t input_length() const { return input_length_; }
  const RequestResult& result() const { return result_; }

  // Reports the output of head cell `head`. May append cells (seq2seq) or finish the request.
  virtual void OnHeadOutput(CellId head, const HeadOutput& out) = 0;

 protected:
  explicit RequestGraph(std::shared_ptr<const Model> model) : model_(std::move(model)) {}
  CellId Add(const Cell& cell);
  // Appends `layers` stacked LSTM cells of one time step; returns the ids, bottom first.
  // `prev` holds the previous step's cells (empty at the first step), `x_token` feeds layer 0.
  std::vector<CellId> AddLstmStep(int first_type, int32_t x_token, const std::vector<CellId>& prev,
                                  int consumers_above_top, bool has_next_step);

  std::shared_ptr<const Model> model_;
  std::vector<Cell> cells_;
  RequestResult result_;
  bool finished_ = false;
  int64_t input_length_ = 0;
};

// Validates `input` against the model (INVALID_ARGUMENT: empty input, too many tokens, token out
// of the vocabulary, a tree for a token model or tokens for a tree model, malformed tree) and
// builds its graph.
StatusOr<std::unique_ptr<RequestGraph>> BuildRequestGraph(std::shared_ptr<const Model> model,
                                                          const RequestInput& input);

// A guess of the cells a request will need, from its spec and input alone (no graph is built): the
// node's and the router's balancing currency until the next load report. seq2seq guesses a decoder
// as long as its source (capped). Pure, cheap (O(1) for tokens).
int64_t EstimateCells(const ModelSpec& spec, const RequestInput& input);

}  // namespace cellserve
