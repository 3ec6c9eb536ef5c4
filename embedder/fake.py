"""A deterministic, hash-seeded fake embedder for plumbing tests (no model, no weights).

Texts that share words get similar vectors (a bag of hashed word vectors), so retrieval tests can check
that the right file comes first without loading a model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from loupe.embedder.base import AudioInput, EmbedInput, ImageInput, InputKind, Role, TextInput, VideoInput, l2_normalize

_WORD = re.compile(r"\w+", re.UNICODE)


def _word_vector(word: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class FakeEmbedder:
    """Bag-of-hashed-words for text; a hash of the bytes for images and audio. Same input → same vector."""

    kinds: frozenset[InputKind] = frozenset({"text", "image", "audio", "video"})

    def __init__(self, dim: int = 64, name: str = "fake") -> None:
        self.name = name
        self.dim = dim

    @property
    def model_ids(self) -> dict[str, str]:
        """The fake has no weights; its id records the dimension so two fakes of different sizes differ."""
        return {"unified": f"fake-hash-{self.dim}"}

    def _one(self, item: EmbedInput) -> np.ndarray:
        if isinstance(item, TextInput):
            words = [w.lower() for w in _WORD.findall(item.text)]
            if not words:
                return self._zero()
            return np.sum([_word_vector(w, self.dim) for w in words], axis=0)
        if isinstance(item, ImageInput):
            with open(item.path, "rb") as f:
                return _word_vector("image:" + hashlib.sha256(f.read()).hexdigest(), self.dim)
        if isinstance(item, VideoInput):
            return np.sum([self._one(ImageInput(f)) for f in item.frames], axis=0) if item.frames else self._zero()
        assert isinstance(item, AudioInput)
        return _word_vector("audio:" + hashlib.sha256(item.samples.tobytes()).hexdigest(), self.dim)

    def _zero(self) -> np.ndarray:
        return np.zeros(self.dim, dtype=np.float32)

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed items; ``role`` is ignored (the fake is symmetric)."""
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(np.stack([self._one(i) for i in items]))
