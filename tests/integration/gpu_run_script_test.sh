#!/usr/bin/env bash
# tools/gpu/run.sh (the one-call GPU check) on a bundle of stand-in programs, so that its own
# bookkeeping is tested where there is no GPU: a GPU session is short and rare, and a script that
# reports a pass for tests that never ran, or a failure for a machine's limit, wastes it.
# Checks: every step runs and its log comes back; the test programs see CELLSERVE_REQUIRE_GPU=1;
# a failing step fails the run and the others still run; memcheck is skipped, not failed, where
# compute-sanitizer cannot use the GPU ("Device not supported", as under gVisor) or is not
# installed; cpu_bf16 is skipped where the CPU's AMX tests skip; a step past its time is a
# failure, and the steps the budget leaves no time for are named as not run.
# Usage: gpu_run_script_test.sh (from anywhere; it runs run.sh from the repository root).
source "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

# The bundle as tools/gpu/bundle.sh lays it out, with stand-ins in bin/. Each records its name,
# its arguments and CELLSERVE_REQUIRE_GPU in $WORK/calls; STUB_FAIL=NAME makes NAME exit 1,
# STUB_SLEEP=NAME makes it sleep 60 s and STUB_SKIP=NAME makes it report a skipped test.
BUNDLE="$WORK/bundle"
mkdir -p "$BUNDLE/bin" "$BUNDLE/lib" "$WORK/path"
cp "$ROOT/tools/gpu/run.sh" "$BUNDLE/run.sh"
echo "one sentence." | gzip >"$BUNDLE/sotu_sentences.txt.gz"
for name in cuda_backend_test cuda_cluster_test golden_cuda_test golden_test kernels_test bench_cuda_lstm bench_rpc \
  cellserve; do
  cat >"$BUNDLE/bin/$name" <<EOF
#!/usr/bin/env bash
echo "$name \$* REQUIRE_GPU=\${CELLSERVE_REQUIRE_GPU:-unset}" >>"$WORK/calls"
echo "LD_LIBRARY_PATH=\$LD_LIBRARY_PATH" >>"$WORK/env"
[[ "\${STUB_SLEEP:-}" == "$name" ]] && exec sleep 60
[[ "\${STUB_FAIL:-}" == "$name" ]] && { echo "[  FAILED  ] $name"; exit 1; }
[[ "\${STUB_SKIP:-}" == "$name" ]] && { echo "[  SKIPPED ] $name.Test"; echo "[  PASSED  ] 0 tests."; exit 0; }
# The JSON file a benchmark writes (--json FILE).
while ((\$#)); do [[ "\$1" == --json ]] && echo '{}' >"\$2"; shift; done
echo "[  PASSED  ] $name"
EOF
done
# compute-sanitizer: runs the program it is given, or refuses the device (STUB_SANITIZER=unsupported).
cat >"$WORK/path/compute-sanitizer" <<'EOF'
#!/usr/bin/env bash
if [[ "${STUB_SANITIZER:-}" == unsupported ]]; then
  echo "========= Error: Device not supported"
  echo "========= Program hit cudaErrorUnknown (error 999) due to \"unknown error\" on CUDA API call to cudaMalloc."
  exit 1
fi
while [[ "$1" == --* ]]; do [[ "$1" == --tool || "$1" == --leak-check || "$1" == --error-exitcode ]] && shift; shift; done
"$@" && echo "========= ERROR SUMMARY: 0 errors"
EOF
# nvidia-smi: one GPU, driver $STUB_DRIVER (default 580.65).
cat >"$WORK/path/nvidia-smi" <<'END'
#!/usr/bin/env bash
case "$*" in
  -L) echo "GPU 0: stub" ;;
  *driver_version*) echo "${STUB_DRIVER:-580.65}" ;;
esac
END
chmod +x "$BUNDLE"/bin/* "$WORK/path/compute-sanitizer" "$WORK/path/nvidia-smi"

# run_gpu NAME [VAR=VALUE...]: run.sh from the repository root into $WORK/NAME.out; its output in
# $WORK/NAME.log, its status in RC. No CUDA installation is seen (CUDA_HOME and the library search
# point at a folder of the test's own), so the time budget is the steps' alone.
run_gpu() {
  local name="$1"
  shift
  : >"$WORK/calls"
  rm -rf "$WORK/tmp" && mkdir "$WORK/tmp"
  (cd "$ROOT" && env CUDA_HOME="$WORK/no-cuda" CELLSERVE_GPU_LIB_ROOT="$WORK/no-cuda" TMPDIR="$WORK/tmp" \
    PATH="$WORK/path:/usr/bin:/bin" "$@" bash "$BUNDLE/run.sh" "$WORK/$name.out") >"$WORK/$name.log" 2>&1
  RC=$?
  # run.sh's temporary folders (logs, the benchmark's model repository) go when it ends.
  [[ -z "$(ls -A "$WORK/tmp")" ]] || bad "$name: run.sh left in TMPDIR: $(ls "$WORK/tmp" | tr '\n' ' ')"
}
summary() { grep '^=== done:' "$WORK/$1.log"; }
logs_of() { tar -tzf "$WORK/$1.out/gpu-logs.tar.gz" | sed 's|^\./||' | grep . | LC_ALL=C sort | tr '\n' ' '; }

all="gpu_tests, gpu_cluster, golden_cuda, cpu_bf16, kernel_bench, e2e_bench, rpc_bench, memcheck"

# A library where a Python wheel would put it, in a folder with a space in its name.
mkdir -p "$WORK/no-cuda/site packages/nvidia/cudnn/lib"
touch "$WORK/no-cuda/site packages/nvidia/cudnn/lib/libcudnn.so.9"
run_gpu pass
if [[ $RC == 0 ]] && summary pass | grep -qF "passed: $all; failed: none; skipped: none; not run for time: none"; then
  ok "every step passes: exit 0, each named as passed"
else
  bad "every step passes: exit $RC" "$(cat "$WORK/pass.log")"
fi
want_logs="cpu_bf16.log e2e_bench.log golden_cuda.log gpu_cluster.log gpu_tests.log kernel_bench.log memcheck.log rpc_bench.log "
[[ "$(logs_of pass)" == "$want_logs" ]] && ok "every step's log comes back" || bad "logs: $(logs_of pass)"
for json in gpu_kernel_bench.json gpu_e2e_bench.json gpu_rpc_bench.json; do
  [[ -f "$WORK/pass.out/$json" ]] || bad "no $json in the output folder"
done
if grep -qF "LD_LIBRARY_PATH=$BUNDLE/lib:$WORK/no-cuda/site packages/nvidia/cudnn/lib" "$WORK/env"; then
  ok "CUDA libraries found outside the toolkit (a wheel's folder, with a space) are on LD_LIBRARY_PATH"
else
  bad "library search" "$(sort -u "$WORK/env")"
fi
tests_seen="$(grep -cE '^(cuda_backend_test|cuda_cluster_test|golden_cuda_test) .*REQUIRE_GPU=1$' "$WORK/calls")"
unset_seen="$(grep -c 'REQUIRE_GPU=unset' "$WORK/calls")"
if ((tests_seen >= 5 && unset_seen == 0)); then  # 3 test steps, memcheck's probes and run
  ok "the GPU tests run with CELLSERVE_REQUIRE_GPU=1 (a skip fails them)"
else
  bad "CELLSERVE_REQUIRE_GPU: $tests_seen test runs saw it, $unset_seen calls did not" "$(cat "$WORK/calls")"
fi
grep -q "^cuda_backend_test --gtest_filter=Kinds/CudaMatchesCpu.\*fp32\*:CudaDeviceTest.\*-\*Nccl\*:\*OutOfMemory\*" "$WORK/calls" &&
  ok "memcheck runs the test subset under the sanitizer" || bad "memcheck's run" "$(cat "$WORK/calls")"

grep -q "older than CUDA 13 needs" "$WORK/pass.log" && bad "a driver of 580 was warned about" "$(cat "$WORK/pass.log")"
run_gpu old_driver STUB_DRIVER=535.104.05
if grep -q "NVIDIA driver 535.104.05 is older than CUDA 13 needs (580)" "$WORK/old_driver.log"; then
  ok "a driver older than CUDA 13 needs is said first"
else
  bad "old driver not warned about" "$(cat "$WORK/old_driver.log")"
fi

run_gpu golden_fails STUB_FAIL=golden_cuda_test
if [[ $RC == 1 ]] && summary golden_fails | grep -qF "passed: gpu_tests, gpu_cluster, cpu_bf16, kernel_bench, e2e_bench, rpc_bench, memcheck; failed: golden_cuda;"; then
  ok "a failing step fails the run (exit 1) and the steps after it still run"
else
  bad "a failing step: exit $RC" "$(cat "$WORK/golden_fails.log")"
fi

run_gpu no_amx STUB_SKIP=kernels_test
if [[ $RC == 0 ]] && summary no_amx | grep -qF "failed: none; skipped: cpu_bf16;" &&
  ! grep -q "^golden_test" "$WORK/calls"; then
  ok "cpu_bf16 is skipped, not passed, where the AMX tests skip (and the goldens are not run for it)"
else
  bad "no AMX: exit $RC" "$(cat "$WORK/no_amx.log")"
fi
run_gpu amx_fails STUB_FAIL=golden_test
if [[ $RC == 1 ]] && summary amx_fails | grep -qF "failed: cpu_bf16;"; then
  ok "a bf16 golden that fails fails cpu_bf16"
else
  bad "bf16 goldens failing: exit $RC" "$(cat "$WORK/amx_fails.log")"
fi

run_gpu gvisor STUB_SANITIZER=unsupported
if [[ $RC == 0 ]] && summary gvisor | grep -qF "failed: none; skipped: memcheck;" &&
  tar -xzOf "$WORK/gvisor.out/gpu-logs.tar.gz" ./memcheck.log | grep -q "cannot use this GPU"; then
  ok "memcheck is skipped, not failed, where the sanitizer refuses the device (gVisor)"
else
  bad "sanitizer refusing the device: exit $RC" "$(cat "$WORK/gvisor.log")"
fi

mv "$WORK/path/compute-sanitizer" "$WORK/compute-sanitizer.off"
run_gpu no_sanitizer
if [[ $RC == 0 ]] && summary no_sanitizer | grep -qF "skipped: memcheck;" &&
  grep -q "compute-sanitizer is neither on PATH nor in $WORK/no-cuda" "$WORK/no_sanitizer.log"; then
  ok "no compute-sanitizer: memcheck skipped and the run says where it looked"
else
  bad "no compute-sanitizer: exit $RC" "$(cat "$WORK/no_sanitizer.log")"
fi
mkdir -p "$WORK/no-cuda/bin"
mv "$WORK/compute-sanitizer.off" "$WORK/no-cuda/bin/compute-sanitizer"
run_gpu sanitizer_in_cuda_home
if [[ $RC == 0 ]] && summary sanitizer_in_cuda_home | grep -qF "memcheck; failed: none; skipped: none;"; then
  ok "compute-sanitizer is found in \$CUDA_HOME/bin when it is not on PATH"
else
  bad "compute-sanitizer in CUDA_HOME: exit $RC" "$(cat "$WORK/sanitizer_in_cuda_home.log")"
fi

# A budget of 16 s: the first step hangs and is stopped at what is left of it; nothing after it
# has 10 s left.
run_gpu cut RUN_BUDGET_S=16 STUB_SLEEP=cuda_backend_test
if [[ $RC == 1 ]] && summary cut | grep -qE "passed: none; failed: gpu_tests \(past its [0-9]+s limit\); skipped: none; not run for time: gpu_cluster, golden_cuda, cpu_bf16, kernel_bench, e2e_bench, rpc_bench, memcheck " &&
  [[ "$(logs_of cut)" == "$want_logs" ]]; then
  ok "a step past its limit fails; the steps with no time left are named as not run, with their logs"
else
  bad "budget: exit $RC, logs $(logs_of cut)" "$(cat "$WORK/cut.log")"
fi
run_gpu cut_only RUN_BUDGET_S=0
if [[ $RC == 3 ]] && summary cut_only | grep -qF "passed: none; failed: none; skipped: none; not run for time: $all "; then
  ok "a run cut short with no failure exits 3, not 0"
else
  bad "no budget: exit $RC" "$(cat "$WORK/cut_only.log")"
fi

# The bundle as bundle.sh ships it: bin/ and lib/ packed into payload.tar.gz (a device call
# carries 64 MiB at most); run.sh unpacks it beside itself and runs every step from it.
tar -czf "$WORK/payload.tar.gz" -C "$BUNDLE" bin lib && rm -rf "$BUNDLE/bin" "$BUNDLE/lib" &&
  mv "$WORK/payload.tar.gz" "$BUNDLE/"
run_gpu packed
if [[ $RC == 0 ]] && summary packed | grep -qF "passed: $all; failed: none; skipped: none; not run for time: none" &&
  [[ "$(cut -d' ' -f1 "$WORK/calls" | LC_ALL=C sort -u | tr '\n' ' ')" == "bench_cuda_lstm bench_rpc cellserve cuda_backend_test cuda_cluster_test golden_cuda_test golden_test kernels_test " ]]; then
  ok "a packed bundle is unpacked beside run.sh and every step runs from it"
else
  bad "packed bundle: exit $RC, calls: $(cut -d' ' -f1 "$WORK/calls" | sort -u | tr '\n' ' ')" "$(cat "$WORK/packed.log")"
fi

echo "gpu_run_script: $pass passed, $failures failed"
((failures == 0))
