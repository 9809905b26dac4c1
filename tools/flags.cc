#include "tools/flags.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

namespace cellserve::tools {

namespace {

std::string Trim(const std::string& s) {
  const size_t first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

}  // namespace

Flags::Flags(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {
  Add("config", "", "read flags from this file, one `name = value` per line (a line starting with '#' is a comment; a value takes the rest of its line); the command line "
      "and environment variables win over it");
}

Flags& Flags::ConfigFromEnvironment() {
  specs_["config"].env = "CELLSERVE_CONFIG";
  return *this;
}

Flags& Flags::Add(const std::string& name, const std::string& default_value,
                  const std::string& help, bool required, const std::string& env) {
  order_.push_back(name);
  specs_[name] = Spec{default_value, help, env, required, false};
  return *this;
}

Flags& Flags::AddBool(const std::string& name, const std::string& help) {
  order_.push_back(name);
  specs_[name] = Spec{"", help, "", false, true};
  return *this;
}

Flags& Flags::Positional(const std::string& name, const std::string& help) {
  positional_specs_.emplace_back(name, help);
  return *this;
}

Status Flags::Parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      return OkStatus();
    }
    if (arg == "--") {  // the end of the flags: the rest are arguments, even those that start with --
      positional_values_.insert(positional_values_.end(), argv + i + 1, argv + argc);
      break;
    }
    if (arg.rfind("--", 0) != 0) {
      positional_values_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) return InvalidArgument("unknown flag --" + name);
    if (it->second.is_bool) {
      if (has_value) {
        static const std::set<std::string> kTrue = {"true", "yes", "1"}, kFalse = {"false", "no", "0"};
        if (!kTrue.count(value) && !kFalse.count(value))
          return InvalidArgument("--" + name + " is a boolean flag: --" + name + ", --" + name + "=true or --" + name +
                                 "=false, got '" + value + "'");
        value = kTrue.count(value) ? "true" : "false";
      }
      values_[name] = has_value ? value : "true";
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) return InvalidArgument("flag --" + name + " needs a value");
      value = argv[++i];
    }
    values_[name] = value;
  }
  for (const auto& [name, spec] : specs_) {
    if (values_.count(name) || spec.env.empty()) continue;
    if (const char* v = std::getenv(spec.env.c_str()); v && *v) {
      values_[name] = v;
      from_env_.insert(name);
    }
  }
  if (const std::string config = Get("config"); !config.empty()) RETURN_IF_ERROR(ApplyConfigFile(config));
  for (const auto& [name, spec] : specs_) {
    if (spec.required && !values_.count(name)) return InvalidArgument("missing required flag --" + name);
  }
  const bool variadic = !positional_specs_.empty() &&
                        positional_specs_.back().first.size() > 3 &&
                        positional_specs_.back().first.compare(positional_specs_.back().first.size() - 3, 3, "...") == 0;
  if (!variadic && positional_values_.size() > positional_specs_.size())
    return InvalidArgument("unexpected argument '" + positional_values_[positional_specs_.size()] + "'");
  return OkStatus();
}

Status Flags::ApplyConfigFile(const std::string& path) {
  // A folder opens, and reads as empty: the usual slip is a ConfigMap mounted as a folder.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    return InvalidArgument("the config file " + path + " (--config or CELLSERVE_CONFIG) is a folder; give the file in "
                           "it (a Kubernetes ConfigMap mounted as a folder: use subPath, or name the file)");
  std::ifstream file(path, std::ios::binary);
  if (!file) return NotFound("cannot read the config file " + path + " (--config or CELLSERVE_CONFIG)");
  // Read whole first, and at most 1 MiB (a config is a few lines; /dev/zero would fill memory),
  // so that a read that fails midway is an error, not a config cut short.
  constexpr size_t kMaxConfigBytes = 1 << 20;
  std::string text;
  char chunk[65536];
  while (file.read(chunk, sizeof chunk) || file.gcount() > 0) {
    text.append(chunk, static_cast<size_t>(file.gcount()));
    if (text.size() > kMaxConfigBytes)
      return InvalidArgument("the config file " + path + " is over 1 MiB: is it the right file? (one `name = value` "
                             "per line)");
  }
  if (file.bad())
    return Unavailable("reading the config file " + path + " failed (--config or CELLSERVE_CONFIG): " +
                       std::strerror(errno));
  std::istringstream in(text);
  std::map<std::string, std::pair<std::string, int>> file_values;  // name -> value, line
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number) + ": ";
    line = Trim(line);
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) return InvalidArgument(where + "expected `name = value`, got '" + line + "'");
    std::string name = Trim(line.substr(0, eq)), value = Trim(line.substr(eq + 1));
    if (name.rfind("--", 0) == 0) name = name.substr(2);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    auto spec = specs_.find(name);
    if (spec == specs_.end() || name == "config")
      return InvalidArgument(where + "unknown flag '" + name + "' for cellserve " + command_ +
                             " (`cellserve " + command_ + " --help` lists them)");
    if (spec->second.is_bool) {
      static const std::set<std::string> kTrue = {"true", "yes", "1"}, kFalse = {"false", "no", "0"};
      if (!kTrue.count(value) && !kFalse.count(value))
        return InvalidArgument(where + "'" + name + "' is a boolean flag: true or false, got '" + value + "'");
      value = kTrue.count(value) ? "true" : "false";
    }
    if (!file_values.emplace(name, std::make_pair(value, number)).second)
      return InvalidArgument(where + "'" + name + "' is set twice");
  }
  for (auto& [name, value_line] : file_values) {
    if (values_.emplace(name, value_line.first).second) continue;
    // Set already: say so, or a deployment's environment (the image sets some) hides the file's value.
    const std::string& env = specs_.at(name).env;
    overridden_.push_back(path + ":" + std::to_string(value_line.second) + ": '" + name + "' is set by " +
                          (from_env_.count(name) ? env : "the command line") + ", which wins over the file");
  }
  return OkStatus();
}

std::string Flags::Usage() const {
  std::string s = "usage: cellserve " + command_ + " [flags]";
  for (const auto& [name, help] : positional_specs_) s += " [" + name + "]";
  s += "\n\n" + summary_ + "\n";
  if (!positional_specs_.empty()) {
    s += "\narguments:\n";
    for (const auto& [name, help] : positional_specs_) s += "  " + name + "\n      " + help + "\n";
  }
  s += "\nflags:\n";
  std::vector<std::string> names;  // the command's own first, --config (every command's) last
  for (const auto& name : order_)
    if (name != "config") names.push_back(name);
  names.push_back("config");
  for (const auto& name : names) {
    const Spec& spec = specs_.at(name);
    s += "  --" + name + (spec.is_bool ? "" : " VALUE") + "\n      " + spec.help;
    if (spec.required) s += " (required)";
    else if (!spec.default_value.empty()) s += " (default: " + spec.default_value + ")";
    if (!spec.env.empty()) s += " [env " + spec.env + "]";
    s += "\n";
  }
  return s;
}

std::string Flags::Get(const std::string& name) const {
  if (auto it = values_.find(name); it != values_.end()) return it->second;
  auto spec = specs_.find(name);
  return spec == specs_.end() ? "" : spec->second.default_value;
}

bool Flags::GetBool(const std::string& name) const {
  std::string v = Get(name);
  return v == "true" || v == "1" || v == "yes";
}

StatusOr<int64_t> Flags::GetInt(const std::string& name) const {
  std::string v = Get(name);
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) return InvalidArgument("--" + name + " wants an integer, got '" + v + "'");
  if (errno == ERANGE) return InvalidArgument("--" + name + " is out of range: '" + v + "'");
  return static_cast<int64_t>(x);
}

StatusOr<int64_t> Flags::GetIntIn(const std::string& name, int64_t lo, int64_t hi, const std::string& hint) const {
  ASSIGN_OR_RETURN(const int64_t x, GetInt(name));
  if (x < lo || x > hi)
    return InvalidArgument("--" + name + " must be " +
                           (hi == INT64_MAX ? ">= " + std::to_string(lo)
                                            : "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]") +
                           ", got " + std::to_string(x) + (hint.empty() ? "" : " (" + hint + ")"));
  return x;
}

StatusOr<double> Flags::GetDouble(const std::string& name) const {
  std::string v = Get(name);
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) return InvalidArgument("--" + name + " wants a number, got '" + v + "'");
  if (!std::isfinite(x)) return InvalidArgument("--" + name + " wants a finite number, got '" + v + "'");
  return x;
}

int ParseOrExit(Flags& flags, int argc, char** argv) {
  Status s = flags.Parse(argc, argv);
  if (flags.help_requested()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return 0;
  }
  if (!s.ok()) {
    // The mistake alone, and where the flags are: the whole usage after it pushed the one line
    // that matters off the screen.
    std::fprintf(stderr, "cellserve %s: %s\n(`cellserve %s --help` lists its flags)\n", flags.command().c_str(),
                 s.message().c_str(), flags.command().c_str());
    return 2;
  }
  for (const std::string& note : flags.overridden()) std::fprintf(stderr, "cellserve: %s\n", note.c_str());
  return -1;
}

}  // namespace cellserve::tools
