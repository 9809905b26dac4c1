#!/usr/bin/python3
"""tools/dev/mutants.py end to end on a tiny CMake project made here: the mutants its test kills
are reported killed, the ones it cannot see survive, the source file is left exactly as it was,
and --rerun tries the survivors again after an edit. Usage: mutants_tool_test.py (exit 0 = pass)."""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "dev", "mutants.py")

CLAMP = """\
// Clamp x into [lo, hi].
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
        if "3 survived" not in run.stdout:
            return fail("the summary does not count 3 survivors")

        # --rerun tries only the survivors, found by their line's text after an edit above them.
        with open(os.path.join(root, "clamp.cc"), "w") as f:
            f.write("// An edit that moves every line down.\n" + CLAMP)
        rerun = subprocess.run([sys.executable, TOOL, "--target", "tiny_test", "--test", "build/tiny_test",
                                "--rerun", "out.json", "clamp.cc"], cwd=root, capture_output=True, text=True)
        print(rerun.stdout)
        if rerun.returncode != 0 or "clamp.cc: 3 mutants" not in rerun.stdout or "3 survived" not in rerun.stdout:
            return fail("--rerun did not try exactly the 3 survivors")
    print("PASS")
    return 0


def fail(why):
    print(f"FAIL: {why}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
