#!/usr/bin/python3
"""Writes the golden models and expected outputs under tests/golden/data/ (committed).

  /usr/bin/python3 tests/golden/make_goldens.py            # (re)write tests/golden/data
  /usr/bin/python3 tests/golden/make_goldens.py --check    # regenerate in a temp dir, compare

--check regenerates everything in a temporary folder and compares it with --out (tests/golden/data):
every file except cases.json (weights.safetensors, spec.json, README.md) byte for byte, since the
weights come from torch's seeded RNG and are exact on any machine; each cases.json semantically,
since its expected outputs are float32 results of PyTorch's CPU kernels (and the BLAS under them),
which round differently on another CPU (AVX2 vs AVX-512 code paths). Both cases.json files are
parsed; structure, keys, integers, strings and token lists (inputs, trees, seq2seq output tokens)
must be equal, and every list of floats must agree to a relative error <= 1e-5 of its scale
(max |a - b| / max(max |b|, 1e-12), the measure of tests/golden/golden_test.cc), with NaN/inf only
where the other has them.

The choice of inputs depends on float32 rounding too (pick_case redraws inputs whose float32 outputs
are more than COND_TOL from float64 ones, a per-logit relative error that a different rounding can
move by several times), so a CPU that rounds differently would pick other inputs. The rounding that
matters is OpenBLAS's (Debian's torch does its matrix products there): it picks its kernels by CPU
(SkylakeX AVX-512 on recent Xeons, Haswell AVX2 on AMD EPYC), so the script pins OpenBLAS to its
Haswell kernels on any x86-64 CPU with AVX2 and FMA (OPENBLAS_CORETYPE, unless already set), which
reproduces the committed goldens exactly on both.

For each model: a model-repository folder data/<name>/ with spec.json + weights.safetensors (the
runtime/model_spec.h layout, written by tools/export_pytorch.py) and cases.json with inputs and
the reference outputs of tools/reference_models.py, computed in float32 (torch defaults, one
thread). Deterministic: fixed seeds (torch.manual_seed per model, random.Random per case list).

Before writing, it proves the layout mapping (nn.LSTM vs a manual loop over the concatenated
[W_ih | W_hh] weights and summed biases, to 1e-6) and the F16/BF16 rounding (against torch's own
conversions). After writing, it reads every file back (read_safetensors, spec.json) and recomputes
every case from the file's tensors with an independent manual implementation that mirrors the C++
(concatenated weights), checking relative error <= 1e-5 and identical seq2seq tokens.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import json
import math
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence


def pin_openblas_kernels() -> None:
    """OPENBLAS_CORETYPE=Haswell (see the module docstring) where the CPU runs those kernels; must
    run before numpy or torch loads OpenBLAS. An explicit OPENBLAS_CORETYPE is left alone."""
    if "OPENBLAS_CORETYPE" in os.environ:
        return
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return
    if "avx2" in flags and "fma" in flags:
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"


pin_openblas_kernels()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.dont_write_bytecode = True  # no __pycache__ in tools/
sys.path.insert(0, str(REPO_ROOT / "tools"))

import export_pytorch as ex  # noqa: E402
import reference_models as rm  # noqa: E402

DATA_DIR = REPO_ROOT / "tests" / "golden" / "data"
REL_TOL = 1e-5          # the C++ golden tests' tolerance (relative error)
COND_TOL = 5e-7         # a case's fp32 outputs must be this close (relative) to fp64 ones
MAX_ATTEMPTS = 200      # draws per case slot before giving up
MIN_MARGIN = 1e-3       # the argmax (label, seq2seq token) must win by at least this much
LIMITS = dict(max_input_tokens=64, max_batch=64)

# seq2seq_small: weights U(-1, 1) and proj.weight U(-2, 2) so the decoder's path depends on the
# source; SEQ2SEQ_EOS_BIAS is added to proj.bias[eos] (more: earlier EOS stops). Each case slot asks
# for an input length and an outcome, and source sequences are drawn (deterministically) until one
# gives that outcome: "eos1" EOS at step 1, "eos_mid" EOS at step >= 2, "eos_late" EOS at step >= 8,
# "max" no EOS within max_decode_len.
SEQ2SEQ_EOS_BIAS = 0.0
SEQ2SEQ_PLAN = [(1, "eos1"), (1, "max"), (2, "eos_mid"), (3, "max"), (5, "eos_mid"), (8, "eos1"),
                (12, "max"), (17, "eos_mid"), (23, "eos_late"), (30, "max"), (36, "eos_mid"),
                (40, "eos_late"), (40, "max")]
SEQ2SEQ_MAX_DRAWS = 5000


# ------------------------------------------------------------------------------------------ helpers


def init_uniform(model: nn.Module, seed: int, bound: float = 0.5, embed_bound: float = 1.0) -> None:
    """All parameters ~ U(-bound, bound), embeddings ~ U(-embed_bound, embed_bound), drawn in
    named_parameters() order after torch.manual_seed(seed): activations are not tiny."""
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        b = embed_bound if "embedding" in name else bound
        with torch.no_grad():
            p.uniform_(-b, b)


def round_model_to_dtype(model: nn.Module, dtype: str) -> None:
    """Makes the model's parameters exactly what a `dtype` weights file holds: every parameter
    rounded to `dtype`, and each LSTM layer's bias folded into bias_ih (bias_ih := round(bias_ih +
    bias_hh), bias_hh := 0), since the file stores the sum."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.LSTM):
                for l in range(mod.num_layers):
                    b_ih, b_hh = getattr(mod, f"bias_ih_l{l}"), getattr(mod, f"bias_hh_l{l}")
                    b_ih.copy_(b_ih + b_hh)
                    b_hh.zero_()
        for p in model.parameters():
            p.copy_(torch.from_numpy(ex.round_to_dtype(p, dtype)))


def floats(t: torch.Tensor) -> List[float]:
    out = [float(v) for v in t.detach().to(torch.float32).tolist()]
    if not all(math.isfinite(v) for v in out):
        raise AssertionError("non-finite reference output")
    return out


def dump_cases(path: Path, model: str, kind: str, cases: List[dict]) -> None:
    """One case per line; floats are Python reprs (shortest exact form of the float32 value)."""
    lines = ["{", f'  "model": {json.dumps(model)},', f'  "kind": {json.dumps(kind)},', '  "cases": [']
    for i, c in enumerate(cases):
        lines.append("    " + json.dumps(c) + ("," if i + 1 < len(cases) else ""))
    lines += ["  ]", "}"]
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------- manual implementation (file layout)


def lstm_cell(W: torch.Tensor, b: torch.Tensor, x, h, c):
    """One LSTM cell with the cellserve layout: gates = W [x; h] + b, gate order i, f, g, o."""
    i, f, g, o = (W @ torch.cat([x, h]) + b).chunk(4)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class LayoutRunner:
    """Runs a model straight from its weights-file tensors (what the C++ runtime does)."""

    def __init__(self, spec: dict, tensors: Dict[str, np.ndarray]):
        self.spec = spec
        self.t = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items()}
        self.H, self.L = spec["hidden"], spec["layers"]

    def _stack(self, prefix: str):
        return [(self.t[f"{prefix}{l}.weight"], self.t[f"{prefix}{l}.bias"]) for l in range(self.L)]

    def _step(self, stack, x, h, c):
        for l, (W, b) in enumerate(stack):
            h[l], c[l] = lstm_cell(W, b, x, h[l], c[l])
            x = h[l]
        return x

    def _zero_state(self):
        return ([torch.zeros(self.H) for _ in range(self.L)],
                [torch.zeros(self.H) for _ in range(self.L)])

    def lstm_logits(self, tokens: Sequence[int]) -> torch.Tensor:
        stack, (h, c) = self._stack("lstm."), self._zero_state()
        for tok in tokens:
            top = self._step(stack, self.t["embedding"][tok], h, c)
        return self.t["head.weight"] @ top + self.t["head.bias"]

    def seq2seq_decode(self, tokens: Sequence[int]):
        s = self.spec
        enc, dec, (h, c) = self._stack("encoder."), self._stack("decoder."), self._zero_state()
        for tok in tokens:
            self._step(enc, self.t["encoder.embedding"][tok], h, c)
        inp, out, scores = s["bos_id"], [], []
        while len(out) < s["max_decode_len"]:
            top = self._step(dec, self.t["decoder.embedding"][inp], h, c)
            logits = self.t["proj.weight"] @ top + self.t["proj.bias"]
            tok = rm.first_argmax(logits)
            out.append(tok)
            scores.append(float(logits[tok]))
            if tok == s["eos_id"]:
                break
            inp = tok
        return out, scores

    def treelstm_logits(self, tree: str) -> torch.Tensor:
        H = self.H
        hs, cs = [], []
        for n in rm.parse_tree_sexpr(tree):
            if n.is_leaf:
                g = self.t["tree.leaf.weight"] @ self.t["embedding"][n.token] + self.t["tree.leaf.bias"]
                i, o, u = g[:H], g[H:2 * H], g[2 * H:]
                c = torch.sigmoid(i) * torch.tanh(u)
            else:
                g = (self.t["tree.internal.weight"] @ torch.cat([hs[n.left], hs[n.right]])
                     + self.t["tree.internal.bias"])
                i, fl, fr, o, u = (g[k * H:(k + 1) * H] for k in range(5))
                c = (torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * cs[n.left]
                     + torch.sigmoid(fr) * cs[n.right])
            hs.append(torch.sigmoid(o) * torch.tanh(c))
            cs.append(c)
        return self.t["head.weight"] @ hs[-1] + self.t["head.bias"]


# ------------------------------------------------------------------------------------ sanity tests


def sanity_checks() -> None:
    """Proves the exporter's layout mapping and the safetensors encoding before any golden is made."""
    # 1. nn.LSTM vs the manual loop over the exported (concatenated) weights.
    torch.manual_seed(1234)
    E, H, L, T = 7, 11, 3, 25
    lstm = nn.LSTM(E, H, num_layers=L)
    init_uniform(lstm, 1234)
    sd = {f"lstm.{k}": v for k, v in lstm.state_dict().items()}
    sd.update({"embedding.weight": torch.randn(9, E), "head.weight": torch.randn(2, H),
               "head.bias": torch.randn(2)})
    tensors, dims = ex.export_lstm(sd)
    assert dims == dict(vocab_size=9, embed_dim=E, hidden=H, layers=L, classes=2), dims
    x = torch.rand(T, E) * 2 - 1
    with torch.no_grad():
        ref, (h_n, c_n) = lstm(x.unsqueeze(1))
    h = [torch.zeros(H) for _ in range(L)]
    c = [torch.zeros(H) for _ in range(L)]
    worst = 0.0
    for t in range(T):
        inp = x[t]
        for l in range(L):
            h[l], c[l] = lstm_cell(tensors[f"lstm.{l}.weight"], tensors[f"lstm.{l}.bias"], inp, h[l], c[l])
            inp = h[l]
        worst = max(worst, float((inp - ref[t, 0]).abs().max()))
    for l in range(L):
        worst = max(worst, float((h[l] - h_n[l, 0]).abs().max()), float((c[l] - c_n[l, 0]).abs().max()))
    assert worst <= 1e-6, f"layout mapping: nn.LSTM vs manual loop differ by {worst}"
    print(f"sanity: nn.LSTM({E}, {H}, {L}) vs manual loop over [W_ih | W_hh], b_ih + b_hh over "
          f"{T} steps: max |diff| = {worst:.2e} (<= 1e-6)")

    # 2. F16 / BF16 rounding agrees with torch's conversions (round to nearest even), ties included.
    g = torch.Generator().manual_seed(7)
    vals = torch.cat([torch.randn(20000, generator=g) * 10,
                      torch.tensor([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 65504.0, 1e-8, -3.5e38]),
                      # exact bf16 ties: low 16 bits 0x8000 with even and odd upper halves
                      torch.from_numpy(np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x7F7FFFFF],
                                                dtype=np.uint32).view(np.float32))])
    mine_bf = ex.float32_to_bf16_bits(vals.numpy())
    torch_bf = vals.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(mine_bf, torch_bf), "BF16 rounding differs from torch"
    finite16 = vals[vals.abs() < 65504]
    assert np.array_equal(ex.round_to_dtype(finite16, "F16"), finite16.half().float().numpy())
    print(f"sanity: F16/BF16 rounding matches torch on {len(vals)} values (ties included)")

    # 3. safetensors round trip, header alignment, and exporter errors.
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ex.DTYPES:
            p = os.path.join(tmp, f"t_{dtype}.safetensors")
            src = {"b": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "a": np.ones(3),
                   "s": np.float32(2.5)}
            ex.write_safetensors(p, src, dtype, metadata={"k": "v"})
            header, start = ex.read_safetensors_header(p)
            assert start % 8 == 0 and header["__metadata__"] == {"k": "v"}
            back = ex.read_safetensors(p)
            for k, v in src.items():
                assert np.array_equal(back[k], ex.round_to_dtype(v, dtype)), (dtype, k)
            assert list(k for k in header if k != "__metadata__") == ["a", "b", "s"]
    bad = dict(sd)
    bad["lstm.weight_hh_l1"] = torch.zeros(4 * H, H + 1)
    for broken, what in ((bad, "shape"), ({k: v for k, v in sd.items() if k != "head.weight"}, "missing"),
                         ({**sd, "lstm.weight_ih_l0_reverse": torch.zeros(1)}, "bidirectional"),
                         ({**sd, "extra.weight": torch.zeros(1)}, "extra key")):
        try:
            ex.export_lstm(broken)
        except ex.ExportError:
            pass
        else:
            raise AssertionError(f"export_lstm accepted a state_dict with a bad {what}")
    print("sanity: safetensors round trip (F32/F16/BF16) and exporter error checks OK")


# --------------------------------------------------------------------------------------- the models


def true_rel_err(got: Sequence[float], exact: Sequence[float]) -> float:
    return max(abs(g - e) / abs(e) if e else abs(g) * math.inf for g, e in zip(got, exact))


def pick_case(slot, rng: random.Random, run32, run64, what: str):
    """Draws inputs from slot(rng, attempt) until the float32 outputs are within COND_TOL
    (relative, no floor) of the float64 ones: cases where fp32 rounding is amplified (a logit that
    nearly cancels) are redrawn, so any honest fp32 implementation stays well inside REL_TOL; so
    are inputs whose two largest logits are within MIN_MARGIN (the label would be a coin flip).
    Returns (input, float32 outputs, attempts)."""
    for attempt in range(MAX_ATTEMPTS):
        inp = slot(rng, attempt)
        out32 = run32(inp)
        top = sorted(out32, reverse=True)
        if top[0] - top[1] < MIN_MARGIN:  # the predicted label must not be a near tie either
            continue
        if true_rel_err(out32, run64(inp)) <= COND_TOL:
            return inp, out32, attempt + 1
    raise AssertionError(f"{what}: no well-conditioned input in {MAX_ATTEMPTS} draws")


def lstm_slots(V: int):
    """Input generators slot(rng, attempt) -> tokens: lengths 1..40, with edge tokens (the last id,
    pad/bos/eos/unk, a repeated token) on the first attempt."""
    def rand(n):
        return lambda rng, a: [rng.randrange(V) for _ in range(n)]

    def first(fixed, n):  # `fixed` as the prefix on the first attempt, random otherwise
        def slot(rng, a):
            head = fixed if a == 0 else []
            return head + [rng.randrange(V) for _ in range(n - len(head))]
        return slot

    def repeated(n):
        return lambda rng, a: [rng.randrange(V)] * n

    return [rand(1), first([V - 1], 1), rand(2), rand(3), first([0, 1, 2, 3], 5), rand(8),
            repeated(12), rand(17), rand(23), rand(30), rand(36), rand(40)]


def make_lstm(out: Path, name: str, seed: int, dtype: str, L: int = 2) -> dict:
    V, E, H, C = 50, 8, 16, 5
    model = rm.LstmClassifier(V, E, H, L, C)
    init_uniform(model, seed)
    if dtype != "F32":
        round_model_to_dtype(model, dtype)
    model64 = copy.deepcopy(model).double()
    tensors, dims = ex.export_lstm(model.state_dict())
    spec = ex.make_spec("lstm", name, dims, dtype, **LIMITS)
    ex.write_model(str(out), name, spec, tensors, dtype)
    rng, cases, redrawn = random.Random(seed), [], 0
    with torch.no_grad():
        for slot in lstm_slots(V):
            toks, logits, tries = pick_case(slot, rng, lambda t: floats(model(t)),
                                            lambda t: model64(t).tolist(), name)
            redrawn += tries - 1
            cases.append({"tokens": toks, "logits": logits})
    dump_cases(out / name / "cases.json", name, "lstm", cases)
    print(f"{name}: {len(cases)} cases, input lengths {[len(c['tokens']) for c in cases]} "
          f"({redrawn} ill-conditioned or near-tie draws redrawn)")
    return {"name": name, "kind": "lstm", "tensors": tensors, "dtype": dtype}


def seq2seq_outcome_ok(want: str, r: rm.DecodeResult) -> bool:
    n = len(r.tokens)
    return {"eos1": r.stopped_at_eos and n == 1,
            "eos_mid": r.stopped_at_eos and n >= 2,
            "eos_late": r.stopped_at_eos and n >= 8,
            "max": not r.stopped_at_eos}[want]


def make_seq2seq(out: Path, name: str, seed: int, L: int = 2, V: int = 40, Vt: int = 30,
                 bos: int = 1, eos: int = 2, eos_bias: float = SEQ2SEQ_EOS_BIAS) -> dict:
    E, H, max_len = 8, 16, 12
    model = rm.Seq2Seq(V, Vt, E, H, L)
    init_uniform(model, seed, bound=1.0)
    with torch.no_grad():
        model.proj.weight.mul_(2.0)
        model.proj.bias[eos] += eos_bias
    model64 = copy.deepcopy(model).double()
    tensors, dims = ex.export_seq2seq(model.state_dict())
    spec = ex.make_spec("seq2seq", name, dims, "F32", bos_id=bos, eos_id=eos,
                        max_decode_len=max_len, **LIMITS)
    ex.write_model(str(out), name, spec, tensors, "F32")
    rng = random.Random(seed)
    cases, outcomes, min_margin, rejected = [], [], math.inf, 0
    with torch.no_grad():
        for n, want in SEQ2SEQ_PLAN:
            fallback = None
            for _ in range(SEQ2SEQ_MAX_DRAWS):
                toks = [rng.randrange(V) for _ in range(n)]
                r = model.greedy_decode(toks, bos, eos, max_len)
                r64 = model64.greedy_decode(toks, bos, eos, max_len)
                # never a golden: an argmax too close to call, or fp32 drifting from fp64
                if (min(r.margins) < MIN_MARGIN or r64.tokens != r.tokens
                        or true_rel_err(r.scores, r64.scores) > COND_TOL):
                    rejected += 1
                    continue
                fallback = fallback or (toks, r)
                if seq2seq_outcome_ok(want, r):
                    break
            else:
                if fallback is None:
                    raise AssertionError(f"{name}: no usable input of length {n}")
                print(f"{name}: note: no length-{n} input gives outcome '{want}'; using another")
                toks, r = fallback
            min_margin = min(min_margin, min(r.margins))
            outcomes.append(f"{n}->{'EOS@' + str(len(r.tokens)) if r.stopped_at_eos else 'MAX'}")
            cases.append({"tokens": toks, "output_tokens": r.tokens, "step_scores": r.scores})
    dump_cases(out / name / "cases.json", name, "seq2seq", cases)
    n_eos = sum(c["output_tokens"][-1] == eos for c in cases)
    n_max = sum(len(c["output_tokens"]) == max_len and c["output_tokens"][-1] != eos for c in cases)
    print(f"{name}: {n_eos} cases stop at EOS, {n_max} at max_decode_len={max_len} "
          f"(input length->outcome: {', '.join(outcomes)}); smallest top-1/top-2 margin "
          f"{min_margin:.3g} ({rejected} near-tie or ill-conditioned draws skipped)")
    assert n_eos >= 3 and n_max >= 3, "seq2seq goldens need both EOS stops and max-length stops"
    assert any(c["output_tokens"][-1] == eos and len(c["output_tokens"]) > 1 for c in cases)
    return {"name": name, "kind": "seq2seq", "tensors": tensors, "dtype": "F32",
            "outcomes": ", ".join(outcomes)}


def tree_slots(V: int):
    """Tree generators slot(rng, attempt) -> text: single leaf, left-deep, right-deep, balanced
    (BracketBalanced's split), random; edge tokens on the first attempt."""
    def toks(rng, n):
        return [rng.randrange(V) for _ in range(n)]
    return [
        lambda rng, a: rm.sexpr_single(7 if a == 0 else rng.randrange(V)),
        lambda rng, a: rm.sexpr_balanced(toks(rng, 2)),
        lambda rng, a: rm.sexpr_left_deep(toks(rng, 6)),
        lambda rng, a: rm.sexpr_right_deep(toks(rng, 6)),
        lambda rng, a: rm.sexpr_balanced(toks(rng, 8)),
        lambda rng, a: rm.sexpr_balanced(([0, 1, 2, 3] if a == 0 else toks(rng, 4)) + toks(rng, 9)),
        lambda rng, a: rm.sexpr_left_deep(toks(rng, 20)),
        lambda rng, a: rm.sexpr_right_deep(([V - 1] if a == 0 else toks(rng, 1)) + toks(rng, 16)),
        lambda rng, a: rm.sexpr_random(toks(rng, 5), rng),
        lambda rng, a: rm.sexpr_random(toks(rng, 11), rng),
        lambda rng, a: rm.sexpr_random(toks(rng, 24), rng),
        lambda rng, a: rm.sexpr_random(toks(rng, 40), rng),
        lambda rng, a: rm.sexpr_balanced(toks(rng, 40)),
    ]


def make_treelstm(out: Path, name: str, seed: int) -> dict:
    V, E, H, C = 50, 8, 16, 4
    model = rm.TreeLstm(V, E, H, C)
    init_uniform(model, seed)
    model64 = copy.deepcopy(model).double()
    tensors, dims = ex.export_treelstm(model.state_dict())
    spec = ex.make_spec("treelstm", name, dims, "F32", **LIMITS)
    ex.write_model(str(out), name, spec, tensors, "F32")
    rng, cases, redrawn = random.Random(seed), [], 0
    with torch.no_grad():
        for slot in tree_slots(V):
            tree, logits, tries = pick_case(slot, rng, lambda t: floats(model(t)),
                                            lambda t: model64(t).tolist(), name)
            redrawn += tries - 1
            assert rm.tree_to_sexpr(rm.parse_tree_sexpr(tree)) == tree
            cases.append({"tree": tree, "logits": logits})
    dump_cases(out / name / "cases.json", name, "treelstm", cases)
    leaves = [len(rm.tree_leaves(rm.parse_tree_sexpr(c["tree"]))) for c in cases]
    print(f"{name}: {len(cases)} cases, leaves {leaves} ({redrawn} ill-conditioned or near-tie draws redrawn)")
    return {"name": name, "kind": "treelstm", "tensors": tensors, "dtype": "F32"}


# ---------------------------------------------------------------------------------- self-check


def self_check(out: Path, made: dict) -> float:
    """Reads the model back from disk and recomputes every case from the file. Returns the worst
    relative error seen."""
    name, kind, dtype = made["name"], made["kind"], made["dtype"]
    folder = out / name
    spec = json.loads((folder / "spec.json").read_text())
    ex.validate_spec(spec)
    assert spec["name"] == name and spec["kind"] == kind and spec["dtype"] == dtype, spec
    header, _ = ex.read_safetensors_header(str(folder / "weights.safetensors"))
    assert all(v["dtype"] == dtype for k, v in header.items() if k != "__metadata__")
    tensors = ex.read_safetensors(str(folder / "weights.safetensors"))
    ex.validate_layout(spec, tensors)
    for k, v in made["tensors"].items():
        want = v.detach().numpy()
        assert np.array_equal(tensors[k], ex.round_to_dtype(want, dtype)), f"{name}: {k} changed"
        if dtype != "F32":  # the reference model already holds exactly the stored values
            assert np.array_equal(tensors[k], want), f"{name}: {k} not representable in {dtype}"
    cases = json.loads((folder / "cases.json").read_text())
    assert cases["model"] == name and cases["kind"] == kind and len(cases["cases"]) >= 12
    run = LayoutRunner(spec, tensors)
    worst = 0.0
    with torch.no_grad():
        for case in cases["cases"]:
            if kind == "lstm":
                assert 1 <= len(case["tokens"]) <= spec["max_input_tokens"]
                worst = max(worst, true_rel_err(floats(run.lstm_logits(case["tokens"])), case["logits"]))
            elif kind == "treelstm":
                worst = max(worst, true_rel_err(floats(run.treelstm_logits(case["tree"])), case["logits"]))
            else:
                toks, scores = run.seq2seq_decode(case["tokens"])
                assert toks == case["output_tokens"], f"{name}: decoded tokens differ from file"
                worst = max(worst, true_rel_err(scores, case["step_scores"]))
    assert worst <= REL_TOL, f"{name}: recomputed from file, relative error {worst:.2e} > {REL_TOL}"
    return worst


# ------------------------------------------------------------------------------------------ --check


def is_float_list(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(x, float) for x in v)


def show(v, n: int = 4) -> str:
    """The first n elements of a list (or the value), for messages."""
    if isinstance(v, list) and len(v) > n:
        return "[" + ", ".join(json.dumps(x) for x in v[:n]) + f", ... ({len(v)} items)]"
    return json.dumps(v)


def float_list_rel_diff(got: List[float], want: List[float]):
    """max |got - want| / max(max |want|, 1e-12) over the finite entries (golden_test.cc's measure),
    and a message if a non-finite value (NaN, inf) is not matched by the same one in the other list."""
    diff, scale = 0.0, 1e-12
    for i, (g, w) in enumerate(zip(got, want)):
        if not (math.isfinite(g) and math.isfinite(w)):
            if not ((math.isnan(g) and math.isnan(w)) or g == w):
                return math.inf, f"non-finite mismatch at [{i}]: {g!r} vs {w!r}"
            continue
        diff = max(diff, abs(g - w))
        scale = max(scale, abs(w))
    return diff / scale, None


def compare_json(got, want, path: str, errors: List[str]) -> float:
    """Compares regenerated JSON `got` with the reference `want`: lists of floats (and lone floats)
    to REL_TOL of their scale, everything else exactly (same type too). Appends a message per
    mismatch to `errors`; returns the largest relative difference over all float lists."""
    if isinstance(got, float) and isinstance(want, float):
        got, want = [got], [want]
    if is_float_list(got) and is_float_list(want):
        if len(got) != len(want):
            errors.append(f"{path}: {len(got)} floats vs {len(want)}: {show(got)} vs {show(want)}")
            return 0.0
        rel, why = float_list_rel_diff(got, want)
        if why:
            errors.append(f"{path}: {why}: {show(got)} vs {show(want)}")
        elif rel > REL_TOL:
            i = max(range(len(got)), key=lambda k: abs(got[k] - want[k]))
            errors.append(f"{path}: relative difference {rel:.3g} > {REL_TOL:g} (largest at [{i}]: "
                          f"{got[i]!r} vs {want[i]!r}): {show(got)} vs {show(want)}")
        return rel if math.isfinite(rel) else 0.0
    if isinstance(got, dict) and isinstance(want, dict):
        worst = 0.0
        if set(got) != set(want):
            errors.append(f"{path}: keys differ: regenerated has {sorted(set(got) - set(want))} "
                          f"extra, lacks {sorted(set(want) - set(got))}")
        for k in got:
            if k in want:
                worst = max(worst, compare_json(got[k], want[k], f"{path}.{k}", errors))
        return worst
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            errors.append(f"{path}: length {len(got)} vs {len(want)}: {show(got)} vs {show(want)}")
            return 0.0
        worst, n_before = 0.0, len(errors)
        for i, (g, w) in enumerate(zip(got, want)):
            worst = max(worst, compare_json(g, w, f"{path}[{i}]", errors))
        if len(errors) > n_before and not any(isinstance(x, (dict, list)) for x in got + want):
            # a list of scalars (e.g. tokens): one message with both lists, not one per element
            del errors[n_before:]
            errors.append(f"{path}: {show(got, 16)} vs {show(want, 16)}")
        return worst
    if type(got) is not type(want) or got != want:
        errors.append(f"{path}: {show(got)} vs {show(want)}")
    return 0.0


def check_against(new: Path, ref: Path) -> int:
    """--check: compares the freshly generated folder `new` with the reference folder `ref`."""
    files = sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file())
    extra = sorted(str(p.relative_to(ref)) for p in ref.rglob("*")
                   if p.is_file() and str(p.relative_to(ref)) not in files)
    missing = [f for f in files if not (ref / f).is_file()]
    cases = [f for f in files if Path(f).name == "cases.json" and f not in missing]
    exact = [f for f in files if f not in cases and f not in missing]
    _, differ, unreadable = filecmp.cmpfiles(new, ref, exact, shallow=False)
    failed = bool(missing or extra or differ or unreadable)
    if missing or extra:
        print(f"--check: missing from {ref}: {missing}; extra in {ref}: {extra}")
    if differ or unreadable:
        print(f"--check: not byte-identical: {differ + unreadable}")
    largest, inputs_differ = {}, False
    for f in cases:
        errors: List[str] = []
        try:
            want = json.loads((ref / f).read_text())
        except (OSError, ValueError) as e:
            errors.append(f"cannot read the reference: {e}")
        else:
            largest[f] = compare_json(json.loads((new / f).read_text()), want, "$", errors)
        if errors:
            failed = True
            largest.pop(f, None)
            inputs_differ |= any(m.split(":")[0].endswith((".tokens", ".tree")) for m in errors)
            print(f"--check: {f} differs ({len(errors)} mismatch{'es' if len(errors) > 1 else ''}; "
                  f"regenerated vs {ref.name}/{f}):")
            for msg in errors[:10]:
                print(f"  {msg}")
            if len(errors) > 10:
                print(f"  ... and {len(errors) - 10} more")
        else:
            print(f"--check: {f}: same; floats within {REL_TOL:g} (largest relative difference "
                  f"{largest[f]:.2g})")
    if failed:
        print("--check: FAILED")
        if inputs_differ:
            print("--check: note: different inputs (tokens, tree) can also mean that other draws "
                  "passed pick_case's float32-vs-float64 test, which depends on float rounding (here "
                  f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '<unset>')}; see the "
                  "module docstring)")
        return 1
    print(f"--check: {len(exact)} weight/spec/README files identical; {len(cases)} cases.json within "
          f"{REL_TOL:g} (largest relative difference {max(largest.values(), default=0.0):.2g})")
    return 0


# ------------------------------------------------------------------------------------------- main


README = """\
# Golden models and outputs

Generated by `tests/golden/make_goldens.py` (do not edit by hand):

    /usr/bin/python3 tests/golden/make_goldens.py            # rewrite this folder
    /usr/bin/python3 tests/golden/make_goldens.py --check    # regenerate in a temp dir, compare

The script is deterministic (fixed `torch.manual_seed` per model, `random.Random` per case list,
one torch thread), so re-running it gives byte-identical files. It needs only Debian's python3-torch
and python3-numpy.

This folder is a model repository: each model is a folder `<name>/` holding

- `spec.json`: the model spec (runtime/model_spec.h): name, version 1, kind, vocab_size,
  embed_dim, hidden, layers, classes (lstm, treelstm) or target_vocab_size, bos_id, eos_id,
  max_decode_len (seq2seq), max_input_tokens 64, max_batch 64, dtype.
- `weights.safetensors`: weights in the runtime/model_spec.h layout, written by
  tools/export_pytorch.py from the PyTorch modules of tools/reference_models.py.
- `cases.json`: inputs and reference outputs (test data, not part of the model).

| model           | kind     | sizes                                                     | dtype |
|-----------------|----------|-----------------------------------------------------------|-------|
| lstm_small      | lstm     | V=50 E=8 H=16 L=2 C=5                                     | F32   |
| lstm_small_f16  | lstm     | same, other seed                                          | F16   |
| lstm_small_bf16 | lstm     | same, other seed                                          | BF16  |
| seq2seq_small   | seq2seq  | V=40 Vt=30 E=8 H=16 L=2, bos 1, eos 2, max_decode_len 12  | F32   |
| treelstm_small  | treelstm | V=50 E=8 H=16 C=4                                         | F32   |
| lstm_l1         | lstm     | as lstm_small but L=1                                     | F32   |
| lstm_l3         | lstm     | as lstm_small but L=3                                     | F32   |
| seq2seq_l1_ids  | seq2seq  | V=30 Vt=40 E=8 H=16 L=1, bos 5, eos 0, max_decode_len 12  | F32   |
| seq2seq_l3      | seq2seq  | as seq2seq_small but L=3                                  | F32   |

Weights are U(-0.5, 0.5), embeddings U(-1, 1). seq2seq_small uses U(-1, 1) weights and a
U(-2, 2) proj.weight (so the decoded path depends on the source), plus {eos_bias} on
proj.bias[eos] (SEQ2SEQ_EOS_BIAS in the script; 1.0 for seq2seq_l1_ids and seq2seq_l3); its inputs were drawn until the cases cover EOS at
step 1, EOS at later steps and runs that reach max_decode_len without EOS; so were the other
seq2seq models'. Input length -> outcome per case: {outcomes}.

## cases.json

    {{"model": "<name>", "kind": "lstm" | "seq2seq" | "treelstm", "cases": [ ... ]}}

- lstm: `{{"tokens": [ids], "logits": [C floats]}}`: logits = head(top-layer h after the last
  token), zero initial state.
- seq2seq: `{{"tokens": [source ids], "output_tokens": [ids], "step_scores": [floats]}}`: greedy
  decoding from the encoder's final (h, c); step 0 input is bos_id; each step's token is the argmax
  of proj(h_top) (first index on ties) and `step_scores` holds that maximum logit; decoding stops
  after producing eos_id (included in output_tokens) or after max_decode_len tokens. The winning
  logit beats the runner-up by at least {margin} at every step (no near ties; the same holds
  for the largest logit of the lstm and treelstm cases, i.e. their label).
- treelstm: `{{"tree": "((4 5) (6 (7 8)))", "logits": [C floats]}}`: the runtime/tree.h text
  form (a leaf is a token id, an internal node is "(" left right ")"); only leaves read tokens;
  logits = head(h_root). Shapes: single leaf, left-deep, right-deep, balanced (BracketBalanced's
  split, left half gets the extra token), random.

Token ids cover the whole vocabulary, including 0 (pad), 1 (bos), 2 (eos), 3 (unk) and V-1;
input lengths are 1 to 40 tokens (leaves).

## Precision

Reference outputs are computed in float32 (PyTorch nn.LSTM / the TreeLstm module, one thread) and
written as Python float reprs (the exact value of each float32 result). For the F16/BF16 models the
reference uses weights rounded to that dtype (round to nearest even), with each LSTM layer's two
biases summed before rounding, i.e. exactly the values the file holds, and computes in float32.

Compare with relative error <= 1e-5 (|got - want| <= 1e-5 * |want|). Inputs whose float32 outputs
differ from a float64 computation by more than {cond_tol} (relative) were redrawn, so no logit
is a near-cancellation; and the script recomputes every case from the weights file with an
independent float32 implementation in the C++ formulation ([W_ih | W_hh] @ [x; h] + b) and checks
that it is within 1e-5.
"""


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    made = [
        make_lstm(out, "lstm_small", 1001, "F32"),
        make_lstm(out, "lstm_small_f16", 1002, "F16"),
        make_lstm(out, "lstm_small_bf16", 1003, "BF16"),
        make_seq2seq(out, "seq2seq_small", 2001),
        make_treelstm(out, "treelstm_small", 3001),
        # Layer counts other than 2 (1 is `cellserve model init`'s default), seq2seq ids other than
        # the spec's defaults (eos 0, the pad id) and a target vocabulary larger than the source's
        # (so an 8 KiB fold cap folds the encoder's table and not the decoder's; the reverse of
        # seq2seq_small).
        make_lstm(out, "lstm_l1", 1004, "F32", L=1),
        make_lstm(out, "lstm_l3", 1005, "F32", L=3),
        # Their seeds and EOS biases were picked so that the draws stop at EOS early, late and not.
        make_seq2seq(out, "seq2seq_l1_ids", 2004, L=1, V=30, Vt=40, bos=5, eos=0, eos_bias=1.0),
        make_seq2seq(out, "seq2seq_l3", 2010, L=3, eos_bias=1.0),
    ]
    (out / "README.md").write_text(
        README.format(eos_bias=SEQ2SEQ_EOS_BIAS, margin=MIN_MARGIN, cond_tol=COND_TOL,
                      outcomes="; ".join(f"{m['name']}: {m['outcomes']}" for m in made if m["kind"] == "seq2seq")))
    for m in made:
        worst = self_check(out, m)
        print(f"self-check {m['name']}: read back from {out.name}/{m['name']}/, recomputed from the "
              f"file: max relative error {worst:.2e}")


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DATA_DIR, help=f"output folder (default {DATA_DIR})")
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and compare with --out: cases.json "
                         "semantically (floats to relative error 1e-5), every other file byte for byte")
    args = ap.parse_args()
    torch.set_num_threads(1)
    sanity_checks()
    if not args.check:
        generate(args.out)
        for p in sorted(args.out.rglob("*")):
            if p.is_file():
                print(f"  {p.relative_to(args.out)}: {p.stat().st_size} bytes")
        print(f"total {dir_size(args.out)} bytes in {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return check_against(Path(tmp), args.out)


if __name__ == "__main__":
    sys.exit(main())
