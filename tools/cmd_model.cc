// `cellserve model init|show|list|convert`: create a model with seeded random weights in a model
// repository, inspect one, or copy one with its weights stored in another dtype.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <new>

#include "kernels/cpu/packed_gemm.h"
#include "runtime/model_repository.h"
#include "runtime/token_fold.h"
#include "tools/commands.h"
#include "tools/cli_errors.h"
#include "tools/flags.h"

namespace cellserve::tools {

namespace {

// Whether DIR/spec.json exists; nullopt (said on stderr) when the repository cannot be looked
// into (EACCES): the throwing std::filesystem::exists aborted `model init` there.
std::optional<bool> ModelExists(const std::filesystem::path& dir) {
  std::error_code unreadable;
  const bool exists = std::filesystem::exists(dir / "spec.json", unreadable);
  if (!unreadable) return exists;
  std::fprintf(stderr, "cellserve model: cannot look into %s: %s\n", dir.c_str(), unreadable.message().c_str());
  return std::nullopt;
}

int Fail(const Status& s) { return CommandFailed("model", false, s); }

int ModelInit(int argc, char** argv) {
  Flags flags("model init", "Writes REPO/NAME/spec.json and weights.safetensors with seeded random weights.");
  flags.Add("repo", "", "model repository folder (created if missing)", true, "CELLSERVE_MODEL_REPO")
      .Add("name", "", "model name (folder name; letters, digits, _ - .)", true)
      .Add("kind", "lstm", "lstm | seq2seq | treelstm")
      .Add("hidden", "512", "hidden size H")
      .Add("embed", "", "embedding size E (default: same as --hidden)")
      .Add("layers", "1", "stacked LSTM layers (seq2seq: per encoder and decoder)")
      .Add("vocab", "32000", "(source) vocabulary size")
      .Add("classes", "2", "lstm, treelstm: head outputs")
      .Add("target-vocab", "", "seq2seq: target vocabulary size (default: same as --vocab)")
      .Add("max-decode-len", "64", "seq2seq: decoder steps at most")
      .Add("max-input-tokens", "1024", "longest input accepted (tokens or tree leaves)")
      .Add("max-batch", "256", "largest batch of one cell type")
      .Add("dtype", "F32", "weight storage: F32 | F16 | BF16 (computed in fp32)")
      .Add("seed", "1", "random seed (same seed, same weights on every machine)")
      .Add("init-scale", "0.08", "weights are uniform in [-scale, scale]")
      .AddBool("force", "overwrite an existing model of that name");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;

  ModelSpec spec;
  spec.name = flags.Get("name");
  auto kind = ParseModelKind(flags.Get("kind"));
  if (!kind.ok()) return FlagValueFailed("model init", kind.status());
  spec.kind = *kind;
  struct IntFlag { const char* name; int64_t* field; };
  const IntFlag ints[] = {{"hidden", &spec.hidden}, {"layers", &spec.layers}, {"vocab", &spec.vocab_size},
                          {"classes", &spec.classes}, {"max-decode-len", &spec.max_decode_len},
                          {"max-input-tokens", &spec.max_input_tokens}, {"max-batch", &spec.max_batch}};
  for (const auto& f : ints) {
    auto v = flags.GetInt(f.name);
    if (!v.ok()) return FlagValueFailed("model init", v.status());
    *f.field = *v;
  }
  auto embed = flags.Get("embed").empty() ? StatusOr<int64_t>(spec.hidden) : flags.GetInt("embed");
  if (!embed.ok()) return FlagValueFailed("model init", embed.status());
  spec.embed_dim = *embed;
  if (spec.kind == ModelKind::kSeq2Seq) {
    auto tv = flags.Get("target-vocab").empty() ? StatusOr<int64_t>(spec.vocab_size) : flags.GetInt("target-vocab");
    if (!tv.ok()) return FlagValueFailed("model init", tv.status());
    spec.target_vocab_size = *tv;
    if (spec.target_vocab_size < 3)
      return FlagValueFailed("model init", InvalidArgument("--target-vocab must be at least 3: the decoder starts from id " +
                                  std::to_string(spec.bos_id) + " (BOS) and stops after id " +
                                  std::to_string(spec.eos_id) + " (EOS)"));
    spec.classes = 0;
  }
  spec.dtype = flags.Get("dtype");
  auto seed = flags.GetInt("seed");
  auto scale = flags.GetDouble("init-scale");
  if (!seed.ok()) return FlagValueFailed("model init", seed.status());
  if (!scale.ok()) return FlagValueFailed("model init", scale.status());
  if (auto s = spec.Validate(); !s.ok()) return FlagValueFailed("model init", s);  // a spec made of the flags

  const std::string repo = flags.Get("repo");
  const auto dir = std::filesystem::path(repo) / spec.name;
  const std::optional<bool> exists = ModelExists(dir);
  if (!exists) return 1;
  if (*exists && !flags.GetBool("force")) {
    std::fprintf(stderr, "cellserve model: %s already exists; pass --force to overwrite it\n", dir.c_str());
    return 1;
  }
  StatusOr<SafetensorsFile> weights = Internal("not made");
  try {
    weights = RandomWeights(spec, static_cast<uint64_t>(*seed), static_cast<float>(*scale));
    if (!weights.ok()) return FlagValueFailed("model init", weights.status());  // the init scale
    if (auto s = WriteModel(repo, spec, *weights); !s.ok()) return Fail(s);
  } catch (const std::bad_alloc&) {  // the sizes are each in range, their product may not fit
    return Fail(ResourceExhausted("out of memory making the weights of hidden " + std::to_string(spec.hidden) +
                                  ", vocabulary " + std::to_string(spec.vocab_size) + ", " +
                                  std::to_string(spec.layers) + " layer(s): choose smaller sizes"));
  }
  size_t bytes = 0;
  for (const auto& [name, t] : weights->tensors) bytes += t.bytes.size();
  std::printf("wrote %s: %s model, hidden %lld, %lld layer(s), vocab %lld, %zu tensors, %.1f MB of weights\n",
              dir.c_str(), ModelKindName(spec.kind), static_cast<long long>(spec.hidden),
              static_cast<long long>(spec.layers), static_cast<long long>(spec.vocab_size),
              weights->tensors.size(), bytes / 1e6);
  return 0;
}

int ModelShow(int argc, char** argv) {
  Flags flags("model show", "Prints a model's spec and cell types (with what the CPU devices prepare for each), after loading and checking it.");
  flags.Add("repo", "", "model repository folder", true, "CELLSERVE_MODEL_REPO")
      .Add("name", "", "model name", true);
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  auto model = LoadModel(flags.Get("repo"), flags.Get("name"));
  if (!model.ok()) return Fail(model.status());
  std::printf("%s", ModelSpecToJson((*model)->spec()).c_str());
  std::printf("cell types:\n");
  for (const auto& t : (*model)->cell_types()) {
    std::printf("  %-14s input %lld, hidden %lld, outputs %lld", t.name.c_str(),
                static_cast<long long>(t.input_dim), static_cast<long long>(t.hidden),
                static_cast<long long>(t.outputs));
    // Token-fed: what folding its input takes (runtime/token_fold.h): once per process on CPU
    // devices, once per GPU on CUDA devices.
    if (const int64_t table = FoldedTableBytes(t); table > 0)
      std::printf("; token-fed, folded table %.1f MiB (once per process on CPU, per GPU on CUDA; --fold-max-mib)",
                  static_cast<double>(table) / (1 << 20));
    std::printf("\n");
  }
  // Whether CPU devices can stream 16-bit weights (kernels/cpu/packed_gemm.h): every weight of
  // every cell type exactly a bf16 / fp16 value, as a model stored as BF16 / F16 has.
  DType narrow = DType::kBF16;
  for (const auto& t : (*model)->cell_types()) {
    const DType f = cpu::ExactDType(t.weight->data(), t.weight->dim(0), t.weight->dim(1), t.weight->dim(1));
    if (f == DType::kF32 || (f == DType::kF16 && narrow == DType::kBF16)) narrow = f;
  }
  if (narrow != DType::kF32)
    std::printf("CPU devices: weights also packed as %s, streamed as 16 bits in products of up to %lld rows "
                "(same results, half the bytes to read)\n",
                DTypeName(narrow), static_cast<long long>(cpu::kNarrowMaxRows));
  return 0;
}

int ModelConvert(int argc, char** argv) {
  Flags flags("model convert",
              "Writes a copy of a model with its weights stored in another dtype: F16 or BF16 halve the file,\n"
              "and CPU devices stream 16-bit weights at small batches, about twice as fast at batch 1. Going\n"
              "to F16/BF16 rounds each weight to nearest even (the answers change a little: compare them with\n"
              "`cellserve run` on both); going to F32 is exact. Prints how much the weights moved.");
  flags.Add("repo", "", "model repository folder", true, "CELLSERVE_MODEL_REPO")
      .Add("name", "", "the model to convert", true)
      .Add("dtype", "", "weight storage of the copy: F32 | F16 | BF16", true)
      .Add("to", "", "name of the copy (a new model in the same repository)", true)
      .AddBool("force", "overwrite the copy if it exists");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  const std::string repo = flags.Get("repo"), to = flags.Get("to");
  auto model = LoadModel(repo, flags.Get("name"));
  if (!model.ok()) return Fail(model.status());
  ModelSpec spec = (*model)->spec();
  spec.name = to;
  spec.dtype = flags.Get("dtype");
  if (auto s = spec.Validate(); !s.ok()) return FlagValueFailed("model convert", s);  // --dtype or --to
  const auto dir = std::filesystem::path(repo) / to;
  const std::optional<bool> exists = ModelExists(dir);
  if (!exists) return 1;
  if (to == flags.Get("name") || (*exists && !flags.GetBool("force"))) {
    std::fprintf(stderr, "cellserve model: %s already exists; pick another --to%s\n", dir.c_str(),
                 to == flags.Get("name") ? "" : " or pass --force to overwrite it");
    return 1;
  }
  WeightConversion report;
  auto weights = ConvertWeights(**model, spec.dtype, &report);
  if (!weights.ok()) return Fail(weights.status());
  if (auto s = WriteModel(repo, spec, *weights); !s.ok()) return Fail(s);
  std::printf("wrote %s: %s, weights %s -> %s; %lld of %lld weights rounded, largest change %.3g (%.3g%% of the "
              "weight)\n",
              dir.c_str(), flags.Get("name").c_str(), (*model)->spec().dtype.c_str(), spec.dtype.c_str(),
              static_cast<long long>(report.changed), static_cast<long long>(report.weights), report.max_abs_change,
              100 * report.max_rel_change);
  return 0;
}

int ModelList(int argc, char** argv) {
  Flags flags("model list", "Lists the models of a repository.");
  flags.Add("repo", "", "model repository folder", true, "CELLSERVE_MODEL_REPO");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  auto names = ListModels(flags.Get("repo"));
  if (!names.ok()) return Fail(names.status());
  for (const auto& n : *names) std::printf("%s\n", n.c_str());
  return 0;
}

}  // namespace

int ModelCommand(int argc, char** argv) {
  const char* usage =
      "usage: cellserve model init|show|list|convert [flags]   (cellserve model init --help)\n"
      "  init     create a model with seeded random weights\n"
      "  show     load, check and describe a model\n"
      "  list     list the models of a repository\n"
      "  convert  copy a model with its weights stored as F32, F16 or BF16\n";
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "init")) return ModelInit(argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "show")) return ModelShow(argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "list")) return ModelList(argc - 1, argv + 1);
  if (!std::strcmp(argv[1], "convert")) return ModelConvert(argc - 1, argv + 1);
  std::fprintf(stderr, "cellserve model: unknown subcommand '%s'\n%s", argv[1], usage);
  return 2;
}

}  // namespace cellserve::tools
