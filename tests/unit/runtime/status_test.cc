#include "runtime/status.h"

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace cellserve {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_TRUE(OkStatus().ok());
  EXPECT_EQ(OkStatus().code(), StatusCode::kOk);
}

TEST(StatusTest, CodeNamesAll8) {
  EXPECT_STREQ(StatusCodeName(StatusCode::kOk), "OK");
  EXPECT_STREQ(StatusCodeName(StatusCode::kInvalidArgument), "INVALID_ARGUMENT");
  EXPECT_STREQ(StatusCodeName(StatusCode::kNotFound), "NOT_FOUND");
  EXPECT_STREQ(StatusCodeName(StatusCode::kResourceExhausted), "RESOURCE_EXHAUSTED");
  EXPECT_STREQ(StatusCodeName(StatusCode::kDeadlineExceeded), "DEADLINE_EXCEEDED");
  EXPECT_STREQ(StatusCodeName(StatusCode::kCancelled), "CANCELLED");
  EXPECT_STREQ(StatusCodeName(StatusCode::kUnavailable), "UNAVAILABLE");
  EXPECT_STREQ(StatusCodeName(StatusCode::kInternal), "INTERNAL");
  // Wire codes: the enum values are the gRPC-ish order the RPC layer maps 1:1.
  EXPECT_EQ(static_cast<int>(StatusCode::kOk), 0);
  EXPECT_EQ(static_cast<int>(StatusCode::kInternal), 7);
}

TEST(StatusTest, HelpersMakeTheirCodes) {
  struct Case {
    Status s;
    StatusCode code;
    const char* text;
  };
  const std::vector<Case> cases = {
      {InvalidArgument("a"), StatusCode::kInvalidArgument, "INVALID_ARGUMENT: a"},
      {NotFound("b"), StatusCode::kNotFound, "NOT_FOUND: b"},
      {ResourceExhausted("c"), StatusCode::kResourceExhausted, "RESOURCE_EXHAUSTED: c"},
      {DeadlineExceeded("d"), StatusCode::kDeadlineExceeded, "DEADLINE_EXCEEDED: d"},
      {Cancelled("e"), StatusCode::kCancelled, "CANCELLED: e"},
      {Unavailable("f"), StatusCode::kUnavailable, "UNAVAILABLE: f"},
      {Internal("g"), StatusCode::kInternal, "INTERNAL: g"},
  };
  for (const Case& c : cases) {
    EXPECT_FALSE(c.s.ok()) << c.text;
    EXPECT_EQ(c.s.code(), c.code) << c.text;
    EXPECT_EQ(c.s.message(), std::string(c.text).substr(std::string(c.text).size() - 1));
    EXPECT_EQ(c.s.ToString(), c.text);
  }
}

TEST(StatusTest, ToStringFormat) {
  Status s(StatusCode::kInvalidArgument, "token 40000 is outside the vocabulary (32000)");
  EXPECT_EQ(s.ToString(), "INVALID_ARGUMENT: token 40000 is outside the vocabulary (32000)");
  EXPECT_EQ(Internal("").ToString(), "INTERNAL: ");
}

TEST(StatusTest, WithContextPrefixesAndKeepsCode) {
  Status s = NotFound("no such model");
  Status w = s.WithContext("loading repo/x");
  EXPECT_EQ(w.code(), StatusCode::kNotFound);
  EXPECT_EQ(w.message(), "loading repo/x: no such model");
  EXPECT_EQ(w.ToString(), "NOT_FOUND: loading repo/x: no such model");
  // The original is untouched, and contexts nest outermost first.
  EXPECT_EQ(s.message(), "no such model");
  EXPECT_EQ(w.WithContext("outer").message(), "outer: loading repo/x: no such model");
}

TEST(StatusTest, WithContextOnOkStaysOk) {
  Status w = OkStatus().WithContext("ctx");
  EXPECT_TRUE(w.ok());
  EXPECT_EQ(w.message(), "");
  EXPECT_EQ(w.ToString(), "OK");
}

TEST(StatusOrTest, HoldsValue) {
  StatusOr<std::string> v(std::string("hello"));
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v.status().ok());
  EXPECT_EQ(v.value(), "hello");
  EXPECT_EQ(*v, "hello");
  EXPECT_EQ(v->size(), 5u);
  v.value() += "!";
  EXPECT_EQ(*v, "hello!");
  std::string moved = std::move(v).value();
  EXPECT_EQ(moved, "hello!");
}

TEST(StatusOrTest, HoldsError) {
  StatusOr<int> e(ResourceExhausted("full"));
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(e.status().message(), "full");
}

TEST(StatusOrTest, MoveOnlyValue) {
  StatusOr<std::unique_ptr<int>> p(std::make_unique<int>(42));
  ASSERT_TRUE(p.ok());
  std::unique_ptr<int> q = std::move(p).value();
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(*q, 42);
}

#ifdef NDEBUG
TEST(StatusOrTest, OkStatusWithoutValueBecomesInternal) {
  // A programming error (asserts in debug builds); release builds must not claim success.
  StatusOr<int> bad{OkStatus()};
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInternal);
}
#endif

// ---- macros ----

Status Step(bool fail, int* counter) {
  ++*counter;
  return fail ? Unavailable("step " + std::to_string(*counter) + " failed") : OkStatus();
}

Status ThreeSteps(int fail_at, int* counter) {
  RETURN_IF_ERROR(Step(fail_at == 1, counter));
  RETURN_IF_ERROR(Step(fail_at == 2, counter));
  RETURN_IF_ERROR(Step(fail_at == 3, counter));
  return Internal("reached the end");
}

TEST(StatusMacroTest, ReturnIfErrorPropagatesFirstError) {
  int counter = 0;
  Status s = ThreeSteps(2, &counter);
  EXPECT_EQ(counter, 2);  // step 3 never ran
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "step 2 failed");

  counter = 0;
  s = ThreeSteps(1, &counter);
  EXPECT_EQ(counter, 1);
  EXPECT_EQ(s.message(), "step 1 failed");

  counter = 0;
  s = ThreeSteps(0, &counter);
  EXPECT_EQ(counter, 3);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), "reached the end");
}

StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

StatusOr<int> Quarter(int x, int* reached) {
  ASSIGN_OR_RETURN(int h, Half(x));
  *reached = 1;
  ASSIGN_OR_RETURN(const int q, Half(h));  // two uses in one function
  *reached = 2;
  return q;
}

TEST(StatusMacroTest, AssignOrReturnAssignsOrPropagates) {
  int reached = 0;
  StatusOr<int> q = Quarter(12, &reached);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(*q, 3);
  EXPECT_EQ(reached, 2);

  reached = 0;
  q = Quarter(6, &reached);  // 6 -> 3 -> odd
  EXPECT_EQ(reached, 1);
  EXPECT_EQ(q.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(q.status().message(), "3 is odd");

  reached = 0;
  q = Quarter(5, &reached);
  EXPECT_EQ(reached, 0);
  EXPECT_EQ(q.status().message(), "5 is odd");
}

StatusOr<std::unique_ptr<int>> MakeBox(int v) {
  if (v < 0) return NotFound("negative");
  return std::make_unique<int>(v);
}

Status UseBox(int v, int* out) {
  ASSIGN_OR_RETURN(std::unique_ptr<int> box, MakeBox(v));  // move-only
  *out = *box;
  return OkStatus();
}

TEST(StatusMacroTest, AssignOrReturnMovesMoveOnlyValues) {
  int out = 0;
  EXPECT_TRUE(UseBox(9, &out).ok());
  EXPECT_EQ(out, 9);
  Status s = UseBox(-1, &out);
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(out, 9);
}

}  // namespace
}  // namespace cellserve
