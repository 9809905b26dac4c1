// The weights of one cell type as the CPU backend multiplies them, prepared once per model at
// registration, and the folding of token inputs (docs/ARCHITECTURE.md, "Token inputs are folded").
//
// A token-fed cell (lstm layer 0, seq2seq encoder and decoder layer 0, Tree-LSTM leaves) gathers
// x = embedding[token], and x's part of the gates, W_x x + b, depends on the token alone. So it
// can be computed once per vocabulary entry: folded[v] = W_x embedding[v] + b, a [vocab, gates]
// table. A round then multiplies only the recurrent part (W_h h; nothing at all for a leaf) and
// adds the token's row, half the weights to stream per LSTM step when E = H. The table costs
// vocab * gates * 4 bytes, so a cell type is folded only when its table fits the cap.
// Numerics: each table row is computed by GemmPacked, a fixed order per element, so results stay
// independent of batch-mates. Leaves get the same bits as unfolded; LSTM gates are summed as
// (W_h h) + (W_x x + b) instead of one chain over [x, h]: rounding-level differences (PyTorch's
// own order is W_ih x + b_ih + W_hh h + b_hh).
// Immutable once prepared; shared read-only by every CPU device of a process. Preparing runs on
// up to `threads` threads of its own (fewer if the OS refuses one) and blocks until done.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/packed_gemm.h"
#include "runtime/model.h"
#include "runtime/token_fold.h"

namespace cellserve::cpu {

struct CellWeightOptions {
  // The largest folded table one cell type may get; larger ones are not folded. 0: never fold.
  int64_t fold_max_bytes = kDefaultFoldMaxBytes;
  // Threads that compute the tables (0: every CPU this thread may use).
  int threads = 0;
  // --cpu-precision bf16: the rounds' GEMMs on AMX tiles, inputs rounded to bf16, fp32
  // accumulation (amx_gemm.h); folded tables stay fp32. Only where AmxBf16Missing is empty.
  bool bf16_compute = false;
};

struct CpuCellWeights {
  // What a round's GEMM multiplies by: [outputs, K]. K is every input column (x then h), or only
  // the recurrent h columns when folded; a folded leaf has no GEMM (empty matrix, k() == 0).
  PackedMatrix gemm;
  // The gates (or a head's outputs) each row produces.
  int64_t outputs = 0;
  // Folded: [vocab, outputs] row-major, row v = W_x embedding[v] + bias. Empty when not folded.
  std::vector<float> folded;

  bool is_folded() const { return !folded.empty(); }
  int64_t folded_bytes() const { return static_cast<int64_t>(folded.size() * sizeof(float)); }
  const float* folded_row(int32_t token) const { return folded.data() + int64_t{token} * outputs; }
};

// Prepares `type`'s weights: folded when WillFold(type, options.fold_max_bytes) says so
// (runtime/token_fold.h, the rule the CUDA backend shares).
CpuCellWeights PrepareCellWeights(const CellType& type, const CellWeightOptions& options);

// The memory PrepareCellWeights takes for every cell type of `model`, computed as it packs
// (without packing): the GEMM matrices as packed (16-bit copies included, or AMX tiles), the
// folded tables, and each table's temporary (so a little over what stays). Checked against the
// headroom before preparing.
struct PreparedWeightBytes {
  int64_t total = 0;
  int64_t folded = 0;  // of total, the folded tables (--fold-max-mib caps each)
};
PreparedWeightBytes EstimatePreparedWeights(const Model& model, const CellWeightOptions& options);

}  // namespace cellserve::cpu
