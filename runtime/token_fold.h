// Which cell types have their token input folded, and what a folded table costs: the one rule the
// CPU backend (kernels/cpu/cell_weights.h) and the CUDA backend (kernels/cuda/cuda_weights.h) share
// (docs/ARCHITECTURE.md, "Token inputs are folded").
// A token-fed cell (an LSTM's or decoder's first layer, a Tree-LSTM leaf) has x = embedding[token],
// so x's part of its gates, W_x x + b, depends on the token alone; a backend may compute it once
// per vocabulary entry at registration: a [vocab, gates] fp32 table, row v = W_x embedding[v] + b.
// A round then multiplies only the recurrent part and adds the token's row (a leaf: no GEMM).
// Pure functions; thread-safe.
#pragma once

#include <cstdint>

#include "runtime/model.h"

namespace cellserve {

// The default cap on one cell type's table (--fold-max-mib 512).
inline constexpr int64_t kDefaultFoldMaxBytes = int64_t{512} << 20;

// An lstm cell or a tree leaf whose x comes from an embedding.
bool IsTokenFed(const CellType& type);

// The bytes of `type`'s folded table (vocab x gates x 4); 0 for a cell type that is not token-fed.
int64_t FoldedTableBytes(const CellType& type);

// Whether `type` is folded under a cap of `fold_max_bytes` (0: never): token-fed and its table fits.
bool WillFold(const CellType& type, int64_t fold_max_bytes);

}  // namespace cellserve
