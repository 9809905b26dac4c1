// The fake CUDA runtime's own hooks (tests/fakecuda/README.md), for the fake cuBLAS and NCCL, the
// host versions of our kernels and the tests: Enqueue puts work on a stream exactly where a CUDA
// call would (into the graph when the stream is capturing); fault injection; what is alive; which
// device owns which memory. Thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <initializer_list>
#include <string>

#include "cuda_runtime.h"

namespace fakecuda {

// Runs `op` on `stream` after everything enqueued on it before (nullptr: the legacy stream, here
// at once on the calling thread). While the stream captures, `op` joins the graph instead.
cudaError_t Enqueue(cudaStream_t stream, std::function<void()> op);

// Fault injection, for the error paths: the `n`th call from now (1 = the next) of the runtime
// function `name` fails, once, with `error`, or by default with: "cudaMalloc" (cudaMallocHost
// goes through it), "cudaStreamCreateWithFlags", "cudaEventCreateWithFlags":
// cudaErrorInvalidValue; "cublasGemmEx": CUBLAS_STATUS_EXECUTION_FAILED (and a capture in
// progress on its stream is invalidated); "cudaStreamBeginCapture": cudaErrorStreamCaptureUnsupported;
// "cudaStreamEndCapture": cudaErrorStreamCaptureInvalidated (no graph, the stream leaves capture
// mode, the captured work never runs); "cudaGraphInstantiate": cudaErrorMemoryAllocation.
// n = 0 clears it.
void FailNthCall(const std::string& name, int n, cudaError_t error = cudaSuccess);

// For the fake NCCL (fake_nccl.cc): whether this call of `name` is the one FailNthCall chose
// ("ncclCommInitAll", "ncclGroupEnd"), which then fails with ncclSystemError.
bool InjectedFailure(const char* name);

// Device memory: a kernel or GEMM may only use memory of its own device (cudaMalloc while that
// device was current) or pinned host memory (cudaMallocHost, reachable from every device as under
// CUDA's unified addressing). On a GPU anything else faults, or silently crosses to a peer GPU.
// StreamOrCurrentDevice: the device of `stream`, or the current one for the legacy stream.
// MemoryNotOn: why one of `pointers` (nulls skipped) may not be used on `device`, or "".
int StreamOrCurrentDevice(cudaStream_t stream);
std::string MemoryNotOn(int device, std::initializer_list<const void*> pointers);

// What the runtime holds now: allocations, streams, events, graphs, graph execs, cuBLAS handles
// ("allocations 3, streams 2, ..."). A device destroyed must leave it as it found it.
std::string LiveObjects();
void CountCublasHandle(int delta);  // for the fake cuBLAS
void CountNcclComm(int delta);      // for the fake NCCL
bool IsCapturing(cudaStream_t stream);
// A kernel or cuBLAS launch on `stream` failed: as on a GPU, a capture in progress there is
// invalidated (its cudaStreamEndCapture returns cudaErrorStreamCaptureInvalidated).
void LaunchFailed(cudaStream_t stream);

// The number of ncclBroadcast calls that ran as part of a collective, since the process started.
long NcclBroadcastsRun();

// The next NCCL group's collectives never meet, as when a GPU link is down or a rank's kernel
// never starts: each rank's operation waits on its stream until its communicator is aborted, then
// returns without copying, `abort_takes` after the abort.
void HangNextNcclGroup(std::chrono::milliseconds abort_takes = std::chrono::milliseconds(0));

// FailNthCall for a scope: cleared when it goes, so that an injection a failed assertion left
// unreached does not stay armed for the tests after it.
class ScopedFailure {
 public:
  ScopedFailure(const std::string& name, int n, cudaError_t error = cudaSuccess) { FailNthCall(name, n, error); }
  ~ScopedFailure() { FailNthCall("", 0); }
  ScopedFailure(const ScopedFailure&) = delete;
  ScopedFailure& operator=(const ScopedFailure&) = delete;
};

// fp16 / bf16 bits from a float (round to nearest even) and back.
unsigned short FloatToBf16(float f);
float Bf16ToFloat(unsigned short b);

}  // namespace fakecuda
