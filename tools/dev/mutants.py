#!/usr/bin/python3
"""Mutation check: plants one small bug at a time in a source file and runs its tests.

A mutant is the file with one change a slip of the hand could make: a comparison that includes
its bound or not (< and <=), == and !=, && and ||, + and -, an off-by-one (+ 1 dropped),
true and false, min and max, a negation dropped, one statement deleted. For each mutant the
script rebuilds the test target and runs it; a failing test "kills" the mutant. A mutant that
survives is a bug the tests would not see, or a change that does not alter behaviour (an
equivalent mutant): read each survivor and decide which.

Contract:
- It edits the files it is given, one mutant at a time, and puts each back (also on SIGINT or
  SIGTERM). Run it in a separate checkout (git worktree add /tmp/mut), so that a build you use is
  not touched.
- Needs a Ninja build: it stops if the build says "no work to do" after an edit (a file system
  without sub-second times). A mutant that does not compile is skipped, not counted. A test run
  that goes past --timeout-s counts as killed (a planted endless loop).
- Exit status 0 when it ran (survivors are reported, not failed on); 1 when interrupted; 2 on
  bad arguments.

Example (3 to 7 s a mutant for runtime_test on 2 cores; tests/integration/mutants_tool_test.py
runs it on a tiny project):
  git worktree add --detach /tmp/mut && cd /tmp/mut
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
  /usr/bin/python3 tools/dev/mutants.py --target runtime_test --json run1.json runtime/scheduler.cc
  # read the survivors, add tests, then try only those again:
  /usr/bin/python3 tools/dev/mutants.py --target runtime_test --rerun run1.json runtime/scheduler.cc
"""

import argparse
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

# (name, pattern, replacement): applied at each match on the code part of a line, one at a time.
# Binary operators are matched with the spaces clang-format puts around them, which keeps
# template brackets (std::vector<int>), ->, << and >> out.
OPERATORS = [
    ("rel", r" < ", " <= "),
    ("rel", r" <= ", " < "),
    ("rel", r" > ", " >= "),
    ("rel", r" >= ", " > "),
    ("eq", r" == ", " != "),
    ("eq", r" != ", " == "),
    ("logic", r" && ", " || "),
    ("logic", r" \|\| ", " && "),
    ("arith", r" \+ (?!1(?![\w.]))", " - "),
    ("arith", r" - (?!1(?![\w.]))", " + "),
    ("arith", r" \+= ", " -= "),
    ("arith", r" -= ", " += "),
    ("off-by-one", r" \+ 1(?![\w.])", ""),
    ("off-by-one", r" - 1(?![\w.])", ""),
    ("bool", r"\btrue\b", "false"),
    ("bool", r"\bfalse\b", "true"),
    ("minmax", r"\bstd::min\(", "std::max("),
    ("minmax", r"\bstd::max\(", "std::min("),
    ("negation", r"!(?=[A-Za-z_(])", ""),
]


def code_lines(lines):
    """Each line's code: comments (// and /* */, also across lines) and string and char literals
    blanked to spaces, same length. Lines mutants must not touch come back blank: preprocessor
    lines, asserts (off in Release) to their closing ';', and lines with a raw string (R"...")."""
    out = []
    in_comment = False
    in_assert = False
    for line in lines:
        text = line.rstrip("\r\n")
        stripped = text.strip()
        if stripped.startswith("#") and not in_comment or 'R"' in text:
            out.append("")
            continue
        chars, quote, i = [], None, 0
        while i < len(text):
            ch = text[i]
            if in_comment:
                if text.startswith("*/", i):
                    in_comment = False
                    chars.append("  ")
                    i += 2
                    continue
                chars.append(" ")
            elif quote:
                if ch == "\\":
                    chars.append("  ")
                    i += 2
                    continue
                chars.append(ch if ch == quote else " ")
                if ch == quote:
                    quote = None
            elif text.startswith("//", i):
                break
            elif text.startswith("/*", i):
                in_comment = True
                chars.append("  ")
                i += 2
                continue
            elif ch == '"' or (ch == "'" and not (i > 0 and text[i - 1].isalnum())):  # not 1'000
                quote = ch
                chars.append(ch)
            else:
                chars.append(ch)
            i += 1
        code = "".join(chars)[: len(text)]
        if in_assert or code.strip().startswith("assert("):
            in_assert = not code.rstrip().endswith(";")
            code = ""
        out.append(code)
    return out


def is_statement_start(codes, index):
    """True when line `index` starts a statement (the code line above it ended one)."""
    for j in range(index - 1, -1, -1):
        prev = codes[j].strip()
        if prev:
            return prev.endswith((";", "{", "}")) or (prev.endswith(":") and not prev.endswith("::"))
    return True


def mutants_of(lines):
    """Every mutant of the file: (line index, operator name, new line)."""
    found = []
    codes = code_lines(lines)
    for index, (line, code) in enumerate(zip(lines, codes)):
        if not code.strip():
            continue
        for name, pattern, replacement in OPERATORS:
            for match in re.finditer(pattern, code):
                mutated = line[: match.start()] + replacement + line[match.end():]
                found.append((index, name, mutated))
        code_stripped = code.strip()
        if (code_stripped.endswith(";") and not code_stripped.startswith(("return", "}", "case"))
                and code_stripped.count("(") == code_stripped.count(")")
                and is_statement_start(codes, index)):
            indent = line[: len(line) - len(line.lstrip())]
            ending = line[len(line.rstrip("\r\n")):]
            found.append((index, "delete", indent + ";  // mutant: statement deleted" + ending))
    return found


def run(cmd, timeout_s, keep_output=False):
    """(return code, seconds, output); return code None when it ran past timeout_s. The output
    (stdout and stderr) is kept only when asked."""
    start = time.monotonic()
    out = subprocess.PIPE if keep_output else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, shell=True, stdout=out, stderr=subprocess.STDOUT if keep_output else out,
                            start_new_session=True, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        kill_group(proc)
        output, _ = proc.communicate()
        rc = None
    except BaseException:  # stopped: no build or test may outlive us (or build a mutant later)
        kill_group(proc)
        proc.wait()
        raise
    return rc, time.monotonic() - start, output or ""


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def write_file(path, text):
    """Replaces `path`'s contents at once (a temporary file renamed over it), keeping line ends."""
    temporary = path + ".mutant-tmp"
    with open(temporary, "w", newline="") as f:
        f.write(text)
    os.replace(temporary, path)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)


def main():
    def stop(signum, frame):  # puts the file back (see the finally below)
        raise KeyboardInterrupt

    # SIGINT too: a shell's background job inherits it ignored, and would not stop on Ctrl-C.
    # SIGPIPE: a closed `| head` or `| tee` stops the run cleanly instead of killing it mid-mutant.
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Read the module docstring (head -30 tools/dev/mutants.py) for the contract.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="source files to mutate, relative to the checkout")
    parser.add_argument("--target", required=True, help="ninja target to rebuild, e.g. runtime_test")
    parser.add_argument("--build-dir", default="build", help="configured build folder (default build)")
    parser.add_argument("--test", help="test command (default: BUILD_DIR/tests/unit/TARGET)")
    parser.add_argument("--timeout-s", type=float, default=120,
                        help="a test run longer than this counts as killed (default 120)")
    parser.add_argument("--sample", type=int, default=0,
                        help="try this many mutants per file, chosen at random (default all)")
    parser.add_argument("--seed", type=int, default=1, help="seed for --sample (default 1)")
    parser.add_argument("--rerun", metavar="JSON",
                        help="try only the mutants that survived in an earlier run's --json (matched by "
                             "the line's text, so edits elsewhere in the file do not matter)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--json", help="write every outcome to this file")
    args = parser.parse_args()
    if args.list:  # nothing to put back: a closed pipe may end it at once
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    test_cmd = args.test or os.path.join(args.build_dir, "tests", "unit", args.target)
    build_cmd = f"cmake --build {args.build_dir} --target {args.target}"
    for path in args.files:
        if not os.path.isfile(path):
            parser.error(f"{path}: no such file (paths are relative to the checkout)")
    if not args.list:
        if not os.path.isdir(args.build_dir):
            parser.error(f"{args.build_dir}: not a build folder; configure one first (see --help)")
        rc, _, _ = run(build_cmd, 1800)
        if rc != 0:
            parser.error(f"`{build_cmd}` fails before any mutant; fix the build first")
        rc, _, _ = run(test_cmd, args.timeout_s)
        if rc != 0:
            parser.error(f"`{test_cmd}` fails before any mutant; the tests must pass first")

    earlier = None
    if args.rerun:
        try:
            with open(args.rerun) as f:
                earlier = collections.Counter((os.path.normpath(o["file"]), o["original"], o["mutated"])
                                              for o in json.load(f) if o["result"] == "SURVIVED")
        except (OSError, ValueError, KeyError, TypeError) as e:
            parser.error(f"--rerun {args.rerun}: {e}")

    outcomes = []
    rng = random.Random(args.seed)
    interrupted = False
    for path in args.files:
        with open(path, newline="") as f:
            original = f.read()
        lines = original.splitlines(keepends=True)
        candidates = mutants_of(lines)
        if earlier is not None:
            # Each earlier survivor matches one mutant of the same line text (texts can repeat).
            left = collections.Counter({k: v for k, v in earlier.items() if k[0] == os.path.normpath(path)})
            asked = sum(left.values())
            kept = []
            for c in candidates:
                key = (os.path.normpath(path), lines[c[0]].strip(), c[2].strip())
                if left[key] > 0:
                    left[key] -= 1
                    kept.append(c)
            candidates = kept
            print(f"{path}: {asked} earlier survivors; {asked - len(kept)} of them are no longer in the file")
        if args.sample and len(candidates) > args.sample:
            candidates = sorted(rng.sample(candidates, args.sample))
        print(f"{path}: {len(candidates)} mutants", flush=True)
        if args.list:
            for index, name, mutated in candidates:
                print(f"  {path}:{index + 1} {name}: {mutated.strip()}")
            continue
        try:
            for number, (index, name, mutated) in enumerate(candidates, 1):
                where = f"{path}:{index + 1}"
                write_file(path, "".join(lines[:index] + [mutated] + lines[index + 1:]))
                rc, build_s, build_output = run(build_cmd, 1800, keep_output=True)
                if rc == 0 and "no work to do" in build_output:
                    raise SystemExit(f"{where}: the build did not see the changed file: is {path} part "
                                     f"of {args.target}? (or the file system keeps no sub-second times)")
                if rc is None:
                    raise SystemExit(f"{where}: the build ran past 30 minutes; stopping")
                if rc != 0:
                    result, test_s = "no-compile", 0.0
                else:
                    rc, test_s, _ = run(test_cmd, args.timeout_s)
                    result = "killed" if rc != 0 else "SURVIVED"
                    if rc is None:
                        result = "killed (timeout)"
                print(f"  [{number}/{len(candidates)}] {where} {name:10} {result:16} "
                      f"{build_s + test_s:5.1f} s  {mutated.strip()}", flush=True)
                outcomes.append({"file": path, "line": index + 1, "operator": name,
                                 "mutated": mutated.strip(), "original": lines[index].strip(),
                                 "result": result})
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for sig in STOP_SIGNALS:  # a second signal must not cut the restore short
                signal.signal(sig, signal.SIG_IGN)
            write_file(path, original)
            for sig in STOP_SIGNALS:
                signal.signal(sig, stop)
        if interrupted:
            print("interrupted; the file is restored", file=sys.stderr)
            break

    if args.list:
        return 0
    run(build_cmd, 1800, keep_output=True)  # leave the build matching the restored sources
    tried = [o for o in outcomes if o["result"] != "no-compile"]
    survivors = [o for o in tried if o["result"] == "SURVIVED"]
    print(f"\n{len(tried)} mutants built and tested, {len(tried) - len(survivors)} killed, "
          f"{len(survivors)} survived, {len(outcomes) - len(tried)} did not compile")
    for o in survivors:
        print(f"  survived {o['file']}:{o['line']} {o['operator']}\n"
              f"    was: {o['original']}\n    now: {o['mutated']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(outcomes, f, indent=1)
    return 1 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
