#!/usr/bin/python3
"""The router's placement policies compared on real processes (issue 4): least_loaded, p2c,
round_robin and random, through one `cellserve router`, on nodes that are NOT alike.

Setup (per policy, a fresh cluster on 127.0.0.1): node "small" with --small-devices sim devices and
node "big" with --big-devices, both with the same profile (default cpu-lstm512, measured from our
CPU kernels), so the big node can take big/small times the work. One `cellserve loadgen` offers
open-loop Poisson load at --load times the cluster's capacity (capacity = devices x the 1-device
saturation throughput --device-rps, measured by bench/cluster_scale.py) for --duration-s. A policy
that ignores load sends half the requests to the small node, which is then over its capacity:
its queue grows for the whole run and its requests' latency with it. One that looks at load sends
the small node only what it can take.

Reported per policy: throughput, latency p50/p99/max (loadgen, client side), the share of requests
each node ran (its own cellserve_requests_total), errors. Prints a table; --json writes the
results; --write-docs replaces (or adds) the section "## Placement policies on real processes
(issue 4)" in docs/BENCHMARKS.md. Every process is stopped and reaped, on error and Ctrl-C too
(process handling shared with cluster_scale.py).

  /usr/bin/python3 bench/cluster_policy.py --json build/cluster-policy.json --write-docs
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_scale as cs  # noqa: E402  (Procs, read, wait_until, free_port, scrape, write_docs)

SECTION = "## Placement policies on real processes (issue 4)"
POLICIES = ["least_loaded", "p2c", "round_robin", "random"]


def log(msg):
    print("[cluster_policy %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def run_policy(args, policy, profile_path, workdir):
    pdir = os.path.join(workdir, policy)
    os.makedirs(pdir)
    procs = cs.Procs(pdir)
    out = {"policy": policy}
    try:
        rport, cport = os.path.join(pdir, "router.port"), os.path.join(pdir, "router.cport")
        procs.start("router", "router", [args.cellserve, "router", "--cluster", "127.0.0.1:0", "--listen",
                                         "127.0.0.1:0", "--port-file", rport, "--cluster-port-file", cport,
                                         "--policy", policy, "--seed", str(args.seed)])
        cs.wait_until("router port files", lambda: cs.read(rport).strip() and cs.read(cport).strip(),
                      procs.of_kind("router"))
        raddr, caddr = "127.0.0.1:" + cs.read(rport).strip(), "127.0.0.1:" + cs.read(cport).strip()
        metrics = {}
        for name, devices in (("small", args.small_devices), ("big", args.big_devices)):
            metrics[name] = cs.free_port()
            procs.start("node", name, [args.cellserve, "node", "--join", caddr, "--model-repo", args.model_repo,
                                       "--models", args.model, "--listen", "127.0.0.1:0", "--devices", str(devices),
                                       "--backend", "sim", "--sim-profile", profile_path, "--node-name", name,
                                       "--metrics-port", str(metrics[name])])
        nodes = procs.of_kind("node")
        cs.wait_until("both nodes registered", lambda: all("registered with router" in cs.read(p) for _, _, p in nodes),
                      nodes + procs.of_kind("router"))
        devices = args.small_devices + args.big_devices
        rate = args.load * devices * args.device_rps
        out["offered_rps"] = rate
        summary = os.path.join(pdir, "loadgen.json")
        log("%s: %.0f req/s for %.0f s (%.0f%% of capacity)" % (policy, rate, args.duration_s, 100 * args.load))
        lg, lg_log = procs.start("loadgen", "loadgen", [
            args.cellserve, "loadgen", "--addr", raddr, "--model", args.model, "--corpus", args.corpus,
            "--rate", "%.1f" % rate, "--duration-s", str(args.duration_s), "--drain-s", "60",
            "--seed", str(args.seed), "--json", summary])
        try:
            lg.wait(timeout=args.duration_s + 90)
        except subprocess.TimeoutExpired:
            raise RuntimeError("loadgen did not finish; its log:\n" + cs.read(lg_log)[-2000:])
        s = json.loads(cs.read(summary))
        for key in ("throughput_rps", "p50_ms", "p99_ms", "max_ms", "completed", "unanswered", "errors", "error_samples"):
            out[key] = s[key]
        ran = {name: cs.scrape(port).get("cellserve_requests_total", 0.0) for name, port in metrics.items()}
        total = sum(ran.values()) or 1.0
        out["share_small"] = ran["small"] / total
        out["ran"] = ran
    finally:
        procs.stop_all()
    return out


def table(results, args):
    small_fair = args.small_devices / (args.small_devices + args.big_devices)
    lines = ["| policy | offered req/s | throughput req/s | p50 ms | p99 ms | max ms | small node's share "
             "(its capacity: %.0f%%) | errors | unanswered |" % (100 * small_fair),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        errors = sum(r["errors"].values())
        lines.append("| %s | %s | %s | %.1f | %.1f | %.1f | %.0f%% | %d | %d |" % (
            r["policy"], format(round(r["offered_rps"]), ","), format(round(r["throughput_rps"]), ","), r["p50_ms"],
            r["p99_ms"], r["max_ms"], 100 * r["share_small"], errors, r["unanswered"]))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description="Placement policies through one router on unlike nodes (sim devices). "
                                 "See the top of this file.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cellserve", default=os.path.join(cs.ROOT, "build", "cellserve"), help="the cellserve binary")
    ap.add_argument("--model-repo", default=os.path.join(cs.ROOT, "build", "demo-models"),
                    help="model repository (./cellserve.sh demo makes it)")
    ap.add_argument("--model", default="sentiment", help="model to serve")
    ap.add_argument("--corpus", default=cs.default_corpus(), help="sentences, one a line")
    ap.add_argument("--profile", default="cpu-lstm512", help="sim profile: a name in kernels/sim/profiles/ or a path")
    ap.add_argument("--small-devices", type=int, default=1, help="devices of the small node")
    ap.add_argument("--big-devices", type=int, default=3, help="devices of the big node")
    ap.add_argument("--device-rps", type=float, default=620.0,
                    help="one device's saturation throughput with this profile (bench/cluster_scale.py, 1x1 row)")
    ap.add_argument("--load", type=float, default=0.7, help="offered load as a fraction of the cluster's capacity")
    ap.add_argument("--duration-s", type=float, default=8.0, help="seconds of load per policy")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies")
    ap.add_argument("--seed", type=int, default=1, help="seed of the arrivals and of p2c/random")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--write-docs", action="store_true", help="replace the section in docs/BENCHMARKS.md")
    args = ap.parse_args()
    for path, what in ((args.cellserve, "the cellserve binary (ninja -C build)"),
                       (os.path.join(args.model_repo, args.model), "the model (./cellserve.sh demo)"),
                       (args.corpus, "the corpus (./cellserve.sh corpus)")):
        if not os.path.exists(path):
            sys.exit("cluster_policy: %s not found: %s" % (what, path))
    profile = args.profile if os.path.exists(args.profile) else os.path.join(
        cs.ROOT, "kernels", "sim", "profiles", args.profile + ".json")
    signal.signal(signal.SIGTERM, cs.on_signal)
    started = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="cluster_policy_") as workdir:
        for policy in args.policies.split(","):
            results.append(run_policy(args, policy, profile, workdir))
    text = table(results, args)
    print(text)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"when": when, "args": vars(args), "results": results}, f, indent=1)
    if args.write_docs:
        load = open("/proc/loadavg").read().split()[:3]
        body = (SECTION + "\n\n"
                "`bench/cluster_policy.py` (see its header): one router, two unlike nodes on 127.0.0.1 with sim devices\n"
                "(profile %s: node \"small\" %d device(s), node \"big\" %d), open-loop Poisson load from one\n"
                "`cellserve loadgen` at %.0f%% of the cluster's capacity (%d devices x %.0f req/s, the 1-device\n"
                "saturation of bench/cluster_scale.py) for %.0f s per policy, a fresh cluster per policy, model\n"
                "`sentiment`, State of the Union sentences. Run on %s, %s; one run per row. The\n"
                "latencies are of the completed requests; the errors column counts the others.\n\n"
                "    /usr/bin/python3 bench/cluster_policy.py --json build/cluster-policy.json --write-docs\n\n"
                % (args.profile, args.small_devices, args.big_devices, 100 * args.load,
                   args.small_devices + args.big_devices, args.device_rps, args.duration_s, when,
                   cs.machine_line(" ".join(load)))
                + text + "\n\n"
                "- The small node can take %.0f%% of the work. Policies that ignore load (round_robin, random) send\n"
                "  it half, more than it can run: its queue grows for the whole run, and so does the latency of\n"
                "  every request placed there (the p99 and max above). least_loaded and p2c compare outstanding\n"
                "  cells per device (the router's own requests in flight, runtime/router_policy.h) and send it\n"
                "  about its share. %s\n"
                "- With 2 nodes p2c always compares both, so it places as least_loaded; its advantage is O(1) cost\n"
                "  at hundreds of nodes (\"Router placement\" above, where router_sim compares the policies at\n"
                "  scale).\n" % (100.0 * args.small_devices / (args.small_devices + args.big_devices),
                                  errors_text(results)))
        write_section(body)
    log("done in %.0f s" % (time.time() - started))


def errors_text(results):
    """What the errors of the table were, from the codes loadgen saw (not assumed)."""
    codes = sorted({code for r in results for code, n in r["errors"].items() if n})
    if not codes:
        return "No request failed."
    text = "The errors were %s (a sample of each is in --json)." % ", ".join(codes)
    if codes == ["RESOURCE_EXHAUSTED"]:
        text += ("\n  Here the one loadgen connection reached its calls in flight (--max-calls-per-connection,\n"
                 "  1,024), the bound that keeps an overload from queueing without limit.")
    return text


def write_section(body):
    """Replaces this benchmark's section of docs/BENCHMARKS.md (up to the next '## '), or appends it."""
    path = os.path.join(cs.ROOT, "docs", "BENCHMARKS.md")
    cs.write_docs(path, body, SECTION)
    log("wrote the section to " + path)


if __name__ == "__main__":
    main()
