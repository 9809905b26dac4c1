#!/usr/bin/env bash
# Every check of the CUDA backend, in one run that fits a short GPU session (about 8 minutes on
# an H100), from the bundle tools/gpu/bundle.sh made. Run from the repository root:
#   bash .gpu-bundle/run.sh OUT_DIR
# Each step has its own time limit and log; a failing step does not stop the others. OUT_DIR gets
# few files, as a device call brings back at most 8: the benchmarks' three JSON files, and
# gpu-logs.tar.gz with every step's log, packed again after each step (so a run cut short still
# brings back the logs of the steps that ended).
# Steps: GPU tests (CUDA vs CPU, every kind, batch 1-512), the serving path on the GPU (LocalCluster
# --backend cuda vs the CPU), goldens on the CUDA backend, the kernel benchmark against cuDNN
# (JSON), the end-to-end benchmark at H=1024 on one GPU, cellular vs padded (JSON), what the RPC
# front door adds at low load on a GPU node in three placements (issue 5; JSON), and
# compute-sanitizer memcheck on a subset.
# The whole run keeps within RUN_BUDGET_S seconds (default 560, under a device call's 600 s): each
# step gets the smaller of its own limit and what is left, and a step with under 10 s left is
# skipped and says so, so the logs of the steps that ran always come back. The steps run in order
# of what a short session most needs: correctness, then the benchmarks, then memcheck (the
# slowest).
set -uo pipefail
BUDGET="${RUN_BUDGET_S:-560}"
BUNDLE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:?usage: run.sh OUT_DIR}"
mkdir -p "$OUT"
LOGS="$(mktemp -d)"  # the steps' logs, packed into $OUT/gpu-logs.tar.gz
pack_logs() {
  tar -czf "$OUT/.gpu-logs.tmp" -C "$LOGS" . && mv "$OUT/.gpu-logs.tmp" "$OUT/gpu-logs.tar.gz"
}
# CUDA's libraries from the machine: the toolkit's, and cuDNN/NCCL from Python wheels if that is
# where they are.
extra=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [[ -d "$d" ]] && extra+=":$d"; done
for lib in libcudnn.so.9 libnccl.so.2 libcublasLt.so.13; do
  found="$(find / -xdev -name "$lib" -not -path '*/proc/*' 2>/dev/null | head -1)"
  [[ -n "$found" ]] && extra+=":$(dirname "$found")"
done
export LD_LIBRARY_PATH="$BUNDLE/lib${extra}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CELLSERVE_GOLDEN_DIR="$PWD/tests/golden/data"
status=0
step() {  # step NAME SECONDS COMMAND...
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - SECONDS))
  if ((left < 10)); then
    echo "=== $name: skipped, ${left}s of the ${BUDGET}s budget left" | tee "$LOGS/$name.log"
    status=1
    pack_logs
    return
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "    rc=$rc in $((SECONDS - t0))s; tail:"
  tail -5 "$LOGS/$name.log" | sed 's/^/    /'
  ((rc == 0)) || status=1
  pack_logs
}
nvidia-smi -L || true
step gpu_tests 180 "$BUNDLE/bin/cuda_backend_test"
step gpu_cluster 120 "$BUNDLE/bin/cuda_cluster_test"
step golden_cuda 60 "$BUNDLE/bin/golden_cuda_test"
step kernel_bench 180 "$BUNDLE/bin/bench_cuda_lstm" --quick --json "$OUT/gpu_kernel_bench.json"
repo="$(mktemp -d)"
gunzip -c "$BUNDLE/sotu_sentences.txt.gz" >"$repo/sotu_sentences.txt"
"$BUNDLE/bin/cellserve" model init --repo "$repo" --name lstm1024 --kind lstm --hidden 1024 --embed 1024 \
  --layers 1 --vocab 32000 --classes 2 --seed 1 --init-scale 0.25 >/dev/null
step e2e_bench 300 "$BUNDLE/bin/cellserve" bench --model-repo "$repo" --model lstm1024 --backend cuda --devices 1 \
  --policy cellular,padded --rates auto --duration-s 5 --corpus "$repo/sotu_sentences.txt" \
  --json "$OUT/gpu_e2e_bench.json"
# bench_rpc finds the plugin next to itself: the bundle's bin/.
step rpc_bench 90 "$BUNDLE/bin/bench_rpc" --model-repo "$repo" --model lstm1024 --corpus "$repo/sotu_sentences.txt" \
  --setups cuda --requests 200 --rounds 2 --json "$OUT/gpu_rpc_bench.json"
if command -v compute-sanitizer >/dev/null; then
  step memcheck 240 bash tests/gpu/memcheck.sh "$(command -v compute-sanitizer)" "$BUNDLE/bin/cuda_backend_test" \
    'Kinds/CudaMatchesCpu.*fp32*:CudaDeviceTest.*'
else
  echo "=== memcheck: compute-sanitizer not on PATH: skipped"
fi
pack_logs
echo "=== done: $( ((status == 0)) && echo 'every step passed' || echo 'some step FAILED' ) (logs in $OUT/gpu-logs.tar.gz)"
exit $status
