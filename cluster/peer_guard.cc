#include "cluster/peer_guard.h"
#include "monitoring/log.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace cellserve::cluster {
namespace {

// True for the 1st, 2nd, 4th, 8th, ... call: how often a repeated event is logged.
bool LogThisOne(uint64_t& seen) {
  ++seen;
  return (seen & (seen - 1)) == 0;
}

}  // namespace

// How much of an unknown message a log line shows.
constexpr size_t kMaxContentShown = 256;

void GuardFromPeers(caf::scheduled_actor* self, const char* who) {
  auto unexpected = std::make_shared<uint64_t>(0);
  auto errors = std::make_shared<uint64_t>(0);
  const std::string name = who;
  self->set_default_handler(
      [name, unexpected](caf::scheduled_actor* actor, caf::message_view& x) -> caf::result<caf::message> {
        const bool request = actor->current_message_id().is_request();
        if (LogThisOne(*unexpected)) {
          std::string content = x.content().stringify();  // a peer's: any size
          if (content.size() > kMaxContentShown) content.resize(kMaxContentShown), content += "...";
          monitoring::LogLine("cellserve %s: ignored a message it does not know (%llu so far): %s%s\n", name.c_str(),
                              static_cast<unsigned long long>(*unexpected), content.c_str(),
                              request ? "; its sender is told so" : "");
        }
        if (request) return caf::sec::unexpected_message;
        return caf::message{};  // no reply to a one-way message (CAF sends none for an empty one)
      });
  auto exits = std::make_shared<uint64_t>(0);
  self->set_exit_handler([name, exits](caf::scheduled_actor* actor, caf::exit_msg& m) {
    if (LogThisOne(*exits))
      monitoring::LogLine("cellserve %s: ignored an exit message (%llu so far): %s\n", name.c_str(),
                          static_cast<unsigned long long>(*exits), actor->system().render(m.reason).c_str());
  });
  self->set_error_handler([name, errors](caf::scheduled_actor* actor, caf::error& e) {
    if (LogThisOne(*errors))
      monitoring::LogLine("cellserve %s: a peer sent an error (%llu so far), ignored: %s\n", name.c_str(),
                          static_cast<unsigned long long>(*errors), actor->system().render(e).c_str());
  });
}

}  // namespace cellserve::cluster
