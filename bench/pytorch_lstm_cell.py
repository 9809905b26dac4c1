#!/usr/bin/python3
"""Times PyTorch's nn.LSTMCell on the CPU: the baseline for the cellserve LSTM-cell kernel benchmark.

  /usr/bin/python3 bench/pytorch_lstm_cell.py --hidden 512 --input 512 --batches 1,8,64,256 \\
      --threads 1 --json OUT.json --min-time-s 0.5

For each batch size B: x [B, input], (h, c) [B, hidden] random in (-1, 1); under torch.no_grad()
the timed call is `h, c = cell(x, (h, c))` (the output is fed back, as in a recurrence).
--threads sets torch.set_num_threads and OMP/OPENBLAS/MKL_NUM_THREADS (before torch is imported,
so OpenBLAS's own thread pool obeys it too). After a warm-up, each of --repeats repetitions runs
calls until --min-time-s has passed and gives a per-call time; us_per_step is the median of the
repetitions (also reported: the mean over all calls and the fastest repetition).
Prints a table and, with --json, writes
  [{"batch": B, "hidden": H, "input": I, "threads": T, "us_per_step": median, ...}, ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import List

# torch is imported in main(), after the thread-count environment is set: Debian's torch uses
# OpenBLAS (pthreads), whose thread pool torch.set_num_threads does not control.
torch = None


def parse_batches(text: str) -> List[int]:
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batches expects a comma list of integers, got {text!r}")
    if not batches or any(b < 1 for b in batches):
        raise argparse.ArgumentTypeError(f"--batches expects positive integers, got {text!r}")
    return batches


def time_batch(cell: "torch.nn.LSTMCell", batch: int, args) -> dict:
    g = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, args.input, generator=g) * 2 - 1
    h = torch.rand(batch, args.hidden, generator=g) * 2 - 1
    c = torch.rand(batch, args.hidden, generator=g) * 2 - 1
    with torch.no_grad():
        # warm-up: at least --warmup calls and ~10% of the measuring time
        t0 = time.perf_counter()
        n = 0
        while n < args.warmup or time.perf_counter() - t0 < 0.1 * args.min_time_s:
            h, c = cell(x, (h, c))
            n += 1
        per_rep, total_calls, total_time = [], 0, 0.0
        for _ in range(args.repeats):
            calls = 0
            start = time.perf_counter()
            while True:
                h, c = cell(x, (h, c))
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= args.min_time_s and calls >= args.min_calls:
                    break
            per_rep.append(elapsed / calls * 1e6)
            total_calls += calls
            total_time += elapsed
    if not torch.isfinite(h).all():
        raise RuntimeError("non-finite LSTMCell output")
    us = statistics.median(per_rep)
    flops = 2.0 * batch * 4 * args.hidden * (args.input + args.hidden)  # the two GEMMs
    return {"batch": batch, "hidden": args.hidden, "input": args.input, "threads": args.threads,
            "us_per_step": us, "us_per_step_mean": total_time / total_calls * 1e6,
            "us_per_step_min": min(per_rep), "repeats": args.repeats, "calls": total_calls,
            "gflops": flops / (us * 1e-6) / 1e9, "impl": "torch.nn.LSTMCell",
            "torch": torch.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Time torch.nn.LSTMCell (CPU, float32, no_grad) per call for several batch "
                    "sizes; the PyTorch baseline of the LSTM-cell kernel benchmark.")
    ap.add_argument("--hidden", type=int, default=512, help="hidden size H (default 512)")
    ap.add_argument("--input", type=int, default=512, help="input size (default 512)")
    ap.add_argument("--batches", type=parse_batches, default=[1, 8, 64, 256],
                    help="comma-separated batch sizes (default 1,8,64,256)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads: torch.set_num_threads and OMP/OPENBLAS/MKL_NUM_THREADS "
                         "(default 1)")
    ap.add_argument("--min-time-s", type=float, default=0.5,
                    help="minimum seconds per repetition (default 0.5)")
    ap.add_argument("--repeats", type=int, default=5, help="repetitions; median reported (default 5)")
    ap.add_argument("--warmup", type=int, default=10, help="warm-up calls at least (default 10)")
    ap.add_argument("--min-calls", type=int, default=3, help="calls per repetition at least (default 3)")
    ap.add_argument("--json", metavar="OUT", help="write results as a JSON list to OUT")
    args = ap.parse_args(argv)
    for name in ("hidden", "input", "threads", "repeats", "min_calls"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.min_time_s <= 0:
        ap.error("--min-time-s must be > 0")

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    global torch
    import torch as _torch
    torch = _torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(args.input, args.hidden).eval()
    print(f"torch {torch.__version__} nn.LSTMCell(input={args.input}, hidden={args.hidden}) float32, "
          f"threads={torch.get_num_threads()}, {platform.processor() or platform.machine()}; "
          f"median of {args.repeats} x >= {args.min_time_s} s")
    print(f"{'batch':>6} {'us/step (median)':>17} {'mean':>10} {'min':>10} {'GFLOP/s':>8} {'calls':>7}")
    results = []
    for batch in args.batches:
        r = time_batch(cell, batch, args)
        results.append(r)
        print(f"{batch:>6} {r['us_per_step']:>17.2f} {r['us_per_step_mean']:>10.2f} "
              f"{r['us_per_step_min']:>10.2f} {r['gflops']:>8.2f} {r['calls']:>7}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
