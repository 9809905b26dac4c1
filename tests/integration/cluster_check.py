#!/usr/bin/python3
"""Checks `cellserve loadgen --answers` files against the in-process reference (cluster_test.sh).

  cluster_check.py answers ANSWERS REFERENCE SUMMARY [--allow CODE]...
      ANSWERS: loadgen --answers (one JSON line per request: i, line, code, result or error).
      REFERENCE: `cellserve serve --stdin` output for the corpus, one `MODEL<TAB>sentence` input
      line per corpus line in corpus order, so its 1-based "line" is the corpus line + 1.
      SUMMARY: loadgen --json.
      Passes when: the summary says nothing was unanswered; every request 0..sent-1 is in ANSWERS
      exactly once; its code is OK or one of --allow; the answers agree with the summary's counts;
      every OK answer equals the reference for its corpus line (label and tokens exactly, logits
      within 1e-5); at least one answer is OK.
  cluster_check.py corrupt REFERENCE OUT
      Writes REFERENCE with every result slightly wrong (the last logit + 1e-4, the last token + 1),
      for the self-test that the check fails.
Exit status: 0 passed, 1 failed (reasons on stderr), 2 bad usage. Plain Python, json only.
"""
import json
import sys

TOLERANCE = 1e-5


def load_lines(path):
    out = []
    with open(path) as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                out.append(json.loads(text))
            except ValueError as e:
                raise SystemExit(f"{path}:{n}: not JSON ({e}): {text[:200]!r}")
    return out


def compare(answer, want):
    """None if the OK answer equals the reference entry, else why not."""
    if "error" in want:
        return f"the reference for this line is an error: {want['error']}"
    if "tokens" in want:
        if answer.get("tokens") != want["tokens"]:
            return f"tokens {answer.get('tokens')} != reference {want['tokens']}"
        return None
    if "label" not in want:
        return f"the reference has no result: {want}"
    if answer.get("label") != want["label"]:
        return f"label {answer.get('label')} != reference {want['label']}"
    got, ref = answer.get("logits"), want["logits"]
    if not isinstance(got, list) or len(got) != len(ref):
        return f"logits {got} != reference {ref}"
    worst = max(abs(a - b) for a, b in zip(got, ref))
    if worst > TOLERANCE:
        return f"logits {got} differ from reference {ref} by {worst:.3g} > {TOLERANCE}"
    return None


def check_answers(answers_path, reference_path, summary_path, allowed):
    problems = []
    summary = json.load(open(summary_path))
    reference = {}
    for entry in load_lines(reference_path):
        reference[entry["line"] - 1] = entry  # serve --stdin counts input lines from 1
    answers = load_lines(answers_path)
    sent = summary["sent"]
    if summary.get("unanswered") != 0:
        problems.append(f"loadgen summary: {summary.get('unanswered')} unanswered")
    seen = {}
    for a in answers:
        i = a.get("i")
        if not isinstance(i, int) or not 0 <= i < sent:
            problems.append(f"request index {i!r} outside 0..{sent - 1}: {a}")
            continue
        if i in seen:
            problems.append(f"request {i} answered twice: {seen[i]} and {a}")
            continue
        seen[i] = a
    missing = [i for i in range(sent) if i not in seen]
    if missing:
        problems.append(f"{len(missing)} of {sent} requests missing from the answers file, e.g. {missing[:10]}")
    codes = {}
    mismatches, refused = [], []
    for i in sorted(seen):
        a = seen[i]
        code = a.get("code")
        codes[code] = codes.get(code, 0) + 1
        if code != "OK":
            if code not in allowed:
                refused.append(f"request {i}: {a}")
            continue
        want = reference.get(a.get("line"))
        why = "no reference for corpus line %r" % a.get("line") if want is None else compare(a, want)
        if why:
            mismatches.append(f"request {i} (corpus line {a.get('line')}): {why}")
    if refused:
        problems.append(f"{len(refused)} answer(s) with a code other than OK {' '.join(allowed)}:")
        problems.extend("  " + r for r in refused[:10])
    if mismatches:
        problems.append(f"{len(mismatches)} OK answer(s) differ from the in-process reference:")
        problems.extend("  " + m for m in mismatches[:10])
    if codes.get("OK", 0) == 0:
        problems.append("no answer is OK")
    # The file and the summary tell the same story.
    if codes.get("OK", 0) != summary.get("completed"):
        problems.append(f"{codes.get('OK', 0)} OK answers but the summary says {summary.get('completed')} completed")
    for code, n in summary.get("errors", {}).items():
        if codes.get(code, 0) != n:
            problems.append(f"{codes.get(code, 0)} {code} answers but the summary says {n}")
    text = ", ".join(f"{n} {c}" for c, n in sorted(codes.items(), key=lambda kv: str(kv[0])))
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{answers_path}: FAILED ({sent} sent; {text})", file=sys.stderr)
        return 1
    print(f"{answers_path}: {sent} requests, each answered once ({text}); every OK answer equals the reference")
    return 0


def corrupt(reference_path, out_path):
    with open(out_path, "w") as out:
        for entry in load_lines(reference_path):
            if entry.get("logits"):
                entry["logits"][-1] += 1e-4
            if entry.get("tokens"):
                entry["tokens"][-1] += 1
            out.write(json.dumps(entry) + "\n")
    return 0


def main(argv):
    if len(argv) >= 5 and argv[1] == "answers":
        allowed, rest = [], argv[5:]
        while rest:
            if rest[0] != "--allow" or len(rest) < 2:
                print(__doc__, file=sys.stderr)
                return 2
            allowed.append(rest[1])
            rest = rest[2:]
        return check_answers(argv[2], argv[3], argv[4], allowed)
    if len(argv) == 4 and argv[1] == "corrupt":
        return corrupt(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
