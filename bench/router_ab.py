#!/usr/bin/python3
"""Two cellserve builds through a router, side by side: CPU per request of the router and the node,
throughput and latency, alternated in pairs on one machine.

For each of --pairs pairs this runs build A, then build B (B first in every other pair, so that a
machine that slows down over the run does not favour one): a fresh `cellserve router` and one
`cellserve node` (--devices 1, CPU backend) of that build on 127.0.0.1, joined; then `cellserve
loadgen --closed-loop --concurrency` through the router's RPC port for --duration-s, without
streaming (plain infer calls). Measured over the loadgen's run:

  - router / node CPU per request: utime+stime of the process (/proc/PID/stat, all threads) over
    the run, divided by the requests answered;
  - throughput and p50/p99: the loadgen's own figures (its --json).

The model is made once with `cellserve model init` (default: a seq2seq model, hidden 64, decoder
of 32 steps: small, so that messaging rather than compute decides). The table gives every run
and the medians per build; B/A is the ratio of the medians.

  /usr/bin/python3 bench/router_ab.py --a /tmp/old/cellserve --b build/cellserve --pairs 4

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


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(binary, models, model, args, work):
    """One router + node of `binary` under closed-loop load; returns the measured figures."""
    os.makedirs(work, exist_ok=True)
    files = {name: os.path.join(work, name) for name in ("rport", "cport", "router.err", "node.err", "lg.json")}
    for f in files.values():
        if os.path.exists(f):
            os.remove(f)
    procs = []
    try:
        router = subprocess.Popen(
            [binary, "router", "--listen", "127.0.0.1:0", "--port-file", files["rport"], "--cluster", "127.0.0.1:0",
             "--cluster-port-file", files["cport"]], stderr=open(files["router.err"], "w"))
        procs.append(router)
        wait_for(lambda: read(files["rport"]).strip() and read(files["cport"]).strip(), 30, "the router's ports")
        node = subprocess.Popen(
            [binary, "node", "--model-repo", models, "--join", "127.0.0.1:" + read(files["cport"]).strip(),
             "--devices", "1", "--listen", "127.0.0.1:0"], stderr=open(files["node.err"], "w"))
        procs.append(node)
        wait_for(lambda: "registered" in read(files["node.err"]), 60, "the node to join (" + files["node.err"] + ")")
        time.sleep(0.5)
        r0, n0 = cpu_seconds(router.pid), cpu_seconds(node.pid)
        lg = subprocess.run(
            [binary, "loadgen", "--addr", "127.0.0.1:" + read(files["rport"]).strip(), "--model", model, "--corpus",
             args.corpus, "--closed-loop", str(args.concurrency), "--duration-s", str(args.duration_s), "--json",
             files["lg.json"]], capture_output=True, text=True)
        r1, n1 = cpu_seconds(router.pid), cpu_seconds(node.pid)
        if lg.returncode != 0:
            raise RuntimeError(f"loadgen failed ({lg.returncode}): {lg.stderr.strip()[-500:]}")
        result = json.load(open(files["lg.json"]))
    finally:
        stop(procs)
    answered = max(1, result["completed"])
    return {
        "rps": result["throughput_rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": sum(result.get("errors", {}).values()),  # by code
        "router_us": 1e6 * (r1 - r0) / answered,
        "node_us": 1e6 * (n1 - n0) / answered,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ab_arguments(ap, duration_s=8)
    ap.add_argument("--concurrency", type=int, default=32, help="closed-loop calls in flight (default: 32)")
    ap.add_argument("--kind", default="seq2seq", choices=["seq2seq", "lstm", "treelstm"],
                    help="the model made with build A's `model init` (default: seq2seq)")
    ap.add_argument("--hidden", type=int, default=64, help="its hidden size (default: 64)")
    ap.add_argument("--max-decode-len", type=int, default=32, help="seq2seq: decoder steps (default: 32)")
    args = ap.parse_args()
    check_ab_arguments(ap, args)
    if args.concurrency < 1:
        ap.error("--concurrency must be at least 1")

    work = tempfile.mkdtemp(prefix="cellserve-router-ab-")
    try:
        models = os.path.join(work, "models")
        init = [args.a, "model", "init", "--repo", models, "--name", "m", "--kind", args.kind, "--hidden",
                str(args.hidden), "--vocab", "8000", "--seed", "3"]
        if args.kind == "seq2seq":
            init += ["--max-decode-len", str(args.max_decode_len)]
        subprocess.run(init, check=True, stdout=subprocess.DEVNULL)
        runs = run_pairs(args, lambda binary, label: one_run(binary, models, "m", args, os.path.join(work, label)),
                         lambda r: f"{r['rps']:.0f} req/s, router {r['router_us']:.0f} us/req, "
                                   f"node {r['node_us']:.0f} us/req")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cols = [("rps", "req/s", "{:.0f}"), ("p50_ms", "p50 ms", "{:.1f}"), ("p99_ms", "p99 ms", "{:.1f}"),
            ("router_us", "router CPU µs/req", "{:.0f}"), ("node_us", "node CPU µs/req", "{:.0f}")]
    med = print_ab_table(runs, cols)
    if any(r["errors"] for r in runs):
        print("errors in some runs: " + ", ".join(f"pair {r['pair']} {r['build']}: {r['errors']}" for r in runs
                                                  if r["errors"]), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "medians": med}, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
