// The `cellserve` executable: dispatches to a subcommand (see commands.h).
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/commands.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

const Subcommand kSubcommands[] = {
    {"model", cellserve::tools::ModelCommand, "create or inspect a model in a model repository"},
    {"run", cellserve::tools::RunCommand, "run sentences through a model on the CPU and time them"},
    {"corpus", cellserve::tools::CorpusCommand, "turn text files into one sentence per line"},
    {"tokenize", cellserve::tools::TokenizeCommand, "print the token ids the server gives text (to train on)"},
    {"serve", cellserve::tools::ServeCommand, "serve a model repository in this process over Cap'n Proto RPC (or --stdin)"},
    {"router", cellserve::tools::RouterCommand, "run a cluster's router: nodes join it, clients call it over RPC"},
    {"node", cellserve::tools::NodeCommand, "serve a model repository as one node of a cluster (--join routers)"},
    {"bench", cellserve::tools::BenchCommand, "sweep offered load per scheduling policy and time every request"},
    {"infer", cellserve::tools::InferCommand, "send one request to a server (serve --listen) and print the answer"},
    {"health", cellserve::tools::HealthCommand, "ask a server how it is (exit 0 only when serving: a probe)"},
    {"models", cellserve::tools::ModelsCommand, "list the models a server serves"},
    {"loadgen", cellserve::tools::LoadgenCommand, "offer open- or closed-loop load to a server and time every request"},
};

void PrintUsage(std::FILE* out) {
  std::fprintf(out, "usage: cellserve COMMAND [flags]   (cellserve COMMAND --help for its flags)\n\n");
  for (const auto& s : kSubcommands) std::fprintf(out, "  %-8s %s\n", s.name, s.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    PrintUsage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  for (const auto& s : kSubcommands) {
    if (std::string(argv[1]) == s.name) return s.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "cellserve: unknown command '%s'\n\n", argv[1]);
  PrintUsage(stderr);
  return 2;
}
