#!/usr/bin/python3
"""Export PyTorch LSTM models to a cellserve model repository (spec.json + weights.safetensors).

Library (import with tools/ on sys.path):
  write_safetensors(path, tensors, dtype="F32", metadata=None)   hand-written safetensors writer
  read_safetensors(path) -> {name: float32 ndarray}              reader (decodes F16/BF16 exactly)
  read_safetensors_header(path) -> (header dict, data offset)
  round_to_dtype(array, dtype) -> float32 ndarray                what a dtype stores, decoded
  export_lstm(state_dict, key_map=None, strict=True) -> (tensors, dims)
  export_seq2seq(state_dict, key_map=None, strict=True) -> (tensors, dims)
  export_treelstm(state_dict, key_map=None, strict=True) -> (tensors, dims)
  make_spec(kind, name, dims, dtype="F32", **limits) -> spec dict
  expected_shapes(spec) -> {name: shape}; validate_layout(spec, tensors)
  write_model(repo, name, spec, tensors, dtype="F32")            writes repo/name/{spec.json,
                                                                 weights.safetensors} (replaces)
  existing_model_files(repo, name) -> [paths]                     what the CLI refuses to replace
  load_state_dict(path, key=None, trust_pickle=False) -> state_dict

Expected state_dict keys (nn.Embedding + nn.LSTM + nn.Linear; see tools/reference_models.py):
  lstm:     embedding.weight [V, E]
            lstm.weight_ih_l{l} [4H, in_l], lstm.weight_hh_l{l} [4H, H],
            lstm.bias_ih_l{l} [4H], lstm.bias_hh_l{l} [4H]      (l = 0 .. L-1; in_0 = E, else H)
            head.weight [C, H], head.bias [C]
  seq2seq:  encoder.embedding.weight [V, E], encoder.lstm.* (as lstm.* above),
            decoder.embedding.weight [Vt, E], decoder.lstm.*, proj.weight [Vt, H], proj.bias [Vt]
  treelstm: embedding.weight [V, E], tree.leaf.weight [3H, E], tree.leaf.bias [3H],
            tree.internal.weight [5H, 2H], tree.internal.bias [5H], head.weight [C, H],
            head.bias [C]
Other names are mapped with key_map / --map OLD=NEW (prefix renames, applied in order, e.g.
--map module.= --map rnn.=lstm. --map fc.=head.). An nn.LSTM or nn.Linear built with bias=False
(no .bias key) exports zero biases. Bidirectional LSTMs, proj_size, GRUs and RNNs are not
supported (a clear error says so); neither is any other layer the forward uses (a LayerNorm,
attention): strict=False / --allow-extra only ignores tensors the forward does not use. Non-finite
weights are refused.

Output layout (runtime/model_spec.h; row-major, PyTorch gate order i, f, g, o):
  lstm.{l}.weight = cat([weight_ih_l{l}, weight_hh_l{l}], dim=1) [4H, in_l + H]
  lstm.{l}.bias   = bias_ih_l{l} + bias_hh_l{l} [4H]
  (seq2seq: encoder.{l}.*, decoder.{l}.*; embeddings as encoder.embedding / decoder.embedding)

Inputs: text sent to a served model (`cellserve infer TEXT`, `serve --stdin`) is turned into ids by
the server's hashing tokenizer, not by your training vocabulary: ids 0-3 are reserved (pad, bos,
eos, unk) and a word's id is 4 + FNV-1a(word) % (vocab_size - 4). Train on those ids (`cellserve
tokenize --vocab V < train.txt` prints them), or send your own ids (`cellserve infer --tokens`).

CLI:
  /usr/bin/python3 tools/export_pytorch.py --kind lstm --state-dict model.pt --repo DIR \
      --name NAME [--force] [--dtype F32|F16|BF16] [--classes C] [--map OLD=NEW ...] [--key NAME]
      [--trust-pickle] [--allow-extra]
An existing REPO/NAME is refused without --force. The file is loaded with weights_only=True
where torch has that argument; a whole pickled nn.Module needs --trust-pickle (or save
model.state_dict()).
The sizes (vocab_size, embed_dim, hidden, layers, classes / target_vocab_size) are inferred from
the shapes; options given explicitly are checked against them.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import pickle
import re
import struct
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

DTYPES = ("F32", "F16", "BF16")
KINDS = ("lstm", "seq2seq", "treelstm")
_DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2}
MAX_HEADER_BYTES = 100 << 20


class ExportError(ValueError):
    """A state_dict, spec or tensor set that does not fit the cellserve layout."""


# ------------------------------------------------------------------------------------- safetensors


def _to_f32(name: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().to(torch.float32).numpy()
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ExportError(f"tensor '{name}' has unsupported dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def float32_to_bf16_bits(arr: np.ndarray) -> np.ndarray:
    """Rounds float32 to bfloat16 (round to nearest, ties to even); returns uint16 bit patterns.
    NaN stays a (quiet) NaN with its sign; +-inf stay inf; values past the bf16 range become inf."""
    bits = np.ascontiguousarray(arr, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((bits >> np.uint64(16)) & np.uint64(1)) + np.uint64(0x7FFF)
    out = ((bits + rounding) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(arr)
    if nan.any():
        sign = ((bits >> np.uint64(16)) & np.uint64(0x8000)).astype(np.uint16)
        out = np.where(nan, sign | np.uint16(0x7FC0), out).astype(np.uint16)
    return out


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _encode(name: str, arr: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return arr.astype("<f4").tobytes()
    if dtype == "F16":
        with np.errstate(over="ignore"):
            half = arr.astype("<f2")
        overflow = np.isinf(half) & np.isfinite(arr)
        if overflow.any():
            raise ExportError(f"tensor '{name}' has values outside the F16 range "
                              f"(max |x| = {np.abs(arr[np.isfinite(arr)]).max():g} > 65504)")
        return half.tobytes()
    if dtype == "BF16":
        bits = float32_to_bf16_bits(arr)
        overflow = np.isinf(bf16_bits_to_float32(bits)) & np.isfinite(arr)
        if overflow.any():
            raise ExportError(f"tensor '{name}' has values outside the BF16 range")
        return bits.astype("<u2").tobytes()
    raise ExportError(f"unknown dtype '{dtype}' (dtypes: {', '.join(DTYPES)})")


def round_to_dtype(value, dtype: str) -> np.ndarray:
    """The float32 values a tensor has after being stored as `dtype` and read back."""
    arr = _to_f32("value", value)
    if dtype == "F32":
        return arr.copy()
    if dtype == "F16":
        return arr.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return bf16_bits_to_float32(float32_to_bf16_bits(arr)).reshape(arr.shape)
    raise ExportError(f"unknown dtype '{dtype}' (dtypes: {', '.join(DTYPES)})")


def serialize_safetensors(tensors: Mapping[str, object], dtype: str = "F32",
                          metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """The bytes of a safetensors file: u64 LE header length N, N bytes of JSON header (padded
    with spaces so the data starts at a multiple of 8), data packed in name order."""
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype '{dtype}' (dtypes: {', '.join(DTYPES)})")
    header: Dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ExportError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(sorted(metadata.items()))
    chunks: List[bytes] = []
    offset = 0
    for name in sorted(tensors):
        if not name or name == "__metadata__":
            raise ExportError(f"invalid tensor name {name!r}")
        arr = _to_f32(name, tensors[name])
        data = _encode(name, arr, dtype)
        header[name] = {"dtype": dtype, "shape": [int(d) for d in arr.shape],
                        "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


_tmp_counter = itertools.count()


def _write_atomic(path: str, data: bytes) -> None:
    """Writes `data` to PATH.tmp.PID.N, then renames it to `path`; the temporary is removed when
    that fails. (The name is runtime/atomic_file.cc's, whose cleanup of stale temporaries of dead
    processes covers it.) The temporary is created with O_EXCL and O_NOFOLLOW, so a file or link
    planted at that predictable name is never written through (the next name is tried), and gets
    the mode of the file it replaces."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = f"{path}.tmp.{os.getpid()}.{next(_tmp_counter)}"
        try:
            fd = os.open(tmp, flags, 0o644)
            break
        except FileExistsError:
            continue  # not ours: never written, never removed
    else:
        raise ExportError(f"cannot create a temporary file beside {path}: 100 names are taken")
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                os.fchmod(f.fileno(), os.stat(path).st_mode & 0o7777)
            except FileNotFoundError:
                pass
            f.write(data)
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_safetensors(path: str, tensors: Mapping[str, object], dtype: str = "F32",
                      metadata: Optional[Mapping[str, str]] = None) -> int:
    """Writes `tensors` (torch tensors or numpy arrays, stored as `dtype`: F32, F16 or BF16, F16
    and BF16 rounded to nearest even) to `path` atomically. Returns the file size in bytes."""
    blob = serialize_safetensors(tensors, dtype, metadata)
    _write_atomic(path, blob)
    return len(blob)


def parse_safetensors_header(blob: bytes) -> Tuple[dict, int]:
    """Validates and returns (header dict, offset where the data starts)."""
    if len(blob) < 8:
        raise ExportError("safetensors file is shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(blob):
        raise ExportError(f"safetensors header length {n} is out of range")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ExportError("safetensors header must be a JSON object")
    data_len = len(blob) - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _DTYPE_SIZE:
            raise ExportError(f"tensor '{name}': unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or any(not isinstance(d, int) or d < 0 for d in shape):
            raise ExportError(f"tensor '{name}': bad shape {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= data_len):
            raise ExportError(f"tensor '{name}': bad data_offsets {offs!r}")
        if offs[1] - offs[0] != int(np.prod(shape, dtype=np.int64)) * _DTYPE_SIZE[dtype]:
            raise ExportError(f"tensor '{name}': data_offsets do not match shape {shape} {dtype}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise ExportError(f"tensors '{n0}' and '{n1}' overlap")
    return header, 8 + n


def read_safetensors_header(path: str) -> Tuple[dict, int]:
    with open(path, "rb") as f:
        return parse_safetensors_header(f.read())


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """Reads a safetensors file; every tensor comes back as a float32 ndarray (exact for F16/BF16).
    The metadata is in read_safetensors_header(path)[0].get("__metadata__")."""
    with open(path, "rb") as f:
        blob = f.read()
    header, start = parse_safetensors_header(blob)
    out: Dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = blob[start + b:start + e]
        if info["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif info["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        else:
            arr = bf16_bits_to_float32(np.frombuffer(raw, dtype="<u2"))
        out[name] = arr.reshape(info["shape"])
    return out


# --------------------------------------------------------------------------------------- exporting


def apply_key_map(state_dict: Mapping[str, object],
                  key_map: Optional[Sequence[Tuple[str, str]]]) -> Dict[str, object]:
    """Renames keys: for each (old, new) prefix pair in order, a key starting with `old` gets that
    prefix replaced by `new`."""
    if not key_map:
        return dict(state_dict)
    if isinstance(key_map, Mapping):
        key_map = list(key_map.items())
    out: Dict[str, object] = {}
    for key, value in state_dict.items():
        new = key
        for old, repl in key_map:
            if new.startswith(old):
                new = repl + new[len(old):]
        if new in out:
            raise ExportError(f"--map sends two keys to '{new}'")
        out[new] = value
    return out


class _Reader:
    """Takes tensors out of a state_dict with shape checks; remembers which keys were used."""

    def __init__(self, state_dict: Mapping[str, object], kind: str):
        self.sd = {k: v for k, v in state_dict.items()}
        self.kind = kind
        self.used: set = set()
        self.nonfinite: Dict[str, int] = {}  # key -> count of NaN/inf values

    def has(self, key: str) -> bool:
        return key in self.sd

    def get(self, key: str, shape: Optional[Sequence[Optional[int]]] = None,
            what: str = "") -> torch.Tensor:
        if key not in self.sd:
            near = sorted(self.sd)[:12]
            raise ExportError(f"{self.kind}: state_dict has no '{key}'{' (' + what + ')' if what else ''}; "
                              f"keys present: {near}{' ...' if len(self.sd) > 12 else ''} "
                              f"(rename with --map OLD=NEW)")
        self.used.add(key)
        t = self.sd[key]
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(np.asarray(t))
        t = t.detach().cpu().to(torch.float32)
        if shape is not None:
            ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
            if not ok:
                want = "[" + ", ".join("?" if s is None else str(s) for s in shape) + "]"
                raise ExportError(f"{self.kind}: '{key}' has shape {list(t.shape)}, expected {want}"
                                  f"{' (' + what + ')' if what else ''}")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            self.nonfinite[key] = bad
        return t

    def linear(self, prefix: str, out_dim: Optional[int], in_dim: int, what_w: str,
               what_b: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """An nn.Linear's `{prefix}weight` and `{prefix}bias`; zeros for the bias when the layer
        was built with bias=False (no `{prefix}bias` key)."""
        w = self.get(prefix + "weight", [out_dim, in_dim], what_w)
        if self.has(prefix + "bias"):
            return w, self.get(prefix + "bias", [w.shape[0]], what_b)
        return w, torch.zeros(w.shape[0])  # nn.Linear(bias=False)

    def check_all_used(self, strict: bool) -> None:
        """Raises on unexpected keys (strict) or non-finite values; with strict off, warns on
        stderr about the keys it ignores."""
        extra = sorted(set(self.sd) - self.used)
        if extra and strict:
            raise ExportError(
                f"{self.kind}: unexpected state_dict keys {_key_list(extra)}. If they belong to "
                f"layers the model's forward uses (a LayerNorm, another LSTM, attention, ...), the "
                f"model cannot be served: cellserve's {self.kind} layout has no such layer and its "
                f"answers would differ from your model's. If they are names of the expected tensors, "
                f"rename them with --map OLD=NEW. Only if the forward does not use them (optimizer or "
                f"EMA copies, unused buffers) pass --allow-extra (strict=False) to ignore them")
        if extra:
            print(f"export_pytorch: warning: {self.kind}: ignoring {len(extra)} state_dict key(s) "
                  f"the layout does not use (--allow-extra): {_key_list(extra)}; if the model's "
                  f"forward uses them, the served answers will differ from your model's",
                  file=sys.stderr)
        if self.nonfinite:
            total = sum(self.nonfinite.values())
            raise ExportError(
                f"{self.kind}: {total} non-finite value(s) (NaN or inf) in "
                + ", ".join(f"'{k}' ({n})" for k, n in self.nonfinite.items())
                + ": the training diverged or the checkpoint is damaged; export a finite checkpoint "
                  "(the server refuses non-finite weights)")


def _key_list(keys: Sequence[str], limit: int = 20) -> str:
    """The keys as a list, the first `limit` and a count of the rest when there are more."""
    keys = list(keys)
    if len(keys) <= limit:
        return str(keys)
    return f"{keys[:limit]} and {len(keys) - limit} more"


def _export_lstm_stack(r: _Reader, src: str, dst: str, input_dim: int,
                       out: Dict[str, torch.Tensor]) -> Tuple[int, int]:
    """Maps nn.LSTM keys `{src}weight_ih_l{l}` ... to `{dst}{l}.weight` / `{dst}{l}.bias`.
    Returns (hidden, layers)."""
    for key in r.sd:
        if key.startswith(src) and key.endswith("_reverse"):
            raise ExportError(f"{r.kind}: '{key}': bidirectional LSTMs are not supported")
        if key.startswith(src + "weight_hr_l"):
            raise ExportError(f"{r.kind}: '{key}': LSTMs with proj_size are not supported")
    layers = 0
    while r.has(f"{src}weight_ih_l{layers}"):
        layers += 1
    if layers == 0:
        r.get(f"{src}weight_ih_l0", what="nn.LSTM layer 0")  # raises with a clear message
    w_hh0 = r.get(f"{src}weight_hh_l0", [None, None], "nn.LSTM weight_hh_l0")
    hidden = w_hh0.shape[1]
    if w_hh0.shape[0] != 4 * hidden:
        looks = {3 * hidden: "nn.GRU (3 gates)", hidden: "nn.RNN (1 gate)"}.get(w_hh0.shape[0])
        raise ExportError(f"{r.kind}: '{src}weight_hh_l0' has shape {list(w_hh0.shape)}, expected "
                          f"[4*H, H]" + (f": looks like {looks}; only nn.LSTM is supported"
                                         if looks else ""))
    for l in range(layers):
        in_l = input_dim if l == 0 else hidden
        w_ih = r.get(f"{src}weight_ih_l{l}", [4 * hidden, in_l], f"[4H, {'E' if l == 0 else 'H'}]")
        w_hh = r.get(f"{src}weight_hh_l{l}", [4 * hidden, hidden], "[4H, H]")
        has_bih, has_bhh = r.has(f"{src}bias_ih_l{l}"), r.has(f"{src}bias_hh_l{l}")
        if has_bih != has_bhh:
            raise ExportError(f"{r.kind}: layer {l} of '{src}' has only one of bias_ih/bias_hh")
        if has_bih:
            b = (r.get(f"{src}bias_ih_l{l}", [4 * hidden], "[4H]")
                 + r.get(f"{src}bias_hh_l{l}", [4 * hidden], "[4H]"))
        else:
            b = torch.zeros(4 * hidden)  # nn.LSTM(bias=False)
        out[f"{dst}{l}.weight"] = torch.cat([w_ih, w_hh], dim=1).contiguous()
        out[f"{dst}{l}.bias"] = b.contiguous()
    return hidden, layers


def export_lstm(state_dict: Mapping[str, object], key_map=None,
                strict: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, int]]:
    """LstmClassifier state_dict -> (tensors in the cellserve layout, inferred dims
    {vocab_size, embed_dim, hidden, layers, classes})."""
    r = _Reader(apply_key_map(state_dict, key_map), "lstm")
    out: Dict[str, torch.Tensor] = {}
    emb = r.get("embedding.weight", [None, None], "[V, E]")
    vocab, embed = emb.shape
    out["embedding"] = emb
    hidden, layers = _export_lstm_stack(r, "lstm.", "lstm.", embed, out)
    out["head.weight"], out["head.bias"] = r.linear("head.", None, hidden, "[C, H]", "[C]")
    classes = out["head.weight"].shape[0]
    r.check_all_used(strict)
    return out, dict(vocab_size=vocab, embed_dim=embed, hidden=hidden, layers=layers,
                     classes=classes)


def export_seq2seq(state_dict: Mapping[str, object], key_map=None,
                   strict: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, int]]:
    """Seq2Seq state_dict -> (tensors, dims {vocab_size, target_vocab_size, embed_dim, hidden,
    layers}). Encoder and decoder must share embed_dim, hidden and layers."""
    r = _Reader(apply_key_map(state_dict, key_map), "seq2seq")
    out: Dict[str, torch.Tensor] = {}
    enc_emb = r.get("encoder.embedding.weight", [None, None], "[V, E]")
    vocab, embed = enc_emb.shape
    dec_emb = r.get("decoder.embedding.weight", [None, embed], "[Vt, E]: the decoder's embed_dim "
                    "must equal the encoder's")
    target_vocab = dec_emb.shape[0]
    out["encoder.embedding"] = enc_emb
    out["decoder.embedding"] = dec_emb
    h_enc, l_enc = _export_lstm_stack(r, "encoder.lstm.", "encoder.", embed, out)
    h_dec, l_dec = _export_lstm_stack(r, "decoder.lstm.", "decoder.", embed, out)
    if (h_enc, l_enc) != (h_dec, l_dec):
        raise ExportError(f"seq2seq: encoder (hidden {h_enc}, layers {l_enc}) and decoder (hidden "
                          f"{h_dec}, layers {l_dec}) must match: the decoder starts from the "
                          f"encoder's final state")
    out["proj.weight"], out["proj.bias"] = r.linear("proj.", target_vocab, h_enc, "[Vt, H]", "[Vt]")
    r.check_all_used(strict)
    return out, dict(vocab_size=vocab, target_vocab_size=target_vocab, embed_dim=embed,
                     hidden=h_enc, layers=l_enc)


def export_treelstm(state_dict: Mapping[str, object], key_map=None,
                    strict: bool = True) -> Tuple[Dict[str, torch.Tensor], Dict[str, int]]:
    """TreeLstm state_dict -> (tensors, dims {vocab_size, embed_dim, hidden, layers=1, classes})."""
    r = _Reader(apply_key_map(state_dict, key_map), "treelstm")
    out: Dict[str, torch.Tensor] = {}
    emb = r.get("embedding.weight", [None, None], "[V, E]")
    vocab, embed = emb.shape
    leaf_w, leaf_b = r.linear("tree.leaf.", None, embed, "[3H, E]", "[3H]")
    if leaf_w.shape[0] % 3:
        raise ExportError(f"treelstm: 'tree.leaf.weight' has {leaf_w.shape[0]} rows, expected 3*H "
                          f"(gates i, o, u)")
    hidden = leaf_w.shape[0] // 3
    out["embedding"] = emb
    out["tree.leaf.weight"], out["tree.leaf.bias"] = leaf_w, leaf_b
    out["tree.internal.weight"], out["tree.internal.bias"] = r.linear(
        "tree.internal.", 5 * hidden, 2 * hidden,
        "[5H, 2H] = [U_left | U_right], gates i, f_l, f_r, o, u", "[5H]")
    out["head.weight"], out["head.bias"] = r.linear("head.", None, hidden, "[C, H]", "[C]")
    classes = out["head.weight"].shape[0]
    r.check_all_used(strict)
    return out, dict(vocab_size=vocab, embed_dim=embed, hidden=hidden, layers=1, classes=classes)


EXPORTERS = {"lstm": export_lstm, "seq2seq": export_seq2seq, "treelstm": export_treelstm}


# ------------------------------------------------------------------------------------ spec, layout

_NAME_RE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}")  # runtime/model_spec.h's rule


def make_spec(kind: str, name: str, dims: Mapping[str, int], dtype: str = "F32", *,
              version: int = 1, max_input_tokens: int = 1024, max_batch: int = 256,
              bos_id: int = 1, eos_id: int = 2, max_decode_len: int = 64) -> Dict[str, object]:
    """A spec.json dict (field order as in runtime/model_spec.h) from exporter dims."""
    if kind not in KINDS:
        raise ExportError(f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    spec: Dict[str, object] = {
        "name": name, "version": version, "kind": kind,
        "vocab_size": int(dims["vocab_size"]), "embed_dim": int(dims["embed_dim"]),
        "hidden": int(dims["hidden"]), "layers": int(dims.get("layers", 1)),
    }
    if kind == "seq2seq":
        spec.update(target_vocab_size=int(dims["target_vocab_size"]), bos_id=bos_id,
                    eos_id=eos_id, max_decode_len=max_decode_len)
    else:
        spec["classes"] = int(dims["classes"])
    spec.update(max_input_tokens=max_input_tokens, max_batch=max_batch, dtype=dtype)
    validate_spec(spec)
    return spec


def validate_spec(spec: Mapping[str, object]) -> None:
    """The checks of ModelSpec::Validate (runtime/model_spec.cc)."""
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ExportError(f"spec 'name' must be letters, digits, '_', '-', '.', not starting with '.', "
                          f"at most 255 characters: {name!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ExportError(f"spec 'kind' must be one of {KINDS}, got {kind!r}")
    if spec.get("dtype", "F32") not in DTYPES:
        raise ExportError(f"spec 'dtype' must be one of {DTYPES}, got {spec.get('dtype')!r}")
    limits = {"version": 1 << 40, "vocab_size": 1 << 24, "embed_dim": 1 << 16, "hidden": 1 << 16,
              "layers": 64, "max_input_tokens": 1 << 20, "max_batch": 1 << 16}
    if kind == "seq2seq":
        limits.update(target_vocab_size=1 << 24, max_decode_len=1 << 16)
    else:
        limits["classes"] = 1 << 24
    for field, hi in limits.items():
        v = spec.get(field)
        lo = 5 if field == "vocab_size" else 1  # ids 0..3 are reserved (runtime/text.h's kFirstWordId)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise ExportError(f"spec field '{field}' must be an integer in {lo}..{hi}, got {v!r}")
    if kind == "seq2seq":
        for field in ("bos_id", "eos_id"):
            v = spec.get(field)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < spec["target_vocab_size"]:
                raise ExportError(f"spec field '{field}' must be in 0..{spec['target_vocab_size'] - 1}, "
                                  f"got {v!r}")


def expected_shapes(spec: Mapping[str, object]) -> Dict[str, List[int]]:
    """The tensor names and shapes runtime/model_spec.h requires for `spec`."""
    V, E, H, L = (int(spec[k]) for k in ("vocab_size", "embed_dim", "hidden", "layers"))
    kind = spec["kind"]

    def stack(prefix: str) -> Dict[str, List[int]]:
        s = {}
        for l in range(L):
            s[f"{prefix}{l}.weight"] = [4 * H, (E if l == 0 else H) + H]
            s[f"{prefix}{l}.bias"] = [4 * H]
        return s

    if kind == "lstm":
        C = int(spec["classes"])
        return {"embedding": [V, E], **stack("lstm."), "head.weight": [C, H], "head.bias": [C]}
    if kind == "seq2seq":
        Vt = int(spec["target_vocab_size"])
        return {"encoder.embedding": [V, E], **stack("encoder."), "decoder.embedding": [Vt, E],
                **stack("decoder."), "proj.weight": [Vt, H], "proj.bias": [Vt]}
    if kind == "treelstm":
        C = int(spec["classes"])
        return {"embedding": [V, E], "tree.leaf.weight": [3 * H, E], "tree.leaf.bias": [3 * H],
                "tree.internal.weight": [5 * H, 2 * H], "tree.internal.bias": [5 * H],
                "head.weight": [C, H], "head.bias": [C]}
    raise ExportError(f"unknown kind {kind!r}")


def validate_layout(spec: Mapping[str, object], tensors: Mapping[str, object]) -> None:
    """Raises ExportError unless `tensors` has exactly the names and shapes `spec` requires."""
    want = expected_shapes(spec)
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise ExportError(f"{spec['kind']} model '{spec['name']}': tensors missing {missing}, "
                          f"unexpected {extra}")
    for name, shape in want.items():
        got = list(tensors[name].shape)
        if got != shape:
            raise ExportError(f"{spec['kind']} model '{spec['name']}': '{name}' has shape {got}, "
                              f"spec requires {shape}")


def spec_to_json(spec: Mapping[str, object]) -> str:
    return json.dumps(spec, indent=2) + "\n"


def write_model(repo: str, name: str, spec: Mapping[str, object], tensors: Mapping[str, object],
                dtype: str = "F32") -> Tuple[str, str]:
    """Writes repo/name/spec.json and repo/name/weights.safetensors (weights stored as `dtype`).
    Checks the spec and that the tensors match its layout. Returns the two paths."""
    spec = dict(spec)
    spec.setdefault("name", name)
    if spec["name"] != name:
        raise ExportError(f"spec name '{spec['name']}' differs from the model folder name '{name}'")
    if spec.setdefault("dtype", dtype) != dtype:
        raise ExportError(f"spec dtype '{spec['dtype']}' differs from the requested dtype '{dtype}'")
    validate_spec(spec)
    validate_layout(spec, tensors)
    folder = os.path.join(repo, name)
    os.makedirs(folder, exist_ok=True)
    spec_path = os.path.join(folder, "spec.json")
    weights_path = os.path.join(folder, "weights.safetensors")
    write_safetensors(weights_path, tensors, dtype,
                      metadata={"format": "pt", "kind": str(spec["kind"]),
                                "producer": "cellserve tools/export_pytorch.py"})
    _write_atomic(spec_path, spec_to_json(spec).encode("utf-8"))
    return spec_path, weights_path


def existing_model_files(repo: str, name: str) -> List[str]:
    """The files of a model REPO/NAME that exist already (spec.json, weights.safetensors)."""
    folder = os.path.join(repo, name)
    return [p for p in (os.path.join(folder, "spec.json"), os.path.join(folder, "weights.safetensors"))
            if os.path.lexists(p)]


# --------------------------------------------------------------------------------------------- CLI


SEARCHED_KEYS = ("state_dict", "model_state_dict", "model")  # checkpoint entries tried in order


def _torch_load(path: str, trust_pickle: bool = False):
    """torch.load on the CPU; with weights_only=True (no code runs) where this torch has the
    argument, unless trust_pickle."""
    safe = "weights_only" in inspect.signature(torch.load).parameters and not trust_pickle
    try:
        if safe:
            return torch.load(path, map_location="cpu", weights_only=True)
        if trust_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        return torch.load(path, map_location="cpu")  # an old torch without weights_only
    except (AttributeError, ModuleNotFoundError) as e:
        raise ExportError(
            f"cannot load {path}: {e}: the file holds a pickled object (a whole nn.Module saved with "
            f"torch.save(model)?) whose class cannot be imported here. Save the weights instead, "
            f"torch.save(model.state_dict(), path), and export that file; or make the class "
            f"importable (its module's folder on PYTHONPATH, under the module name it was saved "
            f"from)") from None
    except pickle.UnpicklingError as e:
        if not safe or "weights only load failed" not in str(e).lower():
            raise ExportError(f"cannot load {path}: {e}") from None
        why = (str(e).split("WeightsUnpickler error:")[-1].strip().splitlines() or [""])[0][:200]
        what = ("values this torch's safe loader cannot read (some torch versions refuse even "
                "plain floats, e.g. a 'loss' entry of a checkpoint dict)"
                if "Unsupported operand" in why else
                "pickled Python code or objects besides tensors, e.g. a whole nn.Module saved with "
                "torch.save(model)")
        raise ExportError(
            f"cannot load {path} safely: it holds {what} (torch {torch.__version__}'s weights_only "
            f"loader: {why}). Best: save the weights only, torch.save(model.state_dict(), path), "
            f"and export that file. Or, only for a file you trust (unpickling can run arbitrary "
            f"code), pass --trust-pickle to load it with weights_only=False") from None
    except Exception as e:  # torch raises many types (pickle, zip, ...)
        raise ExportError(f"cannot load {path}: {type(e).__name__}: {e}") from None


def _as_state_dict(obj) -> Optional[Dict[str, torch.Tensor]]:
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    return None


def _describe_keys(obj: Mapping, limit: int = 12) -> str:
    items = []
    for k, v in list(obj.items())[:limit]:
        if isinstance(v, Mapping):
            n = sum(isinstance(x, torch.Tensor) for x in v.values())
            items.append(f"{k!r} (dict, {len(v)} entries, {n} tensors)")
        else:
            items.append(f"{k!r} ({type(v).__name__})")
    more = f" and {len(obj) - limit} more" if len(obj) > limit else ""
    return ", ".join(items) + more


def load_state_dict(path: str, key: Optional[str] = None,
                    trust_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """torch.load a state_dict, a whole nn.Module, or a checkpoint dict holding one under `key`,
    else under 'state_dict' / 'model_state_dict' / 'model'. Loads with weights_only=True where
    torch has that argument, unless trust_pickle (whole modules need it)."""
    obj = _torch_load(path, trust_pickle)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            have = f"its top-level keys: {_describe_keys(obj)}" if isinstance(obj, Mapping) else \
                f"it holds a {type(obj).__name__}, not a dict"
            raise ExportError(f"{path}: no entry {key!r} (--key); {have}")
        sd = _as_state_dict(obj[key])
        if sd is None:
            raise ExportError(f"{path}: entry {key!r} (--key) holds a {type(obj[key]).__name__!r}, not "
                              f"a state_dict (a dict of tensors) or an nn.Module")
        return sd
    sd = _as_state_dict(obj)
    if sd is not None:
        return sd
    if isinstance(obj, Mapping):
        for k in SEARCHED_KEYS:
            sd = _as_state_dict(obj.get(k))
            if sd is not None:
                return sd
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
        raise ExportError(
            f"{path}: found no state_dict in this checkpoint dict: the exporter looks for a dict of "
            f"tensors or an nn.Module under {', '.join(repr(k) for k in SEARCHED_KEYS)}, or tensors "
            f"at the top level; the file's top-level keys: {_describe_keys(obj)}. Pick the entry "
            f"holding the model's weights with --key NAME")
    raise ExportError(f"{path}: not a state_dict, nn.Module or checkpoint dict (got "
                      f"{type(obj).__name__})")


def _parse_map(items: Iterable[str]) -> List[Tuple[str, str]]:
    out = []
    for item in items:
        if "=" not in item:
            raise ExportError(f"--map expects OLD=NEW, got {item!r}")
        old, new = item.split("=", 1)
        out.append((old, new))
    return out


_SEQ2SEQ_ONLY = ("target_vocab_size", "bos_id", "eos_id", "max_decode_len")
_CLASSIFIER_ONLY = ("classes",)  # lstm, treelstm


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description="Export a PyTorch LSTM / seq2seq / Tree-LSTM state_dict to a cellserve model "
                    "repository folder REPO/NAME (spec.json + weights.safetensors). Sizes are "
                    "inferred from the tensor shapes.",
        epilog="Expected keys — lstm: embedding.weight, lstm.{weight,bias}_{ih,hh}_l{l}, "
               "head.weight, head.bias. seq2seq: encoder.embedding.weight, encoder.lstm.*, "
               "decoder.embedding.weight, decoder.lstm.*, proj.weight, proj.bias. treelstm: "
               "embedding.weight, tree.leaf.{weight,bias}, tree.internal.{weight,bias}, "
               "head.{weight,bias}. Rename others with --map OLD=NEW. A missing .bias (nn.LSTM or "
               "nn.Linear built with bias=False) exports as zeros. Gate orders: LSTM rows are "
               "PyTorch's (i, f, g, o); the Tree-LSTM's tree.leaf rows are gates (i, o, u) [3H] and "
               "tree.internal rows (i, f_left, f_right, o, u) [5H] with columns [h_left | h_right] "
               "(tools/reference_models.py's BinaryTreeLstmCell; runtime/model_spec.h). Text sent to "
               "the served model is tokenized by the server (ids 0-3 reserved, a word's id 4 + "
               "FNV-1a(word) % (V - 4)): train on those ids (`cellserve tokenize --vocab V < "
               "train.txt`) or send ids (`cellserve infer --tokens`).")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--state-dict", required=True,
                   help="torch.save'd state_dict, checkpoint dict or module (.pt)")
    p.add_argument("--key", metavar="NAME",
                   help="the checkpoint dict's entry holding the state_dict (default: the file "
                        f"itself, else its entry {', '.join(SEARCHED_KEYS)})")
    p.add_argument("--trust-pickle", action="store_true",
                   help="load with torch.load(weights_only=False), which runs the file's pickled "
                        "code: needed for a whole nn.Module saved with torch.save(model); only for "
                        "files you trust (better: save model.state_dict())")
    p.add_argument("--repo", required=True, help="model repository directory")
    p.add_argument("--name", required=True, help="model name (folder under --repo)")
    p.add_argument("--force", action="store_true",
                   help="replace the model REPO/NAME if it exists (default: refuse)")
    p.add_argument("--dtype", default="F32", choices=DTYPES, help="storage dtype (default F32)")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--classes", type=int, help="lstm/treelstm: check the head has this many outputs")
    p.add_argument("--vocab-size", type=int, help="check the (source) vocabulary size")
    p.add_argument("--target-vocab-size", type=int, help="seq2seq: check the target vocabulary size")
    p.add_argument("--bos-id", type=int, help="seq2seq (default 1)")
    p.add_argument("--eos-id", type=int, help="seq2seq (default 2)")
    p.add_argument("--max-decode-len", type=int, help="seq2seq (default 64)")
    p.add_argument("--max-input-tokens", type=int, default=1024, help="default 1024")
    p.add_argument("--max-batch", type=int, default=256, help="default 256")
    p.add_argument("--map", action="append", default=[], metavar="OLD=NEW",
                   help="rename state_dict key prefix OLD to NEW (repeatable, applied in order)")
    p.add_argument("--allow-extra", action="store_true",
                   help="ignore state_dict keys the layout does not use (listed in a warning). "
                        "Only for tensors the model's forward does not use (optimizer or EMA "
                        "copies, unused buffers): a layer the forward uses (a LayerNorm, another "
                        "LSTM, attention) cannot be served, and ignoring it makes the answers differ")
    args = p.parse_args(argv)
    wrong = _CLASSIFIER_ONLY if args.kind == "seq2seq" else _SEQ2SEQ_ONLY
    misplaced = [f"--{o.replace('_', '-')}" for o in wrong if getattr(args, o) is not None]
    if misplaced:
        p.error(f"{', '.join(misplaced)} appl{'ies' if len(misplaced) == 1 else 'y'} to --kind "
                f"{'lstm and treelstm' if args.kind == 'seq2seq' else 'seq2seq'} only, not "
                f"--kind {args.kind}")
    try:
        existing = existing_model_files(args.repo, args.name)
        if existing and not args.force:
            raise ExportError(f"{os.path.join(args.repo, args.name)} already exists ("
                              f"{', '.join(os.path.basename(f) for f in existing)}); pass --force "
                              f"to overwrite it")
        sd = load_state_dict(args.state_dict, args.key, args.trust_pickle)
        tensors, dims = EXPORTERS[args.kind](sd, _parse_map(args.map), strict=not args.allow_extra)
        for opt, field in (("classes", "classes"), ("vocab_size", "vocab_size"),
                           ("target_vocab_size", "target_vocab_size")):
            given = getattr(args, opt)
            if given is not None and field in dims and given != dims[field]:
                raise ExportError(f"--{opt.replace('_', '-')} {given} does not match the weights "
                                  f"({field} = {dims[field]})")
        spec = make_spec(args.kind, args.name, dims, args.dtype, version=args.version,
                         max_input_tokens=args.max_input_tokens, max_batch=args.max_batch,
                         bos_id=1 if args.bos_id is None else args.bos_id,
                         eos_id=2 if args.eos_id is None else args.eos_id,
                         max_decode_len=64 if args.max_decode_len is None else args.max_decode_len)
        spec_path, weights_path = write_model(args.repo, args.name, spec, tensors, args.dtype)
    except (ExportError, OSError) as e:
        print(f"export_pytorch: error: {e}", file=sys.stderr)
        return 1
    n_params = sum(int(t.numel()) for t in tensors.values())
    print(f"wrote {spec_path} and {weights_path} ({os.path.getsize(weights_path)} bytes, "
          f"{n_params} parameters, {args.dtype})")
    print(spec_to_json(spec), end="")
    if args.vocab_size is None:
        v = dims["vocab_size"]
        print(f"export_pytorch: note: vocab_size {v} is the embedding's row count: text is tokenized "
              f"as `cellserve tokenize --vocab {v}` (ids 4 + FNV-1a(word) % {v - 4}): train on those "
              f"ids (or pass --vocab-size to check)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
