#!/usr/bin/env python3
"""Writes the small seed corpora under tests/fuzz/corpus/ (committed; rerun only to change them)."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), packed in the given order."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def f16(*v):
    return struct.pack("<%de" % len(v), *v)


def bf16(*v):
    return b"".join(struct.pack("<f", x)[2:] for x in v)  # truncation is fine for seeds


SEEDS = {
    "safetensors/f32_matrix.safetensors": safetensors(
        [("embedding", "F32", [2, 3], f32(1, -2, 3.5, 0, 0.001, -7)),
         ("head.bias", "F32", [2], f32(0.5, -0.5))],
        {"format": "pt"}),
    "safetensors/mixed_dtypes.safetensors": safetensors(
        [("a", "F16", [3], f16(1 / 3, -65504, 6e-8)),
         ("b", "BF16", [2, 2], bf16(1, 2, 3, 4)),
         ("c", "F32", [0, 4], b""),
         ("d", "F32", [], f32(42))]),
    "safetensors/empty.safetensors": safetensors([]),
}

TREES = {
    "tree/leaf.txt": "7",
    "tree/pair.txt": "(4 5)",
    "tree/left.txt": "((4 5) 6)",
    "tree/balanced.txt": "(((0 1) (2 3)) ((4 5) (6 (7 999))))",
    "tree/spaces.txt": " ( 12\n( 3\t4 ) )\n",
}

# For the tree target's node-list reading: int16 triples (token, left, right), -1 = no child.
NODE_LISTS = {
    "tree/nodes_3.bin": struct.pack("<9h", 1, -1, -1, 2, -1, -1, -1, 0, 1),
    "tree/nodes_5.bin": struct.pack("<15h", -1, 1, 4, -1, 2, 3, 5, -1, -1, 6, -1, -1, 7, -1, -1),
}
SEEDS.update(NODE_LISTS)

for path, data in list(SEEDS.items()) + [(k, v.encode()) for k, v in TREES.items()]:
    full = os.path.join(HERE, "corpus", path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
