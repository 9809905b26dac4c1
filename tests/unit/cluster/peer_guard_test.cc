// cluster/peer_guard.h on local actors (the guard does not care where a message comes from): an
// error message and unknown messages leave a guarded actor running; an unknown request is answered
// with an error, an unknown one-way message with nothing. Without the guard CAF's defaults end the
// actor at the error (the first test shows that, so the others can fail).
#include "cluster/peer_guard.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include <caf/all.hpp>

#include "monitoring/log.h"

namespace cellserve::cluster {
namespace {

using ping_atom = caf::atom_constant<caf::atom("ping")>;
using pong_atom = caf::atom_constant<caf::atom("pong")>;
using odd_atom = caf::atom_constant<caf::atom("odd")>;

caf::behavior Pinged(caf::event_based_actor* self, bool guarded) {
  if (guarded) GuardFromPeers(self, "test");
  return {[](ping_atom) { return pong_atom::value; }};
}

// Whether `actor` answers a ping within a second.
bool Answers(caf::scoped_actor& me, const caf::actor& actor) {
  bool ok = false;
  me->request(actor, std::chrono::seconds(1), ping_atom::value)
      .receive([&](pong_atom) { ok = true; }, [&](caf::error&) { ok = false; });
  return ok;
}

class PeerGuardTest : public ::testing::Test {
 protected:
  caf::actor_system_config config_;
  caf::actor_system system_{config_};
};

TEST_F(PeerGuardTest, WithoutItAnErrorMessageEndsTheActor) {
  caf::scoped_actor me{system_};
  caf::actor plain = system_.spawn(Pinged, false);
  ASSERT_TRUE(Answers(me, plain));
  me->send(plain, caf::make_error(caf::sec::unexpected_message));
  EXPECT_FALSE(Answers(me, plain)) << "CAF's default error handler no longer ends an actor: the guard's reason changed";
}

// Logged as the 1st, 2nd and 4th of five: a peer that floods errors does not flood the log.
TEST_F(PeerGuardTest, AnErrorMessageIsLoggedAndTheActorGoesOn) {
  caf::scoped_actor me{system_};
  caf::actor guarded = system_.spawn(Pinged, true);
  testing::internal::CaptureStderr();
  for (int i = 0; i < 5; ++i) me->send(guarded, caf::make_error(caf::sec::unexpected_message));
  EXPECT_TRUE(Answers(me, guarded));  // the errors came first: their log lines are queued
  EXPECT_TRUE(monitoring::FlushLog(std::chrono::seconds(5)));
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("cellserve test: a peer sent an error (1 so far), ignored: "), std::string::npos) << log;
  EXPECT_NE(log.find("(2 so far)"), std::string::npos) << log;
  EXPECT_NE(log.find("(4 so far)"), std::string::npos) << log;
  EXPECT_EQ(log.find("(3 so far)"), std::string::npos) << log;
  EXPECT_EQ(log.find("(5 so far)"), std::string::npos) << log;
  caf::anon_send_exit(guarded, caf::exit_reason::kill);  // the guard ignores other exits
}

// An exit message (but CAF's kill, which no handler sees) leaves a guarded actor running: the
// actors a peer can reach end by their own local quit message.
TEST_F(PeerGuardTest, AnExitMessageIsLoggedAndTheActorGoesOn) {
  caf::scoped_actor me{system_};
  caf::actor guarded = system_.spawn(Pinged, true);
  testing::internal::CaptureStderr();
  caf::anon_send_exit(guarded, caf::exit_reason::user_shutdown);
  EXPECT_TRUE(Answers(me, guarded));
  EXPECT_TRUE(monitoring::FlushLog(std::chrono::seconds(5)));
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("cellserve test: ignored an exit message (1 so far)"), std::string::npos) << log;
  caf::anon_send_exit(guarded, caf::exit_reason::kill);
}

// A peer's message can be any size: the line shows its start, not 100 KB.
TEST_F(PeerGuardTest, AnUnknownMessageIsShownCutShort) {
  caf::scoped_actor me{system_};
  caf::actor guarded = system_.spawn(Pinged, true);
  testing::internal::CaptureStderr();
  me->send(guarded, odd_atom::value, std::string(100000, 'z'));
  EXPECT_TRUE(Answers(me, guarded));
  EXPECT_TRUE(monitoring::FlushLog(std::chrono::seconds(5)));
  const std::string log = testing::internal::GetCapturedStderr();
  const size_t at = log.find("cellserve test: ignored a message it does not know (1 so far): ");
  ASSERT_NE(at, std::string::npos) << log.substr(0, 300);
  const std::string line = log.substr(at, log.find('\n', at) - at);
  EXPECT_NE(line.find("zzz..."), std::string::npos) << line.substr(0, 300);
  EXPECT_LT(line.size(), 400u);
  caf::anon_send_exit(guarded, caf::exit_reason::kill);  // the guard ignores other exits
}

TEST_F(PeerGuardTest, AnUnknownRequestGetsAnErrorAndAnUnknownOneWayMessageNothing) {
  caf::scoped_actor me{system_};
  caf::actor guarded = system_.spawn(Pinged, true);
  caf::error got;
  me->request(guarded, std::chrono::seconds(1), odd_atom::value, 42)
      .receive([](caf::message&) {}, [&](caf::error& e) { got = std::move(e); });
  EXPECT_EQ(got, caf::sec::unexpected_message) << system_.render(got);
  me->send(guarded, odd_atom::value, std::string("one way"));
  bool replied = false;
  me->receive([&](caf::message&) { replied = true; }, [&](caf::error&) { replied = true; },
              caf::after(std::chrono::milliseconds(300)) >> [] {});
  EXPECT_FALSE(replied) << "a one-way message was answered: an error answer ends a peer with CAF's defaults";
  EXPECT_TRUE(Answers(me, guarded));
  caf::anon_send_exit(guarded, caf::exit_reason::kill);  // the guard ignores other exits
}

}  // namespace
}  // namespace cellserve::cluster
