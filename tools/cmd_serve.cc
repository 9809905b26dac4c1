// `cellserve serve`: the whole serving stack in one process (DESIGN.md §6): a LocalCluster with one
// worker per CPU device, behind the Cap'n Proto RPC front door (schema/rpc_server.h) on --listen
// (default 127.0.0.1:7410). SIGTERM or SIGINT: health says draining, new calls are answered
// UNAVAILABLE, every accepted request is answered, then the port closes and it exits 0.
// With --stdin it reads requests from stdin instead, one per
// line, `MODEL<TAB>text`, keeps many in flight at once, and prints one JSON line per answer, as
// answers come (not in input order; each carries its 1-based line number):
//   {"line": 3, "model": "sentiment", "label": 1, "logits": [0.12, -0.40]}
//   {"line": 4, "model": "translate", "tokens": [17, 5, 2]}
//   {"line": 5, "error": {"code": "NOT_FOUND", "message": "unknown model 'x' (served: ...)"}}
// Text becomes tokens with the model's HashTokenizer; tree models get the balanced bracketing of
// the tokens (runtime/text.h). Blank lines are skipped (but counted). EOF, SIGTERM or SIGINT stop
// it: no new requests, every accepted request is answered (Stop drains), then exit 0.
// --metrics-port PORT (either mode) serves Prometheus metrics (monitoring/metrics.h) at
// http://HOST:PORT/metrics, HOST = --metrics-host or else --listen's host; 0 (the default) = off.
// `cellserve node --join ROUTER[,ROUTER...]` is the same process joined to routers (cluster/
// node_agent.h): it also runs what they place on it. SIGTERM then first tells the routers to place
// nothing more here, drains, says goodbye to them and exits 0.
// A device worker, the node actor or the node agent that ends on its own (a failure, said in the
// log) stops it the same way, and it exits 1 so that it is restarted with every device.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/device_factory.h"
#include "actors/local_cluster.h"
#include "cluster/node_agent.h"
#include "cluster/wire.h"
#include "monitoring/log.h"
#include "monitoring/metrics.h"
#include "schema/rpc_server.h"
#include "runtime/memory_limit.h"
#include "runtime/model_repository.h"
#include "runtime/model_spec.h"
#include "runtime/zero_floats.h"
#include "runtime/scheduler.h"
#include "runtime/text.h"
#include "tools/cli_errors.h"
#include "tools/commands.h"
#include "tools/flags.h"
#include "tools/cpu_precision_flag.h"
#include "tools/retired_flags.h"
#include "tools/fold_flag.h"
#include "tools/front_door.h"
#include "tools/thread_placement.h"
#include "tools/stop_signal.h"

namespace cellserve::tools {
namespace {

const char* g_name = "serve";  // "serve" or "node", for messages

int Fail(const Status& s) { return CommandFailed(g_name, false, s); }

std::vector<std::string> SplitComma(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string piece; std::getline(in, piece, ',');)
    if (!piece.empty()) out.push_back(piece);
  return out;
}

// Prints answers, one JSON line each, from any thread.
class Printer {
 public:
  void Answer(int64_t line, const std::string& model, bool seq2seq, const StatusOr<RequestResult>& r) {
    nlohmann::ordered_json j;  // keys in the documented order
    j["line"] = line;
    if (!r.ok()) {
      j["error"] = ErrorJson(r.status());
    } else {
      j["model"] = model;
      if (seq2seq) {
        j["tokens"] = r->tokens;
      } else {
        j["label"] = r->label;
        j["logits"] = r->logits;
      }
    }
    Print(JsonText(j));
  }
  void Print(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }

 private:
  std::mutex mu_;
};

// Reads stdin line by line, returning early (false) once `wake_fd` becomes readable (a signal).
// A line over kMaxLineBytes is not kept: its bytes are read and dropped up to its end, and Next
// says so (`too_long`), so one endless line cannot take the memory (a 50 MB line took 250 MB).
class LineReader {
 public:
  static constexpr size_t kMaxLineBytes = 1 << 20;
  explicit LineReader(int wake_fd) : wake_fd_(wake_fd) {}
  // Next line (without '\n') in `line`, or `too_long` set and `line` empty. False at EOF (after
  // the last, unterminated line) or wake.
  bool woken() const { return woken_; }
  bool Next(std::string& line, bool& too_long) {
    too_long = false;
    for (;;) {
      // Only the bytes not searched yet: searching from the line's start after each read made a
      // long line quadratic.
      const size_t nl = buf_.find('\n', std::max(pos_, scanned_));
      if (nl != std::string::npos) {
        if (!skipping_ && nl - pos_ > kMaxLineBytes) skipping_ = true;  // whole in one read, too long all the same
        if (skipping_) {
          skipping_ = false;
          too_long = true;
          line.clear();
        } else {
          line.assign(buf_, pos_, nl - pos_);
        }
        pos_ = nl + 1;
        return true;
      }
      scanned_ = buf_.size();
      if (!skipping_ && buf_.size() - pos_ > kMaxLineBytes) skipping_ = true;
      if (skipping_) pos_ = buf_.size();  // drop what was read of it
      if (eof_) {
        if (skipping_) {
          skipping_ = false;
          too_long = true;
          line.clear();
          return true;
        }
        if (pos_ < buf_.size()) {
          line.assign(buf_, pos_, std::string::npos);
          pos_ = buf_.size();
          return true;
        }
        return false;
      }
      buf_.erase(0, pos_);
      scanned_ -= pos_;
      pos_ = 0;
      pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        eof_ = true;
        continue;
      }
      if (fds[1].revents) {
        woken_ = true;
        return false;
      }
      char chunk[65536];
      const ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        eof_ = true;
        continue;
      }
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }

 private:
  int wake_fd_;
  std::string buf_;
  size_t pos_ = 0;      // where the next line starts
  size_t scanned_ = 0;  // buf_ has no '\n' before this (from pos_)
  bool skipping_ = false;  // inside a line over kMaxLineBytes
  bool eof_ = false;
  bool woken_ = false;
};

// Serves RPC until a signal arrives on the self-pipe, then drains.
// The server was started before the models loaded (health said not_ready meanwhile); now it
// gets the cluster, and --port-file is written once calls are served.
// A node (`agent` set) joins its routers once it serves, and leaves them at the end; its
// cellserve_node_up series (in `metrics`, if any) gets the name it joins under.
int ServeRpc(LocalCluster& cluster, rpc::RpcServer* server, const std::string& port_file,
             const cluster::NodeAgentOptions* agent_options, const StopSignals& signals,
             monitoring::ServingMetrics* metrics) {
  if (Status s = server->AttachCluster(&cluster); !s.ok()) return Fail(s);
  monitoring::LogLine("cellserve %s: serving %zu model(s) on port %d (SIGTERM drains and exits)\n", g_name,
                      cluster.Models().size(), server->port());
  monitoring::LogLine("cellserve %s: memory: %s\n", g_name,
                      MemorySummary(ReadMemoryOfThisProcess(), static_cast<double>(ZeroFloats::UntouchedBytes())).c_str());
  std::unique_ptr<cluster::NodeAgent> agent;
  if (agent_options) {
    cluster::NodeAgentOptions o = *agent_options;
    // HOSTNAME:RPC-PORT: stable across restarts (a StatefulSet pod), unique per machine.
    if (o.name.empty()) o.name = HostName() + ":" + std::to_string(server->port());
    if (metrics) metrics->SetNodeUp(o.name, true);
    auto started = cluster::NodeAgent::Start(&cluster, o);
    if (!started.ok()) return Fail(started.status());
    agent = std::move(started).value();
    std::string routers;
    for (const std::string& j : o.join) routers += (routers.empty() ? "" : ",") + j;
    monitoring::LogLine("cellserve node: joining router(s) at %s as %s\n", routers.c_str(), o.name.c_str());
  }
  // Once joined, routers may have placed requests here: a failure stops the cluster (they finish)
  // before the agent leaves, as the drain below does, and never the other way round.
  auto fail_serving = [&](const Status& s) {
    cluster.Stop();
    if (agent) agent->Leave();
    return Fail(s);
  };
  if (Status s = WritePortFile(port_file, server->port()); !s.ok()) return fail_serving(s);
  if (Status s = signals.Wait(); !s.ok()) return fail_serving(s);
  if (!signals.failed()) monitoring::LogLine("cellserve %s: signal: draining requests in flight\n", g_name);
  if (agent) {  // first no new placements from the routers, so nothing more arrives to be refused
    const int acked = agent->Drain(5000);
    monitoring::LogLine("cellserve node: %d router(s) stopped placing requests here\n", acked);
  }
  cluster.Stop();     // new calls are answered UNAVAILABLE; accepted requests finish
  if (agent) agent->Leave();  // after the last answer went out
  server->Stop();  // replies go out, then connections close
  const rpc::RpcServerStats stats = server->stats();
  const ClusterReport report = cluster.Report();
  monitoring::LogLine(
      "cellserve %s: %lld call(s) on %lld connection(s): %lld completed, %lld failed, %lld rejected, "
      "%lld cancelled by clients%s\n",
      g_name, static_cast<long long>(stats.calls_total), static_cast<long long>(stats.connections_total),
      static_cast<long long>(report.completed), static_cast<long long>(report.failed),
      static_cast<long long>(report.rejected), static_cast<long long>(stats.client_cancels),
      agent ? (", " + std::to_string(agent->stats().runs) + " run(s) for routers").c_str() : "");
  return 0;
}

}  // namespace

int ServeOrNode(int argc, char** argv, bool node) {
  g_name = node ? "node" : "serve";
  Flags flags(g_name,
              node ? "Serves the models of a repository as one node of a cluster: joins the routers of --join (cellserve\n"
                     "router --cluster), registers its models and devices, reports its load and runs what they place\n"
                     "on it; it also serves its own RPC port (--listen) like `cellserve serve`. A router that is not up\n"
                     "yet or restarts is reconnected to (the name is resolved again each time). SIGTERM or SIGINT: the\n"
                     "routers stop placing requests here, requests in flight finish, then it leaves and exits 0.\n"
                     "If part of it fails (a device worker ends on its own), it stops the same way and exits 1.\n"
                     "While the models load, it stops between them and exits 0 without joining."
                   : "Serves the models of a repository in this process: one worker per CPU device, cellular\n"
              "batching, behind the Cap'n Proto RPC port (--listen; schema/cellserve.capnp; try\n"
              "`cellserve infer`, `cellserve health`). SIGTERM or SIGINT: health turns `draining`, new\n"
              "calls are answered UNAVAILABLE, every request in flight is answered, then it exits 0 (1 if\n"
              "part of it failed, e.g. a device worker that ended on its own: restart it). While the\n"
              "models load, it stops between them and exits 0 without serving.\n"
              "With --stdin: no port; reads requests from stdin, one per line: MODEL<TAB>text, and prints\n"
              "one JSON line per answer (in completion order, each with its line number); EOF also stops.\n"
              "--metrics-port PORT serves Prometheus metrics at http://HOST:PORT/metrics in either mode (names:\n"
              "monitoring/metrics.h); off by default.");
  flags.ConfigFromEnvironment();
  flags.Add("model-repo", "", "model repository folder", true, "CELLSERVE_MODEL_REPO")
      .Add("models", "", "comma-separated model names to serve (default: every model in the repository; then a "
                         "folder there that cannot be read or a link leading nowhere stops the start, saying which)")
      .Add("devices", "1", "devices (one worker each), or `all` (every GPU with --backend cuda, with cpu, every core this process may use: its cpuset or taskset)",
           false, "CELLSERVE_DEVICES")
      .Add("backend", "cpu", "cpu (our CPU kernels, a thread per device), cuda (one device per GPU; builds with nvcc) "
           "or sim (kernels/sim: computes nothing, takes --sim-profile's time; answers are meaningless: for scale "
           "tests)", false, "CELLSERVE_BACKEND")
      .Add("gpu-precision", "fp32", "cuda: GEMM precision, fp32, or fp16/bf16 weights with fp32 accumulation")
      .AddBool("cpu-fallback", "cuda: when no GPU is usable, serve on the CPU (and say so) instead of failing")
      .AddBool("no-cuda-graphs", "cuda: plain kernel launches instead of a CUDA graph per batch bucket")
      .Add("sim-profile", "", "sim: cost profile JSON (kernels/sim/profiles/cpu-lstm512.json, gpu-like.json)")
      .Add("policy", "cellular", "scheduling policy: cellular, padded, bucketed or sequential", false,
           "CELLSERVE_POLICY")
      .Add("lookahead", "5", "rounds in flight per device and model")
      .Add("fill-first-rounds", "4",
           "rounds in a row a cell type with a full max batch ready may go before the oldest request's type "
           "(0: oldest first always)")
      .Add("max-type-wait-rounds", "16",
           "scheduling decisions in a row a cell type with ready cells may be passed over before it goes next (a short request's "
           "last cells then never wait out a long request's run; 0: off)")
      .Add("max-requests", "4096", "requests admitted per device and model at most (beyond: RESOURCE_EXHAUSTED)")
      .Add("state-slots", "65536", "state slots per device and model")
      .Add("stop-grace-ms", "30000",
           "SIGTERM: accepted requests may take this long to finish, then are answered UNAVAILABLE (a router retries "
           "them on another node); the whole stop takes at most this + 17 s (serve) or about + 29 s (node: telling "
           "the routers, leaving them, a connect in progress; a DNS lookup has no bound of ours): keep a pod's terminationGracePeriodSeconds above that + its preStop")
      .Add("stall-after-ms", "10000",
           "health says not ready while a device has had a round running this long without finishing one, or "
           "the node or a worker actor has not read its mailbox as long (a hung GPU, a bug), and serving again "
           "once it moves; a node also stops its load reports, so its routers drop it and place its requests "
           "elsewhere; 0: never");
  if (!node) flags.AddBool("stdin", "read MODEL<TAB>text requests from stdin instead of opening the RPC port");
  AddFoldFlag(flags);
  AddCpuPrecisionFlag(flags);
  AddRetiredFlags(flags);
  AddThreadPlacementFlags(flags, "the RPC front door");
  AddFrontDoorFlags(flags);
  if (node)
    flags.Add("join", "", "comma-separated HOST:PORT of the routers' cluster ports (cellserve router --cluster)", true,
              "CELLSERVE_JOIN")
        .Add("node-name", "", "how routers name this node in logs and metrics (default HOSTNAME:RPC-PORT)", false,
             "CELLSERVE_NODE_NAME")
        .Add("report-interval-ms", "200",
             "load reports to the routers at least this often; keep it well below the routers' --report-timeout-ms "
             "(3000 by default), after which they drop a silent node");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  WarnAboutRetiredFlags(flags, g_name);
  const bool from_stdin = !node && flags.GetBool("stdin");  // a node serves routers over the network

  LocalClusterOptions options;
  options.model_repo = flags.Get("model-repo");
  options.models = SplitComma(flags.Get("models"));
  auto policy = ParsePolicy(flags.Get("policy"));
  if (!policy.ok()) return FlagValueFailed(g_name, policy.status());
  options.scheduler.policy = *policy;
  auto max_requests = flags.GetIntIn("max-requests", 1, INT64_MAX);
  auto lookahead = flags.GetIntIn("lookahead", 1, kMaxLookahead);
  auto fill_first = flags.GetIntIn("fill-first-rounds", 0, kMaxFillFirstRounds);
  auto type_wait = flags.GetIntIn("max-type-wait-rounds", 0, kMaxFillFirstRounds);
  auto slots = flags.GetIntIn("state-slots", 2, int64_t{1} << 30);
  auto stop_grace_ms = flags.GetIntIn("stop-grace-ms", 0, int64_t{24} * 3600 * 1000);
  auto stall_after_ms = flags.GetIntIn("stall-after-ms", 0, int64_t{24} * 3600 * 1000);
  for (const Status* s : {&max_requests.status(), &lookahead.status(), &fill_first.status(), &type_wait.status(), &slots.status(),
                          &stop_grace_ms.status(), &stall_after_ms.status()})
    if (!s->ok()) return FlagValueFailed(g_name, *s);
  // A node's cluster flags, checked before any model loads (a mistake there costs no wait).
  cluster::NodeAgentOptions agent_options;
  if (node) {
    agent_options.join = SplitComma(flags.Get("join"));
    if (Status s = cluster::CheckJoinAddresses(agent_options.join); !s.ok()) return FlagValueFailed(g_name, s);
    agent_options.name = flags.Get("node-name");
    if (!agent_options.name.empty()) {
      if (Status s = cluster::CheckNodeName(agent_options.name); !s.ok())
        return FlagValueFailed(g_name, s.WithContext("--node-name"));
    }
    auto interval = flags.GetIntIn("report-interval-ms", 10, 60000);
    if (!interval.ok()) return FlagValueFailed(g_name, interval.status());
    agent_options.report_interval_ms = *interval;
    if (*interval >= 1000)
      monitoring::LogLine(
          "cellserve node: warning: --report-interval-ms %lld: routers drop a node they have not heard "
          "from for their --report-timeout-ms (3000 by default); keep the interval well below it\n",
          static_cast<long long>(*interval));
  }
  if (flags.Get("devices") == "all") {
    options.devices = 0;
  } else {
    auto devices = flags.GetIntIn("devices", 1, kMaxDevices);
    if (!devices.ok()) return FlagValueFailed(g_name, devices.status().WithContext("--devices takes a number or `all`"));
    options.devices = static_cast<int>(*devices);
  }
  options.backend = flags.Get("backend");
  options.gpu_precision = flags.Get("gpu-precision");
  if (Status s = CheckGpuPrecisionApplies(options.backend, options.gpu_precision); !s.ok()) return FlagValueFailed(g_name, s);
  options.cpu_fallback = flags.GetBool("cpu-fallback");
  options.cuda_graphs = !flags.GetBool("no-cuda-graphs");
  options.sim_profile = flags.Get("sim-profile");
  options.scheduler.lookahead = static_cast<int>(*lookahead);
  options.scheduler.fill_first_rounds = static_cast<int>(*fill_first);
  options.scheduler.max_type_wait_rounds = static_cast<int>(*type_wait);
  options.scheduler.max_requests = *max_requests;
  options.scheduler.state_slots = static_cast<int32_t>(*slots);
  options.stop_grace_ms = *stop_grace_ms;
  options.stall_after_ms = *stall_after_ms;
  auto fold_max = FoldMaxBytes(flags);
  if (!fold_max.ok()) return FlagValueFailed(g_name, fold_max.status());
  options.fold_max_bytes = *fold_max;
  if (Status s = CheckCpuPrecisionApplies(options.backend, options.cpu_fallback, flags.Get("cpu-precision") == "bf16");
      !s.ok())
    return FlagValueFailed(g_name, s);  // before asking the CPU for AMX, which would be beside the point
  auto bf16 = CpuBf16Compute(flags);
  if (!bf16.ok()) return FlagValueFailed(g_name, bf16.status());
  options.cpu_bf16 = *bf16;

  // Pinned first, so that every thread started from here on inherits the front door's cores.
  if (Status placed = ApplyThreadPlacement(flags, options, g_name); !placed.ok())
    return FlagValueFailed(g_name, placed);  // too few CPUs for the flags: a usage error (2)

  // The specs, for tokenizing: vocabulary size and kind of each served model.
  std::vector<std::string> names = options.models;
  if (names.empty()) {
    auto listed = ListModels(options.model_repo);
    if (!listed.ok()) return Fail(listed.status());
    names = *listed;
  }
  std::map<std::string, ModelSpec> specs;
  for (const auto& name : names) {
    auto spec = ReadModelSpec(options.model_repo + "/" + name + "/spec.json");
    if (!spec.ok()) {
      // Start reports the precise error (NOT_FOUND naming the models that are there).
      break;
    }
    specs[name] = *spec;
  }

  // SIGTERM/SIGINT drain and stop (tools/stop_signal.h).
  StopSignals signals;
  if (Status st = signals.Install(); !st.ok()) return Fail(st);

  // Metrics: made before the cluster and the RPC server, destroyed after them; the exposer stays
  // up while they drain.
  // A node's own cellserve_node_up carries the name it registers under (known once its port is),
  // as its routers' series do: one node, one name on the dashboard.
  auto metrics = StartMetricsEndpoint(flags, node ? "" : HostName(), g_name);
  if (!metrics.ok()) return FlagValueFailed(g_name, metrics.status());  // a bad port: 2; in use: 1
  options.metrics = metrics->metrics.get();

  // RPC mode: the port opens first, so `cellserve health` (and a Kubernetes startup probe) can
  // tell "loading" (not_ready) from "not there"; calls before the models are in get UNAVAILABLE.
  std::unique_ptr<rpc::RpcServer> server;
  if (!from_stdin) {
    auto rpc_options = RpcServerOptionsFromFlags(flags, options.metrics);
    if (!rpc_options.ok()) return FlagValueFailed(g_name, rpc_options.status());
    FitOpenFileLimit(rpc_options->max_connections, g_name);
    auto rpc_server = rpc::RpcServer::Start(nullptr, *rpc_options);
    if (!rpc_server.ok()) return Fail(rpc_server.status());
    server = std::move(rpc_server).value();
    const std::string host = rpc_options->listen.substr(0, rpc_options->listen.rfind(':'));
    monitoring::LogLine("cellserve %s: listening on %s:%d (Cap'n Proto RPC); loading models\n", g_name, host.c_str(),
                        server->port());
  }
  // A node actor, device worker or node agent that ends on its own leaves a process that looks
  // alive and serves less or nothing: stop as at SIGTERM, then exit 1 so that it is restarted.
  options.on_actor_failure = [&signals](const std::string&) { signals.Fail(); };
  agent_options.on_actor_failure = options.on_actor_failure;
  auto exit_code = [&](int rc) {
    if (!signals.failed()) return rc;
    monitoring::LogLine("cellserve %s: exiting 1: part of it had failed (above); restart it\n", g_name);
    return 1;
  };
  // A SIGTERM while the models load (a rollout that moved on) ends the start between models and
  // devices: exit 0 without serving, nor joining any router.
  options.stop_requested = [&signals] { return signals.Arrived(); };
  auto stopped_while_loading = [&] {
    if (signals.failed()) {  // Fail() wakes the same pipe: part of it failed (said above), not a signal
      monitoring::LogLine("cellserve %s: stopped while loading the models; served nothing\n", g_name);
      return 1;
    }
    monitoring::LogLine("cellserve %s: stopped (SIGTERM or SIGINT) while loading the models; served nothing\n", g_name);
    return 0;
  };
  auto started = LocalCluster::Start(options);
  if (!started.ok()) {
    server.reset();
    if (started.status().code() == StatusCode::kCancelled && signals.Arrived()) return exit_code(stopped_while_loading());
    return Fail(started.status());
  }
  std::unique_ptr<LocalCluster> cluster = std::move(started).value();
  if (signals.Arrived() && !signals.failed()) {  // it came as the last device registered
    server.reset();
    cluster.reset();
    return stopped_while_loading();
  }
  if (server) {
    if (node) {
      agent_options.devices = cluster->device_count();
      agent_options.max_tokens = *flags.GetInt("max-tokens");  // checked by RpcServerOptionsFromFlags
    }
    const int rc = ServeRpc(*cluster, server.get(), flags.Get("port-file"), node ? &agent_options : nullptr, signals,
                            options.metrics);
    server.reset();  // stopped before the cluster goes
    cluster.reset();
    return exit_code(rc);
  }
  monitoring::LogLine("cellserve serve: %zu model(s) on %d device(s), policy %s; reading MODEL<TAB>text from stdin\n",
                      specs.size(), cluster->device_count(), PolicyName(options.scheduler.policy));

  Printer printer;
  LineReader reader(signals.fd());
  std::map<std::string, HashTokenizer> tokenizers;
  for (const auto& [name, spec] : specs) tokenizers.emplace(name, HashTokenizer(spec.vocab_size));
  int64_t line_no = 0;
  bool too_long = false;
  for (std::string line; reader.Next(line, too_long);) {
    ++line_no;
    if (too_long) {
      printer.Answer(line_no, "", false,
                     InvalidArgument("the line is longer than " + std::to_string(LineReader::kMaxLineBytes >> 20) +
                                     " MiB; split the text (a model takes at most its max_input_tokens)"));
      continue;
    }
    // A UTF-8 byte order mark (an editor's, Windows') before the first line is not part of the
    // model's name.
    if (line_no == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const size_t tab = line.find('\t');
    if (tab == std::string::npos) {
      printer.Answer(line_no, "", false, InvalidArgument("expected MODEL<TAB>text"));
      continue;
    }
    const std::string model = line.substr(0, tab);
    const std::string text = line.substr(tab + 1);
    RequestInput input;
    bool seq2seq = false;
    if (auto it = specs.find(model); it != specs.end()) {
      input.tokens = tokenizers.at(model).Encode(text);
      seq2seq = it->second.kind == ModelKind::kSeq2Seq;
      if (it->second.kind == ModelKind::kTreeLstm && !input.tokens.empty()) {
        input.tree = BracketBalanced(input.tokens);
        input.has_tree = true;
        input.tokens.clear();
      }
    }  // an unknown model goes in as is: the cluster answers NOT_FOUND
    cluster->Infer(model, std::move(input), 0,
                   [&printer, line_no, model, seq2seq](StatusOr<RequestResult> r) {
                     printer.Answer(line_no, model, seq2seq, r);
                   });
  }
  if (reader.woken() && !signals.failed())
    monitoring::LogLine("cellserve serve: signal: draining requests in flight\n");
  cluster->Stop();  // drains: every accepted request is answered (and printed) before it returns
  const ClusterReport report = cluster->Report();
  cluster.reset();
  monitoring::LogLine("cellserve serve: %lld line(s): %lld completed, %lld failed, %lld rejected\n",
                      static_cast<long long>(line_no), static_cast<long long>(report.completed),
                      static_cast<long long>(report.failed), static_cast<long long>(report.rejected));
  return exit_code(0);
}

int ServeCommand(int argc, char** argv) { return ServeOrNode(argc, argv, false); }
int NodeCommand(int argc, char** argv) { return ServeOrNode(argc, argv, true); }

}  // namespace cellserve::tools
