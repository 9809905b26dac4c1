#!/usr/bin/python3
"""tools/export_pytorch.py end to end on tiny PyTorch models made here: one export per kind (lstm,
seq2seq, treelstm) served by `cellserve serve --stdin` and compared with PyTorch's forward on the
ids the server gives the same text; heads without a bias (nn.Linear(bias=False)) served equal to
PyTorch; and the exporter's refusals and messages: unexpected keys (and the warning listing what
--allow-extra ignores), an existing model without --force, whole pickled modules (weights_only
loading, --trust-pickle), checkpoint dicts under another key (--key), GRU/RNN weights, options of
the other kind, non-finite weights, the vocabulary note, --help's gate orders, and temporary files.

Usage: /usr/bin/python3 tests/integration/export_pytorch_test.py PATH/TO/cellserve
Exit 0: pass; 1: a check failed (each failure is printed); 77: torch cannot be imported.
"""

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.normpath(os.path.join(HERE, "..", "..", "tools"))
EXPORTER = os.path.join(TOOLS, "export_pytorch.py")

try:
    import torch
    from torch import nn
except ImportError as e:
    print(f"skipped: {sys.executable} cannot import torch ({e}); use Debian's /usr/bin/python3 "
          f"with python3-torch")
    sys.exit(77)
import numpy as np

sys.path.insert(0, TOOLS)
import export_pytorch as ex  # noqa: E402
import reference_models as rm  # noqa: E402

torch.set_num_threads(1)
V, E, H, C, VT = 60, 8, 12, 4, 24
SENTENCES = ["the quick brown fox jumps over the lazy dog", "hello world",
             "a tree has leaves , and a root !", "serve me a model", "one",
             "ids are hashed modulo the vocabulary size of the model"]
TOL = 1e-4
failures = []
passed = 0


def check(cond, what, detail=""):
    global passed
    if cond:
        passed += 1
    else:
        failures.append(f"{what}{': ' + detail if detail else ''}")
        print(f"FAIL: {what}{': ' + detail[:1500] if detail else ''}", flush=True)


def norm(text):
    return " ".join(text.split())


def export(*args, cli=False):
    """Runs the exporter; returns (rc, stdout, stderr). In this process (fast) unless cli=True:
    then as `python3 tools/export_pytorch.py`, as users do (needed where __main__ matters)."""
    args = [str(a) for a in args]
    if cli:
        r = subprocess.run([sys.executable, EXPORTER, *args], capture_output=True, text=True,
                           timeout=120)
        return r.returncode, r.stdout, r.stderr
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = ex.main(args)
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def exp(kind, pt, repo, name, *extra, **kw):
    return export("--kind", kind, "--state-dict", pt, "--repo", repo, "--name", name, *extra, **kw)


def init_uniform(model, seed, scale=0.5):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-scale, scale)
    return model.eval()


def save(obj, tmp, name):
    path = os.path.join(tmp, name + ".pt")
    torch.save(obj, path)
    return path


class Clf(nn.Module):
    """An LSTM classifier defined in this script's __main__ (not importable by the exporter)."""

    def __init__(self, rnn=nn.LSTM, extra=0):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = rnn(E, H)
        self.norm = nn.LayerNorm(H) if extra else None
        self.more = nn.ModuleList(nn.Linear(2, 2) for _ in range(max(0, extra - 1)))
        self.head = nn.Linear(H, C)


class OpensFile:
    """Unpickling this creates a file: shows whether loading ran the file's pickled code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    cs = os.path.abspath(sys.argv[1])
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="export_pytorch_test.")
    repo = os.path.join(tmp, "repo")  # the models served at the end
    other = os.path.join(tmp, "other")  # exports that are not served

    def tok(*flags):
        return subprocess.run([cs, "tokenize", "--vocab", str(V), *flags],
                              input="\n".join(SENTENCES) + "\n", capture_output=True, text=True,
                              check=True).stdout.splitlines()

    ids = [[int(x) for x in line.split()] for line in tok()]
    trees = tok("--tree")
    served_models = {}  # name -> function(sentence index) -> expected answer

    # ---------------------------------------------------- happy paths and bias=False heads
    lstm = init_uniform(rm.LstmClassifier(V, E, H, 2, C), 1)
    rc, out, err = exp("lstm", save(lstm.state_dict(), tmp, "lstm"), repo, "lstm", "--classes", C,
                       cli=True)
    check(rc == 0, "lstm: export", err)
    check(f"cellserve tokenize --vocab {V}" in err and "--vocab-size" in err,
          "lstm: after an export without --vocab-size, a note says how text is tokenized", err)
    served_models["lstm"] = ("logits", lambda i, m=lstm: m(ids[i]))

    lstm_nb = init_uniform(rm.LstmClassifier(V, E, H, 1, C), 2)
    lstm_nb.head = init_uniform(nn.Linear(H, C, bias=False), 3)
    rc, out, err = exp("lstm", save(lstm_nb.state_dict(), tmp, "lstm_nb"), repo, "lstm_nobias",
                       "--vocab-size", V)
    check(rc == 0, "lstm with head bias=False: export", err)
    check("note:" not in err, "with --vocab-size given there is no tokenizer note", err)
    served_models["lstm_nobias"] = ("logits", lambda i, m=lstm_nb: m(ids[i]))

    def seq2seq(seed, proj_bias):
        m = init_uniform(rm.Seq2Seq(V, VT, E, H, 2), seed, 2.0)
        m.proj = init_uniform(nn.Linear(H, VT, bias=proj_bias), seed + 1, 2.0)
        return m

    for name, proj_bias in (("s2s", True), ("s2s_nobias", False)):
        m = seq2seq(11 if proj_bias else 20, proj_bias)
        rc, out, err = exp("seq2seq", save(m.state_dict(), tmp, name), repo, name,
                           "--max-decode-len", 8, "--bos-id", 1, "--eos-id", 2)
        check(rc == 0, f"{name}: export", err)
        served_models[name] = ("tokens", lambda i, m=m: m.greedy_decode(ids[i], 1, 2, 8))

    for name, bias in (("tree", True), ("tree_nobias", False)):
        m = init_uniform(rm.TreeLstm(V, E, H, C), 30 if bias else 40)
        if not bias:
            m.tree.leaf = init_uniform(nn.Linear(E, 3 * H, bias=False), 41)
            m.tree.internal = init_uniform(nn.Linear(2 * H, 5 * H, bias=False), 42)
            m.head = init_uniform(nn.Linear(H, C, bias=False), 43)
        rc, out, err = exp("treelstm", save(m.state_dict(), tmp, name), repo, name)
        check(rc == 0, f"{name}: export", err)
        served_models[name] = ("logits", lambda i, m=m: m(trees[i]))

    # A whole module whose class is importable (tools/reference_models.py), with --trust-pickle.
    rc, out, err = exp("lstm", save(lstm, tmp, "whole_rm"), repo, "whole", "--trust-pickle",
                       cli=True)
    check(rc == 0, "a whole importable nn.Module exports with --trust-pickle", err)
    served_models["whole"] = ("logits", lambda i, m=lstm: m(ids[i]))

    # ---------------------------------------------------- serve them all, compare with PyTorch
    req = "".join(f"{name}\t{s}\n" for name in served_models for s in SENTENCES)
    r = subprocess.run([cs, "serve", "--model-repo", repo, "--models", ",".join(served_models),
                        "--stdin"], input=req, capture_output=True, text=True, timeout=120)
    got = {}
    for line in r.stdout.splitlines():
        j = json.loads(line)
        got[(j["model"], (j["line"] - 1) % len(SENTENCES))] = j
    check(r.returncode == 0 and len(got) == len(req.splitlines()),
          "serve --stdin answers every request", r.stderr[-2000:])
    with torch.no_grad():
        for name, (field, ref) in served_models.items():
            worst, bad = 0.0, []
            for i in range(len(SENTENCES)):
                answer = got.get((name, i), {})
                want = ref(i)
                if field == "logits":
                    g = np.array(answer.get("logits", [np.nan] * C), dtype=np.float64)
                    d = float(np.max(np.abs(g - want.double().numpy())))
                    worst = max(worst, d if d == d else np.inf)
                elif min(want.margins) > 1e-3 and answer.get("tokens") != want.tokens:
                    bad.append(f"sentence {i}: served {answer.get('tokens')}, torch {want.tokens}")
            check(worst <= TOL and not bad, f"{name}: served answers equal PyTorch's",
                  f"max |logit difference| {worst:.3g} (tolerance {TOL}) {bad}")
    for name in ("s2s", "s2s_nobias"):
        decoded = {tuple(got.get((name, i), {}).get("tokens", [])) for i in range(len(SENTENCES))}
        check(len(decoded) > 2, f"{name} decodes differently for different inputs (a meaningful "
              f"test)", str(decoded))

    # ---------------------------------------------------- unexpected keys, --allow-extra
    ln = Clf(extra=1)
    pt = save(ln.state_dict(), tmp, "layernorm")
    rc, out, err = exp("lstm", pt, other, "ln")
    e = norm(err)
    check(rc == 1 and "'norm.weight'" in e and "cannot be served" in e
          and "forward does not use" in e and "--allow-extra" in e,
          "unexpected keys: the error says a used layer cannot be served, and when ignoring is "
          "right", err)
    rc, out, err = exp("lstm", pt, other, "ln", "--allow-extra")
    check(rc == 0 and "warning" in err and "'norm.weight'" in err and "'norm.bias'" in err,
          "--allow-extra: a warning lists the ignored keys", err)
    many = Clf(extra=13)  # norm.{weight,bias} + 12 x more.N.{weight,bias}: 26 keys
    rc, out, err = exp("lstm", save(many.state_dict(), tmp, "many"), other, "many", "--allow-extra")
    listed = re.findall(r"'(?:norm|more)\.[^']*'", err)
    check(rc == 0 and len(listed) == 20 and "6 more" in err,
          "--allow-extra with 26 ignored keys lists 20 and counts the rest", err)

    # ---------------------------------------------------- an existing model: --force
    ow = os.path.join(tmp, "ow")
    r = subprocess.run([cs, "model", "init", "--repo", ow, "--name", "m", "--kind", "seq2seq",
                        "--hidden", "8", "--layers", "1", "--vocab", "50", "--target-vocab", "20"],
                       capture_output=True, text=True)
    check(r.returncode == 0, "cellserve model init", r.stderr)
    spec_path = os.path.join(ow, "m", "spec.json")
    before = open(spec_path).read()
    rc, out, err = exp("lstm", os.path.join(tmp, "lstm.pt"), ow, "m")
    check(rc == 1 and "already exists" in err and "--force" in err
          and open(spec_path).read() == before,
          "an existing model is refused without --force and left as it was", err)
    rc, out, err = exp("lstm", os.path.join(tmp, "lstm.pt"), ow, "m", "--force")
    check(rc == 0 and json.load(open(spec_path))["kind"] == "lstm",
          "--force replaces an existing model", err)
    os.remove(spec_path)  # a folder with only the weights is refused too
    rc, out, err = exp("lstm", os.path.join(tmp, "lstm.pt"), ow, "m")
    check(rc == 1 and "already exists" in err, "existing weights alone are refused too", err)

    # ---------------------------------------------------- temporary files
    os.remove(os.path.join(ow, "m", "weights.safetensors"))
    os.mkdir(os.path.join(ow, "m", "weights.safetensors"))  # the rename onto it fails
    rc, out, err = exp("lstm", os.path.join(tmp, "lstm.pt"), ow, "m", "--force")
    left = [f for f in os.listdir(os.path.join(ow, "m")) if ".tmp" in f]
    check(rc == 1 and not left, "a failed write leaves no temporary file", f"rc {rc}, {left}, {err}")
    names, real_replace = [], os.replace

    def failing_replace(src, dst):
        names.append(src)
        raise OSError("injected failure")

    os.replace = failing_replace
    try:
        ex.write_safetensors(os.path.join(tmp, "t.safetensors"), {"a": np.zeros(2)})
    except OSError:
        pass
    finally:
        os.replace = real_replace
    check(len(names) == 1 and re.search(r"t\.safetensors\.tmp\.%d\.\d+$" % os.getpid(), names[0])
          and not os.path.exists(names[0]),
          "temporaries are named PATH.tmp.PID.N (runtime/atomic_file.cc) and removed on failure",
          str(names))
    # A link planted at the next temporary names (PATH.tmp.PID.N is predictable) is not written
    # through, and a replaced file keeps its mode.
    victim, target = os.path.join(tmp, "victim.txt"), os.path.join(tmp, "planted.safetensors")
    with open(victim, "w") as f:
        f.write("precious")
    n = int(names[0].rsplit(".", 1)[1]) + 1
    planted = [f"{target}.tmp.{os.getpid()}.{n + i}" for i in range(3)]
    for p in planted:
        os.symlink(victim, p)
    ex.write_safetensors(target, {"a": np.zeros(2)})
    check(open(victim).read() == "precious" and not os.path.islink(target)
          and all(os.path.islink(p) for p in planted),
          "a link planted at the temporary's name is not written through (nor removed)")
    os.chmod(target, 0o600)
    ex.write_safetensors(target, {"a": np.ones(2)})
    check(os.stat(target).st_mode & 0o777 == 0o600, "a replaced file keeps its mode",
          oct(os.stat(target).st_mode))
    for bad in (".hidden", "x" * 256):
        rc, out, err = exp("lstm", os.path.join(tmp, "lstm.pt"), ow, bad)
        check(rc != 0 and "not starting with '.'" in err and not os.path.exists(os.path.join(ow, bad)),
              f"the model name {bad[:12]!r}... is refused as cellserve would", err)

    # ---------------------------------------------------- loading: pickles, checkpoint keys
    whole = save(Clf(), tmp, "whole_main")  # class __main__.Clf: not importable by the exporter
    rc, out, err = exp("lstm", whole, other, "w1", cli=True)
    e = norm(err)
    check(rc == 1 and "--trust-pickle" in e and "state_dict()" in e,
          "a whole module without --trust-pickle: says to save state_dict() or pass --trust-pickle",
          err)
    rc, out, err = exp("lstm", whole, other, "w2", "--trust-pickle", cli=True)
    e = norm(err)
    check(rc == 1 and "Clf" in e and "state_dict()" in e and "PYTHONPATH" in e,
          "a whole module whose class is not importable: hint to save state_dict() or fix "
          "PYTHONPATH", err)
    marker = os.path.join(tmp, "code_ran")
    evil = save({"model_state_dict": lstm.state_dict(), "x": OpensFile(marker)}, tmp, "evil")
    rc, out, err = exp("lstm", evil, other, "evil1")
    check(rc == 1 and not os.path.exists(marker) and "--trust-pickle" in err,
          "without --trust-pickle no pickled code runs (weights_only=True)", err)
    rc, out, err = exp("lstm", evil, other, "evil2", "--trust-pickle")
    check(rc == 0 and os.path.exists(marker), "--trust-pickle loads a file with pickled objects",
          err)

    ck = save({"net": lstm.state_dict(), "epoch": 3}, tmp, "ckpt_net")
    rc, out, err = exp("lstm", ck, other, "ck")
    e = norm(err)
    check(rc == 1 and "'state_dict'" in e and "'model_state_dict'" in e and "'net'" in e
          and "'epoch'" in e and "--key" in e,
          "a checkpoint under another key: the error names the keys searched, the file's keys "
          "and --key", err)
    rc, out, err = exp("lstm", ck, other, "ck", "--key", "net")
    check(rc == 0, "--key picks the checkpoint entry", err)

    # ---------------------------------------------------- GRU, RNN, other kind's options, NaN
    for rnn, word in ((nn.GRU, "nn.GRU"), (nn.RNN, "nn.RNN")):
        rc, out, err = exp("lstm", save(Clf(rnn).state_dict(), tmp, word), other, word)
        check(rc == 1 and f"looks like {word}" in err and "only nn.LSTM" in err,
              f"{word} weights: the error says so", err)
    pt = os.path.join(tmp, "lstm.pt")
    for kind, opt, val, applies in (("seq2seq", "--classes", 4, "lstm and treelstm"),
                                    ("lstm", "--target-vocab-size", 30, "seq2seq"),
                                    ("treelstm", "--max-decode-len", 9, "seq2seq")):
        rc, out, err = exp(kind, pt, other, "opt", opt, val)
        check(rc != 0 and opt in err and applies in err and not os.path.exists(
            os.path.join(other, "opt")), f"{opt} with --kind {kind} is an error", err)
    nan = Clf()
    with torch.no_grad():
        nan.head.bias[1] = float("nan")
        nan.lstm.weight_hh_l0[0, 0] = float("inf")
    rc, out, err = exp("lstm", save(nan.state_dict(), tmp, "nan"), other, "nan")
    check(rc == 1 and "non-finite" in err and "'head.bias' (1)" in err
          and "'lstm.weight_hh_l0' (1)" in err and not os.path.exists(os.path.join(other, "nan")),
          "non-finite weights are refused with the tensor names and counts", err)

    # ---------------------------------------------------- --help
    rc, out, err = export("--help")
    h = norm(out)
    check(rc == 0 and "(i, o, u)" in h and "(i, f_left, f_right, o, u)" in h,
          "--help gives the Tree-LSTM gate orders", out)
    m = re.search(r"--allow-extra\s+(.*?)(?:\n\S|\Z)", out, re.S)
    check(bool(m) and "forward does not use" in norm(m.group(1)) and "cannot be served" in
          norm(m.group(1)), "--help's --allow-extra says it is only for tensors the forward does "
          "not use", out)

    took = time.time() - t0
    if failures:
        print(f"export_pytorch_test: {len(failures)} check(s) FAILED, {passed} passed ({took:.1f} s); "
              f"files in {tmp}")
        return 1
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"export_pytorch_test: all {passed} checks passed ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
