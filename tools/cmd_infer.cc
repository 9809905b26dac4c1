// `cellserve infer`: one request to a cellserve server over RPC (schema/client.h), its answer on
// stdout. The input is text (tokenized as `cellserve bench` does: the served model's
// HashTokenizer, and for treelstm models the balanced bracketing), raw token ids (--tokens, e.g.
// to send ids outside the vocabulary) or an explicit tree of token ids (--tree "((4 5) 6)").
// --json prints exactly one JSON object: the result, or {"error": {"code", "message"}} (bad
// usage included, which also goes to stderr).
// Exit status: 0 answered, 1 any error (connection, server, reply), 2 bad usage.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/model_spec.h"
#include "runtime/text.h"
#include "runtime/tree.h"
#include "schema/client.h"
#include "tools/cli_errors.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace cellserve::tools {
namespace {

struct Output {
  bool json = false;
  bool stream = false;
  std::vector<int32_t> streamed;
};

int BadUsage(const Output& out, const Status& s) { return CommandMisused("infer", out.json, s); }

// An error on stdout (--json, with the tokens streamed before it) or stderr; exit status 1.
int Fail(const Output& out, const Status& s) {
  if (!out.json || !out.stream) return CommandFailed("infer", out.json, s);
  nlohmann::ordered_json j;
  j["error"] = ErrorJson(s);
  j["streamed"] = out.streamed;
  std::printf("%s\n", JsonText(j).c_str());
  return 1;
}

// "4,5,6" (spaces allowed) -> ids; any int32, the server checks the vocabulary.
StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) return InvalidArgument("--tokens: empty item in '" + text + "'");
    item = item.substr(b, e - b + 1);
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end || v < INT32_MIN || v > INT32_MAX)
      return InvalidArgument("--tokens wants comma-separated integers, got '" + item + "'");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return InvalidArgument("--tokens wants comma-separated integers, e.g. --tokens 4,5,6");
  return ids;
}

std::string FormatFloats(const std::vector<float>& values) {
  std::string s;
  char buf[32];
  for (float v : values) {
    std::snprintf(buf, sizeof(buf), "%s%.6g", s.empty() ? "" : " ", v);
    s += buf;
  }
  return s;
}

template <typename T>
std::string FormatInts(const std::vector<T>& values) {
  std::string s;
  for (T v : values) s += (s.empty() ? "" : " ") + std::to_string(v);
  return s;
}

void PrintResult(const Output& out, const rpc::ReplyValue& reply, bool seq2seq, double latency_ms) {
  const RequestResult& r = reply.result;
  if (out.json) {
    nlohmann::ordered_json j;
    j["model"] = reply.model;
    j["version"] = reply.version;
    if (seq2seq) {
      j["tokens"] = r.tokens;
      j["scores"] = r.scores;
    } else {
      j["label"] = r.label;
      j["logits"] = r.logits;
    }
    j["server_us"] = reply.server_micros;
    j["latency_ms"] = latency_ms;
    if (out.stream) j["streamed"] = out.streamed;
    std::printf("%s\n", JsonText(j).c_str());
    return;
  }
  std::printf("model %s (version %u)\n", reply.model.c_str(), reply.version);
  if (seq2seq) {
    std::printf("tokens: %s\nscores: %s\n", FormatInts(r.tokens).c_str(), FormatFloats(r.scores).c_str());
  } else {
    std::printf("label:  %d\nlogits: %s\n", r.label, FormatFloats(r.logits).c_str());
  }
  std::printf("server %.3f ms, round trip %.3f ms\n", reply.server_micros / 1000.0, latency_ms);
}

}  // namespace

int InferCommand(int argc, char** argv) {
  Flags flags("infer",
              "Sends one request to a cellserve server (`cellserve serve --listen`) and prints the answer.\n"
              "Input: TEXT (tokenized with the model's hashing tokenizer, as `cellserve bench` does;\n"
              "treelstm models get the balanced bracketing), or --tokens, or --tree: exactly one.\n"
              "Exit status: 0 answered, 1 any error (the server's, or no connection), 2 bad usage.\n"
              "Examples:\n"
              "  cellserve infer --model sentiment \"The Congress shall assemble.\"\n"
              "  cellserve infer --model translate --stream --json \"Good evening.\"\n"
              "  cellserve infer --model parse --tree \"((4 5) 6)\"");
  flags.Add("addr", rpc::kDefaultAddress, "server address HOST:PORT", false, "CELLSERVE_ADDR")
      .Add("model", "", "model name (`cellserve models` lists the served ones)", true)
      .Add("version", "0", "model version; 0 = whichever the server has")
      .Add("timeout-ms", "0", "deadline, from the server's receipt; 0 = none (past it: DEADLINE_EXCEEDED)")
      .Add("max-decode-len", "0", "seq2seq: decoder steps at most; 0 = the model's max_decode_len")
      .Add("connect-timeout-ms", "5000", "give up connecting after this long")
      .Add("tokens", "", "send these token ids instead of text, e.g. 4,5,6 (treelstm: bracketed like text)")
      .Add("tree", "", "treelstm: send this tree of token ids, e.g. \"((4 5) 6)\"")
      .AddBool("stream", "print each decoder token (seq2seq) as it arrives, then the result")
      .AddBool("json", "a switch (no file, unlike loadgen's --json FILE): print exactly one JSON object on stdout, the "
               "result or {\"error\": {code, message}}")
      .Positional("TEXT...", "the sentence; several arguments are joined with spaces");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;

  Output out;
  out.json = flags.GetBool("json");
  out.stream = flags.GetBool("stream");
  // --version and --timeout-ms go on the wire in 32 bits (the deadline in milliseconds: about 49 days).
  const StatusOr<int64_t> version = flags.GetIntIn("version", 0, UINT32_MAX),
                          timeout_ms = flags.GetIntIn("timeout-ms", 0, UINT32_MAX),
                          max_decode_len = flags.GetIntIn("max-decode-len", 0, INT64_MAX),
                          connect_timeout_ms = flags.GetIntIn("connect-timeout-ms", 1, INT64_MAX);
  for (const StatusOr<int64_t>* v : {&version, &timeout_ms, &max_decode_len, &connect_timeout_ms})
    if (!v->ok()) return BadUsage(out, v->status());
  std::string text;
  for (const auto& word : flags.positional()) text += (text.empty() ? "" : " ") + word;
  const bool has_text = !flags.positional().empty();
  const bool has_tokens = !flags.Get("tokens").empty();
  const bool has_tree = !flags.Get("tree").empty();
  if (has_text + has_tokens + has_tree != 1)
    return BadUsage(out, InvalidArgument("give the input as TEXT, --tokens or --tree (exactly one)"));

  rpc::InferCall call;
  call.model = flags.Get("model");
  call.version = static_cast<uint32_t>(*version);
  call.timeout_us = *timeout_ms * 1000;
  call.max_decode_len = *max_decode_len;
  // Past the server's deadline, allow it a while to say so before giving up on our side.
  if (call.timeout_us > 0) call.client_timeout_ms = call.timeout_us / 1000 + 5000;
  if (has_tokens) {
    auto ids = ParseTokenList(flags.Get("tokens"));
    if (!ids.ok()) return BadUsage(out, ids.status());
    call.input.tokens = *ids;
  }
  if (has_tree) {
    auto tree = ParseTreeSexpr(flags.Get("tree"));
    if (!tree.ok()) return BadUsage(out, tree.status().WithContext("--tree"));
    call.input.tree = std::move(tree).value();
    call.input.has_tree = true;
  }

  const std::string addr = flags.Get("addr");
  auto client = rpc::Client::Connect(addr, *connect_timeout_ms);
  if (!client.ok()) {
    if (client.status().code() == StatusCode::kInvalidArgument) return BadUsage(out, client.status().WithContext("--addr"));
    return Fail(out, client.status());
  }

  // The served spec: the tokenizer's vocabulary and the kind (how to shape and print). Within the
  // call's own bound, if it has one: `--timeout-ms 100` against a stuck server gave up after 10 s.
  auto served = (*client)->Models(call.client_timeout_ms > 0 ? std::min<int64_t>(call.client_timeout_ms, 10000) : 10000);
  if (!served.ok()) return Fail(out, served.status().WithContext("listing the served models"));
  auto spec = rpc::FindModel(*served, call.model, call.version);
  if (!spec.ok() && has_text)  // tokens and trees go as they are: the server names the problem
    return Fail(out, Status(spec.status().code(), spec.status().message() + "; `cellserve models --addr " + addr +
                                                     "` lists them"));
  const bool seq2seq = spec.ok() ? spec->kind == ModelKind::kSeq2Seq : false;
  if (spec.ok() && !has_tree) {
    if (has_text) call.input.tokens = HashTokenizer(spec->vocab_size).Encode(text);
    // An empty input goes as is: the server answers INVALID_ARGUMENT.
    // Text that is a bracketed tree of ids ("((4 5) 6)") was meant for --tree: as text its
    // brackets and numbers are words, and the answer is for another input. Said, then sent as text.
    if (has_text && spec->kind == ModelKind::kTreeLstm && text.find('(') != std::string::npos &&
        ParseTreeSexpr(text).ok())
      std::fprintf(stderr,
                   "cellserve infer: note: the text looks like a tree of token ids; it is sent as text (its "
                   "brackets and numbers tokenized as words). To send the tree: --tree \"%s\"\n",
                   text.c_str());
    if (spec->kind == ModelKind::kTreeLstm && !call.input.tokens.empty()) {
      call.input.tree = BracketBalanced(call.input.tokens);
      call.input.has_tree = true;
      call.input.tokens.clear();
    }
  }

  if (out.stream) {
    call.on_token = [&out](uint32_t index, int32_t token) {
      out.streamed.push_back(token);
      if (!out.json) {
        std::printf("streamed token %u: %d\n", index, token);
        std::fflush(stdout);
      }
    };
  }
  const auto start = std::chrono::steady_clock::now();
  auto reply = (*client)->Infer(call);
  const double latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  if (!reply.ok()) return Fail(out, reply.status());
  PrintResult(out, *reply, seq2seq || !reply->result.tokens.empty(), latency_ms);
  return 0;
}

}  // namespace cellserve::tools
