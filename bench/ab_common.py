"""What the A/B benchmark scripts (router_ab.py, multi_model_ab.py) share: their common flags and
checks, process start-up and shutdown helpers, and the table of runs, medians and B/A ratios.
Not a program: imported by them (they run from bench/, so Python finds it beside them)."""
import os
import signal
import statistics
import subprocess
import sys
import time

CORPUS = os.path.expanduser("~/.cache/cellserve/sotu_sentences.txt")


def wait_for(check, timeout_s, what):
    give_up = time.time() + timeout_s
    while not check():
        if time.time() > give_up:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read(path):
    try:
        return open(path).read()
    except FileNotFoundError:
        return ""


def rss_mib(pid):
    """A running process's resident memory (VmRSS), in MiB."""
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} is gone")


def stop(procs):
    """SIGTERM to every process still running, then SIGKILL to any not gone within 60 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def add_ab_arguments(ap, duration_s):
    """--a, --b, --pairs, --duration-s (default `duration_s`), --corpus, --json."""
    ap.add_argument("--a", required=True, help="build A's cellserve binary (the baseline)")
    ap.add_argument("--b", required=True, help="build B's cellserve binary")
    ap.add_argument("--pairs", type=int, default=4, help="A/B pairs, alternated (default: 4)")
    ap.add_argument("--duration-s", type=int, default=duration_s, help=f"load per run (default: {duration_s})")
    ap.add_argument("--corpus", default=CORPUS, help="one sentence per line (default: the demo's, " + CORPUS + ")")
    ap.add_argument("--json", help="write every run here")


def check_ab_arguments(ap, args):
    for b in (args.a, args.b):
        if not (os.path.isfile(b) and os.access(b, os.X_OK)):
            ap.error(f"{b}: not an executable file")
    if not os.path.isfile(args.corpus):
        ap.error(f"{args.corpus}: no such corpus (`./cellserve.sh demo` makes the default one, or give --corpus)")
    if args.pairs < 1 or args.duration_s < 1:
        ap.error("--pairs and --duration-s must be at least 1")


def run_pairs(args, run, summary):
    """Runs `run(binary, label)` for --pairs pairs, A then B, B first in every other pair (so that
    a machine that slows down over the run does not favour one), with progress and `summary(run)`
    on stderr. Returns the runs, each with its pair and build."""
    runs = []
    for i in range(args.pairs):
        for label in ("AB" if i % 2 == 0 else "BA"):
            binary = args.a if label == "A" else args.b
            print(f"pair {i + 1}/{args.pairs}: {label} ({binary}) ...", file=sys.stderr, flush=True)
            r = run(binary, label)
            r.update(pair=i + 1, build=label)
            runs.append(r)
            print("  " + summary(r), file=sys.stderr, flush=True)
    return runs


def print_ab_table(runs, cols):
    """Markdown: every run, then the medians per build and B/A. `cols`: (key, heading, format)."""
    print("| pair | build | " + " | ".join(c[1] for c in cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for r in runs:
        print(f"| {r['pair']} | {r['build']} | " + " | ".join(f.format(r[k]) for k, _, f in cols) + " |")
    med = {b: {k: statistics.median(r[k] for r in runs if r["build"] == b) for k, _, _ in cols} for b in "AB"}
    for b in "AB":
        print(f"| median | {b} | " + " | ".join(f.format(med[b][k]) for k, _, f in cols) + " |")
    print("| | B/A | " + " | ".join(f"{med['B'][k] / med['A'][k]:.2f}x" if med["A"][k] else "-" for k, _, _ in cols)
          + " |")
    return med
