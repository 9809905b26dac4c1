// The fake NCCL (tests/fakecuda/README.md). A collective here is what it is on GPUs: every rank's
// call enqueues one operation on that rank's stream, and those operations meet: each waits on its
// stream until every rank's has started, copies the root's buffer into its own, and waits until
// every rank has copied (so the root's stream does not go on to overwrite the source early).
// The streams are threads (fake_cuda.cc), so a caller that reads a rank's buffer without
// synchronizing its stream reads it too early, as on a GPU.
// The fake supports one thread driving every rank of a clique (as ncclCommInitAll's users do).
// What NCCL requires and the fake checks (an error, where NCCL would hang or misbehave):
// - that thread puts the ranks' calls between ncclGroupStart and ncclGroupEnd;
// - each rank of a communicator clique makes the same calls, in the same order, with the same
//   size, type and root; the root passes a send buffer;
// - a rank's stream is one made on that rank's device, and its buffers that device's memory (the
//   legacy stream is refused: the fake needs a stream per rank; so is a capturing stream).
// ncclCommAbort and ncclCommDestroy free the communicator; LiveObjects counts the live ones.
// ncclCommAbort also stops that rank's operations still waiting for the others (as NCCL's kernels
// stop): they return without copying. ncclGroupEnd returns once the operations are enqueued; they
// run on the streams. HangNextNcclGroup makes a group's collectives never meet (a link down), and
// FailNthCall("ncclCommGetAsyncError") reports an asynchronous ncclRemoteError once.
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "fake_cuda.h"

namespace {

struct Clique {
  explicit Clique(int n) : ranks(n), aborted(static_cast<size_t>(n), false) {}
  const int ranks;
  std::mutex mu;  // for the clique's meetings too
  std::condition_variable cv;
  std::vector<bool> aborted;  // by rank; guarded by mu
};

struct Broadcast {
  const void* send = nullptr;
  void* recv = nullptr;
  size_t bytes = 0;
  ncclDataType_t type = ncclChar;
  int root = 0;
  cudaStream_t stream = nullptr;
};

// One collective's meeting point, shared by the operations of its ranks.
struct Meeting {
  std::shared_ptr<Clique> clique;
  bool never_met = false;  // HangNextNcclGroup: no rank's wait ends but by an abort
  int arrived = 0;         // guarded by clique->mu
  int copied = 0;          // guarded by clique->mu
  // Counts `rank` in and waits for every rank; false if `rank` was aborted first.
  bool Wait(int Meeting::*counter, int rank) {
    std::unique_lock<std::mutex> lock(clique->mu);
    ++(this->*counter);
    clique->cv.notify_all();
    const size_t r = static_cast<size_t>(rank);
    clique->cv.wait(lock, [&] { return clique->aborted[r] || (!never_met && this->*counter >= clique->ranks); });
    return !clique->aborted[r];
  }
};

std::mutex g_hang_mu;
bool g_hang_next = false;                    // guarded by g_hang_mu
std::chrono::milliseconds g_hang_abort_takes{0};  // guarded by g_hang_mu

std::atomic<long> g_broadcasts_run{0};
thread_local int t_group_depth = 0;
thread_local std::vector<ncclComm_t> t_group_comms;  // the communicators with calls in this group

ncclResult_t RunGroup();

size_t TypeBytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
  }
  return 0;
}

}  // namespace

struct ncclComm {
  std::shared_ptr<Clique> clique;
  int rank = 0;
  int device = 0;
  std::vector<Broadcast> pending;  // this group's calls, in order
};

namespace fakecuda {
long NcclBroadcastsRun() { return g_broadcasts_run.load(); }
void HangNextNcclGroup(std::chrono::milliseconds abort_takes) {
  std::lock_guard<std::mutex> lock(g_hang_mu);
  g_hang_next = true;
  g_hang_abort_takes = abort_takes;
}
}  // namespace fakecuda

ncclResult_t ncclCommInitAll(ncclComm_t* comms, int ndev, const int* devlist) {
  if (fakecuda::InjectedFailure("ncclCommInitAll")) return ncclSystemError;
  int count = 0;
  if (!comms || ndev < 1 || cudaGetDeviceCount(&count) != cudaSuccess) return ncclInvalidArgument;
  std::vector<bool> used(static_cast<size_t>(count), false);
  for (int i = 0; i < ndev; ++i) {
    const int d = devlist ? devlist[i] : i;
    if (d < 0 || d >= count || used[static_cast<size_t>(d)]) return ncclInvalidArgument;
    used[static_cast<size_t>(d)] = true;
  }
  auto clique = std::make_shared<Clique>(ndev);
  for (int i = 0; i < ndev; ++i) comms[i] = new ncclComm{clique, i, devlist ? devlist[i] : i, {}};
  fakecuda::CountNcclComm(ndev);
  return ncclSuccess;
}

namespace {
ncclResult_t Free(ncclComm_t comm) {
  if (!comm) return ncclInvalidArgument;
  // Calls of this thread's open group on it are dropped with it.
  auto& open = t_group_comms;
  open.erase(std::remove(open.begin(), open.end(), comm), open.end());
  delete comm;
  fakecuda::CountNcclComm(-1);
  return ncclSuccess;
}
}  // namespace

// Operations already enqueued hold no pointer to the communicator: both only free it.
ncclResult_t ncclCommDestroy(ncclComm_t comm) { return Free(comm); }
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (comm) {
    std::lock_guard<std::mutex> lock(comm->clique->mu);
    comm->clique->aborted[static_cast<size_t>(comm->rank)] = true;
    comm->clique->cv.notify_all();
  }
  return Free(comm);
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
  if (!comm || !async_error) return ncclInvalidArgument;
  *async_error = fakecuda::InjectedFailure("ncclCommGetAsyncError") ? ncclRemoteError : ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++t_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  if (!comm || TypeBytes(datatype) == 0 || root < 0 || root >= comm->clique->ranks) return ncclInvalidArgument;
  if (count > 0 && (!recvbuff || (comm->rank == root && !sendbuff))) return ncclInvalidArgument;
  if (!stream || fakecuda::StreamOrCurrentDevice(stream) != comm->device) return ncclInvalidArgument;
  if (fakecuda::IsCapturing(stream)) return ncclInvalidUsage;  // the fake's meeting cannot be replayed
  // The buffers are the rank's device's (the root's send buffer included).
  if (count > 0 && !fakecuda::MemoryNotOn(comm->device, {comm->rank == root ? sendbuff : nullptr, recvbuff}).empty())
    return ncclInvalidArgument;
  // Outside a group, the first rank's call would wait for the others, which this thread never makes.
  if (t_group_depth == 0 && comm->clique->ranks > 1) return ncclInvalidUsage;
  if (comm->pending.empty()) t_group_comms.push_back(comm);
  comm->pending.push_back({sendbuff, recvbuff, count * TypeBytes(datatype), datatype, root, stream});
  return t_group_depth == 0 ? RunGroup() : ncclSuccess;  // a one-rank clique: at once
}

namespace {

// The communicators of `clique` among `comms`, by rank (null for a rank that made no call).
std::vector<ncclComm_t> RanksOf(const Clique* clique, const std::vector<ncclComm_t>& comms) {
  std::vector<ncclComm_t> ranks(static_cast<size_t>(clique->ranks), nullptr);
  for (ncclComm_t o : comms)
    if (o->clique.get() == clique) ranks[static_cast<size_t>(o->rank)] = o;
  return ranks;
}

// Validates and enqueues the calls collected since the outermost ncclGroupStart.
ncclResult_t RunGroup() {
  std::vector<ncclComm_t> comms;
  comms.swap(t_group_comms);
  auto drop = [&] {
    for (ncclComm_t c : comms) c->pending.clear();
  };
  if (fakecuda::InjectedFailure("ncclGroupEnd")) {
    drop();
    return ncclSystemError;
  }
  // Every rank of each clique made the same calls: else NCCL would wait forever for the missing.
  for (ncclComm_t c : comms) {
    for (ncclComm_t o : RanksOf(c->clique.get(), comms)) {
      if (!o || o->pending.size() != c->pending.size()) {
        drop();
        return ncclInvalidUsage;
      }
      for (size_t k = 0; k < c->pending.size(); ++k) {
        const Broadcast &a = c->pending[k], &b = o->pending[k];
        if (a.bytes != b.bytes || a.type != b.type || a.root != b.root) {
          drop();
          return ncclInvalidUsage;
        }
      }
    }
  }
  bool never_met = false;
  std::chrono::milliseconds abort_takes{0};
  {
    std::lock_guard<std::mutex> lock(g_hang_mu);
    never_met = std::exchange(g_hang_next, false);
    abort_takes = g_hang_abort_takes;
  }
  // Enqueue, clique by clique, call by call: each rank's operation on its own stream.
  for (ncclComm_t c : comms) {
    if (c->rank != 0) continue;  // rank 0 enqueues for its clique
    const std::vector<ncclComm_t> ranks = RanksOf(c->clique.get(), comms);
    for (size_t k = 0; k < c->pending.size(); ++k) {
      auto meeting = std::make_shared<Meeting>();
      meeting->clique = c->clique;
      meeting->never_met = never_met;
      const Broadcast& at_root = ranks[static_cast<size_t>(c->pending[k].root)]->pending[k];
      const void* source = at_root.send;
      for (ncclComm_t o : ranks) {
        const Broadcast& mine = o->pending[k];
        const int rank = o->rank;
        fakecuda::Enqueue(mine.stream, [meeting, source, mine, rank, abort_takes] {
          if (!meeting->Wait(&Meeting::arrived, rank)) {
            std::this_thread::sleep_for(abort_takes);  // an aborted kernel's last moments
            return;
          }
          if (mine.bytes > 0 && mine.recv != source) std::memcpy(mine.recv, source, mine.bytes);
          g_broadcasts_run.fetch_add(1);
          meeting->Wait(&Meeting::copied, rank);
        });
      }
    }
  }
  drop();
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclGroupEnd() {
  if (t_group_depth == 0) return ncclInvalidUsage;
  return --t_group_depth > 0 ? ncclSuccess : RunGroup();
}

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error (fake NCCL: injected)";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}
