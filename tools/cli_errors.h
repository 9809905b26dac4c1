// How the RPC client commands (infer, health, models) and `serve --stdin` report an error, in one
// place. With --json: one object {"error": {"code": "NOT_FOUND", "message": ...}} on stdout (codes
// as DESIGN.md §7 names them), so a script always gets JSON; without: a line on stderr.
// Exit statuses: 1 for a failure, 2 for a malformed command line (which always goes to stderr too).
// Thread-compatible (they print; call from one thread at a time).
#pragma once

#include <nlohmann/json.hpp>

#include "runtime/status.h"

namespace cellserve::tools {

// `j` as JSON text (indent < 0: one line), with bytes that are not UTF-8 (a model name or a
// flag's value echoed in a message) replaced by U+FFFD: nlohmann's dump() throws on them, which
// ended `infer --json` with an abort and left a `serve --stdin` line unanswered.
std::string JsonText(const nlohmann::ordered_json& j, int indent = -1);

// {"code": "...", "message": "..."}: the value of an "error" key.
nlohmann::ordered_json ErrorJson(const Status& s);

// Prints `s` for `command` (--json: {"error": ...} on stdout; else "cellserve COMMAND: CODE: ..."
// on stderr) and returns 1.
int CommandFailed(const char* command, bool json, const Status& s);

// A malformed command line: the message and a pointer to --help on stderr, and with --json also
// {"error": ...} on stdout. Returns 2.
int CommandMisused(const char* command, bool json, const Status& s);

// A flag's value checked after parsing: INVALID_ARGUMENT is a malformed command line
// (CommandMisused, 2); anything else, e.g. the machine has no AMX, a failure (CommandFailed, 1).
int FlagValueFailed(const char* command, const Status& s);

}  // namespace cellserve::tools
