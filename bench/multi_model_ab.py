#!/usr/bin/python3
"""Two models on the same devices, two cellserve builds side by side: how much a busy big model
slows a small model's requests, and what sharing costs the big one. Alternated in pairs.

For each of --pairs pairs this runs build A, then build B (B first in every other pair, so that a
machine that slows down over the run does not favour one): one `cellserve serve --devices
--devices` of that build on 127.0.0.1 serving two models made with build A's `model init`:

  big    an LSTM, hidden --big-hidden (default 1024), --big-layers layers (default 2)
  small  an LSTM, hidden 64, one layer

then, at once, `cellserve loadgen --closed-loop --big-concurrency` on big for --duration-s + 2 s
and, starting a second later, `cellserve loadgen --rate --small-rate` (open loop) on small for
--duration-s. Every build also runs small alone once (the same open loop, no big load): the
floor a shared device is measured against.

The table gives every run (small's p50/p99 and errors; big's throughput and p50/p99, loadgen's
own figures), the medians per build and B/A as the ratio of the medians.

  /usr/bin/python3 bench/multi_model_ab.py --a /tmp/old/cellserve --b build/cellserve --pairs 4

A and B may be the same binary (to see the machine's noise). Progress goes to stderr, the table
to stdout (markdown), --json writes every run. Every process started is stopped (SIGTERM, then
SIGKILL after a bounded wait), on error and on Ctrl-C too.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from ab_common import add_ab_arguments, check_ab_arguments, print_ab_table, read, run_pairs, stop, wait_for


def loadgen(binary, port, model, mode, duration_s, out, corpus):
    return subprocess.Popen([binary, "loadgen", "--addr", f"127.0.0.1:{port}", "--model", model, "--corpus", corpus,
                             *mode, "--duration-s", str(duration_s), "--json", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(p, what):
    _, err = p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"{what} loadgen failed ({p.returncode}): {err.strip()[-500:]}")


def one_run(binary, models, args, work, with_big):
    """One server of `binary`; small's open loop, beside big's closed loop when `with_big`."""
    os.makedirs(work, exist_ok=True)
    files = {n: os.path.join(work, n) for n in ("port", "serve.err", "big.json", "small.json")}
    for f in files.values():
        if os.path.exists(f):
            os.remove(f)
    procs = []
    try:
        server = subprocess.Popen([binary, "serve", "--model-repo", models, "--devices", str(args.devices), "--listen",
                                   "127.0.0.1:0", "--port-file", files["port"], "--metrics-port", "0"],
                                  stderr=open(files["serve.err"], "w"))
        procs.append(server)
        wait_for(lambda: "serving" in read(files["serve.err"]), 120, "the server (" + files["serve.err"] + ")")
        port = read(files["port"]).strip()
        big = None
        if with_big:
            big = loadgen(binary, port, "big", ["--closed-loop", str(args.big_concurrency)], args.duration_s + 2,
                          files["big.json"], args.corpus)
            procs.append(big)
            time.sleep(1)
        small = loadgen(binary, port, "small", ["--rate", str(args.small_rate)], args.duration_s, files["small.json"],
                        args.corpus)
        procs.append(small)
        finish(small, "small")
        if big:
            finish(big, "big")
    finally:
        stop(procs)
    s = json.load(open(files["small.json"]))
    r = {"small_p50_ms": s["p50_ms"], "small_p99_ms": s["p99_ms"], "small_errors": sum(s.get("errors", {}).values())}
    if with_big:
        b = json.load(open(files["big.json"]))
        r.update(big_rps=b["throughput_rps"], big_p50_ms=b["p50_ms"], big_p99_ms=b["p99_ms"],
                 big_errors=sum(b.get("errors", {}).values()))
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ab_arguments(ap, duration_s=10)
    ap.add_argument("--devices", type=int, default=2, help="the server's devices (default: 2)")
    ap.add_argument("--big-hidden", type=int, default=1024, help="big's hidden size (default: 1024)")
    ap.add_argument("--big-layers", type=int, default=2, help="big's layers (default: 2)")
    ap.add_argument("--big-concurrency", type=int, default=64, help="big's closed-loop calls in flight (default: 64)")
    ap.add_argument("--small-rate", type=float, default=20, help="small's open-loop requests/s (default: 20)")
    args = ap.parse_args()
    check_ab_arguments(ap, args)
    if min(args.devices, args.big_hidden, args.big_layers, args.big_concurrency) < 1 or not args.small_rate > 0:
        ap.error("every count, size and rate must be positive")

    work = tempfile.mkdtemp(prefix="cellserve-multi-model-ab-")
    try:
        models = os.path.join(work, "models")
        for name, hidden, layers in (("big", args.big_hidden, args.big_layers), ("small", 64, 1)):
            subprocess.run([args.a, "model", "init", "--repo", models, "--name", name, "--hidden", str(hidden),
                            "--layers", str(layers), "--vocab", "8000", "--seed", "3"], check=True,
                           stdout=subprocess.DEVNULL)
        alone = {}
        for label, binary in (("A", args.a), ("B", args.b)):
            print(f"small alone: {label} ({binary}) ...", file=sys.stderr, flush=True)
            alone[label] = one_run(binary, models, args, os.path.join(work, label), with_big=False)
        runs = run_pairs(args,
                         lambda binary, label: one_run(binary, models, args, os.path.join(work, label), with_big=True),
                         lambda r: f"small p50 {r['small_p50_ms']:.1f} ms, p99 {r['small_p99_ms']:.1f} ms; "
                                   f"big {r['big_rps']:.0f} req/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for b in "AB":
        a = alone[b]
        print(f"small alone, build {b}: p50 {a['small_p50_ms']:.1f} ms, p99 {a['small_p99_ms']:.1f} ms"
              + (f", {a['small_errors']} errors" if a["small_errors"] else ""))
    print()
    cols = [("small_p50_ms", "small p50 ms", "{:.1f}"), ("small_p99_ms", "small p99 ms", "{:.1f}"),
            ("big_rps", "big req/s", "{:.0f}"), ("big_p50_ms", "big p50 ms", "{:.0f}"),
            ("big_p99_ms", "big p99 ms", "{:.0f}")]
    med = print_ab_table(runs, cols)
    errors = [f"pair {r['pair']} {r['build']}: small {r['small_errors']}, big {r['big_errors']}" for r in runs
              if r["small_errors"] or r["big_errors"]]
    if errors:
        print("errors in some runs (the percentiles are of OK answers): " + "; ".join(errors))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "alone": alone, "runs": runs, "medians": med}, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
