#!/usr/bin/env bash
# Every check of the CUDA backend, in one run that fits a short GPU session (about 8 minutes on
# an H100), from the bundle tools/gpu/bundle.sh made. Run from the repository root:
#   bash .gpu-bundle/run.sh OUT_DIR
# Each step has its own time limit and log; a failing step does not stop the others. OUT_DIR gets
# few files, as a device call brings back at most 8: the benchmarks' three JSON files, and
# gpu-logs.tar.gz with every step's log, packed again after each step (so a run cut short still
# brings back the logs of the steps that ended).
# Steps: GPU tests (CUDA vs CPU, every kind, batch 1-512), the serving path on the GPU (LocalCluster
# --backend cuda vs the CPU), goldens on the CUDA backend, the CPU's bf16 (AMX) path against the
# goldens where the host CPU has AMX, the kernel benchmark against cuDNN
# (JSON), the end-to-end benchmark at H=1024 on one GPU, cellular vs padded (JSON), what the RPC
# front door adds at low load on a GPU node in three placements (issue 5; JSON), and
# compute-sanitizer memcheck on a subset.
# The whole run keeps within RUN_BUDGET_S seconds (default 560, under a device call's 600 s): each
# step gets the smaller of its own limit and what is left, and a step with under 10 s left is not
# run and says so, so the logs of the steps that ran always come back. The steps run in order of
# what a short session most needs: correctness, then the benchmarks, then memcheck (the slowest).
# CELLSERVE_REQUIRE_GPU=1 makes a GPU test that finds no usable GPU fail instead of skipping: here
# a skip would hide a driver mismatch or a plugin that did not load.
# The last line sums up: the steps that passed, failed, were skipped (exit 77: memcheck where
# compute-sanitizer cannot use the GPU, or is not installed; cpu_bf16 on a CPU without AMX), or
# were not run for lack of time.
# Exit 0 when none failed and every step ran, 1 when a step failed, 3 when the run was cut short.
set -uo pipefail
BUDGET="${RUN_BUDGET_S:-560}"
BUNDLE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:?usage: run.sh OUT_DIR}"
mkdir -p "$OUT"
# bundle.sh packs bin/ and lib/ (the 64 MiB a device call carries); unpacked here, beside this script.
if [[ -f "$BUNDLE/payload.tar.gz" ]]; then
  tar -xzf "$BUNDLE/payload.tar.gz" -C "$BUNDLE" || { echo "run.sh: cannot unpack $BUNDLE/payload.tar.gz" >&2; exit 1; }
fi
LOGS="$(mktemp -d)"  # the steps' logs, packed into $OUT/gpu-logs.tar.gz
repo=""              # the benchmark's model repository (below)
trap 'rm -rf "$LOGS" ${repo:+"$repo"}' EXIT
pack_logs() {
  tar -czf "$OUT/.gpu-logs.tmp" -C "$LOGS" . && mv "$OUT/.gpu-logs.tmp" "$OUT/gpu-logs.tar.gz"
}
# CUDA's libraries from the machine: the toolkit's, and the runtime, cuBLAS, cuDNN and NCCL from
# Python wheels if that is where they are (the first copy found of each; the toolkit's come first).
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
extra=""
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib"; do [[ -d "$d" ]] && extra+=":$d"; done
# (CELLSERVE_GPU_LIB_ROOT: where to search, default /; the test of this script points it elsewhere.)
while IFS= read -r dir; do [[ ":$extra:" == *":$dir:"* ]] || extra+=":$dir"; done < <(
  find "${CELLSERVE_GPU_LIB_ROOT:-/}" -xdev -not -path '/proc/*' \( -name libcudart.so.13 -o -name libcublas.so.13 \
    -o -name libcublasLt.so.13 -o -name libcudnn.so.9 -o -name libnccl.so.2 \) -printf '%f\t%h\n' 2>/dev/null |
    awk -F'\t' '!seen[$1]++ {print $2}')
export LD_LIBRARY_PATH="$BUNDLE/lib${extra}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CELLSERVE_GOLDEN_DIR="$PWD/tests/golden/data"
export CELLSERVE_REQUIRE_GPU=1
passed=() failed=() skipped=() not_run=()
step() {  # step NAME SECONDS COMMAND...
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - SECONDS))
  if ((left < 10)); then
    echo "=== $name: not run, ${left}s of the ${BUDGET}s budget left" | tee "$LOGS/$name.log"
    not_run+=("$name")
    pack_logs
    return
  fi
  ((limit > left)) && limit=$left
  echo "=== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "    rc=$rc in $((SECONDS - t0))s; tail:"
  tail -5 "$LOGS/$name.log" | sed 's/^/    /'
  case $rc in
    0) passed+=("$name") ;;
    77) skipped+=("$name") ;;
    124) failed+=("$name (past its ${limit}s limit)") ;;
    137) failed+=("$name (killed: past its limit and deaf to SIGTERM, or out of memory)") ;;
    *) failed+=("$name") ;;
  esac
  pack_logs
}
nvidia-smi -L || true
# CUDA 13 (what the bundle was built with) needs driver 580 or newer: with an older one every GPU
# step fails with cudaErrorInsufficientDriver, so say so first.
driver="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
if [[ -n "$driver" && "${driver%%.*}" =~ ^[0-9]+$ ]] && ((${driver%%.*} < 580)); then
  echo "=== warning: NVIDIA driver $driver is older than CUDA 13 needs (580): expect cudaErrorInsufficientDriver"
fi
step gpu_tests 180 "$BUNDLE/bin/cuda_backend_test"
step gpu_cluster 120 "$BUNDLE/bin/cuda_cluster_test"
step golden_cuda 60 "$BUNDLE/bin/golden_cuda_test"
# The CPU's AMX-BF16 path (--cpu-precision bf16), which a CPU without AMX never runs: the AMX GEMM
# against its reference, then the goldens, whose bf16 settings (folded and not) run where those
# tests did not skip. Skipped (77) where this CPU has no usable AMX-BF16.
step cpu_bf16 60 bash -c 'out="$("$1/kernels_test" --gtest_filter="GemmAmx.*:AmxPanels.*" 2>&1)"; rc=$?
  echo "$out"
  ((rc == 0)) || exit 1
  if grep -q "^\[  SKIPPED \]" <<<"$out"; then echo "cpu_bf16: skipped: no usable AMX-BF16 on this CPU"; exit 77; fi
  exec "$1/golden_test"' _ "$BUNDLE/bin"
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
sanitizer="$(command -v compute-sanitizer || true)"
for c in "$CUDA_HOME/bin/compute-sanitizer" "$CUDA_HOME/compute-sanitizer/compute-sanitizer"; do
  [[ -z "$sanitizer" && -x "$c" ]] && sanitizer="$c"
done
if [[ -n "$sanitizer" ]]; then
  step memcheck 240 bash tests/gpu/memcheck.sh "$sanitizer" "$BUNDLE/bin/cuda_backend_test" \
    'Kinds/CudaMatchesCpu.*fp32*:CudaDeviceTest.*'
else
  echo "=== memcheck: compute-sanitizer is neither on PATH nor in $CUDA_HOME: skipped" | tee "$LOGS/memcheck.log"
  skipped+=("memcheck")
fi
pack_logs
list() {  # list ITEM...: "a, b" or "none"
  (($#)) || { echo none; return; }
  local out="$1" item
  shift
  for item; do out+=", $item"; done
  echo "$out"
}
echo "=== done: passed: $(list "${passed[@]}"); failed: $(list "${failed[@]}"); skipped: $(list "${skipped[@]}");" \
  "not run for time: $(list "${not_run[@]}") (logs in $OUT/gpu-logs.tar.gz)"
((${#failed[@]} == 0)) || exit 1
((${#not_run[@]} == 0)) || exit 3
exit 0
