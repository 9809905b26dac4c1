#include "kernels/cuda/cuda_device.h"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <tuple>

#include "kernels/cuda/cell_kernels.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_devices.h"
#include "kernels/cuda/cuda_weights.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/gpu/batch_plan.h"
#include "kernels/gpu/graph_buckets.h"
#include "kernels/gpu/lru_cache.h"
#include "kernels/gpu/stream_plan.h"
#include "runtime/clock.h"
#include "runtime/this_thread.h"

namespace cellserve::cuda {

namespace {

GemmDtype ToGemmDtype(Precision p) {
  switch (p) {
    case Precision::kF16: return GemmDtype::kF16;
    case Precision::kBF16: return GemmDtype::kBF16;
    case Precision::kF32: break;
  }
  return GemmDtype::kF32;
}

cudaDataType_t CudaDataType(GemmDtype d) {
  switch (d) {
    case GemmDtype::kF16: return CUDA_R_16F;
    case GemmDtype::kBF16: return CUDA_R_16BF;
    case GemmDtype::kF32: break;
  }
  return CUDA_R_32F;
}

bool IsHead(CellOp op) { return op == CellOp::kHeadLogits || op == CellOp::kHeadArgmax; }

// The largest round of any of the model's cell types (every type takes the spec's max_batch).
int32_t MaxBatch(const Model& model) { return static_cast<int32_t>(std::max<int64_t>(1, model.spec().max_batch)); }

constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;  // cuBLAS's advice for Hopper

}  // namespace

// Outside the anonymous namespace: CudaDevice::Impl (declared in the header) holds them.
// An instantiated CUDA graph, destroyed with its owner (the LRU cache evicts by destroying).
class GraphExec {
 public:
  explicit GraphExec(cudaGraphExec_t exec = nullptr) : exec_(exec) {}
  ~GraphExec() {
    if (exec_) cudaGraphExecDestroy(exec_);
  }
  GraphExec(GraphExec&& o) noexcept : exec_(std::exchange(o.exec_, nullptr)) {}
  GraphExec& operator=(GraphExec&& o) noexcept {
    if (this != &o) {
      if (exec_) cudaGraphExecDestroy(exec_);
      exec_ = std::exchange(o.exec_, nullptr);
    }
    return *this;
  }
  cudaGraphExec_t get() const { return exec_; }

 private:
  cudaGraphExec_t exec_;
};

class CudaDevice::Impl {
 public:
  Impl(std::string name, CudaDeviceOptions options)
      : name_(std::move(name)), options_(std::move(options)), dtype_(ToGemmDtype(options_.precision)),
        planner_(options_.staging_slots), graphs_(1) {}

  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (completer_.joinable()) completer_.join();
    cudaSetDevice(options_.gpu);
    // Work may still be queued that no round waited for (a RegisterModel's memset): finish it
    // before the streams, and then the buffers it writes, go.
    for (cudaStream_t st : {upload_, compute_, download_})
      if (st) cudaStreamSynchronize(st);
    graphs_ = gpu::LruCache<gpu::GraphKey, GraphExec>(1);  // destroy the graphs before the buffers
    for (Staging& s : staging_)
      for (cudaEvent_t e : {s.uploaded, s.computed, s.done})
        if (e) cudaEventDestroy(e);
    if (cublas_) cublasDestroy(cublas_);
    for (cudaStream_t st : {upload_, compute_, download_})
      if (st) cudaStreamDestroy(st);
  }

  Status Init() {
    if (options_.staging_slots < 1) return InvalidArgument("staging_slots must be >= 1");
    int count = 0;
    CS_CUDA(cudaGetDeviceCount(&count));
    if (options_.gpu < 0 || options_.gpu >= count)
      return InvalidArgument("GPU " + std::to_string(options_.gpu) + " does not exist (" + std::to_string(count) +
                             " found)");
    CS_CUDA(cudaSetDevice(options_.gpu));
    CS_CUDA(cudaStreamCreateWithFlags(&upload_, cudaStreamNonBlocking));
    CS_CUDA(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
    CS_CUDA(cudaStreamCreateWithFlags(&download_, cudaStreamNonBlocking));
    CS_CUBLAS(cublasCreate(&cublas_));
    CS_CUBLAS(cublasSetStream(cublas_, compute_));
    // A fixed workspace makes cuBLAS safe to capture into graphs (no allocation while capturing).
    ASSIGN_OR_RETURN(cublas_workspace_, DeviceBuffer<char>::Allocate(options_.gpu, kCublasWorkspaceBytes));
    CS_CUBLAS(cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.bytes()));
    staging_.resize(options_.staging_slots);
    for (Staging& s : staging_)
      for (cudaEvent_t* e : {&s.uploaded, &s.computed, &s.done})
        CS_CUDA(cudaEventCreateWithFlags(e, cudaEventDisableTiming | cudaEventBlockingSync));
    try {
      completer_ = std::thread([this] { CompletionLoop(); });
    } catch (const std::system_error& e) {  // out of threads: an error, not std::terminate
      return Unavailable("cannot start the completion thread: " + std::string(e.what()));
    }
    if (!options_.completion_cpus.empty()) RETURN_IF_ERROR(PinThread(completer_, options_.completion_cpus));
    return OkStatus();
  }

  const std::string& name() const { return name_; }

  Status RegisterModel(const Model& model, int32_t slots) {
    if (slots <= 0) return InvalidArgument("a model needs at least one state slot");
    std::unique_lock<std::mutex> lock(mu_);
    progress_cv_.wait(lock, [&] { return pending_ == 0; });
    CS_CUDA(cudaSetDevice(options_.gpu));
    // Captured graphs hold the pointers of the state and weights this may replace: drop them all,
    // and make room for every graph of the models registered with this one.
    graphs_ = gpu::LruCache<gpu::GraphKey, GraphExec>(GraphCacheCapacity(model));
    warmed_.clear();
    ungraphable_.clear();
    // Built aside and committed only when everything is allocated: a failure registers nothing.
    ModelState m;
    m.slots = slots;
    m.hidden = model.spec().hidden;
    m.weights = options_.weights ? options_.weights->Get(model, options_.gpu) : nullptr;
    if (!m.weights) {
      ASSIGN_OR_RETURN(m.weights, UploadModelWeights(model, options_.gpu, dtype_, options_.fold_max_bytes));
    }
    if (m.weights->dtype != dtype_ || m.weights->types.size() != model.cell_types().size())
      return InvalidArgument(name_ + ": the weight store holds " + model.spec().name + " in another precision");
    if (m.weights->fold_max_bytes != options_.fold_max_bytes)
      return InvalidArgument(name_ + ": the weight store folded " + model.spec().name + " under another cap");
    ASSIGN_OR_RETURN(m.state, DeviceBuffer<float>::Allocate(options_.gpu, (static_cast<size_t>(slots) + 1) * 2 * m.hidden));
    m.buckets = gpu::BucketSizes(MaxBatch(model));
    // Scratch and staging sized for every registered model.
    Capacity need = capacity_;
    for (const CellType& t : model.cell_types()) {
      need.rows = std::max<int64_t>(need.rows, t.max_batch);
      need.x_width = std::max<int64_t>(need.x_width, GatherWidth(t.op, t.input_dim, t.hidden));
      need.gate_width = std::max<int64_t>(need.gate_width, t.weight->dim(0));
      if (t.op == CellOp::kHeadLogits) need.logits_width = std::max<int64_t>(need.logits_width, t.outputs);
    }
    if (need != capacity_) RETURN_IF_ERROR(Reallocate(need));
    // Last, when nothing can fail any more: a queued memset must not outlive a buffer freed by a
    // failed registration. On compute_, the only stream that touches states (a legacy-stream
    // memset would not be ordered before the non-blocking streams' rounds).
    CS_CUDA(cudaMemsetAsync(m.state.get(), 0, m.state.bytes(), compute_));
    models_[&model] = std::move(m);
    return OkStatus();
  }

  void Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) {
    const int64_t now = clock_.NowMicros();
    std::unique_lock<std::mutex> lock(mu_);
    if (planner_.in_flight() >= planner_.staging_slots()) {
      // Every staging slot is busy: wait for the oldest round (the scheduler's lookahead makes
      // this rare), except on the completion thread, which would wait for itself.
      if (std::this_thread::get_id() == completer_.get_id()) {
        lock.unlock();
        return Fail(round_id, ResourceExhausted(name_ + ": all " + std::to_string(options_.staging_slots) +
                                                " staging slots in flight (Submit from a completion callback)"),
                    now, done);
      }
      ++graph_stats_.host_waits;
      progress_cv_.wait(lock, [&] { return planner_.in_flight() < planner_.staging_slots(); });
    }
    auto m = batch.model ? models_.find(batch.model) : models_.end();
    if (m == models_.end()) {
      lock.unlock();
      return Fail(round_id, InvalidArgument(batch.model ? "model '" + batch.model->spec().name +
                                                              "' is not registered on " + name_
                                                        : std::string("batch has no model")),
                  now, done);
    }
    const int32_t rows = static_cast<int32_t>(batch.rows.size());
    int32_t bucket = options_.use_graphs ? gpu::BucketFor(m->second.buckets, rows) : rows;
    if (bucket < 0) bucket = rows;  // too many rows: PlanBatch names the problem
    auto plan = gpu::PlanBatch(batch, m->second.slots, bucket);
    if (!plan.ok()) {
      lock.unlock();
      return Fail(round_id, plan.status(), now, done);
    }
    const CellType& type = batch.model->cell_type(batch.type);
    InFlight f;
    f.round_id = round_id;
    f.rows = rows;
    f.op = type.op;
    f.outputs = type.outputs;
    f.submit_us = now;
    f.done = std::move(done);
    // The planner counts rounds by this device's own sequence number: callers' round ids may repeat.
    f.seq = ++seq_;
    gpu::RoundPlan round = planner_.Plan(f.seq, IsHead(type.op));
    f.staging_slot = round.staging_slot;
    f.status = Enqueue(round, *plan, m->second, batch.model, batch.type);
    if (!f.status.ok()) JoinStreamsInto(staging_[round.staging_slot]);
    stats_padded_rows_ += bucket - rows;
    ++pending_;
    in_flight_.push_back(std::move(f));
    lock.unlock();
    cv_.notify_all();
  }

  int64_t pending() const {
    std::lock_guard<std::mutex> lock(mu_);
    return pending_;
  }
  DeviceStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  CudaGraphStats graph_stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    CudaGraphStats g = graph_stats_;
    g.evictions = static_cast<int64_t>(graphs_.evictions());
    g.cache_capacity = static_cast<int64_t>(graphs_.capacity());
    g.padded_rows = stats_padded_rows_;
    return g;
  }

  StatusOr<std::vector<float>> ReadSlot(const Model& model, SlotId slot) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(&model);
    if (it == models_.end()) return InvalidArgument("model is not registered on " + name_);
    if (slot < 0 || slot >= it->second.slots) return InvalidArgument("slot out of range");
    const int64_t H = it->second.hidden;
    std::vector<float> out(static_cast<size_t>(2 * H));
    CS_CUDA(cudaSetDevice(options_.gpu));
    CS_CUDA(cudaMemcpyAsync(out.data(), it->second.state.get() + static_cast<int64_t>(slot) * 2 * H, out.size() * sizeof(float),
                            cudaMemcpyDeviceToHost, compute_));
    CS_CUDA(cudaStreamSynchronize(compute_));
    return out;
  }

 private:
  struct ModelState {
    int32_t slots = 0;
    int64_t hidden = 0;
    DeviceBuffer<float> state;  // [slots + 1, 2H]
    std::shared_ptr<const ModelWeights> weights;
    std::vector<int32_t> buckets;
  };
  struct Capacity {
    int64_t rows = 0, x_width = 0, gate_width = 0, logits_width = 0;
    bool operator!=(const Capacity& o) const {
      return rows != o.rows || x_width != o.x_width || gate_width != o.gate_width || logits_width != o.logits_width;
    }
  };
  // One staging slot's host and device buffers (reallocated together when capacity grows).
  struct StagingBuffers {
    PinnedBuffer<int32_t> index;       // the plan, written by the host
    DeviceBuffer<int32_t> dev_index;   // uploaded copy the round's graph reads
    DeviceBuffer<int32_t> dev_argmax;  // head results, written by the round's graph
    DeviceBuffer<float> dev_max;
    DeviceBuffer<float> dev_logits;    // classifier logits (kHeadLogits)
    PinnedBuffer<int32_t> argmax;      // downloaded results
    PinnedBuffer<float> max_value;
    PinnedBuffer<float> logits;
  };
  // One staging slot: its buffers and its three events (stream_plan.h), which live as long as the device.
  struct Staging : StagingBuffers {
    cudaEvent_t uploaded = nullptr, computed = nullptr, done = nullptr;
  };
  struct InFlight {
    uint64_t round_id = 0;
    uint64_t seq = 0;  // this device's submission number (the planner's round id)
    int32_t staging_slot = 0;
    int32_t rows = 0;
    CellOp op = CellOp::kLstm;
    int64_t outputs = 0;
    int64_t submit_us = 0;
    Status status;  // an enqueue error: reported instead of results
    CompletionCallback done;
  };

  void Fail(uint64_t round_id, Status status, int64_t now, const CompletionCallback& done) {
    DeviceCompletion c;
    c.round_id = round_id;
    c.output = std::move(status);
    c.start_us = c.end_us = now;
    if (done) done(std::move(c));
  }

  // Scratch and staging buffers for `need`, allocated aside and swapped in together (a failure
  // leaves the old ones). Only while nothing is in flight.
  Status Reallocate(const Capacity& need) {
    const int gpu = options_.gpu;
    ASSIGN_OR_RETURN(auto x, DeviceBuffer<char>::Allocate(gpu, need.rows * need.x_width * 4));  // fp32 at most
    ASSIGN_OR_RETURN(auto gates, DeviceBuffer<float>::Allocate(gpu, need.rows * need.gate_width));
    std::vector<StagingBuffers> fresh(staging_.size());
    for (StagingBuffers& s : fresh) {
      const size_t index = static_cast<size_t>(gpu::kPlanArrays * need.rows);
      ASSIGN_OR_RETURN(s.index, PinnedBuffer<int32_t>::Allocate(index));
      ASSIGN_OR_RETURN(s.dev_index, DeviceBuffer<int32_t>::Allocate(gpu, index));
      ASSIGN_OR_RETURN(s.dev_argmax, DeviceBuffer<int32_t>::Allocate(gpu, need.rows));
      ASSIGN_OR_RETURN(s.dev_max, DeviceBuffer<float>::Allocate(gpu, need.rows));
      ASSIGN_OR_RETURN(s.dev_logits, DeviceBuffer<float>::Allocate(gpu, need.rows * need.logits_width));
      ASSIGN_OR_RETURN(s.argmax, PinnedBuffer<int32_t>::Allocate(need.rows));
      ASSIGN_OR_RETURN(s.max_value, PinnedBuffer<float>::Allocate(need.rows));
      ASSIGN_OR_RETURN(s.logits, PinnedBuffer<float>::Allocate(need.rows * need.logits_width));
    }
    x_ = std::move(x);
    gates_ = std::move(gates);
    for (size_t i = 0; i < staging_.size(); ++i)  // the events stay
      static_cast<StagingBuffers&>(staging_[i]) = std::move(fresh[i]);
    capacity_ = need;
    return OkStatus();
  }

  cudaStream_t Stream(gpu::StreamKind k) const {
    switch (k) {
      case gpu::StreamKind::kUpload: return upload_;
      case gpu::StreamKind::kDownload: return download_;
      case gpu::StreamKind::kCompute: break;
    }
    return compute_;
  }
  static cudaEvent_t Event(const Staging& s, gpu::EventKind k) {
    switch (k) {
      case gpu::EventKind::kUploaded: return s.uploaded;
      case gpu::EventKind::kComputed: return s.computed;
      case gpu::EventKind::kDone: break;
    }
    return s.done;
  }

  // After a failed Enqueue: `done` follows everything enqueued on the three streams so far, so
  // the slot is not reused while part of the failed round still runs. Best effort (errors here
  // mean the context is gone, and every later round fails anyway).
  void JoinStreamsInto(Staging& s) {
    cudaEventRecord(s.uploaded, upload_);
    cudaStreamWaitEvent(download_, s.uploaded, 0);
    cudaEventRecord(s.computed, compute_);
    cudaStreamWaitEvent(download_, s.computed, 0);
    cudaEventRecord(s.done, download_);
  }

  // Enqueues the round's ops in the planner's order. Under mu_.
  Status Enqueue(const gpu::RoundPlan& round, const gpu::BatchPlan& plan, ModelState& m, const Model* model,
                 int32_t type) {
    CS_CUDA(cudaSetDevice(options_.gpu));
    Staging& s = staging_[round.staging_slot];
    std::memcpy(s.index.get(), plan.index.data(), plan.index.size() * sizeof(int32_t));
    const CellType& t = model->cell_type(type);
    for (const gpu::StreamOp& op : round.ops) {
      cudaStream_t stream = Stream(op.stream);
      switch (op.kind) {
        case gpu::OpKind::kWaitEvent: CS_CUDA(cudaStreamWaitEvent(stream, Event(s, op.event), 0)); break;
        case gpu::OpKind::kRecordEvent: CS_CUDA(cudaEventRecord(Event(s, op.event), stream)); break;
        case gpu::OpKind::kUpload:
          CS_CUDA(cudaMemcpyAsync(s.dev_index.get(), s.index.get(), plan.index.size() * sizeof(int32_t),
                                  cudaMemcpyHostToDevice, stream));
          break;
        case gpu::OpKind::kCompute: RETURN_IF_ERROR(Compute(m, model, type, plan.bucket, round.staging_slot)); break;
        case gpu::OpKind::kDownload:
          CS_CUDA(cudaMemcpyAsync(s.argmax.get(), s.dev_argmax.get(), plan.rows * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, stream));
          CS_CUDA(cudaMemcpyAsync(s.max_value.get(), s.dev_max.get(), plan.rows * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream));
          if (t.op == CellOp::kHeadLogits)
            CS_CUDA(cudaMemcpyAsync(s.logits.get(), s.dev_logits.get(), plan.rows * t.outputs * sizeof(float),
                                    cudaMemcpyDeviceToHost, stream));
          break;
      }
    }
    return OkStatus();
  }

  // The graph cache's capacity once `adding` is registered (graph_cache_size caps it when set).
  size_t GraphCacheCapacity(const Model& adding) const {
    int64_t graphs = 0;
    auto count = [&](const Model& model) {
      graphs += gpu::GraphsOfModel(static_cast<int32_t>(model.cell_types().size()), MaxBatch(model),
                                   options_.staging_slots);
    };
    count(adding);
    for (const auto& [model, state] : models_)
      if (model != &adding) count(*model);
    const size_t all = static_cast<size_t>(std::max<int64_t>(graphs, 1));
    return options_.graph_cache_size > 0 ? std::min(all, options_.graph_cache_size) : all;
  }

  // The round's compute on the compute stream: its graph, or plain launches. The first round of a
  // (model, type, bucket) runs plain, so that cuBLAS picks and loads its kernel for that shape
  // (and ours load) outside a stream capture; later rounds capture a graph per staging slot once
  // and launch it. When the graph cannot be made, nothing captured has run, so the round runs
  // plain instead: a capture that CUDA refuses or invalidates (a library call capture does not
  // support), or an instantiation it refuses, makes the shape plain from then on, rather than
  // failing every round of it; an instantiation out of memory only this round. Any other error
  // (outside capture and instantiation) is the round's.
  Status Compute(ModelState& m, const Model* model, int32_t type, int32_t bucket, int32_t slot) {
    if (!options_.use_graphs) return LaunchKernels(m, model, type, bucket, slot);
    const gpu::GraphKey key{model, type, bucket, slot};
    GraphExec* exec = graphs_.Find(key);
    if (!exec) {
      const Shape shape{model, type, bucket};
      if (warmed_.insert(shape).second) {
        ++graph_stats_.warmups;
        return LaunchKernels(m, model, type, bucket, slot);
      }
      if (ungraphable_.count(shape)) {
        ++graph_stats_.plain_rounds;
        return LaunchKernels(m, model, type, bucket, slot);
      }
      Captured captured = Capture(m, model, type, bucket, slot);
      if (captured.outcome == CaptureOutcome::kError) return captured.status;
      if (captured.outcome != CaptureOutcome::kOk) {
        ++graph_stats_.capture_failures;
        ++graph_stats_.plain_rounds;
        if (captured.outcome == CaptureOutcome::kUnsupported) {
          ungraphable_.insert(shape);
          std::fprintf(stderr,
                       "cellserve: %s: cannot capture a CUDA graph for model '%s', cell type %d, %d rows (%s); "
                       "that shape runs without graphs from now on\n",
                       name_.c_str(), model->spec().name.c_str(), type, bucket, captured.status.ToString().c_str());
        }
        return LaunchKernels(m, model, type, bucket, slot);
      }
      exec = &graphs_.Insert(key, GraphExec(captured.exec));
      ++graph_stats_.captures;
    }
    CS_CUDA(cudaGraphLaunch(exec->get(), compute_));
    ++graph_stats_.launches;
    return OkStatus();
  }

  // The stream-capture errors (900-908): CUDA refused or invalidated the capture itself; the
  // stream and the context are fine, only this graph cannot be made.
  static bool IsCaptureError(cudaError_t e) {
    return e >= cudaErrorStreamCaptureUnsupported && e <= cudaErrorStreamCaptureWrongThread;
  }
  enum class CaptureOutcome { kOk, kUnsupported, kOutOfMemory, kError };
  struct Captured {
    CaptureOutcome outcome = CaptureOutcome::kOk;
    cudaGraphExec_t exec = nullptr;  // kOk
    Status status;                   // otherwise
  };

  // Captures the round's launches into a graph and instantiates it. After a successful
  // cudaStreamBeginCapture, cudaStreamEndCapture runs on every path, so the stream always leaves
  // capture mode; nothing is left allocated on an error.
  Captured Capture(ModelState& m, const Model* model, int32_t type, int32_t bucket, int32_t slot) {
    Captured out;
    const cudaError_t began = cudaStreamBeginCapture(compute_, cudaStreamCaptureModeThreadLocal);
    if (began != cudaSuccess) {
      out.outcome = IsCaptureError(began) ? CaptureOutcome::kUnsupported : CaptureOutcome::kError;
      out.status = CudaStatus(began, "cudaStreamBeginCapture");
      return out;
    }
    Status launched = LaunchKernels(m, model, type, bucket, slot);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(compute_, &graph);
    if (!launched.ok() || ended != cudaSuccess) {
      if (graph) cudaGraphDestroy(graph);
      // A launch the capture did not allow shows as an invalidated capture at its end.
      out.outcome = IsCaptureError(ended) ? CaptureOutcome::kUnsupported : CaptureOutcome::kError;
      // Where a launch failed and so invalidated the capture, the message names both: the launch
      // says why the shape gets no graph.
      const Status end_status = CudaStatus(ended, "cudaStreamEndCapture");
      if (launched.ok()) {
        out.status = end_status;
      } else if (end_status.ok() || !IsCaptureError(ended)) {
        out.status = launched;
      } else {
        out.status = end_status.WithContext(launched.message());
      }
      return out;
    }
    const cudaError_t made = cudaGraphInstantiate(&out.exec, graph, 0);
    cudaGraphDestroy(graph);
    if (made != cudaSuccess) {
      out.exec = nullptr;
      out.outcome = made == cudaErrorMemoryAllocation ? CaptureOutcome::kOutOfMemory : CaptureOutcome::kUnsupported;
      out.status = CudaStatus(made, "cudaGraphInstantiate");
    }
    return out;
  }

  // gather -> one GEMM for all gates -> fused element-wise (or head argmax), on compute_.
  // Folded token-fed types: gather h only, multiply W's recurrent columns, add the table row in
  // the element-wise pass; a folded leaf skips gather and GEMM.
  Status LaunchKernels(ModelState& m, const Model* model, int32_t type, int32_t bucket, int32_t slot) {
    const CellType& t = model->cell_type(type);
    const CellTypeWeights& w = m.weights->types[type];
    Staging& s = staging_[slot];
    const bool folded = w.folded != nullptr;
    const int64_t x_cols = folded ? 0 : t.input_dim;          // x's columns in X: none when folded
    const int64_t first_w_col = folded ? t.input_dim : 0;    // W's columns [first_w_col, ldw) are multiplied
    const int64_t K = GatherWidth(t.op, x_cols, t.hidden);
    const int64_t N = t.weight->dim(0), ldw = t.weight->dim(1);
    if (K > 0) {
      GatherArgs g;
      g.op = t.op;
      g.index = s.dev_index.get();
      g.bucket = bucket;
      g.embedding = t.embedding && !folded ? w.embedding : nullptr;
      g.state = m.state.get();
      g.input_dim = x_cols;
      g.hidden = t.hidden;
      g.x = x_.get();
      g.dtype = dtype_;
      RETURN_IF_ERROR(LaunchGather(g, compute_));
      // G[bucket, N] (row-major) = X[bucket, K] · W[N, first_w_col:]ᵀ, i.e. column-major
      // Gᵀ = op_T(W) · X, W read with its full row length as leading dimension.
      const float one = 1.0f, zero = 0.0f;
      const cudaDataType_t in_type = CudaDataType(dtype_);
      const void* w_cols = static_cast<const char*>(w.weight) + first_w_col * DtypeBytes(dtype_);
      CS_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), bucket, static_cast<int>(K),
                             &one, w_cols, in_type, static_cast<int>(ldw), x_.get(), in_type, static_cast<int>(K),
                             &zero, gates_.get(), CUDA_R_32F, static_cast<int>(N), CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT));
    }
    if (!IsHead(t.op)) {
      PointwiseArgs p;
      p.op = t.op;
      p.index = s.dev_index.get();
      p.bucket = bucket;
      p.gates = K > 0 ? gates_.get() : nullptr;
      p.bias = w.bias;
      p.folded = w.folded;
      p.state = m.state.get();
      p.hidden = t.hidden;
      return LaunchCellPointwise(p, compute_);
    }
    HeadArgs h;
    h.logits = gates_.get();
    h.bias = w.bias;
    h.rows = bucket;
    h.outputs = N;
    h.argmax = s.dev_argmax.get();
    h.max_value = s.dev_max.get();
    RETURN_IF_ERROR(LaunchHeadArgmax(h, compute_));
    if (t.op == CellOp::kHeadLogits)
      CS_CUDA(cudaMemcpyAsync(s.dev_logits.get(), gates_.get(), bucket * N * sizeof(float), cudaMemcpyDeviceToDevice,
                              compute_));
    return OkStatus();
  }

  // The completion thread: each round in submission order, once its last event has fired.
  void CompletionLoop() {
    NameThisThread("cs-cuda-done");
    cudaSetDevice(options_.gpu);
    int64_t last_end_us = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return !in_flight_.empty() || stopping_; });
      if (in_flight_.empty()) return;  // stopping, and everything reported
      InFlight f = std::move(in_flight_.front());
      in_flight_.pop_front();
      Staging& s = staging_[f.staging_slot];
      lock.unlock();

      // Waits even after an enqueue error: JoinStreamsInto made `done` follow whatever was enqueued.
      Status synced = CudaStatus(cudaEventSynchronize(s.done), "cudaEventSynchronize");
      DeviceCompletion c;
      c.round_id = f.round_id;
      if (!f.status.ok()) {
        c.output = f.status;
      } else if (!synced.ok()) {
        c.output = synced;
      } else {
        BatchOutput out;
        if (IsHead(f.op)) {
          out.argmax.assign(s.argmax.get(), s.argmax.get() + f.rows);
          out.max_value.assign(s.max_value.get(), s.max_value.get() + f.rows);
          if (f.op == CellOp::kHeadLogits) out.logits.assign(s.logits.get(), s.logits.get() + f.rows * f.outputs);
        }
        c.output = std::move(out);
      }
      // The GPU's own start is not observed; a round starts when it was submitted or when the
      // previous one ended, whichever is later (streams run rounds one after another).
      c.end_us = clock_.NowMicros();
      c.start_us = std::min(c.end_us, std::max(f.submit_us, last_end_us));
      last_end_us = c.end_us;

      lock.lock();
      planner_.Completed(f.seq);
      --pending_;
      if (c.output.ok()) {
        ++stats_.batches;
        stats_.cells += f.rows;
      }
      stats_.busy_us += c.end_us - c.start_us;
      lock.unlock();
      progress_cv_.notify_all();
      if (f.done) f.done(std::move(c));
    }
  }

  const std::string name_;
  const CudaDeviceOptions options_;
  const GemmDtype dtype_;
  const SteadyClock clock_;

  cudaStream_t upload_ = nullptr, compute_ = nullptr, download_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer<char> cublas_workspace_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // in_flight_ gained an entry, or stopping_
  std::condition_variable progress_cv_;  // a round completed (slots free up, pending_ falls)
  std::map<const Model*, ModelState> models_;
  Capacity capacity_;
  DeviceBuffer<char> x_;        // gathered inputs [rows, K] in dtype_
  DeviceBuffer<float> gates_;   // GEMM output [rows, N]
  std::vector<Staging> staging_;
  gpu::StreamPlanner planner_;
  gpu::LruCache<gpu::GraphKey, GraphExec> graphs_;
  using Shape = std::tuple<const Model*, int32_t, int32_t>;  // (model, cell type, bucket)
  std::set<Shape> warmed_;       // run plain once (before their first capture)
  std::set<Shape> ungraphable_;  // their capture failed: plain launches only
  std::deque<InFlight> in_flight_;
  int64_t pending_ = 0;
  uint64_t seq_ = 0;
  DeviceStats stats_;
  CudaGraphStats graph_stats_;
  int64_t stats_padded_rows_ = 0;
  bool stopping_ = false;
  std::thread completer_;  // last: started by Init once everything above exists
};

CudaDevice::CudaDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaDevice::~CudaDevice() = default;

StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::Create(std::string name, CudaDeviceOptions options) {
  if (name.empty()) return InvalidArgument("a device needs a name");
  const std::string context = name + " (GPU " + std::to_string(options.gpu) + ")";
  auto impl = std::make_unique<Impl>(std::move(name), std::move(options));
  RETURN_IF_ERROR(impl->Init().WithContext(context));
  return std::unique_ptr<CudaDevice>(new CudaDevice(std::move(impl)));
}

std::string CudaDevice::name() const { return impl_->name(); }
Status CudaDevice::RegisterModel(const Model& model, int32_t slots) { return impl_->RegisterModel(model, slots); }
void CudaDevice::Submit(uint64_t round_id, CellBatch batch, CompletionCallback done) {
  impl_->Submit(round_id, std::move(batch), std::move(done));
}
int64_t CudaDevice::pending() const { return impl_->pending(); }
DeviceStats CudaDevice::stats() const { return impl_->stats(); }
StatusOr<std::vector<float>> CudaDevice::ReadSlot(const Model& model, SlotId slot) {
  return impl_->ReadSlot(model, slot);
}
CudaGraphStats CudaDevice::graph_stats() const { return impl_->graph_stats(); }

StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(CudaDeviceOptions options) {
  ASSIGN_OR_RETURN(auto device, CudaDevice::Create("cuda:" + std::to_string(options.gpu), std::move(options)));
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(device)));
}

Status CudaBackend::RegisterModel(const Model& model, int32_t slots) { return device_->RegisterModel(model, slots); }

StatusOr<BatchOutput> CudaBackend::Run(const CellBatch& batch) {
  std::promise<StatusOr<BatchOutput>> result;
  auto answer = result.get_future();
  device_->Submit(next_round_++, batch, [&result](DeviceCompletion c) { result.set_value(std::move(c.output)); });
  return answer.get();
}

StatusOr<std::vector<float>> CudaBackend::ReadSlot(const Model& model, SlotId slot) {
  return device_->ReadSlot(model, slot);
}

StatusOr<int> CountGpus() {
  ASSIGN_OR_RETURN(auto gpus, ListCudaDevices());
  return static_cast<int>(gpus.size());
}

StatusOr<std::vector<std::unique_ptr<CudaDevice>>> CreateCudaDevices(int count, CudaDeviceOptions base,
                                                                     const std::vector<const Model*>& models) {
  ASSIGN_OR_RETURN(int available, CountGpus());
  if (count < 0) return InvalidArgument("GPU count must be >= 0 (0 = every GPU)");
  if (count == 0) count = available;
  if (count > available)
    return InvalidArgument("asked for " + std::to_string(count) + " GPUs; this machine has " +
                           std::to_string(available));
  std::vector<int> gpus;
  for (int i = 0; i < count; ++i) gpus.push_back(i);
  base.weights = std::make_shared<CudaWeightStore>(ToGemmDtype(base.precision), base.fold_max_bytes);
  RETURN_IF_ERROR(base.weights->Prepare(models, gpus));
  std::vector<std::unique_ptr<CudaDevice>> devices;
  for (int gpu : gpus) {
    CudaDeviceOptions o = base;
    o.gpu = gpu;
    ASSIGN_OR_RETURN(auto device, CudaDevice::Create("cuda:" + std::to_string(gpu), std::move(o)));
    devices.push_back(std::move(device));
  }
  return StatusOr<std::vector<std::unique_ptr<CudaDevice>>>(std::move(devices));
}

}  // namespace cellserve::cuda
