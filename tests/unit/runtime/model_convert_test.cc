// ConvertWeights (runtime/model_repository.h), behind `cellserve model convert`: every tensor in
// the new dtype, rounding reported, exact where it must be, and values F16 cannot hold refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "runtime/model_repository.h"
#include "tests/unit/common/random_model.h"
#include "tests/unit/kernels/test_models.h"

namespace cellserve {
namespace {

std::shared_ptr<const Model> Small(const std::string& dtype, uint64_t seed) {
  return testing_models::Make(ModelKind::kLstm, /*hidden=*/8, /*layers=*/2, seed, 256, dtype);
}

// The model the converted weights make, under a spec that says their dtype.
std::shared_ptr<const Model> Reload(const Model& from, const SafetensorsFile& weights, const std::string& dtype) {
  ModelSpec spec = from.spec();
  spec.dtype = dtype;
  return Model::Create(spec, weights).value();
}

TEST(ConvertWeights, RoundsToTheDtypeAndSaysHowFar) {
  auto f32 = Small("F32", 3);
  WeightConversion report;
  auto bf16 = ConvertWeights(*f32, "BF16", &report);
  ASSERT_TRUE(bf16.ok()) << bf16.status().ToString();
  auto converted = Reload(*f32, *bf16, "BF16");
  int64_t total = 0;
  double max_rel = 0;
  for (const auto& [name, shape] : Model::RequiredTensors(f32->spec())) {
    EXPECT_EQ(bf16->tensors.at(name).dtype, DType::kBF16) << name;
    const Tensor &a = f32->tensor(name), &b = converted->tensor(name);
    for (int64_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(b.data()[i], BFloat16ToFloat(FloatToBFloat16(a.data()[i]))) << name << "[" << i << "]";
      if (a.data()[i] != 0) max_rel = std::max(max_rel, std::fabs(double(b.data()[i]) - a.data()[i]) / std::fabs(a.data()[i]));
    }
    total += a.size();
  }
  EXPECT_EQ(report.weights, total);
  EXPECT_GT(report.changed, total / 2);  // random fp32 values are almost never bf16 values
  EXPECT_DOUBLE_EQ(report.max_rel_change, max_rel);
  EXPECT_LE(report.max_rel_change, 1.0 / 256);  // bf16 keeps 8 significant bits, rounded
  EXPECT_GT(report.max_abs_change, 0);
}

TEST(ConvertWeights, ExactBackToF32AndFromTheSameDtype) {
  auto f16 = Small("F16", 4);
  for (const char* dtype : {"F32", "F16"}) {
    WeightConversion report;
    auto weights = ConvertWeights(*f16, dtype, &report);
    ASSERT_TRUE(weights.ok()) << weights.status().ToString();
    EXPECT_EQ(report.changed, 0) << dtype;
    EXPECT_EQ(report.max_abs_change, 0) << dtype;
    auto back = Reload(*f16, *weights, dtype);
    for (const auto& [name, shape] : Model::RequiredTensors(f16->spec())) {
      const Tensor &a = f16->tensor(name), &b = back->tensor(name);
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float))) << dtype << " " << name;
    }
  }
}

TEST(ConvertWeights, RefusesWhatTheDtypeCannotHold) {
  // Weights up to 1e5: beyond F16's largest finite value (65504), fine in BF16.
  auto big = testutil::RandomModel(Small("F32", 5)->spec(), 5, 1e5f);
  auto f16 = ConvertWeights(*big, "F16", nullptr);
  ASSERT_FALSE(f16.ok());
  EXPECT_EQ(f16.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(f16.status().message().find("does not fit in F16"), std::string::npos) << f16.status().ToString();
  EXPECT_NE(f16.status().message().find("try BF16"), std::string::npos);
  EXPECT_TRUE(ConvertWeights(*big, "BF16", nullptr).ok());
  auto bad = ConvertWeights(*big, "F8", nullptr);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cellserve
