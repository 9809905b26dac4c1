// The model repository, as Triton users know it: a folder with one subfolder per model, each
// holding spec.json and weights.safetensors. Also makes models with seeded random weights (for
// `cellserve model init`, tests and benchmarks). Pure file I/O, no caching; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/model.h"
#include "runtime/model_spec.h"
#include "runtime/safetensors.h"

namespace cellserve {

// Names of the subfolders of `repo` that hold a spec.json, sorted. NOT_FOUND if repo is missing,
// UNAVAILABLE if it, or a subfolder in it, cannot be read (no permission; hidden folders and
// lost+found are skipped), INVALID_ARGUMENT for a subfolder laid out as Triton's (NAME/1/spec.json),
// saying how to lay it out.
StatusOr<std::vector<std::string>> ListModels(const std::string& repo);

// Loads repo/name, whatever the repository's other folders are. NOT_FOUND names the models that
// are there (and says so when the folder exists without a spec.json); UNAVAILABLE when the
// model's folder cannot be read or is a link that leads nowhere; INVALID_ARGUMENT when it is laid
// out as Triton's (NAME/1/), or the spec's name is not the folder's (a copied or renamed folder),
// saying what to rename; and Model::Load's errors (INVALID_ARGUMENT for weights that do not fit
// the spec, RESOURCE_EXHAUSTED when they do not fit in the memory this process may use).
StatusOr<std::shared_ptr<const Model>> LoadModel(const std::string& repo, const std::string& name);

// Writes repo/<spec.name>/{spec.json, weights.safetensors}, creating folders. Validates first:
// the weights must make a valid model of the spec. Each file is replaced atomically (the weights
// first), not the pair: processes load their models at start, so write a model no process is
// starting on at that moment.
Status WriteModel(const std::string& repo, const ModelSpec& spec, const SafetensorsFile& weights);

// What ConvertWeights did to the weights.
struct WeightConversion {
  int64_t weights = 0;        // values converted
  int64_t changed = 0;        // values the new dtype could not hold exactly (rounded)
  double max_abs_change = 0;  // the largest |new - old|
  double max_rel_change = 0;  // the largest |new - old| / |old| over nonzero old values
};

// `model`'s weights stored in `dtype` ("F32", "F16", "BF16"; to F16/BF16 rounding to nearest
// even), for a copy of the model whose spec says that dtype. Exact to F32 and from a model
// already stored in `dtype`. INVALID_ARGUMENT for an unknown dtype, or a value that would become
// infinite (F16 holds magnitudes up to 65504), naming the tensor.
StatusOr<SafetensorsFile> ConvertWeights(const Model& model, const std::string& dtype, WeightConversion* report);

// Weights for `spec` drawn uniformly from [-scale, scale] by a seeded generator that gives the
// same values on every platform, stored in spec.dtype. INVALID_ARGUMENT unless scale is positive,
// finite and representable in the dtype.
StatusOr<SafetensorsFile> RandomWeights(const ModelSpec& spec, uint64_t seed, float scale);

}  // namespace cellserve
