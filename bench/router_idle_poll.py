#!/usr/bin/python3
"""What `cellserve router --idle-poll` does to a request at low load, on real processes.

Per run, a fresh cluster on 127.0.0.1: one `cellserve router` (with or without --idle-poll) and one
`cellserve node` (by default sim devices with the gpu-like profile, so that a request's own time
is small and the front door's share shows; --profile cpu runs the CPU kernels instead). One
`cellserve loadgen --closed-loop 1` sends the corpus's sentences through the router, one at a
time, for --duration-s (after a --warm-s run that is not counted). Runs alternate, without then
with, --pairs times, so each pair saw the same machine.

Prints a markdown table of p50, p99 and requests/s per run and the with/without ratios per pair
(the median pair last); --json writes it all. Every process is stopped and reaped, on error and
Ctrl-C too (process handling shared with cluster_scale.py).

  /usr/bin/python3 bench/router_idle_poll.py --pairs 4 --json build/router-idle-poll.json
"""
import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_scale as cs  # noqa: E402  (Procs, read, wait_until, default_corpus, on_signal)


def log(msg):
    print("[router_idle_poll %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def one_run(args, idle_poll, workdir, index):
    rdir = os.path.join(workdir, "run%d_%s" % (index, "on" if idle_poll else "off"))
    os.makedirs(rdir)
    procs = cs.Procs(rdir)
    try:
        rport, cport = os.path.join(rdir, "router.port"), os.path.join(rdir, "router.cport")
        procs.start("router", "router", [args.cellserve, "router", "--cluster", "127.0.0.1:0", "--listen",
                                         "127.0.0.1:0", "--port-file", rport, "--cluster-port-file", cport]
                    + (["--idle-poll"] if idle_poll else []))
        cs.wait_until("router port files", lambda: cs.read(rport).strip() and cs.read(cport).strip(),
                      procs.of_kind("router"))
        raddr, caddr = "127.0.0.1:" + cs.read(rport).strip(), "127.0.0.1:" + cs.read(cport).strip()
        backend = [] if args.profile == "cpu" else ["--backend", "sim", "--sim-profile", args.profile_path]
        procs.start("node", "node", [args.cellserve, "node", "--join", caddr, "--model-repo", args.model_repo,
                                     "--models", args.model, "--listen", "127.0.0.1:0", "--devices", "1"] + backend)
        cs.wait_until("the node registered", lambda: "registered with router" in cs.read(procs.of_kind("node")[0][2]),
                      procs.of_kind("node") + procs.of_kind("router"))
        summary = os.path.join(rdir, "loadgen.json")
        for seconds, out in ((args.warm_s, None), (args.duration_s, summary)):
            lg, lg_log = procs.start("loadgen", "loadgen", [
                args.cellserve, "loadgen", "--addr", raddr, "--model", args.model, "--corpus", args.corpus,
                "--closed-loop", "1", "--duration-s", str(seconds)] + (["--json", out] if out else []))
            if lg.wait(timeout=seconds + 60) != 0:
                raise RuntimeError("loadgen failed; its log:\n" + cs.read(lg_log)[-2000:])
            procs.stop(["loadgen"])
        s = json.loads(cs.read(summary))
        return {"idle_poll": idle_poll, "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
                "throughput_rps": s["throughput_rps"], "completed": s["completed"]}
    finally:
        procs.stop_all()


def table(pairs):
    lines = ["| pair | p50 without / with (ms) | p99 without / with (ms) | requests/s without / with | "
             "p50 with / without | p99 with / without |", "|---|---:|---:|---:|---:|---:|"]
    for i, (off, on) in enumerate(pairs, 1):
        lines.append("| %d | %.3f / %.3f | %.2f / %.2f | %.0f / %.0f | %.2fx | %.2fx |" % (
            i, off["p50_ms"], on["p50_ms"], off["p99_ms"], on["p99_ms"], off["throughput_rps"], on["throughput_rps"],
            on["p50_ms"] / off["p50_ms"], on["p99_ms"] / off["p99_ms"]))
    lines.append("| median | | | | %.2fx | %.2fx |" % (
        statistics.median(on["p50_ms"] / off["p50_ms"] for off, on in pairs),
        statistics.median(on["p99_ms"] / off["p99_ms"] for off, on in pairs)))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description="router --idle-poll at a closed loop of 1. See the top of this file.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cellserve", default=os.path.join(cs.ROOT, "build", "cellserve"), help="the cellserve binary")
    ap.add_argument("--model-repo", default=os.path.join(cs.ROOT, "build", "demo-models"),
                    help="model repository (./cellserve.sh demo makes it)")
    ap.add_argument("--model", default="sentiment", help="model to serve")
    ap.add_argument("--corpus", default=cs.default_corpus(), help="sentences, one a line")
    ap.add_argument("--profile", default="gpu-like",
                    help="the node's sim profile: a name in kernels/sim/profiles/, a path, or cpu (CPU kernels)")
    ap.add_argument("--pairs", type=int, default=4, help="alternated runs without and with --idle-poll")
    ap.add_argument("--duration-s", type=float, default=10.0, help="seconds measured per run")
    ap.add_argument("--warm-s", type=float, default=2.0, help="seconds of load before each measured run")
    ap.add_argument("--json", help="write the runs and the table here")
    args = ap.parse_args()
    args.profile_path = args.profile if os.path.exists(args.profile) else os.path.join(
        cs.ROOT, "kernels", "sim", "profiles", args.profile + ".json")
    for path, what in ((args.cellserve, "the cellserve binary (ninja -C build)"),
                       (os.path.join(args.model_repo, args.model), "the model (./cellserve.sh demo)"),
                       (args.corpus, "the corpus (./cellserve.sh corpus)")) + (
                           () if args.profile == "cpu" else ((args.profile_path, "the sim profile"),)):
        if not os.path.exists(path):
            sys.exit("router_idle_poll: %s not found: %s" % (what, path))
    signal.signal(signal.SIGTERM, cs.on_signal)
    started = time.time()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="router_idle_poll_") as workdir:
        for i in range(args.pairs):
            runs = []
            for idle_poll in (False, True):
                log("pair %d/%d, router %s --idle-poll" % (i + 1, args.pairs, "with" if idle_poll else "without"))
                runs.append(one_run(args, idle_poll, workdir, i))
            pairs.append(tuple(runs))
    text = table(pairs)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
                       "args": {k: v for k, v in vars(args).items()}, "pairs": pairs, "table": text}, f, indent=1)
    log("done in %.0f s" % (time.time() - started))


if __name__ == "__main__":
    main()
