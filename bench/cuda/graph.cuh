// A CUDA graph of one captured sequence of launches, and the two-graph ping-pong that
// bench_cuda_lstm times: one graph per direction of the state pool (A -> B, B -> A).
// Contract: Capture records `body` (enqueued on the given stream) once and instantiates it; a
// capture error destroys the partial graph and is returned with "during graph capture". Launch
// replays it on a stream. Not copyable; owns and destroys its graph.
#pragma once

#include <cuda_runtime.h>

#include "bench/cuda/context.cuh"
#include "kernels/cuda/cuda_check.h"
#include "runtime/status.h"

namespace cellserve::lstm_bench {

class Graph {
 public:
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
  }
  Status Capture(cudaStream_t s, const Enqueue& body) {
    CS_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    Status st = body();
    cudaGraph_t graph = nullptr;
    cudaError_t end = cudaStreamEndCapture(s, &graph);
    if (!st.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return st.WithContext("during graph capture");
    }
    CS_CUDA(end);
    graph_ = graph;
    CS_CUDA(cudaGraphInstantiate(&exec_, graph_, 0));
    return OkStatus();
  }
  Status Launch(cudaStream_t s) const { return cuda::CudaStatus(cudaGraphLaunch(exec_, s), "cudaGraphLaunch"); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// Two graphs, one per ping-pong direction, of any step type (Step::Enqueue(int direction)).
template <typename Step>
Status CaptureBoth(Context& ctx, const Step& step, Graph graphs[2]) {
  for (int d = 0; d < 2; ++d) RETURN_IF_ERROR(graphs[d].Capture(ctx.stream, [&] { return step.Enqueue(d); }));
  return OkStatus();
}

// `n` graph launches alternating the two directions, starting where the last call left off
// (*parity); ctx, graphs and parity must outlive the returned Enqueue.
inline Enqueue PingPong(Context& ctx, Graph graphs[2], int n, int* parity) {
  return [&ctx, graphs, n, parity] {
    for (int i = 0; i < n; ++i) {
      RETURN_IF_ERROR(graphs[*parity].Launch(ctx.stream));
      *parity ^= 1;
    }
    return OkStatus();
  };
}

}  // namespace cellserve::lstm_bench
