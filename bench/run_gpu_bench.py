#!/usr/bin/env python3
"""GPU kernel benchmark (issue 7): runs bench_cuda_lstm, checks the issue's targets, and can
rewrite the "GPU kernels (issue 7)" section of docs/BENCHMARKS.md.

bench_cuda_lstm times one fp32 LSTM step at H = 512 and 1024 (input = H) and batch 1..512:
ours (gather + one cuBLAS GEMM for the four gates + fused pointwise, one CUDA graph launch per
step), the same without a graph, an unfused baseline (4 per-gate GEMMs + 10 element-wise kernels)
and cuDNN's LSTM (cudnnRNNForward on 1-step and 24-step sequences); it also measures the memory
bandwidth and checks ours against cuDNN numerically. See `bench_cuda_lstm --help`.

Targets checked here:
  1. ours (graph) at least as fast as cuDNN's 1-step call at every batch size;
  2. ours 1.3x faster than cuDNN (cuDNN / ours >= 1.3) at batch <= 32;
  3. ours at batch 1 within 2x of the time to read the LSTM weights once from GPU memory
     (4H * 2H * 4 bytes / measured bandwidth). Judged on the cold-L2 timing (weights evicted
     from L2 before the step), since back to back the weights stay in the 50 MB L2 of an
     H100; the warm figure is printed too.

Run with Debian's python:  /usr/bin/python3 bench/run_gpu_bench.py [BINARY] [--quick] [--write-docs]
BINARY defaults to build/bench/bench_cuda_lstm. Exit: 0 every target met and the correctness
check passed; 1 a target unmet or the check failed; 2 no binary or no GPU (nothing measured).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- gpu-bench:begin -->", "<!-- gpu-bench:end -->"
DEFAULT_BINARY = os.path.join("build", "bench", "bench_cuda_lstm")

# (key in the JSON rows, column title)
COLUMNS = [
    ("ours_graph_us", "ours, graph"),
    ("ours_nograph_us", "ours, no graph"),
    ("ours_cold_l2_us", "ours, cold L2"),
    ("unfused_us", "unfused"),
    ("cudnn_1step_us", "cuDNN 1 step"),
    ("cudnn_24step_per_step_us", "cuDNN 24 steps / step"),
    ("ours_24step_per_step_us", "ours 24 steps / step"),
    ("unfused_24step_per_step_us", "unfused 24 steps / step"),
]


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def cudnn_version(v):
    return f"{v // 10000}.{v % 10000 // 100}.{v % 100}" if v >= 10000 else str(v)


def fmt(v, digits=1):
    return "n/a" if v is None else f"{v:.{digits}f}"


def run_binary(binary, quick, cudnn_math):
    """Runs the bench (its output goes straight to the terminal); returns (exit status, JSON or None)."""
    if not os.path.isfile(binary) or not os.access(binary, os.X_OK):
        fail(2, f"{binary} not found or not executable: build it first "
                "(cmake -S . -B build -G Ninja && ninja -C build bench_cuda_lstm; needs nvcc)")
    fd, path = tempfile.mkstemp(suffix=".json", prefix="gpu_bench_")
    os.close(fd)
    os.unlink(path)  # the bench creates it; absent afterwards means it wrote nothing
    cmd = [binary, "--json", path] + (["--quick"] if quick else []) + ["--cudnn-math", cudnn_math]
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    data = None
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
        os.unlink(path)
    return rc, data


def fail(code, message):
    print(f"run_gpu_bench: {message}", file=sys.stderr)
    sys.exit(code)


def ratio_target(selected, bar):
    """(met, detail) for 'cuDNN / ours >= bar on every selected row'; met is None when a row
    has no cuDNN figure and no measured row misses the bar."""
    known = [(r, x) for r, x in selected if x is not None]
    missing = [f"H={r['H']} B={r['batch']}" for r, x in selected if x is None]
    bad = [f"H={r['H']} B={r['batch']} ({x:.2f}x)" for r, x in known if x < bar]
    parts = []
    if known:
        parts.append(f"lowest cuDNN / ours {min(x for _, x in known):.2f}x")
    if bad:
        parts.append(f"below {bar:.1f} at {', '.join(bad)}")
    if missing:
        parts.append(f"no cuDNN figure at {', '.join(missing)}")
    met = False if bad else (None if missing or not known else True)
    return met, "; ".join(parts) if parts else "no rows"


def evaluate(data):
    """The three targets: list of (name, met: True/False/None, detail)."""
    rows = data["rows"]
    floors = {int(h): v for h, v in data["weights_floor_us"].items()}
    targets = []

    r1 = [(r, ratio(r["cudnn_1step_us"], r["ours_graph_us"])) for r in rows]
    for name, selected, bar in (
            ("ours at least as fast as cuDNN at every batch (cuDNN / ours >= 1.0)", r1, 1.0),
            ("ours 1.3x faster than cuDNN at batch <= 32 (cuDNN / ours >= 1.3)",
             [(r, x) for r, x in r1 if r["batch"] <= 32], 1.3)):
        targets.append((name,) + ratio_target(selected, bar))

    details, met = [], []
    for r in rows:
        if r["batch"] != 1 or r["H"] not in floors:
            continue
        floor = floors[r["H"]]
        cold, warm = ratio(r["ours_cold_l2_us"], floor), ratio(r["ours_graph_us"], floor)
        if cold is not None:
            met.append(cold <= 2.0)
        details.append(f"H={r['H']}: floor {floor:.2f} us, cold L2 {fmt(cold, 2)}x, warm {fmt(warm, 2)}x")
    targets.append(("ours at batch 1 within 2x of reading the weights once (cold L2 / floor <= 2)",
                    None if not met else all(met), "; ".join(details) if details else "no batch-1 rows"))
    return targets


def check_passed(data):
    return bool(data["checks"]) and all(c["pass"] for c in data["checks"])


def markdown_table(data):
    head = "| H | batch | " + " | ".join(title + " (us)" for _, title in COLUMNS) + \
        " | cuDNN / ours | cuDNN 24 / ours 24 |"
    lines = [head, "|" + "---:|" * (len(COLUMNS) + 4)]
    for r in data["rows"]:
        cells = [str(r["H"]), str(r["batch"])] + [fmt(r[k]) for k, _ in COLUMNS]
        cells.append(fmt(ratio(r["cudnn_1step_us"], r["ours_graph_us"]), 2) + "x")
        cells.append(fmt(ratio(r["cudnn_24step_per_step_us"], r["ours_24step_per_step_us"]), 2) + "x")
        lines.append("| " + " | ".join(c.replace("n/ax", "n/a") for c in cells) + " |")
    return "\n".join(lines)


def doc_section(data, targets, command):
    dev = data["device"]
    cudnn = data.get("cudnn")
    cudnn_text = (f"cuDNN {cudnn_version(cudnn['version'])} with {cudnn['math']}" if cudnn
                  else "built without cuDNN (its columns are n/a)")
    errors = sorted({r["cudnn_error"] for r in data["rows"] if r.get("cudnn_error")})
    if errors and cudnn:
        cudnn_text += " (cuDNN failed on some rows, shown n/a: " + "; ".join(errors) + ")"
    rt = data.get("cuda_runtime", 0)
    floors = ", ".join(f"H={h}: {v:.2f} us ({4 * int(h) * 2 * int(h) * 4 / 2**20:.0f} MiB)"
                       for h, v in data["weights_floor_us"].items())
    worst_check = max((max(v for v in (c["max_diff_vs_cudnn"], c["max_diff_vs_unfused"], c["max_diff_vs_host"])
                           if v is not None) for c in data["checks"]), default=None)
    target_rows = "\n".join(f"| {name} | {detail} | {'yes' if met else ('no' if met is False else 'not measured')} |"
                            for name, met, detail in targets)
    when = datetime.date.today().isoformat()
    mode = "quick (--quick)" if data.get("quick") else "full"
    return f"""{BEGIN}
## GPU kernels (issue 7)

One fp32 LSTM step at H = 512 and 1024 (input dim = H: x is the h of another state slot, as in
an upper layer), on {dev['name']} ({dev['sm_count']} SMs, {dev['memory_bytes'] / 2**30:.0f} GiB,
L2 {dev['l2_bytes'] / 2**20:.0f} MiB, compute {dev['compute_capability']}), CUDA runtime
{rt // 1000}.{rt % 1000 // 10}, {cudnn_text}. Measured on {when}, {mode} run: median over
{data['repeats']} repetitions of {data['steps_per_repeat']} steps each, microseconds per step.

- *ours, graph*: what the server runs: `LaunchGather` (x and h_prev from state slots) + one
  `cublasGemmEx` for all four gates (fp32, `CUBLAS_COMPUTE_32F`, no TF32) + `LaunchCellPointwise`,
  captured once into a CUDA graph, one graph launch per step; states ping-pong between two sets
  of slots. *no graph*: the same three launches, plain.
- *ours, cold L2*: the graph step alone right after reading twice the L2 size, so the weights
  come from HBM; back to back (the other columns) they stay in L2.
- *unfused*: two copy kernels, four per-gate GEMMs and ten element-wise kernels (bias x4,
  sigmoid x3, tanh, c, h), also one graph: what fusion buys.
- *cuDNN*: `cudnnRNNForward` (CUDNN_LSTM, ALGO_STANDARD, inference) on a 1-step and on a
  {data['seq_steps']}-step sequence (per step = call / {data['seq_steps']}). Ours and unfused run
  {data['seq_steps']} steps as {data['ours_seq_mode']}.

{markdown_table(data)}

Memory bandwidth (device-to-device `cudaMemcpy` of 1 GiB, read + write counted, median of 5):
{data['bandwidth_gbs']:.0f} GB/s. Time to read the gate weights once at that rate: {floors}.

| target | measured | met? |
|---|---|---|
{target_rows}

Correctness: each (H, batch) step of ours agrees with cuDNN (same weights), the unfused step and
a double-precision host reference within {data['tolerance']:g} (largest difference
{fmt(worst_check, 7) if worst_check is not None else 'n/a'}): **{'PASS' if check_passed(data) else 'FAIL'}**.

Command: `{command}` (after building `bench_cuda_lstm`).
{END}"""


def write_docs(path, section):
    text = open(path).read() if os.path.exists(path) else \
        "# Benchmarks\n\nMeasured figures only: each section says the command, the machine and the date.\n\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    print("wrote", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", nargs="?", default=os.path.join(ROOT, DEFAULT_BINARY),
                    help=f"the bench binary (default {DEFAULT_BINARY})")
    ap.add_argument("--quick", action="store_true", help="pass --quick: fewer repetitions (< 1 min on an H100)")
    ap.add_argument("--cudnn-math", choices=["fma", "default"], default="fma",
                    help="cuDNN math mode (default fma: strict fp32 like ours; default allows TF32)")
    ap.add_argument("--write-docs", action="store_true",
                    help="replace (or append) the 'GPU kernels (issue 7)' section of --doc")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"), help="markdown file to update")
    ap.add_argument("--json-out", help="also keep the bench's JSON here")
    ap.add_argument("--from-json", help="skip running: evaluate (and document) a JSON the bench wrote earlier")
    args = ap.parse_args()

    if args.from_json:
        with open(args.from_json) as f:
            data = json.load(f)
        rc = 0 if check_passed(data) else 1
        command = "/usr/bin/python3 bench/run_gpu_bench.py" + (" --quick" if data.get("quick") else "")
    else:
        rc, data = run_binary(args.binary, args.quick, args.cudnn_math)
        command = "/usr/bin/python3 bench/run_gpu_bench.py" + (" --quick" if args.quick else "")
        if rc == 2:
            fail(2, "no CUDA device (bench_cuda_lstm exited 2): nothing measured, docs untouched")
        if data is None:
            fail(rc or 1, f"bench_cuda_lstm exited {rc} without writing its JSON: nothing measured, docs untouched")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(data, f, indent=1)

    targets = evaluate(data)
    print()
    for name, met, detail in targets:
        state = "met" if met else ("UNMET" if met is False else "not measured")
        print(f"target: {name}: {state} ({detail})")
    passed = check_passed(data)
    print(f"correctness check: {'PASS' if passed else 'FAIL'}")

    if args.write_docs:
        if not passed:
            fail(1, "the correctness check failed: not writing timings of a wrong kernel into the docs")
        write_docs(args.doc, doc_section(data, targets, command))
    all_met = all(met is True for _, met, _ in targets)
    return 0 if rc == 0 and passed and all_met else 1


if __name__ == "__main__":
    sys.exit(main())
