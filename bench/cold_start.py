#!/usr/bin/python3
"""How long `serve` takes from exec to serving, and what it holds then, for one or more builds.

For each model shape (--shapes, lstm HIDDEN:LAYERS with --vocab words, random weights, made once
in a temp folder) and each --devices count: `serve --model-repo ... --devices N` (default
--state-slots 65536), timed from exec to its "memory: ..." line, which follows "serving"; the
resident memory (VmRSS) then. The median of --runs, builds interleaved run by run so that a noisy
machine affects each alike. Prints a Markdown table (docs/BENCHMARKS.md, "Cold start").

  bench/cold_start.py --cellserve build/cellserve [--cellserve OTHER_BUILD ...]
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from ab_common import read, rss_mib, stop


def start_once(binary, repo, devices, work):
    """Seconds from exec to the memory line, and VmRSS (MiB) then."""
    log_path = os.path.join(work, "serve.log")
    with open(log_path, "w") as log:
        t0 = time.monotonic()
        serve = subprocess.Popen([binary, "serve", "--model-repo", repo, "--listen", "127.0.0.1:0",
                                  "--devices", str(devices)], stderr=log)
        try:
            while True:
                if re.search(r"memory: ", read(log_path)):
                    took = time.monotonic() - t0
                    return took, rss_mib(serve.pid)
                if serve.poll() is not None:
                    raise RuntimeError(f"{binary} serve exited {serve.returncode}: {read(log_path)}")
                if time.monotonic() - t0 > 300:
                    raise RuntimeError(f"{binary} serve did not start in 300 s: {read(log_path)}")
                time.sleep(0.01)
        finally:
            stop([serve])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cellserve", action="append", required=True, help="a build's cellserve binary (repeatable)")
    ap.add_argument("--shapes", default="512:2,1024:2,2048:2", help="HIDDEN:LAYERS,... (default: 512:2,1024:2,2048:2)")
    ap.add_argument("--vocab", type=int, default=5000, help="vocabulary of each model (default: 5000)")
    ap.add_argument("--devices", default="1,2", help="device counts, comma-separated (default: 1,2)")
    ap.add_argument("--runs", type=int, default=3, help="starts per build and setup; the median is shown (default: 3)")
    args = ap.parse_args()
    for b in args.cellserve:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            ap.error(f"{b}: not an executable file")
    try:
        shapes = [tuple(int(v) for v in s.split(":")) for s in args.shapes.split(",")]
        devices = [int(d) for d in args.devices.split(",")]
    except ValueError:
        ap.error("--shapes is HIDDEN:LAYERS,... and --devices N,...: numbers")
    if args.runs < 1 or any(len(s) != 2 or min(s) < 1 for s in shapes) or min(devices) < 1 or args.vocab < 5:
        ap.error("--runs, each hidden, layers and device count must be at least 1, --vocab at least 5")
    work = tempfile.mkdtemp(prefix="cellserve-cold-start-")
    rows = []
    try:
        for hidden, layers in shapes:
            repo = os.path.join(work, f"repo_{hidden}_{layers}")
            subprocess.run([args.cellserve[0], "model", "init", "--repo", repo, "--name", "m", "--kind", "lstm",
                            "--hidden", str(hidden), "--layers", str(layers), "--vocab", str(args.vocab),
                            "--classes", "2", "--seed", "1"], check=True, stdout=subprocess.DEVNULL)
            for d in devices:
                print(f"  hidden {hidden}, {layers} layers, {d} device(s): {args.runs} run(s) a build",
                      file=sys.stderr, flush=True)
                runs = {b: [] for b in args.cellserve}
                for _ in range(args.runs):
                    for b in args.cellserve:
                        runs[b].append(start_once(b, repo, d, work))
                for b in args.cellserve:
                    rows.append((hidden, layers, d, b, statistics.median(t for t, _ in runs[b]),
                                 statistics.median(r for _, r in runs[b])))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nlstm, vocabulary {args.vocab}, --state-slots 65536 (the default); median of {args.runs} start(s)\n")
    print("| hidden | layers | devices | build | exec to serving | resident then |")
    print("|---:|---:|---:|---|---:|---:|")
    for hidden, layers, d, b, t, r in rows:
        print(f"| {hidden} | {layers} | {d} | {b} | {t:.2f} s | {r:.0f} MiB |")


if __name__ == "__main__":
    main()
