#include "tools/flags.h"

#include <cstdio>
#include <cstdlib>

namespace cellserve::tools {

Flags::Flags(std::string command, std::string summary)
    : command_(std::move(command)), summary_(std::move(summary)) {}

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
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
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
    if (const char* v = std::getenv(spec.env.c_str()); v && *v) values_[name] = v;
  }
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

std::string Flags::Usage() const {
  std::string s = "usage: cellserve " + command_ + " [flags]";
  for (const auto& [name, help] : positional_specs_) s += " [" + name + "]";
  s += "\n\n" + summary_ + "\n";
  if (!positional_specs_.empty()) {
    s += "\narguments:\n";
    for (const auto& [name, help] : positional_specs_) s += "  " + name + "\n      " + help + "\n";
  }
  s += "\nflags:\n";
  for (const auto& name : order_) {
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
  long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end) return InvalidArgument("--" + name + " wants an integer, got '" + v + "'");
  return static_cast<int64_t>(x);
}

StatusOr<double> Flags::GetDouble(const std::string& name) const {
  std::string v = Get(name);
  char* end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) return InvalidArgument("--" + name + " wants a number, got '" + v + "'");
  return x;
}

int ParseOrExit(Flags& flags, int argc, char** argv) {
  Status s = flags.Parse(argc, argv);
  if (flags.help_requested()) {
    std::fputs(flags.Usage().c_str(), stdout);
    return 0;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "cellserve: %s\n\n%s", s.message().c_str(), flags.Usage().c_str());
    return 2;
  }
  return -1;
}

}  // namespace cellserve::tools
