"""Embedding profiles: the backends that together produce one collection's vectors (design.md §3).

A profile is written into the collection's metadata at creation (:class:`ProfileInfo`); opening the
collection with another profile raises :class:`~app.errors.ProfileMismatchError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from loupe.embedder.base import (
    AudioInput,
    Embedder,
    EmbedInput,
    ImageInput,
    InputKind,
    TextInput,
    VideoInput,
    input_kind,
)
from loupe.embedder.e5 import E5Embedder
from loupe.embedder.fake import FakeEmbedder
from loupe.errors import ConfigError, EmbedError, UnknownNameError
from loupe.types import Segment

if TYPE_CHECKING:
    from loupe.embedder.pieces import WordPieces

log = logging.getLogger(__name__)

UNIFIED = "unified"
# The sparse word-piece vector's key in a profile's model ids (index/engines.py stores it under the same name).
PIECES = "pieces"
# Audio clips in the media store are 16 kHz mono WAV (ingest/audio.py writes them).
CLIP_RATE = 16_000


def load_clip(path: str) -> np.ndarray:
    """A stored clip (16 kHz mono WAV) as float32 samples in [-1, 1]."""
    import soundfile

    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        raise EmbedError(f"cannot read audio clip {path}: {e}") from e
    if rate != CLIP_RATE:
        raise EmbedError(f"audio clip {path} is {rate} Hz; clips in the media store must be {CLIP_RATE} Hz")
    return np.asarray(data.mean(axis=1), dtype=np.float32)


@dataclass(frozen=True)
class ProfileInfo:
    """What a collection records about the space its vectors live in."""

    name: str
    model_ids: dict[str, str]
    dims: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form, as stored in the collection metadata."""
        return {"name": self.name, "model_ids": dict(self.model_ids), "dims": dict(self.dims)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProfileInfo:
        """Inverse of :meth:`to_json`."""
        return cls(name=str(data["name"]), model_ids=dict(data["model_ids"]), dims=dict(data["dims"]))

    def describe(self) -> str:
        """One line for error messages: name, models and dims."""
        models = ", ".join(f"{k}={v}" for k, v in sorted(self.model_ids.items()))
        dims = ", ".join(f"{k}:{v}" for k, v in sorted(self.dims.items()))
        return f"{self.name!r} [{models}; dims {dims}]"


@dataclass
class Query:
    """A query with one or more parts (text, an image file, a recording already decoded to samples).

    Each part is embedded into ``unified`` and fused at retrieval; ``weights`` (by part: text, image, audio,
    ``bm25`` for the keyword stage and ``pieces`` for a spoken query's word-piece stage) scale each part's say in
    the fusion.
    """

    text: str | None = None
    image: str | None = None
    audio: AudioInput | None = None
    weights: dict[str, float] = field(default_factory=dict)

    def kinds(self) -> list[InputKind]:
        """The parts this query has, in a fixed order."""
        out: list[InputKind] = []
        if self.text and self.text.strip():
            out.append("text")
        if self.image:
            out.append("image")
        if self.audio:
            out.append("audio")
        return out


# A query part: one of its kinds, or ``joint`` for text + image or text + audio embedded as one input by a
# backend that interleaves (EmbeddingGemma 2); weights take the same keys.
QueryPart = Literal["text", "image", "audio", "video", "joint"]


@dataclass(frozen=True)
class QueryVector:
    """One query part embedded into one named vector."""

    part: QueryPart
    using: str
    vector: np.ndarray


class EmbeddingProfile:
    """A named set of backends: ``unified`` (required; the one space) plus optional named vectors."""

    def __init__(
        self, name: str, unified: Embedder, extra: dict[str, Embedder] | None = None, pieces: WordPieces | None = None
    ) -> None:
        self.name = name
        self.unified = unified
        self.extra = dict(extra or {})
        # Sparse e5 word-piece vectors for spoken queries' hybrid search (embedder/pieces.py); offline only.
        self.pieces = pieces

    @property
    def info(self) -> ProfileInfo:
        """The profile's identity, stored with every collection built with it."""
        model_ids = {UNIFIED: self.unified.model_ids[UNIFIED]}
        dims = {UNIFIED: self.unified.dim}
        for vec_name, emb in self.extra.items():
            model_ids[vec_name] = next(iter(emb.model_ids.values()))
            dims[vec_name] = emb.dim
        if self.pieces is not None:  # a sparse vector: a model id, no dimension
            model_ids[PIECES] = self.pieces.model_id
        return ProfileInfo(self.name, model_ids, dims)

    def segment_input(self, seg: Segment) -> EmbedInput | None:
        """How a segment enters the unified space, or None when it carries nothing to embed.

        Pixels and sound go in as such when the unified backend takes that kind (with any text known about
        the item to mix in); otherwise a segment enters by its text (OCR, caption, file name). Text-bearing
        segments are embedded as passages with their document title as context.
        """
        kinds = self.unified.kinds
        text = (seg.text or "").strip()
        media = seg.media
        if seg.modality in ("image", "video_frame") and "image" in kinds and media is not None:
            # A video frame that shows the same picture as an earlier one is embedded from that frame's file
            # (ingest/video.py), so the classifier's per-file cache runs it once.
            return ImageInput(str(seg.meta.get("picture") or media.path), text or None)
        if seg.modality == "video_window" and "video" in kinds and seg.meta.get("frames"):
            return VideoInput(tuple(seg.meta["frames"]), text or None)
        if seg.modality in ("audio_clip", "speech_clip") and "audio" in kinds and media is not None:
            samples = load_clip(media.path)
            return AudioInput(samples, CLIP_RATE, speech=seg.modality == "speech_clip")
        if seg.modality == "page" and media is not None and "image" in kinds and _embeds_pages(self.unified):
            # Document-capable backends (Qwen3-VL-Embedding, Gemini) see the rendered page with its text.
            return ImageInput(media.path, text or None)
        if not text:
            return None
        title = seg.source.title.strip()
        return TextInput(f"{title}\n{text}" if title and title not in text[:200] else text)

    def embed_segments(self, segments: Sequence[Segment]) -> list[dict[str, np.ndarray] | None]:
        """Vectors per segment: ``unified`` always, plus each extra named vector whose backend takes the
        segment's input kind (e.g. ``visual`` for images and frames). None where there is nothing to embed.
        """
        inputs = [self.segment_input(s) for s in segments]
        out: list[dict[str, np.ndarray] | None] = [None] * len(segments)
        for kind in ("text", "image", "video", "audio"):
            idx = [i for i, inp in enumerate(inputs) if inp is not None and input_kind(inp) == kind]
            if not idx:
                continue
            batch = [inp for i in idx if (inp := inputs[i]) is not None]
            vecs = self.unified.embed(batch, role="passage")
            named = {
                name: emb.embed(batch, role="passage")
                for name, emb in self.extra.items()
                if kind in _passage_kinds(emb)
            }
            for j, i in enumerate(idx):
                out[i] = {UNIFIED: vecs[j], **{name: v[j] for name, v in named.items()}}
            if kind == "audio" and self.pieces is not None:
                self._add_spoken_pieces(batch, idx, out)
        return out

    def _add_spoken_pieces(
        self, batch: Sequence[EmbedInput], idx: Sequence[int], out: list[dict[str, np.ndarray] | None]
    ) -> None:
        """Speech clips also get their soft tokens' word-piece weights (embedder/pieces.py) under ``pieces``, as
        a ``(2, n)`` array (ids over weights): a spoken query's piece stage then reaches recordings too."""
        from loupe.embedder.pieces import as_array

        assert self.pieces is not None
        said = [(j, inp) for j, inp in enumerate(batch) if isinstance(inp, AudioInput) and inp.speech]
        if not said:
            return
        weights = self.pieces.spoken_many([inp for _, inp in said])
        if weights is None:  # a head without soft tokens: no piece weights
            return
        for (j, _), w in zip(said, weights, strict=True):
            row = out[idx[j]]
            if row is not None and w[0]:
                row[PIECES] = as_array(w)

    def embed_query(self, query: Query) -> list[QueryVector]:
        """Each query part into ``unified``, plus into every extra named vector that takes its kind
        (an image query also searches ``visual``). Raises EmbedError for a part the profile cannot embed.
        """
        out: list[QueryVector] = []
        joint = self._joint_query(query)
        if joint is not None:
            # Next to the parts' own vectors (fused by RRF as for every profile), the parts as ONE input.
            out.append(QueryVector("joint", UNIFIED, self.unified.embed([joint], role="query")[0]))
        for kind in query.kinds():
            if kind not in self.unified.kinds:
                raise EmbedError(
                    f"the {self.name!r} embedding profile cannot embed {kind} queries yet "
                    f"(it embeds: {', '.join(sorted(self.unified.kinds))})"
                )
            item: EmbedInput
            if kind == "text":
                item = TextInput(query.text or "")
            elif kind == "image":
                item = ImageInput(query.image or "")
            else:
                assert query.audio is not None
                item = query.audio
            out.append(QueryVector(kind, UNIFIED, self.unified.embed([item], role="query")[0]))
            for name, emb in self.extra.items():
                if kind in emb.kinds:
                    out.append(QueryVector(kind, name, emb.embed([item], role="query")[0]))
        return out

    def _joint_query(self, query: Query) -> EmbedInput | None:
        """Text with an image or a recording as one interleaved input, when the unified backend takes those
        (``interleaves``); None otherwise (a query with one part, or a backend that embeds parts apart)."""
        if not getattr(self.unified, "interleaves", False):
            return None
        kinds = query.kinds()
        if "text" not in kinds or len(kinds) < 2:
            return None
        if "image" in kinds and query.image:
            return ImageInput(query.image, query.text)
        if "audio" in kinds and query.audio is not None:
            a = query.audio
            return AudioInput(a.samples, a.sample_rate, speech=a.speech, text=query.text)
        return None


def _embeds_pages(emb: Embedder) -> bool:
    """Whether a backend embeds PDF pages as page images (``embeds_pages``); others take the page's text."""
    return bool(getattr(emb, "embeds_pages", False))


def _passage_kinds(emb: Embedder) -> frozenset[InputKind]:
    """Kinds a backend embeds as passages; a backend may take a kind for queries only (``passage_kinds``)."""
    kinds: frozenset[InputKind] = getattr(emb, "passage_kinds", emb.kinds)
    return kinds


def _bridge(**opts: Any) -> Embedder:
    from loupe.embedder.bridge import BridgeEmbedder

    return BridgeEmbedder(**opts)


EMBEDDERS: dict[str, Callable[..., Embedder]] = {"fake": FakeEmbedder, "e5": E5Embedder, "bridge": _bridge}


def _offline_profile(**opts: Any) -> EmbeddingProfile:
    """e5 text space; images, video and non-speech audio bridged into it by classifier labels (embedder/bridge.py);
    speech (spoken queries, speech clips) through the Whisper encoder + trained head (embedder/speech.py)."""
    from loupe.embedder.bridge import offline_backends
    from loupe.embedder.pieces import WordPieces
    from loupe.embedder.recentre import SPOKEN_QUERY_DEFLATION, recentred, spoken_query_deflation
    from loupe.embedder.speech import HEAD_FILE, SpeechEncoder, SpeechRoutedEmbedder

    recentre = bool(opts.pop("recentre", False))
    recentre_alphas = opts.pop("recentre_alphas", None)
    recentre_levels = opts.pop("recentre_levels", None)
    deflation = float(opts.pop("spoken_query_deflation", SPOKEN_QUERY_DEFLATION))
    unified, extra = offline_backends(**opts)
    if not HEAD_FILE.is_file():
        # A checkout whose head was removed (to retrain it) keeps speech on the bridge; the model id says so.
        log.warning(
            "speech head %s is missing: speech stays on the sound-event bridge (run `loupe train speech`)", HEAD_FILE
        )
        return EmbeddingProfile("offline", unified, extra=dict(extra))
    speech = SpeechEncoder(num_threads=opts.get("num_threads") or 0)
    # Spoken queries lose the direction every speech-head output shares (embedder/recentre.py); the id checked
    # is the routed space's own, the one the statistics were fitted on.
    speech_routed = SpeechRoutedEmbedder(unified, speech)
    speech_routed.query_deflation = spoken_query_deflation(speech_routed.model_ids["unified"], deflation)
    routed: Embedder = speech_routed
    if recentre:
        routed = recentred(routed, alphas=recentre_alphas, levels=recentre_levels)
    return EmbeddingProfile("offline", routed, extra=dict(extra), pieces=WordPieces(speech))


def _native_profile(**opts: Any) -> EmbeddingProfile:
    """Real multimodal models through transformers (embedder/native.py); model ids from the profile options."""
    from loupe.embedder.native import native_backends

    unified, extra = native_backends(**opts)
    return EmbeddingProfile("native", unified, extra=dict(extra))


def _gemma2_profile(**opts: Any) -> EmbeddingProfile:
    """EmbeddingGemma 2 (embedder/gemma2.py): text, images, audio and video in one space, all in ``unified``
    (no ``visual``/``audio`` vectors: there is no second space to keep); ``model`` names its folder."""
    from loupe.embedder.gemma2 import gemma2_backend

    return EmbeddingProfile("native-gemma2", gemma2_backend(**opts))


def _gemini_profile(**opts: Any) -> EmbeddingProfile:
    """Gemini Embedding 2 over its HTTP API (embedder/gemini.py); needs an API key."""
    from loupe.embedder.gemini import GeminiEmbedder

    return EmbeddingProfile("gemini", GeminiEmbedder(**opts))


PROFILES: dict[str, Callable[..., EmbeddingProfile]] = {
    "offline": _offline_profile,
    "fake": lambda **opts: EmbeddingProfile("fake", FakeEmbedder(**opts)),
    "native": _native_profile,
    "native-gemma2": _gemma2_profile,
    "gemini": _gemini_profile,
}


def create_embedder(name: str, **opts: Any) -> Embedder:
    """Build a backend by name. Unknown names raise UnknownNameError (a ValueError) listing the valid ones."""
    if name not in EMBEDDERS:
        raise UnknownNameError(f"unknown embedder {name!r}; valid: {', '.join(sorted(EMBEDDERS))}")
    return EMBEDDERS[name](**opts)


def create_profile(name: str, **opts: Any) -> EmbeddingProfile:
    """Build a profile by name (``offline`` is the default). Unknown names raise UnknownNameError listing valid ones."""
    if name not in PROFILES:
        raise UnknownNameError(f"unknown embedding profile {name!r}; valid: {', '.join(sorted(PROFILES))}")
    return PROFILES[name](**opts)


def profile_options(settings: Any) -> dict[str, Any]:
    """The options ``settings`` gives its profile: ``profile_options`` (a mapping, e.g. model ids for
    ``native``), plus the Gemini API key for ``gemini``. Unknown option names fail when the profile is built."""
    opts = dict(getattr(settings, "profile_options", None) or {})
    if settings.profile == "gemini" and "api_key" not in opts:
        key = getattr(settings, "gemini_api_key", None)
        opts["api_key"] = key.get_secret_value() if key is not None else None
    return opts


def profile_from_settings(settings: Any) -> EmbeddingProfile:
    """The profile ``settings`` names, built with its options (entry points call this once).

    >>> profile = profile_from_settings(load_settings(profile="native"))  # doctest: +SKIP
    """
    try:
        return create_profile(settings.profile, **profile_options(settings))
    except TypeError as e:
        if "unexpected keyword" not in str(e):
            raise
        raise ConfigError(f"profile {settings.profile!r}: bad profile_options ({e})") from e
