// Model versions behind a router: the policy's keys, which key a request is placed by, messages in
// the caller's words, and the versions a router lists (runtime/model_versions.h).
#include <gtest/gtest.h>

#include "runtime/model_versions.h"

namespace cellserve {
namespace {

ModelSpec Spec(const std::string& name, int64_t version, int64_t hidden = 8) {
  ModelSpec spec;
  spec.name = name;
  spec.version = version;
  spec.hidden = hidden;
  return spec;
}

std::vector<std::string> NamesAndVersions(const std::vector<ModelSpec>& specs) {
  std::vector<std::string> out;
  for (const ModelSpec& spec : specs) out.push_back(spec.name + "@" + std::to_string(spec.version));
  return out;
}

TEST(ModelVersionsTest, KeysNameAnyVersionByTheModelAndOneVersionWithAnAt) {
  EXPECT_EQ(VersionKey("cls", 0), "cls");
  EXPECT_EQ(VersionKey("cls", 2), "cls@2");
  EXPECT_FALSE(IsVersionKey("cls"));
  EXPECT_TRUE(IsVersionKey("cls@2"));
  EXPECT_EQ(PlacementKeys({Spec("cls", 2), Spec("mt", 7)}), (std::vector<std::string>{"cls", "cls@2", "mt", "mt@7"}));
  EXPECT_TRUE(PlacementKeys({}).empty());
}

TEST(ModelVersionsTest, VersionServedIsZeroForAModelNotServed) {
  const std::vector<ModelSpec> served = {Spec("cls", 2), Spec("mt", 7)};
  EXPECT_EQ(VersionServed(served, "mt"), 7);
  EXPECT_EQ(VersionServed(served, "cls"), 2);
  EXPECT_EQ(VersionServed(served, "tree"), 0);
}

// Asked for a version: that one, always. Asked for any: any, until tokens reached the client;
// then the version that made them.
TEST(ModelVersionsTest, ARequestIsPinnedByItsAskOrByTheTokensItStreamed) {
  EXPECT_EQ(PinnedVersion(0, 0, 0), 0);
  EXPECT_EQ(PinnedVersion(0, 3, 0), 0) << "placed once, nothing streamed: any version may retry it";
  EXPECT_EQ(PinnedVersion(0, 3, 1), 3) << "a token streamed: its retry must resume on version 3";
  EXPECT_EQ(PinnedVersion(2, 2, 0), 2);
  EXPECT_EQ(PinnedVersion(2, 0, 5), 2) << "the version asked for wins, whatever the placement says";
}

TEST(ModelVersionsTest, FailuresNameWhatTheCallerAskedForNotThePolicysKey) {
  const Status unavailable = Unavailable("no live node can take model 'cls@2' now; live nodes: n1 (cls, cls@1)");
  const Status said = InCallersWords(unavailable, "cls", 2);
  EXPECT_EQ(said.code(), StatusCode::kUnavailable);
  EXPECT_EQ(said.message(), "no live node can take model 'cls' version 2 now; live nodes: n1 (cls, cls@1)");

  const Status forgotten = InCallersWords(NotFound("unknown model 'cls@2': no node has registered it; live nodes: n1 (cls, cls@1)"), "cls", 2);
  EXPECT_EQ(forgotten.code(), StatusCode::kNotFound);
  EXPECT_EQ(forgotten.message(), "no node serves model 'cls' version 2 now");

  const Status any = NotFound("unknown model 'cls': no node has registered it; live nodes: none");
  EXPECT_EQ(InCallersWords(any, "cls", 0).message(), any.message()) << "version 0 is already the caller's words";
  EXPECT_EQ(DescribeModel("cls", 0), "'cls'");
  EXPECT_EQ(DescribeModel("cls", 2), "'cls' version 2");
}

TEST(ModelVersionsTest, LiveVersionsKeepEachVersionOnceAsItsFirstNodeRegisteredIt) {
  const LiveVersions live = CollectLiveVersions({
      {Spec("cls", 1, 8), Spec("mt", 1)},
      {Spec("cls", 2, 16)},
      {Spec("cls", 1, 32)},  // version 1 again: the first node's spec stays
  });
  ASSERT_EQ(live.size(), 2u);
  ASSERT_EQ(live.at("cls").size(), 2u);
  EXPECT_EQ(live.at("cls")[0].version, 1);
  EXPECT_EQ(live.at("cls")[0].hidden, 8);
  EXPECT_EQ(live.at("cls")[1].version, 2);
  EXPECT_EQ(live.at("mt").size(), 1u);
  EXPECT_TRUE(CollectLiveVersions({}).empty());
}

// Live versions are listed; a model no live node serves is listed once, as remembered, so its
// requests are UNAVAILABLE rather than NOT_FOUND; a remembered spec of a live model is not listed.
TEST(ModelVersionsTest, TheListHasLiveVersionsAndRememberedModelsSortedByNameThenVersion) {
  const LiveVersions live = CollectLiveVersions({{Spec("mt", 3)}, {Spec("cls", 2), Spec("mt", 1)}});
  const std::vector<ModelSpec> remembered = {Spec("cls", 1), Spec("zz", 4), Spec("mt", 3), Spec("aa", 9)};
  EXPECT_EQ(NamesAndVersions(ListedVersions(live, remembered)),
            (std::vector<std::string>{"aa@9", "cls@2", "mt@1", "mt@3", "zz@4"}));
  EXPECT_TRUE(ListedVersions({}, {}).empty());
  EXPECT_EQ(NamesAndVersions(ListedVersions({}, {Spec("cls", 1)})), (std::vector<std::string>{"cls@1"}));
}

}  // namespace
}  // namespace cellserve
