"""Reference PyTorch implementations of the three cellserve model kinds.

These modules define the semantics the C++ runtime implements (see runtime/model_spec.h for the
weight layout that tools/export_pytorch.py maps them to). Everything runs on one request at a time
(batch 1), in float32, with a zero initial state.

  LstmClassifier  kind "lstm"      embedding -> nn.LSTM(E, H, L) -> head(h_top at the last step)
  Seq2Seq         kind "seq2seq"   encoder LSTM; decoder LSTM started from the encoder's final
                                   (h_n, c_n); greedy decoding from bos_id until eos_id (included)
                                   or max_decode_len tokens
  TreeLstm        kind "treelstm"  binary N-ary Tree-LSTM (Tai et al. 2015), constituency style:
                                   only leaves read tokens; head(h_root)

state_dict key names (what export_pytorch.py expects):
  LstmClassifier: embedding.weight, lstm.weight_ih_l{l}, lstm.weight_hh_l{l}, lstm.bias_ih_l{l},
                  lstm.bias_hh_l{l}, head.weight, head.bias
  Seq2Seq:        encoder.embedding.weight, encoder.lstm.{weight,bias}_{ih,hh}_l{l},
                  decoder.embedding.weight, decoder.lstm.{weight,bias}_{ih,hh}_l{l},
                  proj.weight, proj.bias
  TreeLstm:       embedding.weight, tree.leaf.weight, tree.leaf.bias, tree.internal.weight,
                  tree.internal.bias, head.weight, head.bias

Trees use the text form of runtime/tree.h: a leaf is a token id, an internal node is
"(" left right ")", e.g. "((4 5) 6)". parse_tree_sexpr returns the nodes in post-order (children
before parents, root last), like the C++ ParseTreeSexpr.

Only torch and the standard library are used.
"""

from __future__ import annotations

import random
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

__all__ = [
    "LstmClassifier",
    "Seq2Seq",
    "DecodeResult",
    "TreeLstm",
    "BinaryTreeLstmCell",
    "TreeNode",
    "parse_tree_sexpr",
    "tree_to_sexpr",
    "tree_leaves",
    "sexpr_single",
    "sexpr_left_deep",
    "sexpr_right_deep",
    "sexpr_balanced",
    "sexpr_random",
    "first_argmax",
]


def first_argmax(values: torch.Tensor) -> int:
    """Index of the maximum of a 1-D tensor; the first such index on ties (as the C++ does)."""
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"first_argmax expects a non-empty 1-D tensor, got shape {list(values.shape)}")
    best = values.max()
    return int(torch.nonzero(values == best)[0, 0])


def _as_token_tensor(tokens: Sequence[int]) -> torch.Tensor:
    t = torch.as_tensor(list(tokens), dtype=torch.long)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError("tokens must be a non-empty 1-D sequence of ids")
    return t


# --------------------------------------------------------------------------------------------- lstm


class LstmClassifier(nn.Module):
    """kind "lstm": logits = head(h of the top layer at the last step)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, layers: int, classes: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tokens: Sequence[int]) -> torch.Tensor:
        """tokens: T >= 1 ids. Returns logits [C]."""
        x = self.embedding(_as_token_tensor(tokens)).unsqueeze(1)  # [T, 1, E]
        out, _ = self.lstm(x)  # zero initial state; out: [T, 1, H] = top layer's h per step
        return self.head(out[-1, 0])


# ------------------------------------------------------------------------------------------ seq2seq


class EmbeddedLstm(nn.Module):
    """An embedding followed by a multi-layer LSTM (the encoder and the decoder of Seq2Seq)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, layers: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers)

    def forward(self, tokens: torch.Tensor, state=None):
        """tokens: [T] ids. Returns (out [T, H] top layer's h per step, (h_n, c_n) each [L, 1, H])."""
        x = self.embedding(tokens).unsqueeze(1)
        out, (h, c) = self.lstm(x, state)
        return out[:, 0], (h, c)


class DecodeResult(NamedTuple):
    tokens: List[int]        # produced tokens; ends with eos_id unless max_decode_len was hit
    scores: List[float]      # the chosen (maximum) logit of each step
    margins: List[float]     # top-1 minus top-2 logit of each step (how safe the argmax is)
    stopped_at_eos: bool


class Seq2Seq(nn.Module):
    """kind "seq2seq": LSTM encoder-decoder with greedy decoding."""

    def __init__(self, vocab_size: int, target_vocab_size: int, embed_dim: int, hidden: int,
                 layers: int):
        super().__init__()
        self.encoder = EmbeddedLstm(vocab_size, embed_dim, hidden, layers)
        self.decoder = EmbeddedLstm(target_vocab_size, embed_dim, hidden, layers)
        self.proj = nn.Linear(hidden, target_vocab_size)

    def encode(self, tokens: Sequence[int]):
        """Runs the encoder from a zero state; returns its final (h_n, c_n), each [L, 1, H]."""
        _, state = self.encoder(_as_token_tensor(tokens))
        return state

    def decode_step(self, token: int, state):
        """One decoder step on input `token`; returns (logits [Vt], new state)."""
        out, state = self.decoder(torch.tensor([token], dtype=torch.long), state)
        return self.proj(out[-1]), state

    def greedy_decode(self, tokens: Sequence[int], bos_id: int, eos_id: int,
                      max_decode_len: int) -> DecodeResult:
        state = self.encode(tokens)
        inp = bos_id
        out_tokens: List[int] = []
        scores: List[float] = []
        margins: List[float] = []
        while len(out_tokens) < max_decode_len:
            logits, state = self.decode_step(inp, state)
            tok = first_argmax(logits)
            top2 = torch.topk(logits, 2).values if logits.numel() > 1 else None
            out_tokens.append(tok)
            scores.append(float(logits[tok]))
            margins.append(float(top2[0] - top2[1]) if top2 is not None else float("inf"))
            if tok == eos_id:
                return DecodeResult(out_tokens, scores, margins, True)
            inp = tok
        return DecodeResult(out_tokens, scores, margins, False)

    def forward(self, tokens: Sequence[int], bos_id: int = 1, eos_id: int = 2,
                max_decode_len: int = 64) -> DecodeResult:
        return self.greedy_decode(tokens, bos_id, eos_id, max_decode_len)


# ----------------------------------------------------------------------------------------- treelstm


class TreeNode(NamedTuple):
    token: int      # leaf: token id; internal: -1
    left: int       # internal: index of the left child; leaf: -1
    right: int      # internal: index of the right child; leaf: -1

    @property
    def is_leaf(self) -> bool:
        return self.left < 0


def parse_tree_sexpr(text: str) -> List[TreeNode]:
    """Parses "((4 5) 6)" into nodes in post-order (root last). Iterative; raises ValueError."""
    pieces = text.replace("(", " ( ").replace(")", " ) ").split()
    nodes: List[TreeNode] = []
    stack: List[List[int]] = []  # children collected for each open bracket
    root: Optional[int] = None
    for p in pieces:
        if root is not None:
            raise ValueError(f"tree text has trailing input after the root: {text!r}")
        if p == "(":
            stack.append([])
            continue
        if p == ")":
            if not stack:
                raise ValueError(f"unbalanced ')' in tree text {text!r}")
            kids = stack.pop()
            if len(kids) != 2:
                raise ValueError(f"a bracket must hold exactly two subtrees, got {len(kids)}: {text!r}")
            nodes.append(TreeNode(-1, kids[0], kids[1]))
        else:
            if not p.isdigit():
                raise ValueError(f"tree token {p!r} is not a non-negative integer")
            nodes.append(TreeNode(int(p), -1, -1))
        idx = len(nodes) - 1
        if stack:
            stack[-1].append(idx)
        else:
            root = idx
    if stack:
        raise ValueError(f"unbalanced '(' in tree text {text!r}")
    if root is None:
        raise ValueError("empty tree text")
    return nodes


def tree_to_sexpr(nodes: Sequence[TreeNode]) -> str:
    """Inverse of parse_tree_sexpr (nodes in post-order, root last)."""
    text: List[str] = []
    for i, n in enumerate(nodes):
        if n.is_leaf:
            text.append(str(n.token))
        else:
            if not (0 <= n.left < i and 0 <= n.right < i):
                raise ValueError("tree nodes are not in post-order")
            text.append(f"({text[n.left]} {text[n.right]})")
    return text[-1]


def tree_leaves(nodes: Sequence[TreeNode]) -> List[int]:
    return [n.token for n in nodes if n.is_leaf]


# Tree builders (text form) for tests and goldens.

def sexpr_single(token: int) -> str:
    return str(token)


def sexpr_left_deep(tokens: Sequence[int]) -> str:
    """(((t0 t1) t2) t3) ..."""
    s = str(tokens[0])
    for t in tokens[1:]:
        s = f"({s} {t})"
    return s


def sexpr_right_deep(tokens: Sequence[int]) -> str:
    """(t0 (t1 (t2 t3))) ..."""
    s = str(tokens[-1])
    for t in reversed(tokens[:-1]):
        s = f"({t} {s})"
    return s


def sexpr_balanced(tokens: Sequence[int]) -> str:
    """The documented bracketing of runtime/text.h BracketBalanced: split at the middle, the left
    half gets the extra token."""
    if len(tokens) == 1:
        return str(tokens[0])
    mid = (len(tokens) + 1) // 2
    return f"({sexpr_balanced(tokens[:mid])} {sexpr_balanced(tokens[mid:])})"


def sexpr_random(tokens: Sequence[int], rng: random.Random) -> str:
    """A random binary bracketing (random split point at every node)."""
    if len(tokens) == 1:
        return str(tokens[0])
    mid = rng.randint(1, len(tokens) - 1)
    return f"({sexpr_random(tokens[:mid], rng)} {sexpr_random(tokens[mid:], rng)})"


class BinaryTreeLstmCell(nn.Module):
    """The two node functions of the binary Tree-LSTM.

    leaf:     g = W_leaf x + b_leaf = [i, o, u];  c = sigmoid(i) * tanh(u);  h = sigmoid(o) * tanh(c)
    internal: g = W_int [h_l; h_r] + b_int = [i, f_l, f_r, o, u];
              c = sigmoid(i) * tanh(u) + sigmoid(f_l) * c_l + sigmoid(f_r) * c_r
              h = sigmoid(o) * tanh(c)
    """

    def __init__(self, embed_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.leaf = nn.Linear(embed_dim, 3 * hidden)          # gates i, o, u
        self.internal = nn.Linear(2 * hidden, 5 * hidden)     # gates i, f_left, f_right, o, u

    def leaf_forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        i, o, u = self.leaf(x).chunk(3)
        c = torch.sigmoid(i) * torch.tanh(u)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def internal_forward(self, h_l, c_l, h_r, c_r) -> Tuple[torch.Tensor, torch.Tensor]:
        i, f_l, f_r, o, u = self.internal(torch.cat([h_l, h_r])).chunk(5)
        c = (torch.sigmoid(i) * torch.tanh(u)
             + torch.sigmoid(f_l) * c_l
             + torch.sigmoid(f_r) * c_r)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class TreeLstm(nn.Module):
    """kind "treelstm": logits = head(h_root)."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, classes: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.tree = BinaryTreeLstmCell(embed_dim, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, tree) -> torch.Tensor:
        """tree: text form ("((4 5) 6)") or a post-order node list. Returns logits [C]."""
        nodes = parse_tree_sexpr(tree) if isinstance(tree, str) else list(tree)
        hs: List[torch.Tensor] = []
        cs: List[torch.Tensor] = []
        for i, n in enumerate(nodes):  # post-order: children are computed before their parent
            if n.is_leaf:
                h, c = self.tree.leaf_forward(self.embedding.weight[n.token])
            else:
                if not (0 <= n.left < i and 0 <= n.right < i):
                    raise ValueError("tree nodes are not in post-order")
                h, c = self.tree.internal_forward(hs[n.left], cs[n.left], hs[n.right], cs[n.right])
            hs.append(h)
            cs.append(c)
        return self.head(hs[-1])
