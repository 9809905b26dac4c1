// `cellserve corpus`: turns text files into one sentence per line, the workload format of
// `cellserve run --corpus` and the benchmarks. Input: one file, or every *.txt file directly inside
// a directory (sorted by name). Sentences come from SplitSentences; lengths are counted in
// HashTokenizer::Words pieces (words and punctuation marks), the same pieces the models see.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "runtime/atomic_file.h"
#include "runtime/status.h"
#include "runtime/text.h"
#include "tools/commands.h"
#include "tools/flags.h"

namespace cellserve::tools {
namespace {

namespace fs = std::filesystem;

// The input files: `path` itself, or the *.txt files directly inside it, sorted by name, without
// `out_path` (a rerun writing into the input directory must not read its own earlier output).
StatusOr<std::vector<fs::path>> ListInputs(const std::string& path, const std::string& out_path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) return NotFound("no such file or directory: " + path);
  if (fs::is_regular_file(st)) return std::vector<fs::path>{fs::path(path)};
  if (!fs::is_directory(st)) return InvalidArgument("not a file or directory: " + path);
  std::vector<fs::path> files;
  const fs::path out = fs::weakly_canonical(out_path, ec);
  fs::directory_iterator it(path, ec);
  if (ec) return NotFound("cannot read directory " + path + ": " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return Internal("cannot read directory " + path + ": " + ec.message());
    std::error_code fec;
    if (it->path().extension() != ".txt" || !it->is_regular_file(fec)) continue;
    if (fs::weakly_canonical(it->path(), fec) == out) continue;
    files.push_back(it->path());
  }
  if (files.empty()) return NotFound("no .txt files in directory " + path);
  std::sort(files.begin(), files.end());
  return files;
}

StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open " + path.string() + ": " + std::strerror(errno));
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) return Internal("cannot read " + path.string());
  std::string text = buf.str();
  // A binary file split into "sentences" is a corpus of noise that every benchmark would then run.
  const bool pdf = text.rfind("%PDF-", 0) == 0, zip = text.rfind(std::string("PK\x03\x04", 4), 0) == 0;
  // UTF-16 (Windows' "Unicode" text): a byte order mark FF FE or FE FF.
  const bool utf16 = text.size() >= 2 && ((text[0] == '\xFF' && text[1] == '\xFE') || (text[0] == '\xFE' && text[1] == '\xFF'));
  if (utf16)
    return InvalidArgument(path.string() + " is UTF-16 text; convert it to UTF-8 first: iconv -f UTF-16 -t UTF-8 " +
                           path.string() + " > " + path.stem().string() + ".utf8.txt");
  if (const size_t nul = text.find('\0'); pdf || zip || nul != std::string::npos)
    return InvalidArgument(path.string() + " is not plain text (" +
                           (pdf   ? std::string("a PDF")
                            : zip ? std::string("a zip archive: .docx, .odt, .epub?")
                                  : "a NUL byte at byte " + std::to_string(nul) + "; UTF-16 without a byte order mark?") +
                           "): convert it to text first (pdftotext, pandoc, iconv -f UTF-16 -t UTF-8), or leave it out "
                           "of the input");
  return text;
}

struct Summary {
  int64_t files = 0;
  int64_t dropped_short = 0, dropped_long = 0;
  std::vector<int64_t> lengths;  // words per kept sentence
};

// Splits every input into sentences and writes the kept ones to `out`, one a line.
Status WriteCorpus(const std::vector<fs::path>& inputs, int64_t min_words, int64_t max_words,
                   std::ostream& out, Summary& summary) {
  const HashTokenizer tokenizer(kFirstWordId + 1);  // only Words() is used: any vocabulary does
  for (const fs::path& file : inputs) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(file));
    ++summary.files;
    for (const std::string& sentence : SplitSentences(text)) {
      const auto words = static_cast<int64_t>(tokenizer.Words(sentence).size());
      if (words < min_words) {
        ++summary.dropped_short;
        continue;
      }
      if (max_words > 0 && words > max_words) {
        ++summary.dropped_long;
        continue;
      }
      summary.lengths.push_back(words);
      out << sentence << '\n';
    }
  }
  return OkStatus();
}

// Writes to `out_path` through a temporary file renamed into place, so a reader never sees a
// half-written corpus.
Status Run(const std::string& input, const std::string& out_path, int64_t min_words,
           int64_t max_words, Summary& summary) {
  ASSIGN_OR_RETURN(std::vector<fs::path> inputs, ListInputs(input, out_path));
  // A link's target is replaced (the link kept). A device, a FIFO or /dev/stdout is written in
  // place (runtime/atomic_file.h), from memory.
  ASSIGN_OR_RETURN(const WriteTarget target, ResolveWriteTarget(out_path));
  if (target.in_place) {
    std::ostringstream out;
    RETURN_IF_ERROR(WriteCorpus(inputs, min_words, max_words, out, summary));
    if (summary.lengths.empty()) return InvalidArgument("no sentences found in " + input);
    return WriteFileAtomically(out_path, out.str());
  }
  ASSIGN_OR_RETURN(const TemporaryFile created, CreateTemporaryBeside(target.path));
  ::close(created.fd);  // ours now (O_EXCL): written through a stream
  const std::string tmp = created.path;
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      const int err = errno;
      std::remove(tmp.c_str());
      return Unavailable("cannot write " + out_path + ": " + std::strerror(err));
    }
    Status s = WriteCorpus(inputs, min_words, max_words, out, summary);
    out.flush();
    if (s.ok() && !out) s = Unavailable("cannot write " + out_path + " (disk full?)");
    if (!s.ok()) {
      out.close();
      std::remove(tmp.c_str());
      return s;
    }
  }
  if (summary.lengths.empty()) {
    std::remove(tmp.c_str());
    return InvalidArgument("no sentences found in " + input +
                           (summary.dropped_short + summary.dropped_long > 0
                                ? " within the --min-words/--max-words limits"
                                : ""));
  }
  std::error_code ec;
  fs::rename(tmp, target.path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return Unavailable("cannot write " + out_path + ": " + ec.message());
  }
  return OkStatus();
}

}  // namespace

int CorpusCommand(int argc, char** argv) {
  Flags flags("corpus",
              "Splits text into sentences and writes them one per line (the workload format of\n"
              "`cellserve run --corpus`). --input is a text file, or a directory whose *.txt\n"
              "files are read in name order. Sentence lengths are counted in tokenizer pieces\n"
              "(words and punctuation marks).");
  flags.Add("input", "", "a text file, or a directory of *.txt files", /*required=*/true)
      .Add("out", "", "the output file, one sentence per line (replaced if it exists)",
           /*required=*/true)
      .Add("min-words", "1", "drop sentences with fewer words")
      .Add("max-words", "0", "drop sentences with more words; 0 means no limit");
  if (int rc = ParseOrExit(flags, argc, argv); rc >= 0) return rc;

  StatusOr<int64_t> min_words = flags.GetIntIn("min-words", 0, INT64_MAX);
  StatusOr<int64_t> max_words = flags.GetIntIn("max-words", 0, INT64_MAX, "0: no limit");
  Status bad = !min_words.ok()   ? min_words.status()
               : !max_words.ok() ? max_words.status()
               : (*max_words > 0 && *max_words < *min_words)
                   ? InvalidArgument("--max-words must be 0 or >= --min-words")
                   : OkStatus();
  if (!bad.ok()) {
    std::fprintf(stderr, "cellserve corpus: %s\n", bad.message().c_str());
    return 2;
  }

  Summary summary;
  const std::string out_path = flags.Get("out");
  if (Status s = Run(flags.Get("input"), out_path, *min_words, *max_words, summary); !s.ok()) {
    std::fprintf(stderr, "cellserve corpus: %s\n", s.message().c_str());
    return 1;
  }

  std::vector<int64_t>& len = summary.lengths;
  std::sort(len.begin(), len.end());
  double sum = 0;
  for (int64_t l : len) sum += static_cast<double>(l);
  const size_t n = len.size();
  const double median = n % 2 ? static_cast<double>(len[n / 2])
                              : 0.5 * static_cast<double>(len[n / 2 - 1] + len[n / 2]);
  std::printf("corpus: %lld files, %zu sentences, words per sentence: mean %.1f, median %g, "
              "max %lld -> %s\n",
              static_cast<long long>(summary.files), n, sum / static_cast<double>(n), median,
              static_cast<long long>(len.back()), out_path.c_str());
  if (summary.dropped_short > 0) {
    std::printf("corpus: dropped %lld sentences with fewer than %lld words\n",
                static_cast<long long>(summary.dropped_short), static_cast<long long>(*min_words));
  }
  if (summary.dropped_long > 0) {
    std::printf("corpus: dropped %lld sentences with more than %lld words\n",
                static_cast<long long>(summary.dropped_long), static_cast<long long>(*max_words));
  }
  return 0;
}

}  // namespace cellserve::tools
