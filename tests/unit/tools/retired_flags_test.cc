// Retired flags (tools/retired_flags.h): old command lines still parse, and say the flag does nothing.
#include "tools/retired_flags.h"

#include <gtest/gtest.h>

namespace cellserve::tools {
namespace {

StatusOr<std::string> ParseAndWarn(std::vector<const char*> argv) {
  Flags flags("serve", "test");
  AddRetiredFlags(flags);
  RETURN_IF_ERROR(flags.Parse(static_cast<int>(argv.size()), const_cast<char**>(argv.data())));
  testing::internal::CaptureStderr();
  WarnAboutRetiredFlags(flags, "serve");
  return testing::internal::GetCapturedStderr();
}

TEST(RetiredFlagsTest, BlasThreadsStillParsesAndSaysItDoesNothing) {
  auto given = ParseAndWarn({"serve", "--blas-threads", "4"});
  ASSERT_TRUE(given.ok()) << given.status().ToString();
  EXPECT_NE(given->find("cellserve serve: warning: --blas-threads has no effect"), std::string::npos) << *given;
  EXPECT_NE(given->find("--devices"), std::string::npos) << *given;
  auto absent = ParseAndWarn({"serve"});
  ASSERT_TRUE(absent.ok());
  EXPECT_EQ(*absent, "");
}

}  // namespace
}  // namespace cellserve::tools
