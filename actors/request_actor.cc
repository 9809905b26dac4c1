#include "actors/request_actor.h"

#include <utility>
#include <vector>

namespace cellserve::actors {

namespace {

struct RequestState {
  static inline const char* name = "cellserve.request";

  caf::stateful_actor<RequestState>* self = nullptr;
  RequestId id = 0;
  std::shared_ptr<ReplySlot> reply;
  caf::actor worker;
  int worker_index = 0;
  caf::actor node;
  TokenSink on_token;                    // streams them, if the caller asked
  bool cancel_sent = false;
  bool finished = false;

  ~RequestState() {
    // Stopped before an answer (shutdown): answer now; the ReplySlot ignores it if one was given.
    if (reply) reply->Answer(Unavailable("the cluster stopped before the request finished"), AnswerKind::kRan);
  }

  void Finish(StatusOr<RequestResult> result, AnswerKind kind) {
    if (finished) return;
    finished = true;
    // The node hears first: a client that sends its next request on this answer finds the node's
    // count of this one gone (its mailbox is in order), not a worker that looks full.
    if (node) self->send(node, finished_atom::value, id, worker_index, kind != AnswerKind::kRejected);
    reply->Answer(std::move(result), kind);
    self->quit();
  }

  void AskCancel(Status reason) {
    if (finished || cancel_sent) return;
    cancel_sent = true;
    self->send(worker, cancel_atom::value, CancelMsg{id, std::move(reason)});
  }

  void OnUpdate(RequestUpdate& u) {
    for (RequestEvent& e : u.events) {
      if (finished) return;
      switch (e.kind) {
        case RequestEvent::Kind::kToken:
          if (on_token) on_token(e.token);
          break;
        case RequestEvent::Kind::kDone:
          Finish(std::move(e.result), AnswerKind::kRan);
          break;
        case RequestEvent::Kind::kFailed:
          Finish(e.status, u.rejected ? AnswerKind::kRejected : AnswerKind::kRan);
          break;
      }
    }
  }
};

caf::behavior RequestActor(caf::stateful_actor<RequestState>* self, std::shared_ptr<RequestSetup> setup) {
  RequestState& st = self->state;
  st.self = self;
  st.id = setup->msg.id;
  st.reply = std::move(setup->msg.reply);
  st.worker = setup->worker;
  st.worker_index = setup->worker_index;
  st.node = setup->node;
  st.on_token = std::move(setup->msg.on_token);

  auto graph = BuildRequestGraph(setup->model, setup->msg.input);
  if (!graph.ok()) {
    st.Finish(graph.status(), AnswerKind::kRejected);
    return {};
  }
  const int64_t deadline_us = setup->msg.deadline_us;
  if (deadline_us > 0) {
    const int64_t now = setup->clock->NowMicros();
    if (deadline_us <= now) {
      st.Finish(DeadlineExceeded("the deadline had passed when the request arrived"), AnswerKind::kRejected);
      return {};
    }
  }
  auto box = std::make_shared<GraphBox>();
  box->graph = std::move(graph).value();
  self->send(st.worker, admit_atom::value,
             AdmitMsg{st.id, std::move(box), deadline_us, caf::actor_cast<caf::actor>(self)});
  return {
      [self](update_atom, RequestUpdate& u) { self->state.OnUpdate(u); },
      [self](cancel_atom) { self->state.AskCancel(Cancelled("cancelled by the client")); },
      // Its worker ended (node_actor.h): no update will come.
      [self](worker_lost_atom, const std::string& why) {
        self->state.Finish(Unavailable(why), AnswerKind::kRan);
      },
  };
}

}  // namespace

caf::actor SpawnRequest(caf::actor_system& system, RequestSetup setup) {
  return system.spawn(RequestActor, std::make_shared<RequestSetup>(std::move(setup)));
}

}  // namespace cellserve::actors
