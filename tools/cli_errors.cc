#include "tools/cli_errors.h"

#include <chrono>
#include <cstdio>

#include "monitoring/log.h"

namespace cellserve::tools {

std::string JsonText(const nlohmann::ordered_json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

nlohmann::ordered_json ErrorJson(const Status& s) {
  return {{"code", StatusCodeName(s.code())}, {"message", s.message()}};
}

int CommandFailed(const char* command, bool json, const Status& s) {
  (void)monitoring::FlushLog(std::chrono::seconds(1));  // the lines that led here first
  if (json) {
    std::printf("%s\n", JsonText(nlohmann::ordered_json{{"error", ErrorJson(s)}}).c_str());
  } else {
    std::fprintf(stderr, "cellserve %s: %s\n", command, s.ToString().c_str());
  }
  return 1;
}

int CommandMisused(const char* command, bool json, const Status& s) {
  (void)monitoring::FlushLog(std::chrono::seconds(1));
  if (json) std::printf("%s\n", JsonText(nlohmann::ordered_json{{"error", ErrorJson(s)}}).c_str());
  std::fprintf(stderr, "cellserve %s: %s (cellserve %s --help lists the flags)\n", command, s.message().c_str(),
               command);
  return 2;
}

int FlagValueFailed(const char* command, const Status& s) {
  return s.code() == StatusCode::kInvalidArgument ? CommandMisused(command, false, s) : CommandFailed(command, false, s);
}

}  // namespace cellserve::tools
