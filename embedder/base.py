"""The embedder protocol, the inputs it takes, and the helpers every backend shares."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

InputKind = Literal["text", "image", "audio", "video"]
Role = Literal["query", "passage"]


@dataclass(frozen=True)
class TextInput:
    """Text to embed. ``role`` picks the query or passage prefix for asymmetric models such as e5."""

    text: str


@dataclass(frozen=True)
class ImageInput:
    """An image file to embed (PNG/JPEG/...), with any text known about it (OCR, caption) to mix in."""

    path: str
    text: str | None = None


@dataclass(frozen=True)
class VideoInput:
    """A window of video frames (image files in time order, 1 per second), with text known about it."""

    frames: tuple[str, ...]
    text: str | None = None


@dataclass(frozen=True, eq=False)
class AudioInput:
    """Mono audio samples at ``sample_rate`` Hz, float32 in [-1, 1]; ``speech`` when voice dominates.

    ``text`` rides with the sound for backends that embed an interleaved input (EmbeddingGemma 2: the clip and the
    text as one sequence); the others ignore it.
    """

    samples: np.ndarray
    sample_rate: int
    speech: bool = False
    text: str | None = None


EmbedInput = TextInput | ImageInput | VideoInput | AudioInput


def input_kind(item: EmbedInput) -> InputKind:
    """The modality of an embed input."""
    if isinstance(item, TextInput):
        return "text"
    if isinstance(item, ImageInput):
        return "image"
    if isinstance(item, VideoInput):
        return "video"
    return "audio"


@runtime_checkable
class Embedder(Protocol):
    """A backend that maps inputs of some modalities to one vector space.

    ``model_ids`` and ``dim`` are written into every collection built with it, so that a collection is never
    searched with vectors from another space. Construction is cheap; weights load on first ``embed``.
    """

    name: str
    dim: int
    kinds: frozenset[InputKind]

    @property
    def model_ids(self) -> dict[str, str]:
        """Model identifiers (name → id or file digest) that define the space."""
        ...

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed ``items`` (all of kinds in ``self.kinds``) into an ``(n, dim)`` float32, L2-normalised array."""
        ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation in float32; all-zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


T = TypeVar("T")


def length_sorted_batches(items: Sequence[T], batch_size: int, key: Callable[[T], int]) -> Iterator[list[int]]:
    """Yield index batches over ``items`` sorted by ``key`` (longest first), as sentence-transformers does.

    Similar lengths in one batch waste less padding; the caller writes results back by index, which restores
    the input order.
    """
    order = sorted(range(len(items)), key=lambda i: -key(items[i]))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def file_digest(path: Path) -> str:
    """First 12 hex digits of a file's sha256 (read in blocks): a weight file's identity in ids and cache names."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:12]


def cpu_session(model: str | Path, threads: int) -> Any:
    """An onnxruntime CPU session as Loupe's exported graphs run: full graph optimisation, ``threads`` intra-op
    threads, one inter-op thread, and no spin-waiting (at ingest the cores are shared with ffmpeg, frame OCR and
    the other embedders, and spinning pool threads burn the time those need)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
