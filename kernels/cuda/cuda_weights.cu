#include "kernels/cuda/cuda_weights.h"

#if CELLSERVE_HAVE_NCCL
#include <nccl.h>
#endif

#include <cublas_v2.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace cellserve::cuda {

namespace {

#if CELLSERVE_HAVE_NCCL
Status NcclStatus(ncclResult_t r, const char* call) {
  if (r == ncclSuccess) return OkStatus();
  return Internal(std::string(call) + ": " + ncclGetErrorString(r));
}
#define CS_NCCL(call) RETURN_IF_ERROR(NcclStatus((call), #call))

using SteadyClock = std::chrono::steady_clock;

// Waits until every stream (null ones skipped) has finished, polling: a synchronize would wait for
// good on a collective whose ranks never meet. Also asks `comms` for NCCL's asynchronous errors
// (a peer lost mid-copy). DEADLINE_EXCEEDED past `deadline`.
Status AwaitStreams(const std::vector<cudaStream_t>& streams, const std::vector<ncclComm_t>& comms,
                    SteadyClock::time_point deadline) {
  for (;;) {
    bool busy = false;
    for (cudaStream_t s : streams) {
      if (!s) continue;
      const cudaError_t e = cudaStreamQuery(s);
      if (e == cudaErrorNotReady) {
        busy = true;
      } else {
        RETURN_IF_ERROR(CudaStatus(e, "cudaStreamQuery (ncclBroadcast)"));
      }
    }
    for (ncclComm_t c : comms) {
      ncclResult_t async = ncclSuccess;
      CS_NCCL(ncclCommGetAsyncError(c, &async));
      if (async != ncclSuccess && async != ncclInProgress) return NcclStatus(async, "ncclBroadcast (asynchronous)");
    }
    if (!busy) return OkStatus();
    if (SteadyClock::now() >= deadline) return DeadlineExceeded("still running");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// What an aborted broadcast could not take back: copies and streams an NCCL kernel may still write
// to or run on. Kept for the life of the process (never freed: freeing them would hand the memory
// to the next allocation while the kernel writes into it).
struct Abandoned {
  std::vector<std::shared_ptr<const ModelWeights>> weights;
  std::vector<cudaStream_t> streams;
};
void Abandon(std::vector<std::shared_ptr<const ModelWeights>> weights, const std::vector<cudaStream_t>& streams) {
  static std::mutex mu;
  static auto* abandoned = new Abandoned();  // never deleted, on purpose
  std::lock_guard<std::mutex> lock(mu);
  for (auto& w : weights) abandoned->weights.push_back(std::move(w));
  for (cudaStream_t s : streams)
    if (s) abandoned->streams.push_back(s);
}
#endif

// Whether some consumer of `embedding` gathers from it; an embedding all of whose consumers fold
// is read only to make their tables, at upload.
bool EmbeddingGathered(const Model& model, const Tensor* embedding, int64_t fold_max_bytes) {
  for (const CellType& t : model.cell_types())
    if (t.embedding == embedding && !WillFold(t, fold_max_bytes)) return true;
  return false;
}

// Embeddings needed only while the tables are made, on the GPU being uploaded to.
struct FoldInputs {
  std::map<const Tensor*, const float*> embeddings;
  std::vector<DeviceBuffer<char>> buffers;
};

// The buffers of one model on one GPU, allocated in a fixed order so that every GPU's copy has
// the same layout (the broadcast sends buffer i to buffer i). An embedding no round gathers from
// is not one of them: with `fold_inputs` (the upload's GPU) it goes there, else nowhere.
StatusOr<std::shared_ptr<ModelWeights>> AllocateModelWeights(const Model& model, int gpu, GemmDtype dtype,
                                                             int64_t fold_max_bytes, FoldInputs* fold_inputs) {
  auto w = std::make_shared<ModelWeights>();
  w->gpu = gpu;
  w->dtype = dtype;
  w->fold_max_bytes = fold_max_bytes;
  std::map<const Tensor*, const float*> embeddings;  // shared tables are allocated once
  for (const CellType& t : model.cell_types()) {
    CellTypeWeights ct;
    ASSIGN_OR_RETURN(auto weight, DeviceBuffer<char>::Allocate(gpu, t.weight->size() * DtypeBytes(dtype)));
    ct.weight = weight.get();
    w->buffers.push_back(std::move(weight));
    ASSIGN_OR_RETURN(auto bias, DeviceBuffer<char>::Allocate(gpu, t.bias->size() * sizeof(float)));
    ct.bias = reinterpret_cast<const float*>(bias.get());
    w->buffers.push_back(std::move(bias));
    if (t.embedding && EmbeddingGathered(model, t.embedding, fold_max_bytes)) {
      auto it = embeddings.find(t.embedding);
      if (it == embeddings.end()) {
        ASSIGN_OR_RETURN(auto emb, DeviceBuffer<char>::Allocate(gpu, t.embedding->size() * sizeof(float)));
        it = embeddings.emplace(t.embedding, reinterpret_cast<const float*>(emb.get())).first;
        w->buffers.push_back(std::move(emb));
      }
      ct.embedding = it->second;
    } else if (t.embedding && fold_inputs && !fold_inputs->embeddings.count(t.embedding)) {
      ASSIGN_OR_RETURN(auto emb, DeviceBuffer<char>::Allocate(gpu, t.embedding->size() * sizeof(float)));
      fold_inputs->embeddings.emplace(t.embedding, reinterpret_cast<const float*>(emb.get()));
      fold_inputs->buffers.push_back(std::move(emb));
    }
    if (WillFold(t, fold_max_bytes)) {
      ASSIGN_OR_RETURN(auto table, DeviceBuffer<char>::Allocate(gpu, FoldedTableBytes(t)));
      ct.folded = reinterpret_cast<const float*>(table.get());
      w->buffers.push_back(std::move(table));
    }
    w->types.push_back(ct);
  }
  return w;
}

// A cuBLAS handle for the upload's folds (on the legacy default stream, like the upload's copies).
class CublasHandle {
 public:
  CublasHandle() = default;
  ~CublasHandle() {
    if (handle_) cublasDestroy(handle_);
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  StatusOr<cublasHandle_t> Get() {
    if (!handle_) CS_CUBLAS(cublasCreate(&handle_));
    return handle_;
  }

 private:
  cublasHandle_t handle_ = nullptr;
};

// folded[vocab, N] = embedding[vocab, E] · W_xᵀ + bias, where W_x is the first E columns of the
// fp32 weight w32 [N, K] (row-major): column-major, foldedᵀ = op_T(W_x) · embeddingᵀ, so W_x is
// read with leading dimension K. fp32 throughout, on the default stream.
Status Fold(cublasHandle_t cublas, const CellType& t, const float* w32, const float* embedding, const float* bias,
            float* folded) {
  const int64_t vocab = t.embedding->dim(0), E = t.input_dim, N = t.weight->dim(0), K = t.weight->dim(1);
  const float one = 1.0f, zero = 0.0f;
  CS_CUBLAS(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(vocab),
                         static_cast<int>(E), &one, w32, CUDA_R_32F, static_cast<int>(K), embedding, CUDA_R_32F,
                         static_cast<int>(E), &zero, folded, CUDA_R_32F, static_cast<int>(N), CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
  return LaunchAddBias(folded, bias, vocab, N, nullptr);
}

}  // namespace

StatusOr<std::shared_ptr<const ModelWeights>> UploadModelWeights(const Model& model, int gpu, GemmDtype dtype,
                                                                 int64_t fold_max_bytes) {
  FoldInputs fold_inputs;  // freed when the tables are made
  ASSIGN_OR_RETURN(auto w, AllocateModelWeights(model, gpu, dtype, fold_max_bytes, &fold_inputs));
  CS_CUDA(cudaSetDevice(gpu));
  // fp16/bf16: the fp32 weights go to a staging buffer and are converted on the GPU. fp32 needs
  // none (a head of 32k x 1024 would be 128 MiB more at upload).
  size_t staging_floats = 0;
  if (dtype != GemmDtype::kF32)
    for (const CellType& t : model.cell_types()) staging_floats = std::max<size_t>(staging_floats, t.weight->size());
  ASSIGN_OR_RETURN(auto staging, DeviceBuffer<float>::Allocate(gpu, staging_floats));
  std::map<const Tensor*, bool> uploaded;
  CublasHandle cublas;  // made on the first fold
  for (size_t i = 0; i < model.cell_types().size(); ++i) {
    const CellType& t = model.cell_types()[i];
    const CellTypeWeights& ct = w->types[i];
    // The embedding: kept for the rounds' gathers, or only for the fold below.
    const float* embedding = ct.embedding;
    if (t.embedding && !embedding) embedding = fold_inputs.embeddings.at(t.embedding);
    if (t.embedding && !uploaded[t.embedding]) {
      uploaded[t.embedding] = true;
      CS_CUDA(cudaMemcpy(const_cast<float*>(embedding), t.embedding->data(), t.embedding->size() * sizeof(float),
                         cudaMemcpyHostToDevice));
    }
    CS_CUDA(cudaMemcpy(const_cast<float*>(ct.bias), t.bias->data(), t.bias->size() * sizeof(float),
                       cudaMemcpyHostToDevice));
    // The fp32 weight: in place for fp32, else in the staging buffer until converted.
    float* w32 = dtype == GemmDtype::kF32 ? static_cast<float*>(const_cast<void*>(ct.weight)) : staging.get();
    CS_CUDA(cudaMemcpy(w32, t.weight->data(), t.weight->size() * sizeof(float), cudaMemcpyHostToDevice));
    if (ct.folded) {  // on the default stream, after the copies above
      ASSIGN_OR_RETURN(cublasHandle_t handle, cublas.Get());
      RETURN_IF_ERROR(Fold(handle, t, w32, embedding, ct.bias, const_cast<float*>(ct.folded)));
    }
    if (dtype != GemmDtype::kF32) {
      RETURN_IF_ERROR(LaunchConvert(staging.get(), const_cast<void*>(ct.weight), t.weight->size(), dtype, nullptr));
    }
    CS_CUDA(cudaDeviceSynchronize());  // the staging buffer is reused by the next type
  }
  // Pageable cudaMemcpy may return before the copy lands; the device's non-blocking streams
  // would not wait for it.
  CS_CUDA(cudaDeviceSynchronize());
  return std::shared_ptr<const ModelWeights>(std::move(w));
}

Status CudaWeightStore::Prepare(const std::vector<const Model*>& models, const std::vector<int>& gpus) {
  if (gpus.empty()) return InvalidArgument("no GPU to load weights onto");
  std::lock_guard<std::mutex> lock(mu_);
  for (const Model* model : models) {
    if (weights_.count({model, gpus[0]})) continue;
    ASSIGN_OR_RETURN(auto first, UploadModelWeights(*model, gpus[0], dtype_, fold_max_bytes_));
    // Recorded only once every GPU has its copy: a Prepare that failed half-way is tried afresh.
    if (gpus.size() == 1) {
      weights_[{model, gpus[0]}] = first;
      continue;
    }
    std::vector<std::shared_ptr<const ModelWeights>> others;
#if CELLSERVE_HAVE_NCCL
    bool wedged = false;
    Status broadcast = Broadcast(*model, first, gpus, &others, &wedged);
    if (wedged) return broadcast;
    if (!broadcast.ok()) {  // no P2P, a mismatched NCCL: slower, but every GPU still gets its weights
      std::fprintf(stderr, "cellserve: cuda: NCCL broadcast of model '%s' failed (%s); uploading to each GPU\n",
                   model->spec().name.c_str(), broadcast.ToString().c_str());
      others.clear();
    }
#endif
    for (size_t g = others.size() + 1; g < gpus.size(); ++g) {
      ASSIGN_OR_RETURN(auto w, UploadModelWeights(*model, gpus[g], dtype_, fold_max_bytes_));
      others.push_back(std::move(w));
    }
    weights_[{model, gpus[0]}] = first;
    for (size_t g = 1; g < gpus.size(); ++g) weights_[{model, gpus[g]}] = others[g - 1];
  }
  return OkStatus();
}

#if CELLSERVE_HAVE_NCCL
Status CudaWeightStore::Broadcast(const Model& model, const std::shared_ptr<const ModelWeights>& first,
                                  const std::vector<int>& gpus, std::vector<std::shared_ptr<const ModelWeights>>* out,
                                  bool* wedged) {
  std::vector<std::shared_ptr<ModelWeights>> copies;
  for (size_t g = 1; g < gpus.size(); ++g) {
    ASSIGN_OR_RETURN(auto w, AllocateModelWeights(model, gpus[g], dtype_, fold_max_bytes_, nullptr));
    copies.push_back(std::move(w));
  }
  size_t bytes = 0;
  for (const auto& b : first->buffers) bytes += b.bytes();
  const auto limit = limits_.timeout + std::chrono::duration_cast<std::chrono::milliseconds>(
                                           limits_.per_gib * (static_cast<double>(bytes) / double(1 << 30)));
  {
    // One communicator over these GPUs; rank 0 (gpus[0]) is the root of every broadcast, each rank
    // on a stream of its own GPU.
    std::vector<ncclComm_t> comms(gpus.size());
    std::vector<cudaStream_t> streams(gpus.size(), nullptr);
    CS_NCCL(ncclCommInitAll(comms.data(), static_cast<int>(gpus.size()), gpus.data()));
    Status result = OkStatus();
    for (size_t g = 0; g < gpus.size() && result.ok(); ++g) {
      result = CudaStatus(cudaSetDevice(gpus[g]), "cudaSetDevice");
      if (result.ok()) result = CudaStatus(cudaStreamCreateWithFlags(&streams[g], cudaStreamNonBlocking), "cudaStreamCreate");
    }
    if (result.ok()) {
      ncclResult_t r = ncclGroupStart();
      if (r == ncclSuccess) {  // a group that did not start is not ended
        for (size_t b = 0; r == ncclSuccess && b < first->buffers.size(); ++b) {
          const size_t n = first->buffers[b].bytes();
          for (size_t g = 0; r == ncclSuccess && g < gpus.size(); ++g) {
            void* dst = g == 0 ? first->buffers[b].get() : copies[g - 1]->buffers[b].get();
            r = ncclBroadcast(first->buffers[b].get(), dst, n, ncclChar, 0, comms[g], streams[g]);
          }
        }
        const ncclResult_t end = ncclGroupEnd();
        if (r == ncclSuccess) r = end;
      }
      result = NcclStatus(r, "ncclBroadcast");
    }
    if (result.ok()) {
      result = AwaitStreams(streams, comms, SteadyClock::now() + limit);
      if (result.code() == StatusCode::kDeadlineExceeded)
        result = DeadlineExceeded("ncclBroadcast of " + std::to_string(bytes) + " bytes did not finish in " +
                                  std::to_string(limit.count()) + " ms (a GPU link down?)");
    }
    // After a failure some ranks' broadcasts may be on their streams waiting for ranks that never
    // join: ncclCommAbort stops them (ncclCommDestroy would wait for them, forever).
    for (ncclComm_t c : comms) result.ok() ? (void)ncclCommDestroy(c) : (void)ncclCommAbort(c);
    const Status after_abort =
        result.ok() ? OkStatus() : AwaitStreams(streams, {}, SteadyClock::now() + limits_.after_abort);
    if (!after_abort.ok()) {
      // Its kernels still run, or the streams fail (a broken context): the source and the copies
      // stay allocated for good, and these GPUs are not used (a device synchronize, as every
      // upload ends with, could wait for them).
      std::vector<std::shared_ptr<const ModelWeights>> held(copies.begin(), copies.end());
      held.push_back(first);
      Abandon(std::move(held), streams);
      *wedged = true;
      const std::string then = after_abort.code() == StatusCode::kDeadlineExceeded
                                   ? "its NCCL kernels still ran " + std::to_string(limits_.after_abort.count()) +
                                         " ms later"
                                   : "then " + after_abort.message();
      return Unavailable(result.message() + "; aborted, " + then +
                         ": these GPUs cannot be used until the process restarts (check them with nvidia-smi)");
    }
    for (size_t g = 0; g < gpus.size(); ++g) {
      if (!streams[g]) continue;
      cudaSetDevice(gpus[g]);
      cudaStreamDestroy(streams[g]);  // idle (waited for above)
    }
    RETURN_IF_ERROR(result);
  }
  for (auto& c : copies) out->push_back(std::move(c));
  return OkStatus();
}
#endif

std::shared_ptr<const ModelWeights> CudaWeightStore::Get(const Model& model, int gpu) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = weights_.find({&model, gpu});
  return it == weights_.end() ? nullptr : it->second;
}

}  // namespace cellserve::cuda
