#include "kernels/cpu/cell_weights.h"

#include <algorithm>
#include <exception>
#include <system_error>
#include <thread>

#include "runtime/this_thread.h"

namespace cellserve::cpu {

namespace {

// table[v] = w_x * embedding[v] + bias for every v, rows split over `threads` threads.
std::vector<float> FoldTable(const CellType& type, const PackedMatrix& w_x, int threads) {
  const int64_t vocab = type.embedding->dim(0), in = type.input_dim, outputs = w_x.n();
  std::vector<float> table(static_cast<size_t>(vocab * outputs));
  const float* bias = type.bias->data();
  // In chunks of 256 rows, so a chunk's output stays in cache between the GEMM's K blocks and the
  // bias pass (one GemmPacked over all 32,000 rows of the demo model was 1.4x slower).
  constexpr int64_t kChunk = 256;
  auto fold_rows = [&](int64_t first, int64_t end) {
    for (int64_t lo = first; lo < end; lo += kChunk) {
      const int64_t hi = std::min(end, lo + kChunk);
      float* out = table.data() + lo * outputs;
      GemmPacked(hi - lo, type.embedding->data() + lo * in, in, w_x, out, outputs);
      for (int64_t v = lo; v < hi; ++v, out += outputs)
        for (int64_t j = 0; j < outputs; ++j) out[j] += bias[j];  // the pointwise pass's gates + bias
    }
  };
  const int64_t n = std::max<int64_t>(1, std::min<int64_t>(threads, vocab / 256 + 1));
  // A share that throws (bad_alloc in the GEMM's scratch) is rethrown here once every thread is
  // joined: thrown on a worker, or past joinable threads, it would end the process.
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  auto share = [&](int64_t t) {
    try {
      fold_rows(vocab * t / n, vocab * (t + 1) / n);
    } catch (...) {
      errors[static_cast<size_t>(t)] = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(n));  // emplace_back then throws only for want of a thread
  for (int64_t t = 1; t < n; ++t) {
    try {
      workers.emplace_back(share, t);
    } catch (const std::system_error&) {  // no thread to be had: this one does the share
      share(t);
    }
  }
  share(0);
  for (std::thread& w : workers) w.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return table;
}

}  // namespace

CpuCellWeights PrepareCellWeights(const CellType& type, const CellWeightOptions& options) {
  const float* w = type.weight->data();
  const int64_t outputs = type.weight->dim(0), cols = type.weight->dim(1);
  // The rounds' GEMM: fp32 panels, or AMX tiles under bf16 compute.
  auto pack = [&](const float* from, int64_t k) {
    return options.bf16_compute ? PackedMatrix::Bf16Compute(from, outputs, k, cols)
                                : PackedMatrix(from, outputs, k, cols);
  };
  CpuCellWeights out;
  out.outputs = outputs;
  if (!WillFold(type, options.fold_max_bytes)) {
    out.gemm = pack(w, cols);
    return out;
  }
  // Columns [0, input_dim) multiply x; an LSTM's remaining columns multiply h.
  const int64_t in = type.input_dim;
  const int threads = options.threads > 0 ? options.threads : UsableCpuCount();
  // fp32 panels only: the table's products are 256 rows, beyond what 16-bit panels serve; and
  // the table is fp32 under bf16 compute too (made once, so made exactly).
  out.folded = FoldTable(type, PackedMatrix(w, outputs, in, cols, DType::kF32), threads);
  if (cols > in) out.gemm = pack(w + in, cols - in);
  return out;
}

PreparedWeightBytes EstimatePreparedWeights(const Model& model, const CellWeightOptions& options) {
  // As PrepareCellWeights packs: the GEMM's matrix (fp32 panels, with 16-bit ones where every
  // weight is exactly 16-bit, whatever the spec's dtype; or AMX tiles under bf16 compute), and
  // when folded the table and the x columns' fp32 panels it is made from (freed after, counted).
  int64_t panels = 0, tables = 0;
  for (const CellType& type : model.cell_types()) {
    const float* w = type.weight->data();
    const int64_t outputs = type.weight->dim(0), cols = type.weight->dim(1);
    auto gemm = [&](const float* from, int64_t k) {
      const bool narrow = !options.bf16_compute && ExactDType(from, outputs, k, cols) != DType::kF32;
      return PackedMatrix::BytesFor(outputs, k, narrow, options.bf16_compute);
    };
    if (!WillFold(type, options.fold_max_bytes)) {
      panels += gemm(w, cols);
      continue;
    }
    const int64_t in = type.input_dim;
    panels += PackedMatrix::BytesFor(outputs, in, false) + (cols > in ? gemm(w + in, cols - in) : 0);
    tables += FoldedTableBytes(type);
  }
  return {panels + tables, tables};
}

}  // namespace cellserve::cpu
