#!/usr/bin/python3
"""tools/dev/mutants.py end to end on a tiny CMake project made here: the mutants its test kills
are reported killed, the ones it cannot see survive, the source file is left exactly as it was,
--rerun tries the survivors again after an edit, and SIGTERM mid-mutant puts the file back and
leaves no test running. Usage: mutants_tool_test.py (exit 0 = pass)."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "dev", "mutants.py")

CLAMP = """\
// Clamp x into [lo, hi]: x < lo gives lo.
int Clamp(int x, int lo, int hi) {
  if (x < lo) return lo;
  if (x > hi) return hi;
  return x;
}
"""

# Checks the lower bound only: dropping the upper clamp goes unseen.
TEST = """\
int Clamp(int x, int lo, int hi);
int main() { return Clamp(-5, 0, 10) == 0 && Clamp(5, 0, 10) == 5 ? 0 : 1; }
"""

CMAKE = """\
cmake_minimum_required(VERSION 3.16)
project(tiny CXX)
add_executable(tiny_test clamp.cc test.cc)
"""


def main():
    with tempfile.TemporaryDirectory(prefix="mutants_tool_test.") as root:
        for name, text in (("clamp.cc", CLAMP), ("test.cc", TEST), ("CMakeLists.txt", CMAKE)):
            with open(os.path.join(root, name), "w") as f:
                f.write(text)
        subprocess.run(["cmake", "-S", ".", "-B", "build", "-G", "Ninja"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL)
        run = subprocess.run([sys.executable, TOOL, "--target", "tiny_test", "--test", "build/tiny_test",
                              "--json", "out.json", "clamp.cc"], cwd=root, capture_output=True, text=True)
        print(run.stdout)
        if run.returncode != 0:
            print(run.stderr)
            return fail(f"the tool exited {run.returncode}")
        with open(os.path.join(root, "clamp.cc")) as f:
            if f.read() != CLAMP:
                return fail("clamp.cc was not put back as it was")
        with open(os.path.join(root, "out.json")) as f:
            outcomes = json.load(f)
        result = {(o["line"], o["operator"], o["mutated"]): o["result"] for o in outcomes}

        def expect(line, operator, mutated, want):
            got = result.get((line, operator, mutated))
            if got != want:
                raise AssertionError(f"line {line} {operator} '{mutated}': {got}, expected {want}")

        try:
            expect(3, "rel", "if (x <= lo) return lo;", "SURVIVED")  # equivalent: x == lo gives lo
            expect(3, "delete", ";  // mutant: statement deleted", "killed")
            expect(3, "negation", "if (x < lo) return lo;", None)  # no ! on the line: no such mutant
            expect(4, "rel", "if (x >= hi) return hi;", "SURVIVED")
            expect(4, "delete", ";  // mutant: statement deleted", "SURVIVED")  # the gap in the test
            expect(5, "delete", ";  // mutant: statement deleted", None)  # a return is never deleted
            if any(o["line"] == 1 for o in outcomes):
                raise AssertionError("a comment line was mutated")
        except AssertionError as e:
            return fail(str(e))
        if not re.search(r"\b3 survived", run.stdout):
            return fail("the summary does not count 3 survivors")

        # --rerun tries only the survivors, found by their line's text after an edit above them.
        with open(os.path.join(root, "clamp.cc"), "w") as f:
            f.write("// An edit that moves every line down.\n" + CLAMP)
        rerun = subprocess.run([sys.executable, TOOL, "--target", "tiny_test", "--test", "build/tiny_test",
                                "--rerun", "out.json", "clamp.cc"], cwd=root, capture_output=True, text=True)
        print(rerun.stdout)
        if (rerun.returncode != 0 or "clamp.cc: 3 mutants" not in rerun.stdout
                or not re.search(r"\b3 survived", rerun.stdout)):
            return fail("--rerun did not try exactly the 3 survivors")
        with open(os.path.join(root, "clamp.cc")) as f:
            edited = f.read()
        if not edited.startswith("// An edit") or edited[edited.index("\n") + 1:] != CLAMP:
            return fail("clamp.cc was not put back after --rerun")

        # Stopped mid-mutant (SIGTERM while a test runs): the file is put back and the test is gone.
        with open(os.path.join(root, "clamp.cc"), "w") as f:
            f.write(CLAMP)
        with open(os.path.join(root, "clamp.orig"), "w") as f:
            f.write(CLAMP)
        slow_test = "cmp -s clamp.cc clamp.orig || exec sleep 61.7"  # slow only on a mutant
        stopped = subprocess.Popen([sys.executable, TOOL, "--target", "tiny_test", "--test", slow_test,
                                    "clamp.cc"], cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        for _ in range(300):  # until the first mutant is in place (30 s at most)
            with open(os.path.join(root, "clamp.cc")) as f:
                if f.read() != CLAMP:
                    break
            time.sleep(0.1)
        else:
            stopped.kill()
            return fail("no mutant was written within 30 s")
        time.sleep(0.5)  # its build, then the slow test
        stopped.send_signal(signal.SIGTERM)
        try:
            _, err = stopped.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            stopped.kill()
            return fail("SIGTERM did not stop the tool")
        with open(os.path.join(root, "clamp.cc")) as f:
            if f.read() != CLAMP:
                return fail("clamp.cc was left mutated after SIGTERM")
        if stopped.returncode != 1 or "interrupted" not in err:
            return fail(f"after SIGTERM: exit {stopped.returncode}, stderr {err!r}")
        leftover = [pid for pid in os.listdir("/proc") if pid.isdigit() and b"sleep\x0061.7" in cmdline(pid)]
        if leftover:
            return fail("the test the tool ran outlived it: pid " + ", ".join(leftover))
    print("PASS")
    return 0


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def fail(why):
    print(f"FAIL: {why}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
