// `cellserve health` and `cellserve models`: what a running server (`cellserve serve --listen`)
// says about itself, over RPC (schema/client.h). Both print readable text, or with --json one JSON
// object on stdout (the answer, or {"error": {"code", "message"}}).
// health exits 0 only when the server is serving (a probe); models exits 0 when it got the list.
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/model_spec.h"
#include "schema/client.h"
#include "tools/cli_errors.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace cellserve::tools {
namespace {

void AddCommonFlags(Flags& flags) {
  flags.Add("addr", rpc::kDefaultAddress, "server address HOST:PORT", false, "CELLSERVE_ADDR")
      .Add("timeout-ms", "5000", "give up connecting, and waiting for the answer, after this long (each)")
      .AddBool("json", "print one JSON object on stdout (the answer, or {\"error\": {code, message}})");
}

StatusOr<int64_t> TimeoutMs(const Flags& flags) {
  return flags.GetIntIn("timeout-ms", 1, INT64_MAX);
}

nlohmann::ordered_json HealthJson(const rpc::HealthInfo& h) {
  nlohmann::ordered_json j;
  j["state"] = rpc::ServingStateName(h.state);
  j["protocol_version"] = h.protocol_version;
  j["requests_in_flight"] = h.requests_in_flight;
  j["calls_in_flight"] = h.calls_in_flight;
  j["slots_in_use"] = h.slots_in_use;
  j["accepted"] = h.accepted;
  j["completed"] = h.completed;
  j["failed"] = h.failed;
  j["rejected"] = h.rejected;
  j["devices"] = h.devices;
  j["connections"] = h.connections;
  if (!h.reason.empty()) j["reason"] = h.reason;
  return j;
}

nlohmann::ordered_json ModelJson(const ModelSpec& m) {
  nlohmann::ordered_json j;
  j["name"] = m.name;
  j["version"] = m.version;
  j["kind"] = ModelKindName(m.kind);
  j["vocab_size"] = m.vocab_size;
  j["hidden"] = m.hidden;
  j["layers"] = m.layers;
  if (m.kind == ModelKind::kSeq2Seq) {
    j["target_vocab_size"] = m.target_vocab_size;
    j["eos_id"] = m.eos_id;
    j["max_decode_len"] = m.max_decode_len;
  } else {
    j["classes"] = m.classes;
  }
  j["max_input_tokens"] = m.max_input_tokens;
  j["dtype"] = m.dtype;
  return j;
}

}  // namespace

int HealthCommand(int argc, char** argv) {
  Flags flags("health",
              "Asks a cellserve server (`cellserve serve --listen`) how it is: serving state, protocol\n"
              "version, requests and calls in flight, state slots in use, counters since start.\n"
              "Exit status: 0 only when the server is serving; 1 when it is starting, draining or\n"
              "stopped, cannot be reached, or does not answer within --timeout-ms; 2 bad usage.\n"
              "Usable as a Kubernetes exec probe for readiness (and a node's or serve's startup), e.g.\n"
              "  exec: {command: [cellserve, health, --addr, 127.0.0.1:7410, --timeout-ms, \"2000\"]}\n"
              "Not for liveness: it fails while a pod drains, and on a router until a node joins, and a\n"
              "liveness failure restarts the pod; use a TCP check of the RPC port (deploy/k8s/base).");
  AddCommonFlags(flags);
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  const bool json = flags.GetBool("json");
  auto timeout_ms = TimeoutMs(flags);
  if (!timeout_ms.ok()) return CommandMisused("health", json, timeout_ms.status());

  const std::string addr = flags.Get("addr");
  auto client = rpc::Client::Connect(addr, *timeout_ms);
  if (!client.ok() && client.status().code() == StatusCode::kInvalidArgument)
    return CommandMisused("health", json, client.status().WithContext("--addr"));
  if (!client.ok()) return CommandFailed("health", json, client.status());
  auto h = (*client)->Health(*timeout_ms);
  if (!h.ok()) return CommandFailed("health", json, h.status());

  if (json) {
    std::printf("%s\n", JsonText(HealthJson(*h)).c_str());
  } else {
    std::printf("%s: %s (protocol version %u)\n", addr.c_str(), rpc::ServingStateName(h->state), h->protocol_version);
    if (!h->reason.empty()) std::printf("  why: %s\n", h->reason.c_str());
    std::printf("  requests in flight %lld, calls in flight %u, state slots in use %lld\n",
                static_cast<long long>(h->requests_in_flight), h->calls_in_flight,
                static_cast<long long>(h->slots_in_use));
    std::printf("  since start: %lld accepted, %lld completed, %lld failed, %lld rejected\n",
                static_cast<long long>(h->accepted), static_cast<long long>(h->completed),
                static_cast<long long>(h->failed), static_cast<long long>(h->rejected));
    std::printf("  %u device(s), %u connection(s)\n", h->devices, h->connections);
  }
  if (h->protocol_version != rpc::PROTOCOL_VERSION)
    std::fprintf(stderr, "cellserve health: note: the server speaks protocol version %u, this client %u\n",
                 h->protocol_version, rpc::PROTOCOL_VERSION);
  return h->serving() ? 0 : 1;
}

int ModelsCommand(int argc, char** argv) {
  Flags flags("models",
              "Lists the models a cellserve server (`cellserve serve --listen`) serves: name, version,\n"
              "kind, sizes and limits. Exit status: 0 listed, 1 error, 2 bad usage.");
  AddCommonFlags(flags);
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  const bool json = flags.GetBool("json");
  auto timeout_ms = TimeoutMs(flags);
  if (!timeout_ms.ok()) return CommandMisused("models", json, timeout_ms.status());

  auto client = rpc::Client::Connect(flags.Get("addr"), *timeout_ms);
  if (!client.ok() && client.status().code() == StatusCode::kInvalidArgument)
    return CommandMisused("models", json, client.status().WithContext("--addr"));
  if (!client.ok()) return CommandFailed("models", json, client.status());
  auto models = (*client)->Models(*timeout_ms);
  if (!models.ok()) return CommandFailed("models", json, models.status());

  if (json) {
    nlohmann::ordered_json j;
    j["models"] = nlohmann::ordered_json::array();
    for (const auto& m : *models) j["models"].push_back(ModelJson(m));
    std::printf("%s\n", JsonText(j).c_str());
    return 0;
  }
  if (models->empty()) {
    std::printf("no models served\n");
    return 0;
  }
  std::printf("%-20s %7s  %-8s  %7s  %6s  %6s  %-14s  %9s  %s\n", "NAME", "VERSION", "KIND", "VOCAB", "HIDDEN",
              "LAYERS", "OUTPUT", "MAX INPUT", "DTYPE");
  for (const auto& m : *models) {
    const std::string output = m.kind == ModelKind::kSeq2Seq ? std::to_string(m.target_vocab_size) + " tokens"
                                                             : std::to_string(m.classes) + " classes";
    std::printf("%-20s %7lld  %-8s  %7lld  %6lld  %6lld  %-14s  %9lld  %s\n", m.name.c_str(),
                static_cast<long long>(m.version), ModelKindName(m.kind), static_cast<long long>(m.vocab_size),
                static_cast<long long>(m.hidden), static_cast<long long>(m.layers), output.c_str(),
                static_cast<long long>(m.max_input_tokens), m.dtype.c_str());
  }
  return 0;
}

}  // namespace cellserve::tools
