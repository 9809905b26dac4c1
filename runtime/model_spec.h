// ModelSpec: a model's architecture and limits, read from the model repository's spec.json.
// Parsing validates every field (kind, positive sizes, ids inside the vocabulary) and reports the
// first problem as INVALID_ARGUMENT naming the field. Plain value; thread-compatible.
//
// spec.json (all kinds):
//   {"name": "sentiment", "version": 1, "kind": "lstm" | "seq2seq" | "treelstm",
//    "vocab_size": 32000, "embed_dim": 512, "hidden": 512, "layers": 1,
//    "max_input_tokens": 1024,   // longer inputs are INVALID_ARGUMENT
//    "max_batch": 256,           // largest batch of one cell type
//    "dtype": "F32"}             // how weights.safetensors stores them (computed in fp32)
// lstm and treelstm add   "classes": 2              // head output size
// seq2seq adds            "target_vocab_size": 32000, "bos_id": 1, "eos_id": 2, "max_decode_len": 64
//
// Weight layout in weights.safetensors (row-major, PyTorch gate order i, f, g, o):
//   lstm:     embedding [V, E]; lstm.{l}.weight [4H, in_l + H] = [W_ih | W_hh] with in_0 = E,
//             in_l = H; lstm.{l}.bias [4H] = b_ih + b_hh; head.weight [C, H]; head.bias [C]
//   seq2seq:  encoder.embedding [V, E]; encoder.{l}.weight/bias as lstm.{l};
//             decoder.embedding [Vt, E]; decoder.{l}.weight/bias; proj.weight [Vt, H]; proj.bias [Vt]
//   treelstm: embedding [V, E]; tree.leaf.weight [3H, E], tree.leaf.bias [3H] (gates i, o, u);
//             tree.internal.weight [5H, 2H] = [U_left | U_right], tree.internal.bias [5H]
//             (gates i, f_left, f_right, o, u); head.weight [C, H]; head.bias [C]
#pragma once

#include <cstdint>
#include <string>

#include "runtime/status.h"

namespace cellserve {

enum class ModelKind { kLstm, kSeq2Seq, kTreeLstm };

const char* ModelKindName(ModelKind kind);  // "lstm", "seq2seq", "treelstm"
StatusOr<ModelKind> ParseModelKind(const std::string& name);

// A model's name is its folder's: letters, digits, '_', '-', '.', not starting with '.', at most
// this long (what a folder name may have on Linux file systems).
inline constexpr size_t kMaxModelNameBytes = 255;

struct ModelSpec {
  std::string name;
  int64_t version = 1;
  ModelKind kind = ModelKind::kLstm;
  int64_t vocab_size = 0;        // source vocabulary (embedding rows)
  int64_t embed_dim = 0;
  int64_t hidden = 0;
  int64_t layers = 1;            // per stack (seq2seq: encoder and decoder each)
  int64_t classes = 0;           // lstm, treelstm
  int64_t target_vocab_size = 0; // seq2seq
  int64_t bos_id = 1;            // seq2seq: first decoder input
  int64_t eos_id = 2;            // seq2seq: decoding stops after producing it
  int64_t max_decode_len = 64;   // seq2seq: decoder steps at most (default 64)
  int64_t max_input_tokens = 1024;  // tokens (or tree leaves) per request at most (default 1024)
  int64_t max_batch = 256;       // cells of one type per batch at most (default 256)
  std::string dtype = "F32";     // storage dtype of the weights file

  // Checks ranges and kind-specific fields.
  Status Validate() const;
};

// INVALID_ARGUMENT for JSON that is broken (saying where), a field given twice, unknown fields
// and values out of range.
StatusOr<ModelSpec> ParseModelSpec(const std::string& json_text);
std::string ModelSpecToJson(const ModelSpec& spec);  // pretty-printed, round-trips
// A spec.json larger than this is refused unread (it is a few hundred bytes).
constexpr int64_t kMaxModelSpecBytes = int64_t{1} << 20;
// NOT_FOUND if `path` does not exist, UNAVAILABLE if it cannot be read (with the reason),
// INVALID_ARGUMENT for what is not a regular file, a file over kMaxModelSpecBytes, and
// ParseModelSpec's errors; each names `path`.
StatusOr<ModelSpec> ReadModelSpec(const std::string& path);

}  // namespace cellserve
