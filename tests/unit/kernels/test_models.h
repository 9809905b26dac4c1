// Small models with seeded random weights for kernel and executor tests.
#pragma once

#include <memory>
#include <random>
#include <string>

#include "runtime/cell_graph.h"
#include "runtime/text.h"
#include "tests/unit/common/random_model.h"

namespace cellserve::testing_models {

// dtype: how the weights are stored ("F32", "F16", "BF16"); computed in fp32 either way.
inline std::shared_ptr<const Model> Make(ModelKind kind, int64_t hidden = 32, int64_t layers = 2,
                                         uint64_t seed = 3, int64_t max_batch = 256,
                                         const std::string& dtype = "F32") {
  ModelSpec spec;
  spec.dtype = dtype;
  spec.name = "test";
  spec.kind = kind;
  spec.vocab_size = 100;
  spec.embed_dim = hidden / 2 + 3;  // E != H catches layout mix-ups
  spec.hidden = hidden;
  spec.layers = layers;
  spec.classes = kind == ModelKind::kSeq2Seq ? 0 : 5;
  spec.target_vocab_size = 60;
  spec.max_decode_len = 20;
  spec.max_input_tokens = 200;
  spec.max_batch = max_batch;
  return testutil::RandomModel(spec, seed);
}

// A request of `length` random tokens from Make's vocabulary (a balanced tree of them for a
// treelstm).
inline RequestInput RandomInput(ModelKind kind, int length, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> token(0, 99);
  RequestInput in;
  for (int i = 0; i < length; ++i) in.tokens.push_back(token(rng));
  if (kind == ModelKind::kTreeLstm) {
    in.tree = BracketBalanced(in.tokens);
    in.has_tree = true;
    in.tokens.clear();
  }
  return in;
}

}  // namespace cellserve::testing_models
