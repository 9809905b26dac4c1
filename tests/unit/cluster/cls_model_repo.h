// The model repository the cluster tests serve: one model, "cls" (a 2-layer LSTM classifier,
// vocabulary 500, seeded weights), in a temp folder that goes with the object.
#pragma once

#include <string>

#include "runtime/model_spec.h"
#include "tests/unit/common/temp_model_repo.h"

namespace cellserve::testutil {

// The model's spec (also what a stand-in backend serves).
inline ModelSpec ClsModelSpec() {
  ModelSpec spec;
  spec.name = "cls";
  spec.kind = ModelKind::kLstm;
  spec.vocab_size = 500;
  spec.embed_dim = 16;
  spec.hidden = 16;
  spec.layers = 2;
  spec.classes = 3;
  return spec;
}

class ClsModelRepo : public TempModelRepo {
 public:
  explicit ClsModelRepo(const std::string& prefix) : TempModelRepo(prefix) { Write(ClsModelSpec(), 11); }
};

}  // namespace cellserve::testutil
