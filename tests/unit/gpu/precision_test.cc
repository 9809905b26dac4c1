// --gpu-precision's spelling: each name parses to its precision and back; anything else is
// INVALID_ARGUMENT naming the three choices (the device factory shows it to the user).
#include "kernels/gpu/precision.h"

#include <gtest/gtest.h>

namespace cellserve::gpu {
namespace {

TEST(Precision, EachNameParsesAndPrintsBack) {
  for (Precision p : {Precision::kF32, Precision::kF16, Precision::kBF16}) {
    StatusOr<Precision> parsed = ParsePrecision(PrecisionName(p));
    ASSERT_TRUE(parsed.ok()) << PrecisionName(p);
    EXPECT_EQ(*parsed, p);
  }
  EXPECT_STREQ(PrecisionName(Precision::kF32), "fp32");
  EXPECT_STREQ(PrecisionName(Precision::kF16), "fp16");
  EXPECT_STREQ(PrecisionName(Precision::kBF16), "bf16");
}

TEST(Precision, UnknownNamesAreRefusedWithTheChoices) {
  for (const char* name : {"", "fp64", "FP32", "int8", "fp16 "}) {
    StatusOr<Precision> parsed = ParsePrecision(name);
    ASSERT_FALSE(parsed.ok()) << "'" << name << "'";
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("fp32, fp16 or bf16"), std::string::npos)
        << parsed.status().ToString();
  }
}

}  // namespace
}  // namespace cellserve::gpu
