// A model repository in a fresh temp folder for tests, removed when it goes. Write() adds a model
// with seeded random weights; a failure is a test bug, so it throws (GoogleTest reports it).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "runtime/model_repository.h"

namespace cellserve::testutil {

class TempModelRepo {
 public:
  explicit TempModelRepo(const std::string& prefix) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    dir_ = tmpl;
  }
  ~TempModelRepo() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TempModelRepo(const TempModelRepo&) = delete;
  TempModelRepo& operator=(const TempModelRepo&) = delete;

  void Write(const ModelSpec& spec, uint64_t seed, float scale = 0.3f) const {
    StatusOr<SafetensorsFile> w = RandomWeights(spec, seed, scale);
    if (!w.ok()) throw std::runtime_error("RandomWeights: " + w.status().ToString());
    Status s = WriteModel(dir_, spec, *w);
    if (!s.ok()) throw std::runtime_error("WriteModel: " + s.ToString());
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace cellserve::testutil
