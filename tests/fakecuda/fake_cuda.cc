// The fake CUDA runtime (tests/fakecuda/README.md): streams are threads with in-order queues,
// events count their records and fires (a wait or a synchronize waits for the record made
// before it, as cudaStreamWaitEvent documents), capture collects a stream's operations into a
// graph that a launch replays on a stream.
#include "fake_cuda.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

struct CUstream_st {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::function<void()>> queue;  // guarded by mu
  uint64_t enqueued = 0, done = 0;          // guarded by mu
  bool stopping = false;                    // guarded by mu
  bool capturing = false;                   // only the capturing thread touches it and `captured`
  bool capture_invalidated = false;         // a launch into the capture failed (same thread)
  std::vector<std::function<void()>> captured;
  int device = 0;  // the device current when it was made
  std::thread worker;

  void Run() {
    for (;;) {
      std::function<void()> op;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) return;
        op = std::move(queue.front());
        queue.pop_front();
      }
      op();
      {
        std::lock_guard<std::mutex> lock(mu);
        ++done;
      }
      cv.notify_all();
    }
  }
  void Push(std::function<void()> op) {
    {
      std::lock_guard<std::mutex> lock(mu);
      queue.push_back(std::move(op));
      ++enqueued;
    }
    cv.notify_all();
  }
  void Drain() {
    std::unique_lock<std::mutex> lock(mu);
    const uint64_t target = enqueued;
    cv.wait(lock, [&] { return done >= target; });
  }
};

struct CUevent_st {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t recorded = 0;  // records made (by the host, in call order)
  uint64_t fired = 0;     // records reached on their streams
  void WaitFor(uint64_t generation) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return fired >= generation; });
  }
};

struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};

namespace {

std::mutex g_streams_mu;
std::vector<cudaStream_t> g_streams;  // live streams, for cudaDeviceSynchronize

int DeviceCount() {
  const char* env = std::getenv("CELLSERVE_FAKE_CUDA_DEVICES");
  return env && *env ? std::atoi(env) : 1;
}

thread_local int t_device = 0;
// What is alive, for LiveObjects (allocations are counted in g_allocations).
std::atomic<long> g_live_events{0}, g_live_graphs{0}, g_live_graph_execs{0}, g_live_cublas_handles{0},
    g_live_nccl_comms{0};
// The thread's pending error, as CUDA keeps one: the last failed call's, until cudaGetLastError.
thread_local cudaError_t t_last_error = cudaSuccess;
cudaError_t Failed(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

}  // namespace

namespace fakecuda {

cudaError_t Enqueue(cudaStream_t stream, std::function<void()> op) {
  if (!stream) {
    op();
    return cudaSuccess;
  }
  if (stream->capturing) {
    stream->captured.push_back(std::move(op));
    return cudaSuccess;
  }
  stream->Push(std::move(op));
  return cudaSuccess;
}

unsigned short FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((bits >> 16) | 0x40);  // NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<unsigned short>(bits >> 16);
}

float Bf16ToFloat(unsigned short b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

}  // namespace fakecuda

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorDevicesUnavailable: return "cudaErrorDevicesUnavailable";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureWrongThread: return "cudaErrorStreamCaptureWrongThread";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t error) { return error == cudaSuccess ? "no error" : "fake CUDA error"; }
cudaError_t cudaGetLastError() { return std::exchange(t_last_error, cudaSuccess); }
cudaError_t cudaPeekAtLastError() { return t_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = DeviceCount();
  return *count > 0 ? cudaSuccess : Failed(cudaErrorNoDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device < 0 || device >= DeviceCount()) return Failed(cudaErrorInvalidValue);
  std::memset(prop, 0, sizeof(*prop));
  std::strncpy(prop->name, "fake CUDA device (host emulation)", sizeof(prop->name) - 1);
  prop->totalGlobalMem = size_t{16} << 30;
  prop->major = 9;
  prop->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= DeviceCount()) return Failed(cudaErrorInvalidValue);
  t_device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  std::vector<cudaStream_t> streams;
  {
    std::lock_guard<std::mutex> lock(g_streams_mu);
    streams = g_streams;
  }
  for (cudaStream_t s : streams) s->Drain();
  return cudaSuccess;
}

namespace {
std::mutex g_fail_mu;
std::string g_fail_name;                      // GUARDED_BY(g_fail_mu)
int g_fail_in = 0;                            // GUARDED_BY(g_fail_mu): calls of g_fail_name until the one that fails
cudaError_t g_fail_error = cudaSuccess;       // GUARDED_BY(g_fail_mu): what it fails with; cudaSuccess: the call's default

// The error this call of `name` is to fail with (FailNthCall chose it), or cudaSuccess.
cudaError_t TakeFailure(const char* name, cudaError_t by_default) {
  std::lock_guard<std::mutex> lock(g_fail_mu);
  if (g_fail_in <= 0 || g_fail_name != name || --g_fail_in > 0) return cudaSuccess;
  g_fail_name.clear();
  return g_fail_error != cudaSuccess ? g_fail_error : by_default;
}
// The same for a runtime call: its failure is also the thread's pending error.
cudaError_t Injected(const char* name, cudaError_t by_default) { return Failed(TakeFailure(name, by_default)); }
}  // namespace

namespace fakecuda {
bool InjectedFailure(const char* name) { return TakeFailure(name, cudaErrorInvalidValue) != cudaSuccess; }
}  // namespace fakecuda

namespace fakecuda {
void FailNthCall(const std::string& name, int n, cudaError_t error) {
  std::lock_guard<std::mutex> lock(g_fail_mu);
  g_fail_name = n > 0 ? name : "";
  g_fail_in = n;
  g_fail_error = error;
}
}  // namespace fakecuda

namespace {
// Which device each allocation belongs to (-1: pinned host memory, reachable from every device).
struct Allocation {
  size_t bytes;
  int device;
};
std::mutex g_allocations_mu;
std::map<uintptr_t, Allocation> g_allocations;  // GUARDED_BY(g_allocations_mu), by start address

cudaError_t Allocate(void** ptr, size_t bytes, int device) {
  *ptr = nullptr;
  if (cudaError_t e = Injected("cudaMalloc", cudaErrorInvalidValue)) return e;
  *ptr = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
  if (!*ptr) return Failed(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> lock(g_allocations_mu);
  g_allocations[reinterpret_cast<uintptr_t>(*ptr)] = {bytes, device};
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMalloc(void** ptr, size_t bytes) { return Allocate(ptr, bytes, t_device); }
namespace {
// Frees what Allocate made, of the kind asked for (pinned or not); anything else is
// cudaErrorInvalidValue, as CUDA says, and is not freed.
cudaError_t Release(void* ptr, bool pinned) {
  if (!ptr) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(g_allocations_mu);
    auto it = g_allocations.find(reinterpret_cast<uintptr_t>(ptr));
    if (it == g_allocations.end() || (it->second.device == -1) != pinned) return Failed(cudaErrorInvalidValue);
    g_allocations.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaFree(void* ptr) { return Release(ptr, /*pinned=*/false); }
cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return Allocate(ptr, bytes, -1); }
cudaError_t cudaFreeHost(void* ptr) { return Release(ptr, /*pinned=*/true); }

namespace fakecuda {
void CountCublasHandle(int delta) { g_live_cublas_handles += delta; }
void CountNcclComm(int delta) { g_live_nccl_comms += delta; }
bool IsCapturing(cudaStream_t stream) { return stream && stream->capturing; }
void LaunchFailed(cudaStream_t stream) {
  if (stream && stream->capturing) stream->capture_invalidated = true;
}

std::string LiveObjects() {
  size_t allocations = 0, streams = 0;
  {
    std::lock_guard<std::mutex> lock(g_allocations_mu);
    allocations = g_allocations.size();
  }
  {
    std::lock_guard<std::mutex> lock(g_streams_mu);
    streams = g_streams.size();
  }
  return "allocations " + std::to_string(allocations) + ", streams " + std::to_string(streams) + ", events " +
         std::to_string(g_live_events.load()) + ", graphs " + std::to_string(g_live_graphs.load()) +
         ", graph execs " + std::to_string(g_live_graph_execs.load()) + ", cuBLAS handles " +
         std::to_string(g_live_cublas_handles.load()) + ", NCCL communicators " +
         std::to_string(g_live_nccl_comms.load());
}

int StreamOrCurrentDevice(cudaStream_t stream) { return stream ? stream->device : t_device; }

std::string MemoryNotOn(int device, std::initializer_list<const void*> pointers) {
  std::lock_guard<std::mutex> lock(g_allocations_mu);
  for (const void* p : pointers) {
    if (!p) continue;
    const auto at = reinterpret_cast<uintptr_t>(p);
    auto it = g_allocations.upper_bound(at);
    if (it == g_allocations.begin() || at >= std::prev(it)->first + std::max<size_t>(std::prev(it)->second.bytes, 1))
      return "it uses memory at " + std::to_string(at) + " that the runtime did not allocate (host memory?)";
    const int owner = std::prev(it)->second.device;
    if (owner != -1 && owner != device)
      return "it runs on device " + std::to_string(device) + " and uses memory of device " + std::to_string(owner);
  }
  return "";
}
}  // namespace fakecuda

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t stream) {
  return fakecuda::Enqueue(stream, [dst, src, bytes] { std::memcpy(dst, src, bytes); });
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream) {
  return fakecuda::Enqueue(stream, [ptr, value, bytes] { std::memset(ptr, value, bytes); });
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  if (cudaError_t e = Injected("cudaStreamCreateWithFlags", cudaErrorInvalidValue)) return e;
  auto* s = new CUstream_st();
  s->device = t_device;
  s->worker = std::thread([s] { s->Run(); });
  std::lock_guard<std::mutex> lock(g_streams_mu);
  g_streams.push_back(s);
  *stream = s;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream) return Failed(cudaErrorInvalidResourceHandle);
  {
    std::lock_guard<std::mutex> lock(g_streams_mu);
    for (size_t i = 0; i < g_streams.size(); ++i)
      if (g_streams[i] == stream) g_streams.erase(g_streams.begin() + static_cast<long>(i));
  }
  {
    std::lock_guard<std::mutex> lock(stream->mu);
    stream->stopping = true;  // what is queued still runs (CUDA finishes a destroyed stream's work)
  }
  stream->cv.notify_all();
  stream->worker.join();
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (stream) stream->Drain();
  return cudaSuccess;
}
// cudaErrorNotReady is not recorded as the thread's pending error (it is not an error).
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  if (!stream) return cudaSuccess;  // the legacy stream runs its work at once here
  std::lock_guard<std::mutex> lock(stream->mu);
  return stream->done >= stream->enqueued ? cudaSuccess : cudaErrorNotReady;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (!stream || !event) return Failed(cudaErrorInvalidResourceHandle);
  if (stream->capturing) return Failed(cudaErrorStreamCaptureUnsupported);  // not used inside our graphs
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(event->mu);
    generation = event->recorded;
  }
  if (generation == 0) return cudaSuccess;  // never recorded: nothing to wait for
  return fakecuda::Enqueue(stream, [event, generation] { event->WaitFor(generation); });
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  if (cudaError_t e = Injected("cudaEventCreateWithFlags", cudaErrorInvalidValue)) return e;
  *event = new CUevent_st();
  ++g_live_events;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (event) --g_live_events;
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return Failed(cudaErrorInvalidResourceHandle);
  if (stream && stream->capturing) return Failed(cudaErrorStreamCaptureUnsupported);
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(event->mu);
    generation = ++event->recorded;
  }
  return fakecuda::Enqueue(stream, [event, generation] {
    // Notified under the lock: a waiter that sees `fired` may destroy the event at once.
    std::lock_guard<std::mutex> lock(event->mu);
    if (event->fired < generation) event->fired = generation;
    event->cv.notify_all();
  });
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return Failed(cudaErrorInvalidResourceHandle);
  uint64_t generation;
  {
    std::lock_guard<std::mutex> lock(event->mu);
    generation = event->recorded;
  }
  event->WaitFor(generation);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode) {
  if (!stream || stream->capturing) return Failed(cudaErrorInvalidValue);
  if (cudaError_t e = Injected("cudaStreamBeginCapture", cudaErrorStreamCaptureUnsupported)) return e;
  stream->capturing = true;
  stream->capture_invalidated = false;
  stream->captured.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  *graph = nullptr;
  if (!stream || !stream->capturing) return Failed(cudaErrorInvalidValue);
  stream->capturing = false;
  // As CUDA does for a capture that something invalidated: no graph, and the stream is no longer
  // capturing (what was captured never runs).
  cudaError_t e = Injected("cudaStreamEndCapture", cudaErrorStreamCaptureInvalidated);
  if (!e && stream->capture_invalidated) e = Failed(cudaErrorStreamCaptureInvalidated);
  if (e) {
    stream->captured.clear();
    return e;
  }
  *graph = new CUgraph_st{std::move(stream->captured)};
  ++g_live_graphs;
  stream->captured.clear();
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = nullptr;
  if (!graph) return Failed(cudaErrorInvalidValue);
  if (cudaError_t e = Injected("cudaGraphInstantiate", cudaErrorMemoryAllocation)) return e;
  *exec = new CUgraphExec_st{graph->ops};
  ++g_live_graph_execs;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  if (graph) --g_live_graphs;
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  if (exec) --g_live_graph_execs;
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return Failed(cudaErrorInvalidValue);
  // The ops are copied: an evicted graph may be destroyed while its launch is still queued.
  return fakecuda::Enqueue(stream, [ops = exec->ops] {
    for (const auto& op : ops) op();
  });
}
