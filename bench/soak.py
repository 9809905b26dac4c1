#!/usr/bin/python3
"""Soak: cellserve under mixed load for a long time, checked for leaks and lost requests.

The unit tests and tests/integration/rpc_test.sh check each error path once. This runs them all
together, over and over, against the same processes, and watches what a leak would move: each
long-lived process's resident memory, threads and open file descriptors, and its own gauges of
requests, calls and state slots in flight.

Targets (--target):
  serve   one `cellserve serve`;
  router  one `cellserve router` with two `cellserve node`s (a, b) behind it; every cycle node b
          is killed (SIGKILL) mid-load and started again under the same name, so the router
          loses a node with requests on it, retries them or answers UNAVAILABLE, and takes the
          node back. The router and node a are watched for leaks.

Cycles run back to back until --minutes have passed; each one (times from its start):

  0 s   main traffic: `cellserve loadgen` open-loop Poisson at --rate of real sentences, for
        --cycle-s, every answer awaited (--drain-s);
  3 s   deadlines: a loadgen at 200/s with --timeout-ms 1 for 5 s (most expire: DEADLINE_EXCEEDED);
  10 s  a client killed mid-call: a loadgen keeps 64 calls in flight and is killed with SIGKILL
        after 2 s (its calls are cancelled: CANCELLED; a call whose answer was already on its way
        when the front door saw the connection close counts as OK, so a cycle on a busy machine
        may show fewer than 64, even none: the check is that the run has some; the front door's
        cellserve_rpc_client_cancels_total counts the same calls, in the column "dropped by
        clients", with the same caveat);
  15 s  a flood: a loadgen with 3,000 calls outstanding for 2 s on one connection, beyond the
        front door's --max-calls-per-connection 1,024 and the nodes' --max-requests 512
        (RESOURCE_EXHAUSTED);
  20 s  bad input, one `cellserve infer` each: a token outside the vocabulary, more tokens than
        --max-tokens, an unknown model (each must fail with its own code);
  21 s  (router) node b is killed and started again; the cycle waits for it to register.

After the main loadgen has finished, the cycle waits (at most 30 s) until every process's gauges
cellserve_requests_in_flight, cellserve_rpc_calls_in_flight and cellserve_state_slots_in_use (the
ones it has) are 0, then records the idle watched processes' RSS, threads and file descriptors.

The run passes (exit 0) when every cycle came back to zero in flight, no surviving client had a
request unanswered, every error path gave its code, threads and file descriptors ended where the
first cycle left them, and each watched process's idle RSS after the last cycle is within
--rss-tolerance-mib of its idle RSS after the second (the first cycle warms the allocator).
Otherwise it says which check failed and exits 1. Progress goes to stderr once a cycle; a markdown
table, the verdict and, with --plot, a PNG of RSS and requests in flight over time (gnuplot) come
at the end.

  /usr/bin/python3 bench/soak.py --minutes 20 --plot docs/img/soak.png
  /usr/bin/python3 bench/soak.py --target router --minutes 20 --plot docs/img/soak-router.png
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster_scale as cs  # noqa: E402  (Procs, read, wait_until, free_port, scrape, write_docs, wrap, ...)
from run_kernel_bench import machine  # noqa: E402

SECTIONS = {"serve": "## Soak: one server under mixed load", "router": "## Soak: a router and two nodes, one killed each cycle"}
GAUGES = ("cellserve_requests_in_flight", "cellserve_rpc_calls_in_flight", "cellserve_state_slots_in_use")
ERROR_CODES = ["DEADLINE_EXCEEDED", "CANCELLED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "NOT_FOUND", "UNAVAILABLE"]
MAX_TOKENS = 512   # the front door's --max-tokens: the over-long bad input sends one more
MAX_REQUESTS = 512  # --max-requests of the serving processes: the flood goes beyond it
MIB = 1024.0 * 1024.0


def log(msg):
    print("[soak %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def proc_status(pid):
    """(RSS in bytes, threads, open file descriptors) of a live process; None if it is gone."""
    try:
        fields = {}
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.split()
        fds = len(os.listdir("/proc/%d/fd" % pid))
        return int(fields["VmRSS"][0]) * 1024, int(fields["Threads"][0]), fds
    except (OSError, KeyError, IndexError, ValueError):
        return None


def front_counts(port):
    """From http://127.0.0.1:PORT/metrics: cellserve_requests_total by code (summed over models),
    and cellserve_rpc_client_cancels_total (calls dropped by clients)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode("utf-8", "replace")
    out = {}
    for m in re.finditer(r'^cellserve_requests_total\{([^}]*)\}\s+(\S+)$', text, re.M):
        code = re.search(r'code="([^"]*)"', m.group(1)).group(1)
        out[code] = out.get(code, 0) + int(float(m.group(2)))
    dropped = re.search(r'^cellserve_rpc_client_cancels_total\s+(\S+)$', text, re.M)
    return out, int(float(dropped.group(1))) if dropped else 0


# ---------------------------------------------------------------------------------------------
# What is under load


class Target:
    """The processes under test. `addr` and `front_port` (metrics) are the front door's: load goes
    there and its request counts are the ones reported. `watched` are the long-lived processes
    checked for leaks: [(label, Popen, metrics port)]. `churn()` (router target) kills and restarts
    node b; `metrics_ports()` is every live process's, for the zero-in-flight check."""

    def __init__(self, args, procs, workdir):
        self.args, self.procs, self.workdir = args, procs, workdir
        self.addr, self.front_port, self.watched = None, None, []
        self.node_b = None  # router target: (Popen, log path, metrics port)
        self.rejoins = 0

    def serving_flags(self):
        return ["--model-repo", self.args.model_repo, "--models", self.args.model, "--max-requests",
                str(MAX_REQUESTS)] + self.args.serve_args.split()

    def start(self):
        if self.args.target == "serve":
            self.start_serve()
        else:
            self.start_router()

    def start_serve(self):
        port_file, mport = os.path.join(self.workdir, "serve.port"), cs.free_port()
        p, path = self.procs.start("serve", "serve", [self.args.cellserve, "serve", "--listen", "127.0.0.1:0",
                                                      "--port-file", port_file, "--metrics-port", str(mport),
                                                      "--max-tokens", str(MAX_TOKENS)] + self.serving_flags())
        cs.wait_until("the server serving", lambda: "serving" in cs.read(path), self.procs.of_kind("serve"), 120)
        self.addr, self.front_port = "127.0.0.1:" + cs.read(port_file).strip(), mport
        self.watched = [("serve", p, mport)]

    def start_router(self):
        rport, cport, mport = (os.path.join(self.workdir, "router.port"), os.path.join(self.workdir, "router.cport"),
                               cs.free_port())
        router, _ = self.procs.start("router", "router", [
            self.args.cellserve, "router", "--cluster", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--port-file", rport,
            "--cluster-port-file", cport, "--metrics-port", str(mport), "--max-tokens", str(MAX_TOKENS)])
        cs.wait_until("the router's port files", lambda: cs.read(rport).strip() and cs.read(cport).strip(),
                      self.procs.of_kind("router"))
        self.addr, self.front_port = "127.0.0.1:" + cs.read(rport).strip(), mport
        self.cluster_addr = "127.0.0.1:" + cs.read(cport).strip()
        node_a, _, aport = self.start_node("a")
        self.node_b = self.start_node("b")
        self.watched = [("router", router, mport), ("node a", node_a, aport)]

    def start_node(self, name, restart=0):
        mport = cs.free_port()
        p, path = self.procs.start("node", "node-%s%s" % (name, "-%d" % restart if restart else ""), [
            self.args.cellserve, "node", "--join", self.cluster_addr, "--node-name", "soak-" + name,
            "--listen", "127.0.0.1:0", "--metrics-port", str(mport), "--devices", "1"] + self.serving_flags())
        cs.wait_until("node %s registered" % name, lambda: "registered with router" in cs.read(path),
                      [("node " + name, p, path)] + self.procs.of_kind("router"), 120)
        return p, path, mport

    def churn(self):
        """Router target: SIGKILL node b, start it again under the same name, wait until it has
        registered. Returns the seconds that took."""
        t0 = time.monotonic()
        p = self.node_b[0]
        p.kill()
        p.wait()
        self.procs.live = [e for e in self.procs.live if e[2] is not p]
        self.rejoins += 1
        self.node_b = self.start_node("b", self.rejoins)
        return time.monotonic() - t0

    def metrics_ports(self):
        return [port for _, _, port in self.watched] + ([self.node_b[2]] if self.node_b else [])

    def check_alive(self):
        for label, p, _ in self.watched:
            if p.poll() is not None:
                raise RuntimeError("%s exited with status %s" % (label, p.returncode))


class Sampler(threading.Thread):
    """Once a second: each watched process's RSS and the front door's requests in flight."""

    def __init__(self, target, t0):
        super().__init__(daemon=True)
        self.target, self.t0 = target, t0
        self.rows = []  # (seconds since start, [RSS MiB per watched process], requests in flight)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(1.0):
            rss = []
            for _, p, _ in self.target.watched:
                st = proc_status(p.pid)
                rss.append(st[0] / MIB if st else float("nan"))
            try:
                inflight = cs.scrape(self.target.front_port).get("cellserve_requests_in_flight", float("nan"))
            except OSError:
                inflight = float("nan")
            self.rows.append((time.monotonic() - self.t0, rss, inflight))


# ---------------------------------------------------------------------------------------------
# One cycle


def loadgen(args, addr, extra):
    return [args.cellserve, "loadgen", "--addr", addr, "--model", args.model, "--corpus", args.corpus] + extra


def bad_inputs(args, addr, vocab):
    """Each bad request with the code it must get: [(what, argv, code)]."""
    infer = [args.cellserve, "infer", "--addr", addr, "--connect-timeout-ms", "5000"]
    return [
        ("token outside the vocabulary", infer + ["--model", args.model, "--tokens", str(vocab + 7)],
         "INVALID_ARGUMENT"),
        ("more tokens than --max-tokens",
         infer + ["--model", args.model, "--tokens", ",".join(["5"] * (MAX_TOKENS + 1))], "INVALID_ARGUMENT"),
        ("unknown model", infer + ["--model", args.model + "-nosuch", "--tokens", "1,2,3"], "NOT_FOUND"),
    ]


def in_flight(ports):
    """{port: {gauge: value}} of the gauges in GAUGES each process has."""
    out = {}
    for port in ports:
        sums = cs.scrape(port)
        out[port] = {g: sums[g] for g in GAUGES if g in sums}
    return out


def wait_zero(ports, timeout_s):
    """Waits until every process's gauges are 0; returns the last values seen and whether they were."""
    deadline = time.monotonic() + timeout_s
    while True:
        values = in_flight(ports)
        if all(v == 0 for gauges in values.values() for v in gauges.values()):
            return values, True
        if time.monotonic() > deadline:
            return values, False
        time.sleep(0.2)


def idle_status(watched):
    """{label: (RSS MiB, threads, fds)}, each the median of three samples 0.5 s apart."""
    samples = {label: [] for label, _, _ in watched}
    for _ in range(3):
        for label, p, _ in watched:
            st = proc_status(p.pid)
            if st is None:
                raise RuntimeError("%s is gone" % label)
            samples[label].append(st)
        time.sleep(0.5)
    return {label: (statistics.median(s[0] for s in ss) / MIB, int(statistics.median(s[1] for s in ss)),
                    int(statistics.median(s[2] for s in ss))) for label, ss in samples.items()}


def run_cycle(args, index, procs, target, bad, cdir):
    """One cycle (see the module docstring); returns its row of results and the failures seen."""
    os.makedirs(cdir)
    failures = []
    addr = target.addr
    before, dropped_before = front_counts(target.front_port)
    t0 = time.monotonic()

    def at(seconds):
        time.sleep(max(0.0, t0 + seconds - time.monotonic()))

    def start(name, extra):
        path = os.path.join(cdir, name + ".json")
        p, log_path = procs.start("loadgen", "c%d-%s" % (index, name), loadgen(args, addr, extra + ["--json", path]))
        return name, p, path, log_path

    waited = [start("main", ["--rate", str(args.rate), "--duration-s", str(args.cycle_s), "--drain-s", "30",
                             "--seed", str(index + 1)])]
    at(3)
    waited.append(start("deadline", ["--rate", "200", "--duration-s", "5", "--timeout-ms", "1",
                                     "--seed", str(index + 101)]))
    at(10)
    _, killed, _, _ = start("killed", ["--closed-loop", "64", "--duration-s", "60", "--seed", str(index + 201)])
    at(12)
    killed.kill()
    killed.wait()
    at(15)
    waited.append(start("flood", ["--closed-loop", "3000", "--duration-s", "2", "--drain-s", "30",
                                  "--seed", str(index + 301)]))
    at(20)
    for what, argv, code in bad:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if r.returncode != 1 or (code + ":") not in r.stderr:
            failures.append("cycle %d: %s: want exit 1 and %s, got exit %d: %s" %
                            (index, what, code, r.returncode, r.stderr.strip()[-300:]))
    rejoin_s = None
    if args.target == "router":
        at(21)
        rejoin_s = target.churn()

    summaries = {}
    for name, p, path, log_path in waited:
        try:
            rc = p.wait(timeout=args.cycle_s + 120)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        s = json.loads(cs.read(path) or "{}")
        summaries[name] = s
        if rc != 0 or not s:
            failures.append("cycle %d: the %s loadgen exited %s; its log:\n%s" % (index, name, rc,
                                                                                 cs.read(log_path)[-1500:]))
        elif s.get("unanswered", 0) != 0:
            failures.append("cycle %d: the %s loadgen had %d requests unanswered" % (index, name, s["unanswered"]))
    procs.live = [e for e in procs.live if e[0] != "loadgen"]

    gauges, zero = wait_zero(target.metrics_ports(), 30.0)
    if not zero:
        failures.append("cycle %d: 30 s after the load, still in flight (by metrics port): %s" % (index, gauges))
    after, dropped_after = front_counts(target.front_port)
    delta = {c: after.get(c, 0) - before.get(c, 0) for c in after}
    dropped = dropped_after - dropped_before
    for code in ("DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "NOT_FOUND"):
        if delta.get(code, 0) <= 0:
            failures.append("cycle %d: the front door answered no %s this cycle" % (index, code))
    idle = idle_status(target.watched)
    main = summaries.get("main", {})
    row = {"cycle": index, "answered": sum(delta.values()), "codes": delta, "main_sent": main.get("sent", 0),
           "main_completed": main.get("completed", 0), "main_p50_ms": main.get("p50_ms") or 0,
           "main_p99_ms": main.get("p99_ms") or 0, "idle": idle, "zero_after": zero, "rejoin_s": rejoin_s, "dropped": dropped}
    log("cycle %d: %d requests answered (%s; %d dropped by clients); main p50 %.1f ms p99 %.1f ms; %s%s%s" % (
        index, row["answered"], ", ".join("%s %d" % (c, n) for c, n in sorted(delta.items()) if n), dropped,
        row["main_p50_ms"], row["main_p99_ms"],
        "; ".join("%s: RSS %.1f MiB, %d threads, %d fds" % (label, *v) for label, v in idle.items()),
        "" if rejoin_s is None else "; node b back in %.1f s" % rejoin_s,
        "" if not failures else "; %d check(s) failed" % len(failures)))
    return row, failures


# ---------------------------------------------------------------------------------------------
# Verdict and report


def rss_growth(rows, label):
    """(MiB, MiB per hour) of `label`'s idle RSS from the second cycle to the last."""
    g = rows[-1]["idle"][label][0] - rows[1]["idle"][label][0]
    hours = (rows[-1]["end_s"] - rows[1]["end_s"]) / 3600.0
    return g, g / hours if hours > 0 else float("nan")


def verdict(rows, failures, args):
    checks = list(failures)
    if len(rows) >= 3:
        for label in rows[0]["idle"]:
            first, last = rows[0]["idle"][label], rows[-1]["idle"][label]
            for i, what in ((1, "threads"), (2, "fds")):
                if last[i] != first[i]:
                    checks.append("%s: %d %s after the first cycle, %d after the last" % (label, first[i], what, last[i]))
            growth, _ = rss_growth(rows, label)
            if growth > args.rss_tolerance_mib:
                checks.append("%s: idle RSS grew %.1f MiB from cycle 2 to cycle %d (tolerance %.0f MiB)" %
                              (label, growth, rows[-1]["cycle"], args.rss_tolerance_mib))
    elif not failures:
        checks.append("only %d cycle(s) ran; the leak checks need 3" % len(rows))
    if rows and sum(r["codes"].get("CANCELLED", 0) for r in rows) == 0:
        checks.append("no call of a killed client was cancelled in any cycle")
    if rows and sum(r["dropped"] for r in rows) == 0:
        checks.append("the front door counted no call dropped by its client (cellserve_rpc_client_cancels_total)")
    return checks


def table(rows, args):
    codes = ["OK"] + [c for c in ERROR_CODES if c != "UNAVAILABLE" or args.target == "router"]
    labels = list(rows[0]["idle"])
    dropped = "dropped" in rows[0]  # not in runs recorded before the counter existed
    # The main traffic's percentiles are of its OK answers (loadgen): its errors (refused while the
    # flood fills the admissions) are said beside them.
    head = ["cycle", "answered"] + codes + (["dropped by clients"] if dropped else []) + [
        "main p50 / p99 (ms, OK answers)", "main not OK"]
    head += ["%s: idle RSS (MiB), threads, fds" % label for label in labels]
    if args.target == "router":
        head.append("node b back (s)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in rows:
        cells = [str(r["cycle"]), str(r["answered"])] + [str(r["codes"].get(c, 0)) for c in codes]
        cells += [str(r["dropped"])] if dropped else []
        cells.append("%.1f / %.1f" % (r["main_p50_ms"], r["main_p99_ms"]))
        cells.append("%d of %d" % (r["main_sent"] - r["main_completed"], r["main_sent"]))
        cells += ["%.1f, %d, %d" % tuple(r["idle"][label]) for label in labels]
        if args.target == "router":
            cells.append("%.1f" % r["rejoin_s"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def growth_lines(rows):
    if len(rows) < 3:
        return []
    out = []
    for label in rows[0]["idle"]:
        g, per_hour = rss_growth(rows, label)
        out.append("%s: idle RSS from cycle 2 to cycle %d: %+.1f MiB (%+.1f MiB per hour of this load)" %
                   (label, rows[-1]["cycle"], g, per_hour))
    return out


def plot(samples, rows, path, target):
    """RSS of each watched process less its idle RSS after cycle 1 (so a router of 27 MiB and a
    node of 600 share one scale), and the front door's requests in flight, over time."""
    labels = list(rows[0]["idle"])
    base = [rows[0]["idle"][label][0] for label in labels]
    cycle_ends = [r["end_s"] for r in rows]
    data = path + ".dat"
    with open(data, "w") as f:
        for t, rss, inflight in samples:
            f.write("%.2f %s %s\n" % (t / 60.0, " ".join("NaN" if v != v else "%.2f" % (v - b) for v, b in zip(rss, base)),
                                      "NaN" if inflight != inflight else "%d" % inflight))
    script = path + ".gp"
    marks = "\n".join("set arrow from %.2f, graph 0 to %.2f, graph 1 nohead lc rgb '#cccccc'" % (t / 60.0, t / 60.0)
                      for t in cycle_ends)
    curves = ["'%s' using 1:%d with lines lw 2 title '%s (%.0f MiB after cycle 1)'" % (data, i + 2, label, b)
              for i, (label, b) in enumerate(zip(labels, base))]
    curves.append("'%s' using 1:%d axes x1y2 with lines lc rgb '#999999' title 'requests in flight (%s)'" %
                  (data, len(labels) + 2, labels[0]))
    with open(script, "w") as f:
        f.write("""set terminal pngcairo size 900,420 font ',10'
set output '%s'
set title 'soak (%s): resident memory and requests in flight; grey lines end the cycles'
set xlabel 'minutes'
set ylabel 'RSS less its idle RSS after cycle 1 (MiB)'
set y2label 'requests in flight'
set ytics nomirror
set y2tics
set key top left opaque box
set grid
%s
plot %s
""" % (path, target, marks, ", ".join(curves)))
    subprocess.run(["gnuplot", script], check=True, timeout=60)
    os.remove(data)
    os.remove(script)
    log("wrote " + path)


def command_line(args):
    parts = ["/usr/bin/python3 bench/soak.py"]
    if args.target != "serve":
        parts.append("--target " + args.target)
    parts.append("--minutes %g --cycle-s %g --rate %g" % (args.minutes, args.cycle_s, args.rate))
    if args.serve_args:
        parts.append("--serve-args '%s'" % args.serve_args)
    if args.plot:
        parts.append("--plot " + os.path.relpath(args.plot, cs.ROOT))
    return " ".join(parts)


def section_text(rows, checks, args, date):
    what = ("one `cellserve serve`" if args.target == "serve" else
            "one `cellserve router` and two `cellserve node`s (a and b, one CPU device each; node b killed with "
            "SIGKILL and started again under the same name every cycle)")
    text = [SECTIONS[args.target], "",
            cs.wrap("%s, %s. `%s` (bench/soak.py; its docstring gives the cycle): %d cycles of %.0f s of main "
                    "traffic against %s serving `%s` with `--max-requests %d%s`, the front door with "
                    "`--max-tokens %d`. Main traffic %.0f req/s of real sentences, with deadlines, a killed "
                    "client, a flood and bad input in every cycle. The counts are the front door's "
                    "(`cellserve_requests_total`, by code, per cycle); RSS, threads and file descriptors are "
                    "the idle processes' after each cycle." % (
                        date, machine(), command_line(args), len(rows), args.cycle_s, what, args.model, MAX_REQUESTS,
                        (" " + args.serve_args) if args.serve_args else "", MAX_TOKENS, args.rate)),
            "", table(rows, args), ""]
    text += ["- " + line + "." for line in growth_lines(rows)]
    text += ["", "Verdict: **%s**." % ("pass" if not checks else "fail: " + "; ".join(checks))]
    if args.plot:
        text += ["", "![soak](%s)" % os.path.relpath(args.plot, os.path.dirname(args.docs))]
    return "\n".join(text) + "\n"


def report(rows, checks, samples, args, date):
    """Prints the table and the verdict; draws --plot and writes --json and --write-docs."""
    if rows:
        print(table(rows, args))
        print("\n" + "\n".join(growth_lines(rows)))
    print("\nverdict: " + ("PASS" if not checks else "FAIL\n- " + "\n- ".join(checks)))
    if args.plot and samples and rows:
        plot(samples, rows, args.plot, args.target)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"date": date, "settings": vars(args), "rows": rows, "checks": checks, "samples": samples},
                      f, indent=1)
    if args.write_docs and rows:
        cs.write_docs(args.docs, section_text(rows, checks, args, date), SECTIONS[args.target])
        log("wrote the section to " + args.docs)


def render(args):
    with open(args.render) as f:
        result = json.load(f)
    for key in ("target", "model", "minutes", "cycle_s", "rate", "serve_args"):
        setattr(args, key, result["settings"][key])
    args.json = ""
    if args.plot:
        args.plot = os.path.abspath(args.plot)
    report(result["rows"], result["checks"], result["samples"], args, result["date"])
    return 0 if not result["checks"] else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " See the top of this file.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--target", choices=["serve", "router"], default="serve",
                    help="serve: one server; router: a router and two nodes, node b killed every cycle")
    ap.add_argument("--cellserve", default=os.path.join(cs.ROOT, "build", "cellserve"), help="the cellserve binary")
    ap.add_argument("--model-repo", default=os.path.join(cs.ROOT, "build", "demo-models"), help="model repository")
    ap.add_argument("--model", default="sentiment", help="the model to serve (an lstm or seq2seq; token input)")
    ap.add_argument("--corpus", default=cs.default_corpus(), help="sentences, one a line (./cellserve.sh corpus)")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="run cycles until this much time has passed (at least 3 cycles)")
    ap.add_argument("--cycle-s", type=float, default=60.0,
                    help="one cycle's main traffic (at least 22: the other parts start within it)")
    ap.add_argument("--rate", type=float, default=300.0, help="main traffic: requests per second (open loop)")
    ap.add_argument("--rss-tolerance-mib", type=float, default=16.0,
                    help="idle RSS may grow this much from cycle 2 to the last")
    ap.add_argument("--serve-args", default="",
                    help="more flags for `cellserve serve` / `node`, e.g. '--cpu-precision bf16'")
    ap.add_argument("--plot", default="", help="draw RSS and requests in flight over time into this PNG")
    ap.add_argument("--json", default="", help="write every cycle's results and the verdict to this file")
    ap.add_argument("--write-docs", action="store_true", help="replace (or add) this target's section in --docs")
    ap.add_argument("--docs", default=os.path.join(cs.ROOT, "docs", "BENCHMARKS.md"), help="for --write-docs")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, loadgen JSON)")
    ap.add_argument("--render", default="", metavar="RESULTS_JSON",
                    help="run nothing: print (and with --plot / --write-docs draw and write) an earlier --json file")
    args = ap.parse_args()
    if args.render:
        return render(args)
    if args.cycle_s < 22:
        ap.error("--cycle-s must be at least 22 (the cycle's other parts start within 21 s)")
    if args.minutes * 60 < 3 * (args.cycle_s + 5):
        ap.error("--minutes %g holds fewer than 3 cycles of --cycle-s %g; the leak checks need 3" %
                 (args.minutes, args.cycle_s))
    if not os.access(args.cellserve, os.X_OK):
        ap.error("%s is not an executable (./cellserve.sh build)" % args.cellserve)
    spec_path = os.path.join(args.model_repo, args.model, "spec.json")
    if not os.path.isfile(spec_path):
        ap.error("no model %s in %s (./cellserve.sh demo makes build/demo-models)" % (args.model, args.model_repo))
    if not os.path.isfile(args.corpus):
        ap.error("no corpus %s (./cellserve.sh corpus makes it)" % args.corpus)
    with open(spec_path) as f:
        spec = json.load(f)
    if spec.get("kind") == "treelstm" or int(spec.get("vocab_size", 0)) <= 0:
        ap.error("--model %s is a %s; the soak sends token sequences (lstm or seq2seq)" % (args.model, spec.get("kind")))
    if args.plot:
        args.plot = os.path.abspath(args.plot)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, cs.on_signal)
    workdir = tempfile.mkdtemp(prefix="soak.")
    procs = cs.Procs(workdir)
    target = Target(args, procs, workdir)
    rows, failures, sampler = [], [], None
    started = time.monotonic()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        target.start()
        log("%s on %s (front door metrics :%d), cycles of %.0f s at %.0f req/s for %g minutes; work folder %s" %
            (args.target, target.addr, target.front_port, args.cycle_s, args.rate, args.minutes, workdir))
        sampler = Sampler(target, started)
        sampler.start()
        bad = bad_inputs(args, target.addr, int(spec["vocab_size"]))
        i = 0
        while i < 3 or time.monotonic() - started < args.minutes * 60:
            i += 1
            row, fails = run_cycle(args, i, procs, target, bad, os.path.join(workdir, "c%d" % i))
            row["end_s"] = time.monotonic() - started
            rows.append(row)
            failures += fails
            target.check_alive()
    except (RuntimeError, OSError, cs.Interrupted) as e:
        failures.append(str(e))
    finally:
        if sampler:
            sampler.stop.set()
        stopped = procs.stop_all(grace_s=30.0)
        for label, p, _ in target.watched:
            if p.returncode != 0:
                failures.append("%s's exit on SIGTERM: %s" % (label, p.returncode))
        if not args.keep and not failures:
            subprocess.run(["rm", "-rf", workdir])
        else:
            log("kept the work folder %s (stopped: %s)" % (workdir, stopped))

    checks = verdict(rows, failures, args)
    report(rows, checks, sampler.rows if sampler else [], args, date)
    log("done in %.0f s" % (time.monotonic() - started))
    return 0 if not checks else 1


if __name__ == "__main__":
    sys.exit(main())
