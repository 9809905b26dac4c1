// The cellserve subcommands. Each takes argv starting at its own name, prints `--help`, and
// returns the process exit status (0 ok, 1 failure, 2 bad usage). Called from main.cc only.
#pragma once

namespace cellserve::tools {

int ModelCommand(int argc, char** argv);   // cmd_model.cc: `model init|show|list|convert`
int RunCommand(int argc, char** argv);     // cmd_run.cc: run sentences through a model, synchronously
int CorpusCommand(int argc, char** argv);  // cmd_corpus.cc: text files -> one sentence per line
int TokenizeCommand(int argc, char** argv);  // cmd_tokenize.cc: text -> the token ids the server gives it
int ServeCommand(int argc, char** argv);   // cmd_serve.cc: serve a model repository (LocalCluster), stdin requests
int NodeCommand(int argc, char** argv);    // cmd_serve.cc: serve as one node of a cluster (--join routers)
int RouterCommand(int argc, char** argv);  // cmd_router.cc: place requests on nodes, RPC front door
int BenchCommand(int argc, char** argv);   // cmd_bench.cc: sweep offered load per policy, on a LocalCluster
int InferCommand(int argc, char** argv);   // cmd_infer.cc: one request to a server over RPC
int HealthCommand(int argc, char** argv);  // cmd_health.cc: a server's state and counters (a probe)
int ModelsCommand(int argc, char** argv);  // cmd_health.cc: the models a server serves
int LoadgenCommand(int argc, char** argv); // cmd_loadgen.cc: offer load to a server over RPC, measure it

}  // namespace cellserve::tools
