#include "runtime/token_fold.h"

namespace cellserve {

bool IsTokenFed(const CellType& type) {
  return type.embedding != nullptr && (type.op == CellOp::kLstm || type.op == CellOp::kTreeLeaf);
}

int64_t FoldedTableBytes(const CellType& type) {
  if (!IsTokenFed(type)) return 0;
  return type.embedding->dim(0) * type.weight->dim(0) * static_cast<int64_t>(sizeof(float));
}

bool WillFold(const CellType& type, int64_t fold_max_bytes) {
  const int64_t bytes = FoldedTableBytes(type);
  return bytes > 0 && fold_max_bytes > 0 && bytes <= fold_max_bytes;
}

}  // namespace cellserve
