#!/usr/bin/env bash
# The benchmark programs under bench/ at toy sizes: each runs to the end and writes what its
# docs say (bench_rpc's JSON keys and per-round throughput, a sim profile router_sim can read,
# Google Benchmark's rows, burst_memory.py's and cold_start.py's tables). Their numbers are not judged here (benchmarks, not tests); this
# catches a benchmark that no longer runs before someone needs it.
# Usage: bench_smoke_test.sh PATH/TO/cellserve BENCH_DIR   (ctest passes both). About 20 s.
set -uo pipefail
CELLSERVE="$1"
BENCH="$2"
source "$(dirname "$0")/lib.sh"

REPO="$WORK/models"
"$CELLSERVE" model init --repo "$REPO" --name cls --kind lstm --hidden 32 --layers 1 --vocab 2000 \
  --classes 3 --seed 4 >/dev/null || die "model init"
CORPUS="$WORK/corpus.txt"
for i in $(seq 1 60); do
  echo "The state of the union is strong and sentence $i has a few more words in it."
  echo "Short one $i."
done >"$CORPUS"

# bench_sim_profile: a profile of our CPU kernels that router_sim then simulates with.
check "bench_sim_profile writes a profile" 0 "wrote" -- \
  "$BENCH/bench_sim_profile" --model-repo "$REPO" --model cls --out "$WORK/profile.json" --reps 1 --max-batch 8
check "the profile has an lstm cost" 0 "^ok$" -- json_get "$WORK/profile.json" \
  '"ok" if j["costs"]["lstm"]["a_us"] >= 0 and j["costs"]["lstm"]["c_us"] >= 0 else j'
check "router_sim simulates both policies on it" 0 "least_loaded at 50%.*requests measured" -- \
  "$BENCH/router_sim" --profile "$WORK/profile.json" --nodes 2 --duration-s 0.2 --loads 0.5 \
  --policies least_loaded,round_robin --corpus "$CORPUS"

# Google Benchmark programs: every benchmark runs once, briefly.
check "bench_scheduler" 0 "BM_NextRound/16" -- "$BENCH/bench_scheduler" --benchmark_min_time=0.001
check "bench_router" 0 "BM_" -- "$BENCH/bench_router" --benchmark_min_time=0.001

# bench_rpc on sim devices, two rounds: the low-load table and the throughput of each round.
check "bench_rpc runs" 0 "Most requests/s, closed loop of 8" -- \
  "$BENCH/bench_rpc" --model-repo "$REPO" --model cls --corpus "$CORPUS" --setups sim --requests 8 \
  --rounds 2 --throughput-requests 200 --concurrency 8 --json "$WORK/rpc.json" \
  --sim-profile "$(dirname "$0")/../../kernels/sim/profiles/gpu-like.json"
check "bench_rpc's JSON: latency and per-round throughput" 0 "^ok$" -- json_get "$WORK/rpc.json" '
"ok" if (j["sim"]["latency"]["local_p50_ms"] > 0 and j["sim"]["latency"]["rpc_p50_ms"] > 0
         and j["throughput"]["rounds"] == 2 and len(j["throughput"]["local_rps_by_round"]) == 2
         and len(j["throughput"]["rpc_rps_by_round"]) == 2
         and min(j["throughput"]["local_rps_by_round"] + j["throughput"]["rpc_rps_by_round"]) > 0
         and j["throughput"]["rpc_over_local"] > 0 and j["throughput_errors"] == 0) else j'
check "bench_rpc: a missing sim profile says where the default is" 2 "relative to the repository root" -- \
  bash -c 'cd "$1" && "$2" --model-repo models --model cls --corpus corpus.txt --setups sim' _ "$WORK" "$BENCH/bench_rpc"
check "bench_rpc refuses more rounds than requests" 2 "--rounds must be" -- \
  "$BENCH/bench_rpc" --model-repo "$REPO" --model cls --corpus "$CORPUS" --requests 2 --rounds 3

# burst_memory.py, one short burst: its table, one row with a reading at start and after it.
check "burst_memory.py prints its table" 0 "^\| $CELLSERVE \| [0-9.]+ MiB \| [0-9.]+ MiB \|$" -- \
  /usr/bin/python3 "$(dirname "$0")/../../bench/burst_memory.py" --cellserve "$CELLSERVE" --bursts 1 \
  --requests 2 --steps 50 --idle-s 0.2

# cold_start.py, one small shape, one start: its table, one row.
check "cold_start.py prints its table" 0 "^\| 128 \| 1 \| 1 \| $CELLSERVE \| [0-9.]+ s \| [0-9]+ MiB \|$" -- \
  /usr/bin/python3 "$(dirname "$0")/../../bench/cold_start.py" --cellserve "$CELLSERVE" --shapes 128:1 --devices 1 \
  --runs 1

echo "bench_smoke: $pass passed, $failures failed"
((failures == 0))
