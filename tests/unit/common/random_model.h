// One way for every test to make a model with seeded random weights: a bad spec is a test bug, so
// it throws (GoogleTest reports the exception and fails the test) instead of returning a Status.
#pragma once

#include <memory>
#include <stdexcept>

#include "runtime/model_repository.h"

namespace cellserve::testutil {

inline std::shared_ptr<const Model> RandomModel(const ModelSpec& spec, uint64_t seed, float scale = 0.5f) {
  StatusOr<SafetensorsFile> weights = RandomWeights(spec, seed, scale);
  if (!weights.ok()) throw std::runtime_error("RandomWeights: " + weights.status().ToString());
  StatusOr<std::shared_ptr<const Model>> model = Model::Create(spec, *weights);
  if (!model.ok()) throw std::runtime_error("Model::Create: " + model.status().ToString());
  return *model;
}

}  // namespace cellserve::testutil
