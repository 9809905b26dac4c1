#!/usr/bin/python3
"""What a `serve` holds once idle after bursts of long seq2seq decodes, for one or more builds.

For each build: a seq2seq model (hidden 64, max_decode_len 65536, random weights) in a temp
folder, `serve --state-slots 4096`, then --bursts bursts of --requests concurrent
`infer --max-decode-len --steps`; the resident memory (VmRSS) at start and --idle-s after each
burst. Prints a Markdown table, one row a build (docs/BENCHMARKS.md, "Memory after bursts of long
decodes"). A few minutes on 2 cores.

  bench/burst_memory.py --cellserve build/cellserve [--cellserve OTHER_BUILD ...]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from ab_common import read, rss_mib, stop, wait_for


def measure(binary, repo, args, work):
    port_file = os.path.join(work, "port")
    if os.path.exists(port_file):
        os.remove(port_file)
    log = open(os.path.join(work, "serve.log"), "w")
    serve = subprocess.Popen([binary, "serve", "--model-repo", repo, "--listen", "127.0.0.1:0", "--port-file",
                              port_file, "--state-slots", "4096"], stderr=log)
    try:
        wait_for(lambda: read(port_file).strip(), 60, "serve to start")
        addr = "127.0.0.1:" + read(port_file).strip()
        row = [rss_mib(serve.pid)]
        for burst in range(args.bursts):
            print(f"  {binary}: burst {burst + 1} of {args.bursts} ({args.requests} x {args.steps} steps)",
                  file=sys.stderr, flush=True)
            calls = [subprocess.Popen([binary, "infer", "--addr", addr, "--model", "mt", "--max-decode-len",
                                       str(args.steps), "--timeout-ms", "600000",
                                       f"burst {burst} request {i} of many words"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(args.requests)]
            for c in calls:
                _, err = c.communicate()
                if c.returncode != 0:
                    raise RuntimeError(f"infer failed: {err.decode(errors='replace').strip()}")
            time.sleep(args.idle_s)
            row.append(rss_mib(serve.pid))
        return row
    finally:
        stop([serve])
        log.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cellserve", action="append", required=True, help="a build's cellserve binary (repeatable)")
    ap.add_argument("--bursts", type=int, default=2, help="bursts per build (default: 2)")
    ap.add_argument("--requests", type=int, default=25, help="concurrent decodes a burst (default: 25)")
    ap.add_argument("--steps", type=int, default=32768, help="decode steps each, at most 65536 (default: 32768)")
    ap.add_argument("--idle-s", type=float, default=12, help="idle time before each reading (default: 12)")
    args = ap.parse_args()
    for b in args.cellserve:
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            ap.error(f"{b}: not an executable file")
    if args.bursts < 1 or args.requests < 1 or not 1 <= args.steps <= 65536:
        ap.error("--bursts and --requests must be at least 1, --steps in 1..65536")
    work = tempfile.mkdtemp(prefix="cellserve-burst-memory-")
    try:
        repo = os.path.join(work, "repo")
        subprocess.run([args.cellserve[0], "model", "init", "--repo", repo, "--name", "mt", "--kind", "seq2seq",
                        "--hidden", "64", "--layers", "1", "--vocab", "1000", "--target-vocab", "500",
                        "--max-decode-len", "65536"], check=True, stdout=subprocess.DEVNULL)
        rows = [(b, measure(b, repo, args, work)) for b in args.cellserve]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    heads = ["at start"] + [f"after burst {i + 1}" for i in range(args.bursts)]
    print(f"\n{args.requests} concurrent decodes of {args.steps} steps a burst; VmRSS {args.idle_s:g} s after each\n")
    print("| build | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    for binary, row in rows:
        print(f"| {binary} | " + " | ".join(f"{v:.1f} MiB" for v in row) + " |")


if __name__ == "__main__":
    main()
