#include "tools/output_paths.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace cellserve::tools {
namespace {

namespace fs = std::filesystem;

class OutputPathsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("cellserve_output_paths_test." + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "corpus.txt") << "A sentence.\n";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(OutputPathsTest, DistinctWritablePathsPass) {
  EXPECT_TRUE(CheckOutputPaths({{"--json", P("a.json")}, {"--csv", P("a.csv")}, {"--plot", ""}},
                               {{"--corpus", P("corpus.txt")}})
                  .ok());
  EXPECT_TRUE(CheckOutputPaths({{"--json", "-"}, {"--answers", "-"}}).ok()) << "stdout twice is fine";
  EXPECT_TRUE(CheckOutputPaths({{"--json", "/dev/null"}, {"--csv", "/dev/null"}}).ok());
}

TEST_F(OutputPathsTest, EachMistakeNamesItsFlag) {
  struct Case {
    std::vector<NamedPath> outputs;
    const char* says;
  };
  const Case cases[] = {
      {{{"--json", P("corpus.txt")}}, "--json " },
      {{{"--json", P("x")}, {"--csv", P("x")}}, "--json and --csv name the same file"},
      {{{"--json", P("x")}, {"--csv", P("sub/../x")}}, "--json and --csv name the same file"},
      {{{"--plot", P("none/x.png")}}, "there is no folder"},
      {{{"--csv", dir_.string()}}, "--csv: " },
  };
  for (const Case& c : cases) {
    fs::create_directories(dir_ / "sub");
    const Status s = CheckOutputPaths(c.outputs, {{"--corpus", P("corpus.txt")}});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.says;
    EXPECT_NE(s.message().find(c.says), std::string::npos) << s.ToString();
  }
  const Status corpus = CheckOutputPaths({{"--json", P("corpus.txt")}}, {{"--corpus", P("corpus.txt")}});
  EXPECT_NE(corpus.message().find("is the --corpus file"), std::string::npos) << corpus.ToString();
  const Status dir = CheckOutputPaths({{"--csv", dir_.string()}});
  EXPECT_NE(dir.message().find("is a directory"), std::string::npos) << dir.ToString();
}

}  // namespace
}  // namespace cellserve::tools
