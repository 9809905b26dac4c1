#!/usr/bin/python3
"""Throughput through one `cellserve router` with sim devices spread over several node processes.

For each sim profile (default: cpu-lstm512, measured from our CPU kernels, and gpu-like, NOT
measured) and each layout NODESxDEVICES (default 1x1 2x1 4x1 4x2 4x4 4x8, i.e. 1 to 32 devices over
1 to 4 `cellserve node` processes, then 1x4 and 1x16: the same devices in one node process, for
contrast), this starts a fresh router and its nodes on 127.0.0.1, waits until every node says
"registered with router", offers closed-loop load through the router's RPC port from one or more
`cellserve loadgen` processes (--inflight-per-device calls outstanding per device, capped at
--max-inflight; at most --per-loadgen per loadgen process), and measures one window of
--measure-s seconds after --warmup-s of load:

  - throughput: requests the router answered in the window (its Prometheus counter
    cellserve_requests_total{code="OK"}, scraped at both ends) / the window's wall time;
  - latency p50/p99: the loadgens' own figures (client side, whole run); with several loadgens the
    largest of theirs;
  - CPU: utime+stime of every process (/proc/PID/stat, all threads) over the same window, in
    cores (CPU seconds / wall seconds), by kind (router, nodes, loadgens), and the whole machine's
    busy time (/proc/stat, including other people's processes and steal);
  - from the nodes' metrics: rounds (batches) per request, which the message estimate below uses,
    rows per round (cells / batches) and the devices' busy time;
  - before the load, the idle cluster's CPU (router and nodes) over --idle-s; once per run, an
    idle `cellserve serve` with one sim device as the yardstick.

Before each row it waits (at most --wait-quiet-s) for other work on the machine to settle.

Messages per request (an estimate; the code paths are in cluster/router.cc, cluster/node_agent.cc
and actors/): client <-> router Cap'n Proto call + return (2; capnp's Finish not counted);
router -> node `run` + node -> router `answer` over CAF's middleman (2); inside the router the RPC
thread's call to the router actor and the answer posted back to the kj loop (2); inside the node
the agent -> node actor `infer`, the request actor's spawn, `admit` to the worker, the worker's
final `update`, `finished` to the node actor and the answer to the agent (6); plus the device's
`round_done` per round, shared by the requests of the round (measured: batches / requests).
Load reports (<= 100/s per node) are left out. msgs/s per core = req/s x messages per request /
cores used by our processes.

Every process started is stopped and reaped (SIGTERM, then SIGKILL after a bounded wait), on
error and on Ctrl-C too. Progress goes to stderr; the table to stdout; --json writes everything;
--write-docs replaces (or adds) the section "## Scale through a router, several node processes
(issue 4)" in docs/BENCHMARKS.md.

Run with /usr/bin/python3 (standard library only) from anywhere, after `ninja -C build` and
`./cellserve.sh demo` (build/demo-models; without it a model is made in a temp folder, and without
the corpus a synthetic one is used):
  /usr/bin/python3 bench/cluster_scale.py --json build/cluster-scale.json --write-docs
  /usr/bin/python3 bench/cluster_scale.py --render build/cluster-scale.json   # the table again
"""
import argparse
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Scale through a router, several node processes (issue 4)"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Messages per request besides the rounds (see the module docstring).
MSGS_RPC, MSGS_CLUSTER, MSGS_ROUTER_LOCAL, MSGS_NODE_LOCAL = 2, 2, 2, 6
WAIT_S = 20.0  # every wait for a process to come up or go away is bounded by this


def log(msg):
    print("[cluster_scale %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted("signal %d" % signum)


# ---------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process this run starts, each in its own session (a Ctrl-C reaches only us; we stop
    them in order), with its stderr in a log file."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.live = []  # (kind, name, Popen, log path)

    def start(self, kind, name, argv):
        path = os.path.join(self.workdir, name + ".log")
        with open(path, "wb") as err:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                 start_new_session=True)
        self.live.append((kind, name, p, path))
        return p, path

    def of_kind(self, kind):
        return [(n, p, path) for k, n, p, path in self.live if k == kind]

    def stop(self, kinds=None, grace_s=WAIT_S):
        """SIGTERM the processes of `kinds` (in that order, all of one kind at once), wait up to
        grace_s for each kind, SIGKILL what is left, reap all. Returns {name: exit status or
        'killed after N s'} for the ones stopped here."""
        out = {}
        order = kinds or ["loadgen", "node", "router"]
        for kind in order:
            group = [(n, p) for k, n, p, _ in self.live if k == kind]
            for _, p in group:
                if p.poll() is None:
                    try:
                        p.send_signal(signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + grace_s
            for n, p in group:
                try:
                    out[n] = p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    out[n] = "killed after %.0f s" % grace_s
            self.live = [e for e in self.live if e[0] != kind]
        return out

    def stop_all(self, grace_s=5.0):
        kinds = []
        for k in ["loadgen", "node", "router"] + [e[0] for e in self.live]:
            if k not in kinds:
                kinds.append(k)
        return self.stop(kinds, grace_s)


def read(path):
    try:
        with open(path, "r", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def wait_until(what, cond, procs_to_watch=(), timeout_s=WAIT_S):
    """Polls cond() every 50 ms up to timeout_s; fails early if a watched process exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        if cond():
            return
        for name, p, path in procs_to_watch:
            if p.poll() is not None:
                raise RuntimeError("%s: %s exited with status %s while waiting; its log (%s):\n%s" %
                                   (what, name, p.returncode, path, read(path)[-2000:]))
        if time.monotonic() > deadline:
            raise RuntimeError("%s: not done after %.0f s" % (what, timeout_s))
        time.sleep(0.05)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks; None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5), after pid and comm
    except (OSError, IndexError, ValueError):
        return None


def machine_ticks():
    """(busy, total) clock ticks of the whole machine; busy includes steal."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def scrape(port):
    """Sums of each metric family over its labels, from http://127.0.0.1:PORT/metrics; and under
    "FAMILY:ok" the sum of its series labelled code="OK" (answers, not refusals or errors)."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        text = r.read().decode("utf-8", "replace")
    sums = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        sums[m.group(1)] = sums.get(m.group(1), 0.0) + value
        if m.group(2) and re.search(r'(^\{|,)code="OK"', m.group(2)):
            sums[m.group(1) + ":ok"] = sums.get(m.group(1) + ":ok", 0.0) + value
    return sums


# ---------------------------------------------------------------------------------------------
# One measurement


def loadgen_split(inflight, per_loadgen, fixed):
    n = fixed if fixed > 0 else max(1, math.ceil(inflight / per_loadgen))
    n = min(n, inflight)
    base, extra = divmod(inflight, n)
    return [base + (1 if i < extra else 0) for i in range(n)]


def wait_quiet(args):
    """Waits (at most --wait-quiet-s) until the machine is nearly idle before a point starts, so
    that someone else's burst does not land in the window; returns the busy cores last seen."""
    deadline = time.monotonic() + args.wait_quiet_s
    waited = False
    while True:
        b0, t0 = machine_ticks()
        time.sleep(0.5)
        b1, t1 = machine_ticks()
        busy = (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)
        if busy <= 0.3 or time.monotonic() >= deadline:
            if waited or busy > 0.3:
                log("machine %.2f cores busy before the point%s" % (busy, "" if busy <= 0.3 else "; going on anyway"))
            return busy
        if not waited:
            log("machine %.2f cores busy (someone else's work); waiting up to %.0f s for it to settle" %
                (busy, args.wait_quiet_s))
            waited = True


def serve_idle(args, profile_path, workdir):
    """What one `cellserve serve` (no router, no agent) burns idle, with one sim device: the
    yardstick for the idle router and nodes."""
    procs = Procs(workdir)
    try:
        p, path = procs.start("serve", "serve-idle", [
            args.cellserve, "serve", "--model-repo", args.model_repo, "--models", args.model, "--listen",
            "127.0.0.1:0", "--devices", "1", "--backend", "sim", "--sim-profile", profile_path])
        wait_until("serve up", lambda: "serving" in read(path), procs.of_kind("serve"))
        time.sleep(0.5)
        t0, c0 = time.monotonic(), cpu_ticks(p.pid)
        time.sleep(max(args.idle_s, 1.0))
        t1, c1 = time.monotonic(), cpu_ticks(p.pid)
        return None if c0 is None or c1 is None else (c1 - c0) / CLK_TCK / (t1 - t0)
    except RuntimeError as e:
        log("serve idle: %s" % e)
        return None
    finally:
        procs.stop(["serve"], 5.0)


def run_point(args, profile_name, profile_path, nodes, per_node, workdir, index):
    devices = nodes * per_node
    inflight = min(args.inflight_per_device * devices, args.max_inflight)
    split = loadgen_split(inflight, args.per_loadgen, args.loadgens)
    tag = "%s-%dx%d" % (profile_name, nodes, per_node)
    pdir = os.path.join(workdir, "%02d-%s" % (index, tag))  # fresh: no stale port file from an earlier row
    os.makedirs(pdir)
    procs = Procs(pdir)
    point = {"profile": profile_name, "devices": devices, "nodes": nodes, "devices_per_node": per_node,
             "inflight": inflight, "loadgens": len(split), "problems": []}
    problems = point["problems"]
    try:
        point["busy_before_cores"] = wait_quiet(args) if args.wait_quiet_s > 0 else None
        log("%s: %d device(s) = %d node(s) x %d, %d in flight over %d loadgen(s): starting the router" %
            (profile_name, devices, nodes, per_node, inflight, len(split)))
        rport_file, cport_file = os.path.join(pdir, "router.port"), os.path.join(pdir, "router.cport")
        router_metrics = free_port()
        router, router_log = procs.start("router", "router", [
            args.cellserve, "router", "--cluster", "127.0.0.1:0", "--listen", "127.0.0.1:0",
            "--port-file", rport_file, "--cluster-port-file", cport_file,
            "--metrics-port", str(router_metrics)])
        wait_until("router port files", lambda: read(rport_file).strip() and read(cport_file).strip(),
                   procs.of_kind("router"))
        raddr = "127.0.0.1:" + read(rport_file).strip()
        caddr = "127.0.0.1:" + read(cport_file).strip()
        node_metrics = []
        for i in range(nodes):
            port = free_port()
            node_metrics.append(port)
            procs.start("node", "n%d" % (i + 1), [
                args.cellserve, "node", "--join", caddr, "--model-repo", args.model_repo,
                "--models", args.model, "--listen", "127.0.0.1:0", "--devices", str(per_node),
                "--backend", "sim", "--sim-profile", profile_path, "--node-name", "n%d" % (i + 1),
                "--metrics-port", str(port)])
        node_list = procs.of_kind("node")
        t_nodes = time.monotonic()
        wait_until("%d node(s) registered with the router" % nodes,
                   lambda: all("registered with router" in read(path) for _, _, path in node_list),
                   node_list + procs.of_kind("router"))
        point["register_s"] = time.monotonic() - t_nodes
        if args.idle_s > 0:
            # What the cluster burns with no load at all (timers, load reports, polling threads).
            idle_pids = [router.pid] + [p.pid for _, p, _ in node_list]
            time.sleep(0.5)
            t0, c0 = time.monotonic(), [cpu_ticks(pid) for pid in idle_pids]
            time.sleep(args.idle_s)
            t1, c1 = time.monotonic(), [cpu_ticks(pid) for pid in idle_pids]
            if None not in c0 + c1:
                point["idle_cores"] = {"router": (c1[0] - c0[0]) / CLK_TCK / (t1 - t0),
                                       "nodes": sum(b - a for a, b in zip(c0[1:], c1[1:])) / CLK_TCK / (t1 - t0)}
        log("%s: router %s, %d node(s) registered; starting %d loadgen(s) (%s in flight)" %
            (tag, raddr, nodes, len(split), "+".join(str(s) for s in split)))

        duration = args.warmup_s + args.measure_s + 1.0
        lg_json = []
        for i, n in enumerate(split):
            out = os.path.join(pdir, "loadgen%d.json" % (i + 1))
            lg_json.append(out)
            procs.start("loadgen", "loadgen%d" % (i + 1), [
                args.cellserve, "loadgen", "--addr", raddr, "--model", args.model, "--corpus", args.corpus,
                "--closed-loop", str(n), "--duration-s", "%g" % duration, "--drain-s", "%g" % args.drain_s,
                "--seed", str(i + 1), "--json", out])
        loadgens = procs.of_kind("loadgen")
        # loadgen prints its "closed loop ..." line once the corpus is loaded, just before sending.
        wait_until("loadgens sending", lambda: all("loadgen: closed loop" in read(path) for _, _, path in loadgens),
                   loadgens)
        time.sleep(args.warmup_s)

        everyone = [("router", "router", router)] + [("node", n, p) for n, p, _ in node_list] + \
                   [("loadgen", n, p) for n, p, _ in loadgens]

        def sample():
            return {
                "t": time.monotonic(),
                "cpu": {name: cpu_ticks(p.pid) for _, name, p in everyone},
                "machine": machine_ticks(),
                "router": scrape(router_metrics),
                "nodes": [scrape(port) for port in node_metrics],
            }

        s0 = sample()
        time.sleep(args.measure_s)
        s1 = sample()
        wall = s1["t"] - s0["t"]
        for _, name, _ in everyone:
            if s0["cpu"][name] is None or s1["cpu"][name] is None:
                problems.append("%s exited during the measured window" % name)

        def cores(kind):
            total = 0
            for k, name, _ in everyone:
                if k == kind and s0["cpu"][name] is not None and s1["cpu"][name] is not None:
                    total += s1["cpu"][name] - s0["cpu"][name]
            return total / CLK_TCK / wall

        def delta(family, which="router"):
            if which == "router":
                return s1["router"].get(family, 0.0) - s0["router"].get(family, 0.0)
            return sum(b.get(family, 0.0) - a.get(family, 0.0) for a, b in zip(s0["nodes"], s1["nodes"]))

        # Throughput counts OK answers only: a closed loop re-sends a refused call at once, so
        # refusals can far outnumber answers (10,246 "req/s" of which 330 OK, seen).
        answered = delta("cellserve_requests_total:ok")
        node_requests = delta("cellserve_requests_total", "nodes")
        batches = delta("cellserve_batches_total", "nodes")
        cells = delta("cellserve_cells_total", "nodes")
        busy_s = delta("cellserve_device_busy_seconds_total", "nodes")
        # Where the requests in flight sit, averaged over the two ends of the window: at the router
        # (its RPC calls, and requests handed to its router actor) and in the nodes (handed to their
        # LocalCluster; in the worker actors' schedulers: the rows of the rounds on the devices).
        def gauge(family, which):
            if which == "router":
                return (s0["router"].get(family, 0.0) + s1["router"].get(family, 0.0)) / 2
            return sum(a.get(family, 0.0) + b.get(family, 0.0) for a, b in zip(s0["nodes"], s1["nodes"])) / 2
        point["in_flight_at"] = {
            "router_rpc_calls": gauge("cellserve_rpc_calls_in_flight", "router"),
            "router_requests": gauge("cellserve_requests_in_flight", "router"),
            "node_requests": gauge("cellserve_requests_in_flight", "nodes"),
            "node_rounds_on_devices": gauge("cellserve_rounds_in_flight", "nodes"),
            "node_state_slots_in_use": gauge("cellserve_state_slots_in_use", "nodes"),
        }
        mb0, mt0 = s0["machine"]
        mb1, mt1 = s1["machine"]
        ncpu = os.cpu_count() or 1
        point.update({
            "window_s": wall,
            "router_answered": answered,
            "throughput_rps": answered / wall,
            "cores": {"router": cores("router"), "nodes": cores("node"), "loadgen": cores("loadgen")},
            "machine_busy_cores": (mb1 - mb0) / max(mt1 - mt0, 1) * ncpu,
            "rounds_per_request": batches / node_requests if node_requests else None,
            "rows_per_round": cells / batches if batches else None,
            "device_busy": busy_s / wall / devices,
        })
        c = point["cores"]
        c["total"] = c["router"] + c["nodes"] + c["loadgen"]
        point["others_cores"] = max(0.0, point["machine_busy_cores"] - c["total"])

        # The loadgens finish by themselves (duration, then their drain).
        for name, p, path in loadgens:
            try:
                rc = p.wait(timeout=duration + args.drain_s + WAIT_S)
            except subprocess.TimeoutExpired:
                problems.append("%s did not exit %.0f s after its drain; killed" % (name, WAIT_S))
                rc = None
            if rc not in (0, None):
                problems.append("%s exited with status %s: %s" % (name, rc, read(path).strip().splitlines()[-3:]))
        procs.stop(["loadgen"])
        lgs = []
        for out in lg_json:
            try:
                with open(out) as f:
                    lgs.append(json.load(f))
            except (OSError, ValueError) as e:
                problems.append("no loadgen JSON %s: %s" % (out, e))
        point["loadgen"] = [{k: j.get(k) for k in ("sent", "completed", "errors", "unanswered", "throughput_rps",
                                                   "p50_ms", "p90_ms", "p99_ms", "max_ms", "elapsed_s",
                                                   "connection_broken", "error_samples")} for j in lgs]
        if lgs:
            point["p50_ms"] = max(j["p50_ms"] for j in lgs)
            point["p99_ms"] = max(j["p99_ms"] for j in lgs)
            point["loadgen_throughput_rps"] = sum(j["throughput_rps"] for j in lgs)
            sent = sum(j["sent"] for j in lgs)
            errors = sum(sum(j["errors"].values()) for j in lgs)
            unanswered = sum(j["unanswered"] for j in lgs)
            point.update({"sent": sent, "errors": errors, "unanswered": unanswered})
            if errors:
                problems.append("%d error answer(s): %s" % (errors, [j["error_samples"] for j in lgs if j["errors"]]))
            if unanswered:
                problems.append("%d request(s) unanswered after --drain-s %g" % (unanswered, args.drain_s))
            if any(j.get("connection_broken") for j in lgs):
                problems.append("a loadgen's connection broke")
        if point["throughput_rps"] <= 0 and lgs:
            problems.append("the router's metrics counted no answers in the window; throughput from the loadgens")
            point["throughput_rps"] = point["loadgen_throughput_rps"]

        # Nodes drain and leave, then the router drains and reports.
        stopped = procs.stop(["node", "router"])
        point["exit_status"] = stopped
        for name, rc in stopped.items():
            if rc != 0:
                problems.append("%s: exit status %s after SIGTERM" % (name, rc))
        summary = [line for line in read(router_log).splitlines() if "placement(s)" in line]
        point["router_summary"] = summary[-1] if summary else None
        if not summary:
            problems.append("the router printed no 'placement(s)' summary at exit")
        else:
            m = re.search(r"(\d+) placement\(s\) \((\d+) retried\), (\d+) completed, (\d+) failed, (\d+) rejected",
                          summary[-1])
            if m and lgs:
                placed, retried, completed, failed, rejected = (int(x) for x in m.groups())
                point["router_counts"] = {"placements": placed, "retried": retried, "completed": completed,
                                          "failed": failed, "rejected": rejected}
                lg_completed = sum(j["completed"] for j in lgs)
                if completed != lg_completed or retried or failed or rejected:
                    problems.append("router says %d completed (%d retried, %d failed, %d rejected), "
                                    "the loadgens %d completed" % (completed, retried, failed, rejected, lg_completed))
        for p in problems:
            log("%s: PROBLEM: %s" % (tag, p))
        log("%s: %.0f req/s, p50 %.1f ms, p99 %.1f ms; cores router %.2f nodes %.2f loadgen %.2f "
            "(machine %.2f busy)" % (tag, point["throughput_rps"], point.get("p50_ms", float("nan")),
                                     point.get("p99_ms", float("nan")), c["router"], c["nodes"], c["loadgen"],
                                     point["machine_busy_cores"]))
        return point
    except Interrupted:
        raise
    except Exception as e:  # noqa: BLE001 - a failed point is a result; the run goes on
        problems.append("failed: %s" % e)
        log("%s: FAILED: %s (logs in %s)" % (tag, e, pdir))
        point["failed"] = True
        return point
    finally:
        # No Ctrl-C halfway through the cleanup: signals wait until every process is reaped.
        stop_signals = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            leftover = procs.stop_all()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        if leftover and "exit_status" not in point:
            point["exit_status"] = leftover


# ---------------------------------------------------------------------------------------------
# Derived figures, the table, the docs


def derive(points):
    base = {}
    for p in points:
        if p.get("failed"):
            continue
        if p["devices"] == 1 and p["profile"] not in base:
            base[p["profile"]] = p["throughput_rps"]
    for p in points:
        if p.get("failed"):
            continue
        b = base.get(p["profile"])
        p["vs_linear"] = p["throughput_rps"] / (p["devices"] * b) if b else None
        tput = p["throughput_rps"]
        c = p["cores"]
        rounds = p.get("rounds_per_request") or 0.0
        p["msgs_per_request"] = MSGS_RPC + MSGS_CLUSTER + MSGS_ROUTER_LOCAL + MSGS_NODE_LOCAL + rounds
        p["rps_per_core"] = tput / c["total"] if c["total"] else None
        p["msgs_per_s_per_core"] = tput * p["msgs_per_request"] / c["total"] if c["total"] else None
        p["cpu_us_per_request"] = {k: (v * 1e6 / tput if tput else None) for k, v in c.items()}


def fmt(x, spec, dash="-"):
    return dash if x is None else format(x, spec)


def table(points, profile):
    rows = [p for p in points if p["profile"] == profile]
    out = ["| devices | nodes × dev | in flight | req/s | vs linear | p50 ms | p99 ms | rows/round | device busy "
           "| router cores | nodes cores | loadgen cores | total cores | machine busy | req/s per core "
           "| router µs/req | msgs/req | msgs/s per core | idle cores router + nodes |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in rows:
        if p.get("failed"):
            out.append("| %d | %d × %d | %d | failed: %s |" % (p["devices"], p["nodes"], p["devices_per_node"],
                                                              p["inflight"], "; ".join(p["problems"])[:200]))
            continue
        c = p["cores"]
        idle = p.get("idle_cores")
        out.append("| %d | %d × %d |" % (p["devices"], p["nodes"], p["devices_per_node"]) + " %s |" * 17 % (
            format(p["inflight"], ","),
            format(round(p["throughput_rps"]), ",") + (" (errors: see below)" if p.get("problems") else ""),
            fmt(p.get("vs_linear"), ".2f"),
            fmt(p.get("p50_ms"), ".1f"),
            fmt(p.get("p99_ms"), ".1f"), fmt(p.get("rows_per_round"), ".1f"), "%.0f%%" % (100 * p["device_busy"]),
            "%.2f" % c["router"], "%.2f" % c["nodes"], "%.2f" % c["loadgen"], "%.2f" % c["total"],
            "%.2f" % p["machine_busy_cores"], fmt(p.get("rps_per_core"), ",.0f"),
            fmt(p["cpu_us_per_request"]["router"], ".0f"), fmt(p.get("msgs_per_request"), ".1f"),
            fmt(p.get("msgs_per_s_per_core"), ",.0f"),
            "%.2f + %.2f" % (idle["router"], idle["nodes"]) if idle else "-"))
    return "\n".join(out)


def saturation(rows, ncpu):
    """The first row (in run order) whose processes used >= 85% of the machine's cores, or None."""
    for p in rows:
        if p["cores"]["total"] >= 0.85 * ncpu:
            return p
    return None


def num(x):
    return format(round(x), ",")


def lay(p):
    return "%d × %d" % (p["nodes"], p["devices_per_node"])


def profile_fixed_us(path):
    """The fixed cost per round (c_us) of a sim profile's LSTM cell, or None."""
    try:
        with open(path) as f:
            prof = json.load(f)
        return float(prof.get("costs", {}).get("lstm", prof.get("default", {}))["c_us"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def interpret(points, args, serve_idle_cores=None):
    """3 to 6 bullets, from the numbers."""
    ok = [p for p in points if not p.get("failed")]
    ncpu = os.cpu_count() or 1
    bullets = []
    mains = {}
    for profile in args.profiles:
        rows = [p for p in ok if p["profile"] == profile and p.get("vs_linear") is not None]
        if not rows:
            continue
        # Main rows: the first layout of each device count; later ones are contrasts.
        main, seen = [], set()
        for p in rows:
            if p["devices"] not in seen:
                seen.add(p["devices"])
                main.append(p)
        mains[profile] = main
        contrast = [p for p in rows if p not in main]
        base = next(p for p in main if p["devices"] == 1)
        best = max(rows, key=lambda p: p["throughput_rps"])
        text = "**%s**: 1 device %s req/s (device %.0f%% busy, %.1f rows per round, our processes %.2f cores)." % (
            profile, num(base["throughput_rps"]), 100 * base["device_busy"], base["rows_per_round"] or 0,
            base["cores"]["total"])
        upto = None
        for p in main[1:]:
            if p["vs_linear"] < 0.9:
                break
            upto = p
        if upto:
            text += " The 0.9×-linear target holds up to %d devices (%s: %.2f×)" % (
                upto["devices"], lay(upto), upto["vs_linear"])
        else:
            text += " The 0.9×-linear target is missed from 2 devices on"
        after = [p for p in main[1:] if p["vs_linear"] < 0.9 and (upto is None or p["devices"] > upto["devices"])]
        if after:
            text += "; then %s" % ", ".join("%.2f× at %s" % (p["vs_linear"], lay(p)) for p in after)
        text += ". Best %s req/s (%s)." % (num(best["throughput_rps"]), lay(best))
        early = next((p for p in after if p["cores"]["total"] < 0.85 * ncpu), None)
        fixed = profile_fixed_us(args.profile_paths.get(profile, "")) if hasattr(args, "profile_paths") else None
        if early and early["rows_per_round"] and base["rows_per_round"]:
            text += (" %s misses before the cores run out (%.2f cores): its devices are %.0f%% busy but their "
                     "rounds carry %.1f rows against %.1f at 1 device%s." % (
                         lay(early), early["cores"]["total"], 100 * early["device_busy"], early["rows_per_round"],
                         base["rows_per_round"],
                         ", so the profile's fixed %g µs per round weighs more" % fixed if fixed else ""))
        sat = saturation(main, ncpu)
        if sat:
            us = sat["cpu_us_per_request"]
            text += (" The %d cores are used up from %s on (%.2f cores): a request there costs %s µs of CPU "
                     "(router %s, nodes %s, loadgen %s)." % (
                         ncpu, lay(sat), sat["cores"]["total"], num(us["total"]), num(us["router"]),
                         num(us["nodes"]), num(us["loadgen"])))
        for q in contrast:
            other = next((p for p in main if p["devices"] == q["devices"]), None)
            if other:
                text += " The same %d devices in %d process%s: %s req/s (%.2f×) against %s in %d." % (
                    q["devices"], q["nodes"], "" if q["nodes"] == 1 else "es", num(q["throughput_rps"]),
                    q["vs_linear"], num(other["throughput_rps"]), other["nodes"])
        bullets.append(text)

    # Why: the idle cost, and the nodes' CPU per request against the rows per round.
    idle = [p for p in ok if p.get("idle_cores")]
    text = ""
    if idle:
        per_node = max(p["idle_cores"]["nodes"] / p["nodes"] for p in idle)
        router = max(p["idle_cores"]["router"] for p in idle)
        serve = "" if serve_idle_cores is None else "; an idle `cellserve serve`: %.3f" % serve_idle_cores
        if per_node > 0.05 or router > 0.05:
            text = ("Idle, each node process burns up to %.2f cores and the router %.2f%s, so idle node processes "
                    "alone take a share of the %d cores. " % (per_node, router, serve, ncpu))
        else:
            text = ("Idle, the cluster costs next to nothing (at most %.3f cores per node process, %.3f for the "
                    "router%s), so what fills the cores is per-request and per-round work. " % (per_node, router,
                                                                                               serve))
    growth = []
    for profile, main in mains.items():
        if len(main) > 1:
            first = main[0]
            peak = max(main, key=lambda p: p["cpu_us_per_request"]["nodes"] or 0)
            if peak is not first:
                growth.append("%s %s µs at %s, up to %s at %s; rows per round %.1f and %.1f" % (
                    profile, num(first["cpu_us_per_request"]["nodes"]), lay(first),
                    num(peak["cpu_us_per_request"]["nodes"]), lay(peak), first["rows_per_round"] or 0,
                    peak["rows_per_round"] or 0))
    if growth:
        text += ("The nodes' CPU per request grows as the requests spread over more devices and processes (%s): "
                 "a round costs the node the same messages and thread wake-ups whatever its size, and the 2 cores "
                 "then serve several processes' threads. Here every process shares this VM's %d cores; on "
                 "separate machines the per-process costs would not add up this way." % ("; ".join(growth), ncpu))
    if text:
        bullets.append(text)
    routers = sorted(p["cpu_us_per_request"]["router"] for p in ok if p["cpu_us_per_request"]["router"])
    if routers:
        med = routers[len(routers) // 2]
        bullets.append("The router's CPU per request (its RPC thread with Cap'n Proto, the router actor, CAF's "
                       "middleman): %s to %s µs (median %s), so one router core answers about %s req/s at the "
                       "median and %s at the best (what one RPC connection carries alone: section \"RPC front "
                       "door\")."
                       % (num(routers[0]), num(routers[-1]), num(med), num(1e6 / med), num(1e6 / routers[0])))
    if ok:
        mp = [p["msgs_per_request"] for p in ok]
        mc = [p["msgs_per_s_per_core"] for p in ok if p.get("msgs_per_s_per_core")]
        rc = [p["rps_per_core"] for p in ok if p.get("rps_per_core")]
        others = max(p["others_cores"] for p in ok)
        bullets.append("Per core of all our processes: %s to %s req/s, %s to %s messages/s (estimated %.0f to %.0f "
                       "messages per request; fewer rows per round mean more `round_done` per request). "
                       "One run per row on a shared %d-core VM (other work took up to %.2f cores in a window); "
                       "read differences under about 25%% as noise (one row repeated on a quiet machine "
                       "ranged that much)."
                       % (num(min(rc)), num(max(rc)), num(min(mc)), num(max(mc)), min(mp), max(mp), ncpu, others))
    return bullets[:6]


def machine_line(load):
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d cores, shared and noisy (load average %s at the start)" % (model, os.cpu_count() or 1, load)


def wrap(text, indent=""):
    return textwrap.fill(text, width=100, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def section_text(result, args):
    lines = [SECTION, ""]
    lines.append(wrap(
        "`bench/cluster_scale.py` starts one `cellserve router` and 1 to 4 `cellserve node` processes with sim "
        "devices (`--backend sim`: they compute nothing and take the profile's time), all on 127.0.0.1, a fresh "
        "cluster per row; `cellserve loadgen` processes offer closed-loop load through the router's RPC port "
        "(%d in flight per device, at most %d in all and %d per loadgen). Model `%s` (lstm, hidden 512), "
        "State of the Union sentences. Per row: %g s of warm-up, then a %g s window in which throughput is the "
        "router's count of OK answers (Prometheus, scraped at both ends) and CPU is utime+stime from "
        "/proc/PID/stat of every process. Latency is the loadgens' (client side, the whole run, the worst "
        "loadgen's). One run per row on %s (%s), %s. The run took %.0f s."
        % (args.inflight_per_device, args.max_inflight, args.per_loadgen, args.model, args.warmup_s,
           args.measure_s, result["date"], result["date_range"], result["machine"], result["elapsed_s"])))
    lines += ["", "    " + result["command"], ""]
    lines.append(wrap(
        "Columns: nodes × dev = node processes × sim devices each (the 1 × N rows put the same devices in one "
        "process, for contrast); vs linear = req/s ÷ (devices × the 1-device req/s); rows/round = cells per "
        "device round (the batch); device busy = the sim devices' busy time ÷ wall time; cores = CPU s ÷ wall s "
        "per process kind, machine busy = the whole VM's (/proc/stat: other work and steal included); router "
        "µs/req = router CPU per OK answer; idle cores = the router and all nodes with no load, measured "
        "for %g s before the load." % args.idle_s))
    lines.append("")
    lines.append(wrap(
        "Messages per request (an estimate from the code paths, not a count): 2 Cap'n Proto (call, return) + 2 "
        "CAF between router and node (`run`, `answer`) + 2 inside the router (RPC thread to router actor, answer "
        "posted back to the kj loop) + 6 inside the node (agent to node actor, request actor spawn, `admit`, the "
        "worker's final `update`, `finished`, answer to the agent) + one `round_done` per round, shared by the "
        "round's requests (measured: the nodes' batches ÷ requests). Load reports (at most 100/s per node) are "
        "left out. msgs/s per core = req/s × msgs/req ÷ total cores."))
    for profile in args.profiles:
        desc = "measured from our CPU kernels" if profile == "cpu-lstm512" else (
            "NOT measured, GPU-like figures" if profile == "gpu-like" else "")
        lines += ["", "Profile `%s`%s:" % (profile, " (%s)" % desc if desc else ""), ""]
        lines.append(table(result["points"], profile))
    problems = [(p["profile"], p["devices"], x) for p in result["points"] for x in p["problems"]]
    if problems:
        lines += ["", "Problems seen in this run:", ""]
        lines += [wrap("- %s, %d devices: %s" % pr, "  ") for pr in problems]
    lines += [""]
    lines += [wrap("- " + b, "  ") for b in result["bullets"]]
    return "\n".join(lines) + "\n"


def write_docs(path, text, section=SECTION):
    """Replaces `section` of the markdown file at `path` (its heading line up to the next '## ')
    with `text`, or appends `text` when the file has no such section."""
    with open(path) as f:
        doc = f.read()
    if doc.startswith(section + "\n"):
        begin = 0
    else:
        start = doc.find("\n" + section + "\n")
        begin = start + 1 if start >= 0 else None
    if begin is None:
        new = doc.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        nxt = re.search(r"^## ", doc[begin + len(section):], re.M)
        end = begin + len(section) + nxt.start() if nxt else len(doc)
        rest = doc[end:]
        new = doc[:begin] + text.rstrip("\n") + "\n" + ("\n" + rest if rest else "")
    with open(path, "w") as f:
        f.write(new)


# ---------------------------------------------------------------------------------------------


def parse_layouts(text):
    out = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", item)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise argparse.ArgumentTypeError("layout %r is not NODESxDEVICES (e.g. 4x2)" % item)
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def default_corpus():
    cache = os.environ.get("CELLSERVE_CACHE") or os.path.join(os.environ.get("HOME") or "/tmp", ".cache", "cellserve")
    return os.path.join(cache, "sotu_sentences.txt")


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " See the top of this file for the method.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cellserve", default=os.path.join(ROOT, "build", "cellserve"), help="the cellserve binary")
    ap.add_argument("--model-repo", default=os.path.join(ROOT, "build", "demo-models"),
                    help="model repository (made with `cellserve model init` in a temp folder if it lacks --model)")
    ap.add_argument("--model", default="sentiment", help="model to serve and load")
    ap.add_argument("--corpus", default=default_corpus(),
                    help="sentences, one a line (./cellserve.sh corpus makes the default); a synthetic one if missing")
    ap.add_argument("--profiles", default="cpu-lstm512,gpu-like",
                    help="comma-separated sim profiles: names in kernels/sim/profiles/ or JSON paths")
    ap.add_argument("--layouts", type=parse_layouts, default="1x1,2x1,4x1,4x2,4x4,4x8,1x4,1x16",
                    help="comma-separated NODESxDEVICES_PER_NODE; the first with 1 device is the linear baseline")
    ap.add_argument("--inflight-per-device", type=int, default=64, help="closed loop: calls outstanding per device")
    ap.add_argument("--max-inflight", type=int, default=2048, help="cap on the calls outstanding in all")
    ap.add_argument("--per-loadgen", type=int, default=512,
                    help="calls outstanding per loadgen process at most (so more loadgens above)")
    ap.add_argument("--loadgens", type=int, default=0, help="loadgen processes per point (0: from --per-loadgen)")
    ap.add_argument("--warmup-s", type=float, default=2.0, help="load before the window opens")
    ap.add_argument("--measure-s", type=float, default=4.0, help="the measured window")
    ap.add_argument("--idle-s", type=float, default=1.0,
                    help="before the load, measure the idle cluster's CPU for this long (0: skip)")
    ap.add_argument("--wait-quiet-s", type=float, default=10.0,
                    help="before each point, wait at most this long for other work on the machine to settle (0: no)")
    ap.add_argument("--drain-s", type=float, default=15.0, help="loadgen --drain-s")
    ap.add_argument("--json", default="", help="write the results to this file")
    ap.add_argument("--write-docs", action="store_true",
                    help="replace (or add) the section '%s' in --docs" % SECTION[3:])
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"), help="for --write-docs")
    ap.add_argument("--render", default="", metavar="RESULTS_JSON",
                    help="run nothing: print (and with --write-docs write) the table of an earlier --json file")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, port files, loadgen JSON)")
    args = ap.parse_args()
    args.profiles = [p for p in args.profiles.split(",") if p]
    if args.inflight_per_device < 1 or args.max_inflight < 1 or args.per_loadgen < 1 or args.loadgens < 0:
        ap.error("--inflight-per-device, --max-inflight and --per-loadgen must be >= 1, --loadgens >= 0")
    if args.per_loadgen > 1024 and args.loadgens == 0:
        ap.error("--per-loadgen above 1024 exceeds the router's --max-calls-per-connection default")
    if not os.access(args.cellserve, os.X_OK):
        ap.error("%s is not an executable (build it: ninja -C build)" % args.cellserve)
    profile_paths = {}
    for p in args.profiles:
        path = p if p.endswith(".json") else os.path.join(ROOT, "kernels", "sim", "profiles", p + ".json")
        if not os.path.isfile(path):
            ap.error("no sim profile %s" % path)
        profile_paths[p] = path
    args.profile_paths = profile_paths

    if args.render:
        with open(args.render) as f:
            result = json.load(f)
        for k, v in result["settings"].items():
            setattr(args, k, v)
        return report(result, args)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    t_start = time.monotonic()
    date_start = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    workdir = tempfile.mkdtemp(prefix="cluster_scale.")
    log("work folder %s; load average %s" % (workdir, load))
    points = []
    serve_idle_cores = None
    rc = 0
    try:
        if not os.path.isfile(os.path.join(args.model_repo, args.model, "spec.json")):
            args.model_repo = os.path.join(workdir, "models")
            log("no model %s in the repository; making one in %s" % (args.model, args.model_repo))
            subprocess.run([args.cellserve, "model", "init", "--repo", args.model_repo, "--name", args.model,
                            "--kind", "lstm", "--hidden", "512", "--layers", "1"], check=True,
                           stdout=subprocess.DEVNULL, timeout=120)
        if not os.path.isfile(args.corpus):
            log("no corpus %s (./cellserve.sh corpus makes it); using a synthetic one" % args.corpus)
            import random
            rnd = random.Random(1)
            words = ["the", "nation", "people", "we", "will", "work", "for", "jobs", "and", "a", "strong", "future",
                     "of", "our", "country", "is", "free", "to", "build", "every", "American", "family"]
            args.corpus = os.path.join(workdir, "corpus.txt")
            with open(args.corpus, "w") as f:
                for _ in range(20000):
                    f.write(" ".join(rnd.choice(words) for _ in range(rnd.randint(5, 60))) + ".\n")
        serve_idle_cores = serve_idle(args, profile_paths[args.profiles[0]], workdir) if args.idle_s > 0 else None
        if serve_idle_cores is not None:
            log("idle `cellserve serve` (1 sim device): %.3f cores" % serve_idle_cores)
        for profile in args.profiles:
            for nodes, per_node in args.layouts:
                points.append(run_point(args, profile, profile_paths[profile], nodes, per_node, workdir,
                                        len(points) + 1))
    except Interrupted as e:
        log("interrupted (%s); stopped every process started" % e)
        rc = 130
    finally:
        if not args.keep and rc == 0 and not any(p["problems"] for p in points):
            subprocess.run(["rm", "-rf", workdir])
        else:
            log("logs kept in %s" % workdir)
    if rc:
        return rc

    elapsed = time.monotonic() - t_start
    date_end = subprocess.run(["date", "-u", "+%H:%M"], capture_output=True, text=True).stdout.strip()
    argv = ["/usr/bin/python3", "bench/cluster_scale.py"] + [a for a in sys.argv[1:]]
    result = {
        "command": " ".join(argv),
        "date": date_start,
        "date_range": "%s-%s UTC" % (time.strftime("%H:%M", time.gmtime(time.time() - elapsed)), date_end),
        "machine": machine_line(load),
        "elapsed_s": elapsed,
        "settings": {k: v for k, v in vars(args).items() if k in SETTINGS},
        "serve_idle_cores": serve_idle_cores,
        "points": points,
    }
    result["settings"]["layouts"] = ["%dx%d" % l for l in args.layouts]
    return report(result, args)


# What --render takes back from a results file.
SETTINGS = ("cellserve", "model_repo", "model", "corpus", "profiles", "layouts", "inflight_per_device",
            "max_inflight", "per_loadgen", "loadgens", "warmup_s", "measure_s", "idle_s", "wait_quiet_s",
            "drain_s")


def report(result, args):
    """Derived figures, the table and bullets on stdout, --json, --write-docs."""
    points = result["points"]
    elapsed = result["elapsed_s"]
    derive(points)
    result["bullets"] = interpret(points, args, result.get("serve_idle_cores"))
    for profile in args.profiles:
        print("\nprofile %s:\n%s" % (profile, table(points, profile)))
    print()
    for b in result["bullets"]:
        print("- " + b.replace("**", ""))
    problems = [(p["profile"], p["devices"], x) for p in points for x in p["problems"]]
    for pr in problems:
        print("PROBLEM: %s, %d devices: %s" % pr)
    print("\n%d point(s) in %.0f s" % (len(points), elapsed))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        log("wrote %s" % args.json)
    if args.write_docs:
        write_docs(args.docs, section_text(result, args))
        log("wrote the section '%s' in %s" % (SECTION[3:], args.docs))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
