// A small command-line flag parser for the cellserve subcommands: "--name value", "--name=value",
// boolean "--name", and positional arguments. Each subcommand declares its flags with a help line
// and a default, so `--help` is generated and unknown flags are a clear error.
// Environment variables: a flag declared with env "CELLSERVE_X" takes that variable's value when
// the flag is not given.
// "--" ends the flags: what follows is positional, even when it starts with "--".
// Config file: every command also takes --config FILE (the long-running ones, which call
// ConfigFromEnvironment, also CELLSERVE_CONFIG; a probe's `cellserve health` in the same container
// must not read a server's file): one flag per line,
// `name = value` (the flag's name without "--"; a boolean flag takes true/false, yes/no or 1/0),
// blank lines and lines starting with '#' ignored, a value may be in double quotes. A value there
// is used only when neither the command line nor the flag's environment variable gives one:
// command line, then environment, then config file, then default. A name the command does not
// know, a line without '=', a flag set twice or a bad boolean is INVALID_ARGUMENT with FILE:LINE;
// an unreadable file NOT_FOUND. A file's value that the command line or the environment hides is
// listed by overridden(), and ParseOrExit prints it. Single-threaded use.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "runtime/status.h"

namespace cellserve::tools {

// Upper bounds of flags narrowed to int: generous, and far below where int would wrap.
constexpr int64_t kMaxDevices = 4096;      // --devices
constexpr int64_t kMaxThreads = 4096;      // --blas-threads, --caf-threads
constexpr int64_t kMaxLookahead = 1 << 20; // --lookahead
constexpr int64_t kMaxFillFirstRounds = 1000000;  // --fill-first-rounds

class Flags {
 public:
  Flags(std::string command, std::string summary);

  // Declares a flag. `default_value` empty and `required` true means it must be given.
  Flags& Add(const std::string& name, const std::string& default_value, const std::string& help,
             bool required = false, const std::string& env = "");
  Flags& AddBool(const std::string& name, const std::string& help);
  // A positional argument; a last one named "NAME..." takes any number of values.
  Flags& Positional(const std::string& name, const std::string& help);
  // --config also comes from CELLSERVE_CONFIG (serve, node, router).
  Flags& ConfigFromEnvironment();

  // Parses argv (argv[0] is the subcommand). Returns OK, or INVALID_ARGUMENT naming the flag.
  // After `--help`, help_requested() is true and nothing else is checked.
  Status Parse(int argc, char** argv);
  bool help_requested() const { return help_; }
  std::string Usage() const;
  const std::string& command() const { return command_; }

  std::string Get(const std::string& name) const;
  bool GetBool(const std::string& name) const;
  // INVALID_ARGUMENT, naming the flag, for a value that is not an integer or outside int64.
  StatusOr<int64_t> GetInt(const std::string& name) const;
  // GetInt, and INVALID_ARGUMENT unless lo <= value <= hi (hi = INT64_MAX: no upper bound);
  // `hint`, when given, ends the message in brackets ("MiB; 0 turns folding off").
  StatusOr<int64_t> GetIntIn(const std::string& name, int64_t lo, int64_t hi, const std::string& hint = "") const;
  // INVALID_ARGUMENT for a value that is not a finite number (inf and nan are refused).
  StatusOr<double> GetDouble(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_values_; }
  // "FILE:LINE: 'name' is set by CELLSERVE_X, which wins over the file", one per hidden value.
  const std::vector<std::string>& overridden() const { return overridden_; }

 private:
  struct Spec {
    std::string default_value, help, env;
    bool required = false, is_bool = false;
  };
  std::string command_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  // Reads --config's file into values_ for the flags still unset (see the header comment).
  Status ApplyConfigFile(const std::string& path);

  std::map<std::string, std::string> values_;
  std::vector<std::pair<std::string, std::string>> positional_specs_;
  std::vector<std::string> positional_values_;
  std::set<std::string> from_env_;       // flags whose value came from their environment variable
  std::vector<std::string> overridden_;  // see overridden()
  bool help_ = false;
};

// Parses the flags; prints usage and returns 0 on --help, prints the error and where the usage is
// and returns 2 on a bad flag; returns -1 when the command should go on.
int ParseOrExit(Flags& flags, int argc, char** argv);

}  // namespace cellserve::tools
