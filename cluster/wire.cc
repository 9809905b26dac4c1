#include "cluster/wire.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <nlohmann/json.hpp>

#include "schema/cellserve.capnp.h"
#include "schema/convert.h"

namespace cellserve::cluster {
namespace {

std::string ToBytes(capnp::MessageBuilder& message) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  kj::ArrayPtr<const kj::byte> bytes = words.asBytes();
  return std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
}

// Copies into word-aligned memory (a std::string's buffer need not be aligned).
kj::Array<capnp::word> ToWords(const std::string& bytes) {
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  if (words.asBytes().size() > 0) std::memcpy(words.asBytes().begin(), bytes.data(), words.asBytes().size());
  return words;
}

}  // namespace

Status CheckNodeName(const std::string& name) {
  if (name.empty()) return InvalidArgument("a node name must not be empty");
  if (name.size() > kMaxNodeNameBytes)
    return InvalidArgument("a node name has at most " + std::to_string(kMaxNodeNameBytes) + " bytes, this one " +
                           std::to_string(name.size()));
  for (unsigned char c : name)
    if (c < 0x20 || c == 0x7f) return InvalidArgument("a node name must not hold control characters");
  return OkStatus();
}

std::string EncodeRegistration(const Registration& registration) {
  nlohmann::json j;
  j["name"] = registration.name;
  j["devices"] = registration.devices;
  if (registration.run_streams) j["run_streams"] = true;
  j["models"] = nlohmann::json::array();
  for (const ModelSpec& spec : registration.models) j["models"].push_back(nlohmann::json::parse(ModelSpecToJson(spec)));
  return j.dump();
}

StatusOr<Registration> DecodeRegistration(const std::string& bytes) {
  nlohmann::json j = nlohmann::json::parse(bytes, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("registration: not a JSON object");
  Registration r;
  if (!j.contains("name") || !j["name"].is_string() || j["name"].get<std::string>().empty())
    return InvalidArgument("registration: needs a non-empty \"name\"");
  r.name = j["name"].get<std::string>();
  if (Status s = CheckNodeName(r.name); !s.ok()) return s.WithContext("registration");
  if (!j.contains("devices") || !j["devices"].is_number_integer())
    return InvalidArgument("registration: needs \"devices\"");
  const int64_t devices = j["devices"].get<int64_t>();
  if (devices < 1 || devices > 65536) return InvalidArgument("registration: devices must be in 1..65536");
  r.devices = static_cast<int32_t>(devices);
  if (j.contains("run_streams")) {
    if (!j["run_streams"].is_boolean()) return InvalidArgument("registration: \"run_streams\" must be true or false");
    r.run_streams = j["run_streams"].get<bool>();
  }
  if (!j.contains("models") || !j["models"].is_array() || j["models"].empty())
    return InvalidArgument("registration: needs at least one model");
  for (const auto& m : j["models"]) {
    auto spec = ParseModelSpec(m.dump());
    if (!spec.ok()) return InvalidArgument("registration: model: " + spec.status().message());
    r.models.push_back(std::move(spec).value());
  }
  return r;
}

std::string EncodeRunRequest(const std::string& model, const RequestInput& input) {
  capnp::MallocMessageBuilder message;
  rpc::EncodeInferRequest(model, static_cast<uint32_t>(std::clamp<int64_t>(input.model_version, 0, UINT32_MAX)), input,
                          0, input.max_decode_len, message.initRoot<rpc::InferRequest>());
  return ToBytes(message);
}

StatusOr<RunRequest> DecodeRunRequest(const std::string& bytes, int64_t max_tokens) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0) return InvalidArgument("run: not a capnp message");
  kj::Array<capnp::word> words = ToWords(bytes);
  rpc::RequestLimits limits;
  limits.max_tokens = max_tokens;
  StatusOr<rpc::DecodedRequest> decoded = InvalidArgument("run: unreadable");
  kj::Maybe<kj::Exception> e = kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader(words);
    decoded = rpc::DecodeInferRequest(reader.getRoot<rpc::InferRequest>(), limits);
  });
  if (e != nullptr) return InvalidArgument("run: not a capnp message");
  if (!decoded.ok()) return decoded.status();
  RunRequest run;
  run.model = std::move(decoded->model);
  run.input = std::move(decoded->input);
  return run;
}

std::string EncodeRunAnswer(const StatusOr<RequestResult>& result, const ModelSpec& spec) {
  capnp::MallocMessageBuilder message;
  rpc::EncodeReply(result, spec, 0, message.initRoot<rpc::InferReply>());
  return ToBytes(message);
}

StatusOr<RequestResult> DecodeRunAnswer(const std::string& bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0)
    return Internal("a node's answer is not a capnp message");
  kj::Array<capnp::word> words = ToWords(bytes);
  StatusOr<RequestResult> out = Internal("a node's answer is unreadable");
  kj::Maybe<kj::Exception> e = kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader(words);
    auto reply = rpc::DecodeReply(reader.getRoot<rpc::InferReply>());
    if (reply.ok()) out = std::move(reply->result);
    else out = reply.status();
  });
  if (e != nullptr) return Internal("a node's answer is unreadable");
  return out;
}

Status ParseHostPort(const std::string& address, bool allow_zero, std::string& host, uint16_t& port) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    return InvalidArgument("'" + address + "' is not HOST:PORT");
  host = address.substr(0, colon);
  const std::string digits = address.substr(colon + 1);
  if (digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos)
    return InvalidArgument("'" + address + "': the port must be a number");
  const long p = std::stol(digits);
  if (p > 65535 || (p == 0 && !allow_zero)) return InvalidArgument("'" + address + "': port out of range");
  port = static_cast<uint16_t>(p);
  return OkStatus();
}

}  // namespace cellserve::cluster
