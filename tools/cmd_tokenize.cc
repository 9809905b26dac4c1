// `cellserve tokenize`: text to the token ids the server gives it (runtime/text.h's HashTokenizer),
// so that a model can be trained on exactly the ids it will be served: one line of ids per line of
// input (an empty line for a line with no words, so that lines stay aligned), or with --tree the
// Tree-LSTM bracketing `infer --tree` takes, or with --words each piece beside its id. The
// vocabulary size comes from --vocab or from a model's spec.json.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "runtime/model_spec.h"
#include "runtime/text.h"
#include "runtime/tree.h"
#include "tools/cli_errors.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace cellserve::tools {
namespace {

constexpr const char* kName = "tokenize";

int Fail(const Status& s) { return CommandFailed(kName, false, s); }

// Usage errors of the flags that give the vocabulary (exactly one of --vocab and --model).
Status CheckVocabFlags(const Flags& flags) {
  const bool by_model = !flags.Get("model").empty();
  if (by_model == !flags.Get("vocab").empty())
    return InvalidArgument("give --vocab N, or --model-repo DIR --model NAME to take the model's");
  if (by_model && flags.Get("model-repo").empty()) return InvalidArgument("--model needs --model-repo");
  return by_model ? OkStatus() : flags.GetIntIn("vocab", kFirstWordId + 1, INT32_MAX).status();
}

// The vocabulary size: --vocab, or the model's (flags checked by CheckVocabFlags).
StatusOr<int64_t> VocabSize(const Flags& flags) {
  if (flags.Get("model").empty()) return flags.GetIntIn("vocab", kFirstWordId + 1, INT32_MAX);
  ASSIGN_OR_RETURN(const ModelSpec spec, ReadModelSpec(flags.Get("model-repo") + "/" + flags.Get("model") + "/spec.json"));
  if (spec.vocab_size <= kFirstWordId)
    return InvalidArgument("model '" + spec.name + "' has a vocabulary of " + std::to_string(spec.vocab_size) +
                           " ids, all reserved (0-3): text cannot be tokenized for it; send ids (--tokens)");
  return spec.vocab_size;
}

void PrintLine(const HashTokenizer& tokenizer, const std::string& line, bool tree, bool words) {
  const std::vector<int32_t> ids = tokenizer.Encode(line);
  std::string out;
  if (words) {
    const std::vector<std::string> pieces = tokenizer.Words(line);
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + pieces[i] + "=" + std::to_string(ids[i]);
  } else if (tree) {
    if (!ids.empty()) out = TreeToSexpr(BracketBalanced(ids));
  } else {
    for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
  }
  std::fputs(out.c_str(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace

int TokenizeCommand(int argc, char** argv) {
  Flags flags(kName,
              "Prints the token ids the server gives text: one line of ids per TEXT argument, or per line of\n"
              "standard input without them (empty for a line with no words). Text sent to a model (`infer TEXT`,\n"
              "`serve --stdin`, `run`, the benchmarks) becomes these ids, so train on them, or send your own ids\n"
              "(`infer --tokens`). The tokenizer: lower-case (ASCII and Latin-1 letters), split into words and\n"
              "punctuation marks, id = 4 + FNV-1a(piece) % (vocabulary - 4); ids 0-3 are reserved (pad, bos,\n"
              "eos, unk), no bos/eos is added (runtime/text.h).\n"
              "  cellserve tokenize --vocab 32000 < train.txt > train.ids\n"
              "  cellserve tokenize --model-repo models --model sentiment --words \"Don't panic!\"");
  flags.Add("vocab", "", "vocabulary size (ids 0 .. N-1)")
      .Add("model-repo", "", "model repository folder (with --model: use that model's vocabulary size)", false,
           "CELLSERVE_MODEL_REPO")
      .Add("model", "", "model name in the repository")
      .AddBool("tree", "print each line as the Tree-LSTM input the server builds, in `infer --tree` form")
      .AddBool("words", "print each piece with its id (piece=id), to see how text is split")
      .Positional("TEXT...", "sentences (default: read lines from standard input)");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;
  const bool tree = flags.GetBool("tree"), words = flags.GetBool("words");
  if (tree && words) return FlagValueFailed(kName, InvalidArgument("--tree and --words do not go together"));
  if (Status s = CheckVocabFlags(flags); !s.ok()) return FlagValueFailed(kName, s);
  StatusOr<int64_t> vocab = VocabSize(flags);
  if (!vocab.ok()) return Fail(vocab.status());
  const HashTokenizer tokenizer(*vocab);
  if (!flags.positional().empty()) {
    for (const std::string& text : flags.positional()) PrintLine(tokenizer, text, tree, words);
  } else {
    std::string line;
    while (std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      PrintLine(tokenizer, line, tree, words);
    }
  }
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) return Fail(Internal("writing the ids failed"));
  return 0;
}

}  // namespace cellserve::tools
