#!/usr/bin/env python3
"""Kernel benchmark: our batched LSTM step vs the bare sgemm of the same shape vs PyTorch.

Runs, in one go on this machine, build/bench/bench_kernels (Google Benchmark: OpenBLAS sgemm,
our packed GEMM alone, our full LSTM step = gather + GEMM + fused pass) and
bench/pytorch_lstm_cell.py (torch.nn.LSTMCell, same shapes, same thread count), prints a table
of medians and ratios, and rewrites the kernel section of docs/BENCHMARKS.md.

Run with Debian's python (it has torch):  /usr/bin/python3 bench/run_kernel_bench.py
Targets (issue: foundation): step <= 1.2x bare sgemm, and faster than nn.LSTMCell, at H=512 and
batch 1, 8, 64, 256.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- kernel-bench:begin -->", "<!-- kernel-bench:end -->"


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            model = m.group(1).strip() if m else model
    except OSError:
        pass
    core = os.environ.get("OPENBLAS_CORETYPE", "auto")
    return f"{model}, {os.cpu_count()} cores, OpenBLAS core type {core}, {platform.system()}"


def run_ours(binary, min_time, repeats):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    cmd = [binary, f"--benchmark_out={path}", "--benchmark_out_format=json",
           f"--benchmark_min_time={min_time}", f"--benchmark_repetitions={repeats}",
           "--benchmark_report_aggregates_only=true"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        data = json.load(f)
    os.unlink(path)
    rows = {"isa": data.get("context", {}).get("gemm_isa", "unknown")}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median" or b.get("error_occurred"):
            continue
        name, batch = re.match(r"BM_(\w+)/(\d+)/", b["name"]).groups()
        unit = {"us": 1.0, "ms": 1000.0, "ns": 0.001}[b["time_unit"]]
        rows.setdefault(int(batch), {})[name] = b["real_time"] * unit
    return rows


def run_torch(batches, threads, min_time, repeats):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = out.name
    cmd = ["/usr/bin/python3", os.path.join(ROOT, "bench", "pytorch_lstm_cell.py"), "--hidden", "512",
           "--input", "512", "--batches", ",".join(map(str, batches)), "--threads", str(threads),
           "--min-time-s", str(min_time), "--repeats", str(repeats), "--json", path]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        data = json.load(f)
    os.unlink(path)
    return {row["batch"]: row["us_per_step"] for row in data}


def md_table(ours, batches, columns):
    """A markdown table with a row per batch that has every benchmark it names. columns: (header,
    NAME) for that benchmark's time in us, or (header, (A, B)) for the speed-up A / B."""
    names = {n for _, c in columns for n in (c if isinstance(c, tuple) else (c,))}
    lines = ["| batch | " + " | ".join(h for h, _ in columns) + " |", "|---:|" + "---:|" * len(columns)]
    for b in batches:
        r = ours[b]
        if names <= r.keys():
            cells = [f"{r[c[0]] / r[c[1]]:.2f}x" if isinstance(c, tuple) else f"{r[c]:.0f}" for _, c in columns]
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_rows(text):
    return len(text.splitlines()) - 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="build folder (default build/)")
    ap.add_argument("--min-time-s", type=float, default=0.3, help="per repetition (default 0.3)")
    ap.add_argument("--repeats", type=int, default=5, help="repetitions, medians reported (default 5)")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"),
                    help="markdown file whose kernel section is rewritten ('' to skip)")
    args = ap.parse_args()

    binary = os.path.join(args.build, "bench", "bench_kernels")
    if not os.path.exists(binary):
        sys.exit(f"{binary} not found: run ./cellserve.sh build first")
    ours = run_ours(binary, args.min_time_s, args.repeats)
    isa = ours.pop("isa")
    batches = sorted(ours)
    torch = run_torch(batches, 1, args.min_time_s, args.repeats)

    lines = [f"| batch | OpenBLAS sgemm (us) | our GEMM, AVX2 (us) | our GEMM, {isa} (us) "
             "| our LSTM step (us) | nn.LSTMCell (us) | step / sgemm | LSTMCell / step |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ok = True
    for b in batches:
        r = ours[b]
        step, sgemm, gemm, cell = r["LstmStep"], r["Sgemm"], r["PackedGemm"], torch[b]
        avx2 = f"{r['PackedGemmAvx2']:.0f}" if "PackedGemmAvx2" in r else "n/a"
        ok &= step <= 1.2 * sgemm and step < cell
        lines.append(f"| {b} | {sgemm:.0f} | {avx2} | {gemm:.0f} | {step:.0f} | {cell:.0f} | "
                     f"{step / sgemm:.2f}x | {cell / step:.2f}x |")
    table = "\n".join(lines)
    print("\n" + table + "\n")
    # The reading below quotes these, from this run (it used to be fixed text).
    big = [b for b in batches if b >= 64]
    extra = [ours[b]["LstmStep"] / ours[b]["PackedGemm"] - 1 for b in batches]
    extra_text = f"{100 * min(extra):.0f}-{100 * max(extra):.0f}%"
    avx2_vs_blas = [ours[b]["PackedGemmAvx2"] / ours[b]["Sgemm"] for b in big if "PackedGemmAvx2" in ours[b]]
    avx2_text = (f"takes {min(avx2_vs_blas):.2f}-{max(avx2_vs_blas):.2f}x OpenBLAS's time" if avx2_vs_blas
                 else "was not measured")
    print("targets (step <= 1.2x sgemm, faster than nn.LSTMCell):", "met" if ok else "NOT met")

    # A first layer's step (x = embedding[token]), its input folded into a per-token table or not.
    folded_table = md_table(ours, batches, [("first-layer step (us)", "TokenLstmStep"),
                                         ("the same, input folded (us)", "TokenLstmStepFolded"),
                                         ("speed-up", ("TokenLstmStep", "TokenLstmStepFolded"))])
    print("\n" + folded_table + "\n")

    # Weights stored as BF16 (F16): the same step and GEMM with 16-bit panels beside the fp32 ones.
    narrow_table = md_table(ours, batches, [("our GEMM (us)", "PackedGemm"), ("with bf16 panels (us)", "PackedGemmBf16"),
                                         ("with f16 panels (us)", "PackedGemmF16"), ("our LSTM step (us)", "LstmStep"),
                                         ("the same, BF16 model (us)", "LstmStepBf16"),
                                         ("step speed-up", ("LstmStep", "LstmStepBf16"))])
    print("\n" + narrow_table + "\n")

    # --cpu-precision bf16: the GEMM and the steps on AMX tiles (skipped where the CPU has no AMX).
    amx_table = md_table(ours, batches, [("our GEMM (us)", "PackedGemm"), ("AMX bf16 GEMM (us)", "AmxGemm"),
                                      ("speed-up", ("PackedGemm", "AmxGemm")), ("our LSTM step (us)", "LstmStep"),
                                      ("bf16 compute (us)", "LstmStepBf16Compute"),
                                      ("speed-up", ("LstmStep", "LstmStepBf16Compute")),
                                      ("first-layer step, folded (us)", "TokenLstmStepFolded"),
                                      ("bf16 compute (us)", "TokenLstmStepFoldedBf16Compute"),
                                      ("speed-up", ("TokenLstmStepFolded", "TokenLstmStepFoldedBf16Compute"))])
    if table_rows(amx_table) == 0:
        amx_table = "(not measured: this CPU has no AMX-BF16)"
    print("\n" + amx_table + "\n")

    if args.doc:
        when = time.strftime("%Y-%m-%d")
        section = f"""{BEGIN}
## CPU LSTM step (kernel)

One LSTM step at H = 512 (input 512, so the GEMM is [B, 1024] x [1024, 2048]), one thread for
everything (`openblas_set_num_threads(1)`, `torch.set_num_threads(1)` and `OMP/OPENBLAS_NUM_THREADS=1`).
Medians of {args.repeats} repetitions, all measured in one run on {when}.

- *OpenBLAS sgemm*: the bare `cblas_sgemm` of the step's shape (X · Wᵀ), the bar to be within 1.2x of.
- *our GEMM*: the batch-invariant packed GEMM alone (kernels/cpu/packed_gemm.h), on the 6x16 AVX2
  micro-kernel and on the widest one this CPU has (`{isa}`, what the server uses; AVX-512 is 6x32).
  Every micro-kernel gives the same bits (tested), so the choice is only about speed.
- *our LSTM step*: what the server runs: gather inputs by slot index, one GEMM for all four gates,
  one fused AVX2 pass (bias, sigmoid/tanh, c and h) into the output slots.
- *nn.LSTMCell*: PyTorch {subprocess.run(['/usr/bin/python3', '-c', 'import torch; print(torch.__version__)'], capture_output=True, text=True).stdout.strip()} (Debian), same shapes, `no_grad`.

{table}

Targets: step ≤ 1.2x sgemm and faster than nn.LSTMCell at every batch: **{"met" if ok else "NOT met"}**.

Reading it: at batch 1 and 8 the step is memory-bound on the 8 MB of gate weights; OpenBLAS
repacks them on every call, our GEMM packs them once when the model is registered, hence the
2-4x. From batch 64 on the work is compute-bound: the 6x16 AVX2 tile {avx2_text} (OpenBLAS
picks its own kernel for this CPU), and where the CPU has AVX-512 the 6x32 tile does twice the
work per instruction (what it gains over AVX2 is in the table). The gather and the fused pass add
{extra_text} to the GEMM's time (batch 1 to {batches[-1]}). The packed
GEMM is also batch-invariant (docs/ARCHITECTURE.md), which OpenBLAS's sgemm is not. (Google Benchmark prints "Library was
built as DEBUG": that is Debian's libbenchmark itself; our code is built Release.)

**A first layer's step, input folded** (kernels/cpu/cell_weights.h; on by default, `--fold-max-mib`):
x = embedding[token] depends on the token alone, so its part of the gates, W_x x + b, is
precomputed per vocabulary entry at registration, and the step multiplies only W_h h (a [B, 512] x
[512, 2048] GEMM) and adds the token's row in the fused pass. Same H = 512, E = 512, the demo
model's vocabulary of 32,000 (a 250 MiB table, rows read from memory), each row with a previous
state:

{folded_table}

**Weights stored as BF16 or F16** (kernels/cpu/packed_gemm.h): when every weight of a matrix is
exactly a bf16 (fp16) value, as a model stored as BF16 (F16) has, the packed matrix also keeps
16-bit panels, and products of up to 24 rows use them: the micro-kernels widen each weight
exactly as they load it, so they stream half the bytes and give the same bits (tested). Larger
products keep the fp32 panels, because there the step is compute-bound and widening costs (up to
1.2x at batch 256 when it was tried everywhere; the two break even at about 32 rows). The price is
the 16-bit copy: 1.5x the packed bytes for such models.

{narrow_table}

**bf16 compute on AMX tiles** (`--cpu-precision bf16`, kernels/cpu/amx_gemm.h; off by default):
every GEMM's inputs are rounded to bf16 and multiplied on the CPU's AMX tiles with fp32
accumulation; the folded tables, the fused pass and the states stay fp32. Not the fp32 results
(about 2^-9 relative per product; docs/ARCHITECTURE.md), still independent of batch-mates.
A step gains less than its GEMM: the gather and the fused pass are the same fp32 code as before,
and at large batches they become a third or more of a bf16 step.

{amx_table}

Machine: {machine()}. Command: `/usr/bin/python3 bench/run_kernel_bench.py` (after `./cellserve.sh build`).
The machine is small and shared; ratios from one run are what to compare, not absolute times.
{END}"""
        os.makedirs(os.path.dirname(args.doc), exist_ok=True)
        text = open(args.doc).read() if os.path.exists(args.doc) else "# Benchmarks\n\nMeasured figures only: each section says the command, the machine and the date.\n\n"
        if BEGIN in text and END in text:
            text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        with open(args.doc, "w") as f:
            f.write(text)
        print("wrote", args.doc)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
