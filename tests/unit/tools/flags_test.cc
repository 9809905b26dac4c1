// The subcommands' flag parser (tools/flags.h): the command line, environment variables and the
// --config file, in that order of precedence, and the errors a user can make in each.
#include "tools/flags.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "../common/temp_model_repo.h"

namespace cellserve::tools {
namespace {

// argv for Flags::Parse (argv[0] is the subcommand's name).
class Argv {
 public:
  Argv(std::initializer_list<std::string> args) : strings_{"test"} {
    strings_.insert(strings_.end(), args.begin(), args.end());
    for (auto& s : strings_) pointers_.push_back(s.data());
  }
  int argc() { return static_cast<int>(pointers_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> pointers_;
};

Flags MakeFlags() {
  Flags flags("test", "A command for tests.");
  flags.Add("repo", "", "a folder", /*required=*/true, "CELLSERVE_TEST_REPO")
      .Add("devices", "1", "devices", false, "CELLSERVE_TEST_DEVICES")
      .Add("rate", "10.5", "a rate")
      .AddBool("pin", "a switch")
      .Positional("TEXT...", "words");
  return flags;
}

class FlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : {"CELLSERVE_TEST_REPO", "CELLSERVE_TEST_DEVICES", "CELLSERVE_CONFIG"}) unsetenv(v);
  }
  void TearDown() override { SetUp(); }
  // Writes `text` to a file in a fresh folder; returns its path.
  std::string WriteConfig(const std::string& text) {
    const std::string path = dir_.dir() + "/test.conf";
    std::ofstream(path) << text;
    return path;
  }
  Status Parse(Flags& flags, std::initializer_list<std::string> args) {
    Argv a(args);
    return flags.Parse(a.argc(), a.argv());
  }
  testutil::TempModelRepo dir_{"cellserve_flags_test"};
};

TEST_F(FlagsTest, CommandLineForms) {
  Flags flags = MakeFlags();
  ASSERT_TRUE(Parse(flags, {"--repo", "r", "--devices=3", "--pin", "one", "two"}).ok());
  EXPECT_EQ(flags.Get("repo"), "r");
  EXPECT_EQ(*flags.GetInt("devices"), 3);
  EXPECT_DOUBLE_EQ(*flags.GetDouble("rate"), 10.5);  // the default
  EXPECT_TRUE(flags.GetBool("pin"));
  EXPECT_EQ(flags.positional(), (std::vector<std::string>{"one", "two"}));

  Flags unknown = MakeFlags();
  Status s = Parse(unknown, {"--repo", "r", "--pinn"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown flag --pinn"), std::string::npos) << s.message();
  Flags missing = MakeFlags();
  EXPECT_NE(Parse(missing, {"--devices", "2"}).message().find("missing required flag --repo"), std::string::npos);
  Flags no_value = MakeFlags();
  EXPECT_NE(Parse(no_value, {"--repo"}).message().find("--repo needs a value"), std::string::npos);
  Flags not_a_number = MakeFlags();
  ASSERT_TRUE(Parse(not_a_number, {"--repo", "r", "--devices", "two"}).ok());
  EXPECT_EQ(not_a_number.GetInt("devices").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(FlagsTest, ASwitchGivenAValueTakesOnlyABoolean) {
  for (const char* on : {"--pin=true", "--pin=yes", "--pin=1"}) {
    Flags flags = MakeFlags();
    ASSERT_TRUE(Parse(flags, {"--repo", "r", on}).ok()) << on;
    EXPECT_TRUE(flags.GetBool("pin")) << on;
  }
  for (const char* off : {"--pin=false", "--pin=no", "--pin=0"}) {
    Flags flags = MakeFlags();
    ASSERT_TRUE(Parse(flags, {"--repo", "r", off}).ok()) << off;
    EXPECT_FALSE(flags.GetBool("pin")) << off;
  }
  // Anything else was read as "off" without a word: now it is an error that says what to write.
  Flags bad = MakeFlags();
  Status s = Parse(bad, {"--repo", "r", "--pin=on"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("--pin is a boolean flag"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("'on'"), std::string::npos) << s.message();
}

TEST_F(FlagsTest, NumbersOutOfRangeOrNotFiniteAreErrors) {
  Flags flags = MakeFlags();
  ASSERT_TRUE(Parse(flags, {"--repo", "r", "--devices", "99999999999999999999", "--rate", "inf"}).ok());
  Status big = flags.GetInt("devices").status();
  EXPECT_EQ(big.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(big.message().find("out of range"), std::string::npos) << big.message();
  Status inf = flags.GetDouble("rate").status();
  EXPECT_EQ(inf.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(inf.message().find("finite"), std::string::npos) << inf.message();
  Flags nan = MakeFlags();
  ASSERT_TRUE(Parse(nan, {"--repo", "r", "--rate", "nan"}).ok());
  EXPECT_EQ(nan.GetDouble("rate").status().code(), StatusCode::kInvalidArgument);

  // 2^32 + 1 devices would wrap to 1 once narrowed to int: a ranged read refuses it.
  Flags wide = MakeFlags();
  ASSERT_TRUE(Parse(wide, {"--repo", "r", "--devices", "4294967297"}).ok());
  EXPECT_EQ(*wide.GetInt("devices"), 4294967297);
  Status ranged = wide.GetIntIn("devices", 1, 4096).status();
  EXPECT_EQ(ranged.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ranged.message().find("--devices must be in [1, 4096], got 4294967297"), std::string::npos)
      << ranged.message();
  Flags fine = MakeFlags();
  ASSERT_TRUE(Parse(fine, {"--repo", "r", "--devices", "4096"}).ok());
  EXPECT_EQ(*fine.GetIntIn("devices", 1, 4096), 4096);
  // A hint, when given, says what the numbers mean.
  EXPECT_NE(wide.GetIntIn("devices", 1, 4096, "0: all").status().message().find("got 4294967297 (0: all)"),
            std::string::npos);
}

TEST_F(FlagsTest, EnvironmentWhenNotOnTheCommandLine) {
  setenv("CELLSERVE_TEST_REPO", "from-env", 1);
  setenv("CELLSERVE_TEST_DEVICES", "4", 1);
  Flags flags = MakeFlags();
  ASSERT_TRUE(Parse(flags, {"--devices", "2"}).ok());
  EXPECT_EQ(flags.Get("repo"), "from-env");  // satisfies the required flag
  EXPECT_EQ(*flags.GetInt("devices"), 2);    // the command line wins
}

TEST_F(FlagsTest, ConfigFileFillsWhatIsNotGivenElsewhere) {
  const std::string path = WriteConfig(
      "# a comment, then a blank line\n"
      "\n"
      "repo = \"/models with spaces\"\n"
      "  devices=8  \n"
      "--rate = 2.5\n"
      "pin = yes\n");
  Flags flags = MakeFlags();
  ASSERT_TRUE(Parse(flags, {"--config", path}).ok());
  EXPECT_EQ(flags.Get("repo"), "/models with spaces");  // quotes taken off; required flag satisfied
  EXPECT_EQ(*flags.GetInt("devices"), 8);
  EXPECT_DOUBLE_EQ(*flags.GetDouble("rate"), 2.5);
  EXPECT_TRUE(flags.GetBool("pin"));

  // Command line, then environment, then the file.
  setenv("CELLSERVE_TEST_DEVICES", "5", 1);
  Flags env_wins = MakeFlags();
  ASSERT_TRUE(Parse(env_wins, {"--config=" + path}).ok());
  EXPECT_EQ(*env_wins.GetInt("devices"), 5);
  Flags line_wins = MakeFlags();
  ASSERT_TRUE(Parse(line_wins, {"--devices", "6", "--config", path, "--rate", "1"}).ok());
  EXPECT_EQ(*line_wins.GetInt("devices"), 6);
  EXPECT_DOUBLE_EQ(*line_wins.GetDouble("rate"), 1.0);
  EXPECT_EQ(line_wins.Get("repo"), "/models with spaces");

  // What hides a file's value is said, with the file's line and what won.
  EXPECT_EQ(env_wins.overridden(),
            (std::vector<std::string>{path + ":4: 'devices' is set by CELLSERVE_TEST_DEVICES, which wins over the file"}));
  EXPECT_EQ(line_wins.overridden(),
            (std::vector<std::string>{path + ":4: 'devices' is set by the command line, which wins over the file",
                                      path + ":5: 'rate' is set by the command line, which wins over the file"}));
  EXPECT_TRUE(flags.overridden().empty());

  // CELLSERVE_CONFIG names the file too, for the commands that read it (serve, node, router): a
  // probe's `cellserve health` in the same container must not read the server's flags.
  unsetenv("CELLSERVE_TEST_DEVICES");
  setenv("CELLSERVE_CONFIG", path.c_str(), 1);
  Flags from_env = MakeFlags();
  from_env.ConfigFromEnvironment();
  ASSERT_TRUE(Parse(from_env, {}).ok());
  EXPECT_EQ(*from_env.GetInt("devices"), 8);
  Flags a_probe = MakeFlags();
  Status probe = Parse(a_probe, {});
  EXPECT_EQ(probe.code(), StatusCode::kInvalidArgument) << "the file was read: " << probe.ToString();
  EXPECT_NE(probe.message().find("missing required flag --repo"), std::string::npos) << probe.message();
}

TEST_F(FlagsTest, DoubleDashEndsTheFlags) {
  Flags flags = MakeFlags();
  ASSERT_TRUE(Parse(flags, {"--repo", "r", "one", "--", "--pin", "--", "-x"}).ok());
  EXPECT_FALSE(flags.GetBool("pin"));
  EXPECT_EQ(flags.positional(), (std::vector<std::string>{"one", "--pin", "--", "-x"}));
}

TEST_F(FlagsTest, ConfigFileBooleanFalseTurnsASwitchOff) {
  Flags flags = MakeFlags();
  ASSERT_TRUE(Parse(flags, {"--repo", "r", "--config", WriteConfig("pin = false\n")}).ok());
  EXPECT_FALSE(flags.GetBool("pin"));
  Flags on_the_line = MakeFlags();  // the command line's --pin wins over the file's false
  ASSERT_TRUE(Parse(on_the_line, {"--repo", "r", "--pin", "--config", WriteConfig("pin = 0\n")}).ok());
  EXPECT_TRUE(on_the_line.GetBool("pin"));
}

TEST_F(FlagsTest, ConfigFileErrorsNameTheFileAndLine) {
  struct Case {
    std::string text, want;
  };
  const std::vector<Case> cases = {
      {"repo = r\nfrobnicate = 1\n", ":2: unknown flag 'frobnicate' for cellserve test"},
      {"repo r\n", ":1: expected `name = value`"},
      {"# fine\nrepo = a\nrepo = b\n", ":3: 'repo' is set twice"},
      {"pin = maybe\n", ":1: 'pin' is a boolean flag"},
      {"config = other.conf\n", ":1: unknown flag 'config'"},
  };
  for (const Case& c : cases) {
    const std::string path = WriteConfig(c.text);
    Flags flags = MakeFlags();
    Status s = Parse(flags, {"--repo", "x", "--config", path});
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(s.message().find(path + c.want), std::string::npos) << s.message();
  }
  // Not a config: read to its end no more than 1 MiB (/dev/zero filled memory).
  Flags huge = MakeFlags();
  Status zero = Parse(huge, {"--repo", "x", "--config", "/dev/zero"});
  EXPECT_EQ(zero.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(zero.message().find("/dev/zero is over 1 MiB"), std::string::npos) << zero.message();
  Flags flags = MakeFlags();
  Status missing = Parse(flags, {"--repo", "x", "--config", dir_.dir() + "/nope.conf"});
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_NE(missing.message().find("nope.conf"), std::string::npos) << missing.message();
}

TEST_F(FlagsTest, UsageListsConfigLast) {
  const std::string usage = MakeFlags().Usage();
  const size_t config = usage.find("--config");
  ASSERT_NE(config, std::string::npos);
  EXPECT_GT(config, usage.find("--pin"));
  EXPECT_EQ(usage.find("[env CELLSERVE_CONFIG]"), std::string::npos) << "only where ConfigFromEnvironment says";
  Flags server = MakeFlags();
  server.ConfigFromEnvironment();
  EXPECT_NE(server.Usage().find("[env CELLSERVE_CONFIG]"), std::string::npos);
}

}  // namespace
}  // namespace cellserve::tools
