#include "kernels/cpu/cpu_backend.h"


#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "kernels/cpu/pointwise.h"
#include "kernels/cpu/packed_gemm.h"
#include "runtime/memory_limit.h"

namespace cellserve::cpu {

namespace {

void CopyOrZero(const float* src, int64_t n, float* dst) {
  if (src) std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  else std::memset(dst, 0, static_cast<size_t>(n) * sizeof(float));
}

std::shared_ptr<const PackedWeightCache::Weights> Prepare(const Model& model,
                                                         const CellWeightOptions& options) {
  auto weights = std::make_shared<PackedWeightCache::Weights>();
  for (const CellType& t : model.cell_types()) weights->push_back(PrepareCellWeights(t, options));
  return weights;
}

}  // namespace

std::shared_ptr<const PackedWeightCache::Weights> PackedWeightCache::Get(const Model& model,
                                                                        const CellWeightOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  std::weak_ptr<const Weights>& entry = entries_[{&model, options.fold_max_bytes, options.bf16_compute}];
  if (auto weights = entry.lock()) return weights;
  auto weights = Prepare(model, options);  // under the lock: a second device waits, not prepares again
  entry = weights;
  ++packs_;
  return weights;
}

bool PackedWeightCache::Holds(const Model& model, const CellWeightOptions& options) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find({&model, options.fold_max_bytes, options.bf16_compute});
  return it != entries_.end() && !it->second.expired();
}

int64_t PackedWeightCache::packs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return packs_;
}

CpuBackend::CpuBackend(CpuBackendOptions options)
    : weight_cache_(std::move(options.weight_cache)), cell_weight_options_(options.cell_weights) {}

Status CpuBackend::RegisterModel(const Model& model, int32_t slots) {
  if (slots <= 0) return InvalidArgument("a model needs at least one state slot");
  if (cell_weight_options_.bf16_compute) RETURN_IF_ERROR(AmxBf16Available());
  const int64_t hidden = model.spec().hidden;
  const double state_bytes = static_cast<double>(slots) * 2.0 * static_cast<double>(hidden) * sizeof(float);
  std::string what = std::to_string(slots) + " state slots (h and c, " + std::to_string(hidden) +
                     " floats each: " + MiBText(state_bytes) + " MiB)";
  // The weights, unless another device prepared them already (it shares them).
  const bool prepared = weight_cache_ && weight_cache_->Holds(model, cell_weight_options_);
  const PreparedWeightBytes weights = prepared ? PreparedWeightBytes{} : EstimatePreparedWeights(model, cell_weight_options_);
  const double weight_bytes = static_cast<double>(weights.total);
  if (weight_bytes > 0)
    what += " and the model's prepared weights (" + MiBText(weight_bytes) + " MiB" +
            (weights.folded > 0 ? ", " + MiBText(static_cast<double>(weights.folded)) + " MiB of it folded token tables"
                                : "") +
            ")";
  // Filling memory beyond what this process may take would not fail: the OOM killer would end
  // the process (in a container, at its memory limit). Say so first. What earlier registrations
  // (other devices, other models) took counts: their weights are resident, their slots reserved.
  RETURN_IF_ERROR(CheckHeadroom(state_bytes + weight_bytes, ReservableHeadroomOfThisProcess(),
                                what + " take " + MiBText(state_bytes + weight_bytes) + " MiB",
                                std::string("lower --state-slots (it is per device and model)") +
                                    (weights.folded > 0 ? " or --fold-max-mib (tables over it are not folded)" : "")));
  ModelState s;
  try {
    s.slots = slots;
    s.hidden = hidden;
    s.storage = ZeroFloats(static_cast<size_t>(slots) * 2 * static_cast<size_t>(hidden));
    s.weights = weight_cache_ ? weight_cache_->Get(model, cell_weight_options_) : Prepare(model, cell_weight_options_);
  } catch (const std::bad_alloc&) {  // thrown on the device's thread, it would end the process
    return ResourceExhausted(what + (weight_bytes > 0 ? "" : " and the model's weights") +
                             " do not fit in the memory this process may use; lower --state-slots (or --fold-max-mib)");
  }
  models_[&model] = std::move(s);
  return OkStatus();
}

int64_t CpuBackend::FoldedBytes(const Model& model) const {
  auto it = models_.find(&model);
  if (it == models_.end()) return 0;
  int64_t bytes = 0;
  for (const CpuCellWeights& w : *it->second.weights) bytes += w.folded_bytes();
  return bytes;
}

StatusOr<BatchOutput> CpuBackend::Run(const CellBatch& batch) {
  if (!batch.model) return InvalidArgument("batch has no model");
  auto it = models_.find(batch.model);
  if (it == models_.end())
    return InvalidArgument("model '" + batch.model->spec().name + "' is not registered on this backend");
  RETURN_IF_ERROR(CheckCellBatch(batch, it->second.slots));
  const CellType& type = batch.model->cell_type(batch.type);
  switch (type.op) {
    case CellOp::kLstm: RunLstm(type, batch, it->second); return BatchOutput{};
    case CellOp::kTreeLeaf: RunTreeLeaf(type, batch, it->second); return BatchOutput{};
    case CellOp::kTreeInternal: RunTreeInternal(type, batch, it->second); return BatchOutput{};
    case CellOp::kHeadLogits:
    case CellOp::kHeadArgmax: return RunHead(type, batch, it->second);
  }
  return Internal("unknown cell op");
}

void CpuBackend::RunLstm(const CellType& type, const CellBatch& batch, ModelState& state) {
  const CpuCellWeights& weights = (*state.weights)[batch.type];
  const bool folded = weights.is_folded();  // then every row has a token (CheckCellBatch)
  const int64_t B = static_cast<int64_t>(batch.rows.size());
  const int64_t H = type.hidden, in = folded ? 0 : type.input_dim, K = in + H, G = 4 * H;
  x_.resize(static_cast<size_t>(B * K));
  gates_.resize(static_cast<size_t>(B * G));
  float* slots = state.storage.data();
  auto h_of = [&](SlotId s) -> const float* { return s >= 0 ? slots + int64_t{s} * 2 * H : nullptr; };
  for (int64_t r = 0; r < B; ++r) {
    const CellRow& row = batch.rows[r];
    float* x = x_.data() + r * K;
    if (!folded) {
      // By the cell type, as the CUDA plan does: a token on a type without an embedding is ignored
      // (CheckCellBatch checks tokens only where there is an embedding).
      const float* src = type.embedding ? type.embedding->data() + int64_t{row.token} * in : h_of(row.x_slot);
      CopyOrZero(src, in, x);
    }
    CopyOrZero(h_of(row.state_slot[0]), H, x + in);
  }
  GemmPacked(B, x_.data(), K, weights.gemm, gates_.data(), G);
  zeros_.resize(static_cast<size_t>(H), 0.0f);
  for (int64_t r = 0; r < B; ++r) {
    const CellRow& row = batch.rows[r];
    const float* c_prev = row.state_slot[0] >= 0 ? slots + int64_t{row.state_slot[0]} * 2 * H + H : zeros_.data();
    // Folded: the token's row is W_x x + bias, added where the bias would be.
    const float* bias = folded ? weights.folded_row(row.token) : type.bias->data();
    float* out = slots + int64_t{row.out_slot} * 2 * H;
    LstmPointwise(H, gates_.data() + r * G, bias, c_prev, out, out + H);
  }
}

void CpuBackend::RunTreeLeaf(const CellType& type, const CellBatch& batch, ModelState& state) {
  const CpuCellWeights& weights = (*state.weights)[batch.type];
  const int64_t B = static_cast<int64_t>(batch.rows.size());
  const int64_t H = type.hidden, E = type.input_dim, G = 3 * H;
  float* slots = state.storage.data();
  if (weights.is_folded()) {  // the token's row is the gates with their bias: no GEMM
    zeros_.resize(std::max(zeros_.size(), static_cast<size_t>(G)), 0.0f);
    for (const CellRow& row : batch.rows) {
      float* out = slots + int64_t{row.out_slot} * 2 * H;
      LeafPointwise(H, weights.folded_row(row.token), zeros_.data(), out, out + H);
    }
    return;
  }
  x_.resize(static_cast<size_t>(B * E));
  gates_.resize(static_cast<size_t>(B * G));
  for (int64_t r = 0; r < B; ++r)
    std::memcpy(x_.data() + r * E, type.embedding->data() + batch.rows[r].token * E, E * sizeof(float));
  GemmPacked(B, x_.data(), E, weights.gemm, gates_.data(), G);
  for (int64_t r = 0; r < B; ++r) {
    float* out = slots + int64_t{batch.rows[r].out_slot} * 2 * H;
    LeafPointwise(H, gates_.data() + r * G, type.bias->data(), out, out + H);
  }
}

void CpuBackend::RunTreeInternal(const CellType& type, const CellBatch& batch, ModelState& state) {
  const int64_t B = static_cast<int64_t>(batch.rows.size());
  const int64_t H = type.hidden, K = 2 * H, G = 5 * H;
  x_.resize(static_cast<size_t>(B * K));
  gates_.resize(static_cast<size_t>(B * G));
  zeros_.resize(static_cast<size_t>(H), 0.0f);
  float* slots = state.storage.data();
  auto h_of = [&](SlotId s) -> const float* { return s >= 0 ? slots + int64_t{s} * 2 * H : nullptr; };
  auto c_of = [&](SlotId s) -> const float* { return s >= 0 ? slots + int64_t{s} * 2 * H + H : zeros_.data(); };
  for (int64_t r = 0; r < B; ++r) {
    const CellRow& row = batch.rows[r];
    CopyOrZero(h_of(row.state_slot[0]), H, x_.data() + r * K);
    CopyOrZero(h_of(row.state_slot[1]), H, x_.data() + r * K + H);
  }
  GemmPacked(B, x_.data(), K, (*state.weights)[batch.type].gemm, gates_.data(), G);
  for (int64_t r = 0; r < B; ++r) {
    const CellRow& row = batch.rows[r];
    float* out = slots + int64_t{row.out_slot} * 2 * H;
    InternalPointwise(H, gates_.data() + r * G, type.bias->data(), c_of(row.state_slot[0]),
                      c_of(row.state_slot[1]), out, out + H);
  }
}

BatchOutput CpuBackend::RunHead(const CellType& type, const CellBatch& batch, const ModelState& state) {
  const int64_t B = static_cast<int64_t>(batch.rows.size());
  const int64_t H = type.hidden, N = type.outputs;
  x_.resize(static_cast<size_t>(B * H));
  gates_.resize(static_cast<size_t>(B * N));
  const float* slots = state.storage.data();
  for (int64_t r = 0; r < B; ++r)
    std::memcpy(x_.data() + r * H, slots + int64_t{batch.rows[r].x_slot} * 2 * H, H * sizeof(float));
  GemmPacked(B, x_.data(), H, (*state.weights)[batch.type].gemm, gates_.data(), N);
  BatchOutput out;
  out.argmax.resize(B);
  out.max_value.resize(B);
  const float* bias = type.bias->data();
  for (int64_t r = 0; r < B; ++r) {
    float* logits = gates_.data() + r * N;
    int32_t best = 0;
    float best_value = logits[0] + bias[0];
    logits[0] = best_value;
    for (int64_t j = 1; j < N; ++j) {
      const float v = logits[j] + bias[j];
      logits[j] = v;
      if (v > best_value) {  // first index wins ties, as torch.argmax
        best_value = v;
        best = static_cast<int32_t>(j);
      }
    }
    out.argmax[r] = best;
    out.max_value[r] = best_value;
  }
  if (type.op == CellOp::kHeadLogits) out.logits.assign(gates_.begin(), gates_.begin() + B * N);
  return out;
}

StatusOr<std::vector<float>> CpuBackend::ReadSlot(const Model& model, SlotId slot) {
  auto it = models_.find(&model);
  if (it == models_.end()) return InvalidArgument("model is not registered on this backend");
  if (slot < 0 || slot >= it->second.slots) return InvalidArgument("slot out of range");
  const int64_t H = it->second.hidden;
  const float* p = it->second.storage.data() + int64_t{slot} * 2 * H;
  return std::vector<float>(p, p + 2 * H);
}

}  // namespace cellserve::cpu
