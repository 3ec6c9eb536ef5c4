"""Every road into the offline space brought to the e5 text passages' level (issue 21).

The offline space is e5's; pictures, frames and sounds enter it through the label bridge, speech through the
speech head. Each road leaves its vectors in a region of its own: all bridged pictures lie within cosine ~0.98
of each other, so a query's cosine with *any* picture is high and pictures crowd queries aimed elsewhere, while
a spoken query lies nearer to every recording than to the picture it names (docs/eval/modality-gap-*.json).

Re-centring moves each road's vectors so that they sit where e5 text passages sit:

    v' = normalise(μ_text + α_road · (σ_text / σ_road) · (v − μ_road) + λ_road · μ_query)

with μ the road's mean vector, σ the RMS distance of its vectors from it, and λ a level that lifts the road as a
whole for typed queries (μ_query: the typed queries' mean). What all items of a road share no
longer counts; what tells them apart is as long as what tells text passages apart. Spoken queries are moved
from the spoken queries' mean to the typed queries' mean the same way. Typed text (queries and passages) is the
reference and never changes, so text → page and text → text rankings stay exactly as they were.

The statistics are fitted on a validation collection built without dev data (eval/modality/make_validation.py,
lab/evaluation/recentre.py ``--fit``) and ship as ``embedder/data/recentre-*.json``; their digest is part of the
model id, so collections embedded before are refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loupe.embedder.base import AudioInput, Embedder, EmbedInput, ImageInput, InputKind, Role, VideoInput
from loupe.errors import ConfigError

log = logging.getLogger(__name__)
DATA_DIR = Path(__file__).parent / "data"
#: The statistics the offline profile ships (fitted on the validation collection; see the module docstring).
DEFAULT_FILE = DATA_DIR / "recentre-v1.json"
#: The roads a vector can take (the reference, typed e5 text, takes none).
ROADS = ("image", "window", "sound", "speech", "speech_query")


def road_of(item: EmbedInput, role: Role) -> str | None:
    """The road ``item`` takes into the space for ``role``: None for e5 text (the reference)."""
    if isinstance(item, ImageInput):
        return "image"  # photos and video frames (with any OCR or caption text mixed in)
    if isinstance(item, VideoInput):
        return "window"
    if isinstance(item, AudioInput):
        if item.speech:
            return "speech_query" if role == "query" else "speech"
        return "sound"
    return None


@dataclass(frozen=True)
class Recentring:
    """Per-road means and spreads, and the reference (text passages; typed queries for spoken queries)."""

    means: dict[str, np.ndarray]
    rms: dict[str, float]
    alphas: dict[str, float]
    digest: str
    source: str
    levels: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(
        cls,
        data: dict[str, Any],
        alphas: dict[str, float | None] | None = None,
        levels: dict[str, float] | None = None,
    ) -> Recentring:
        """Statistics as lab/evaluation/recentre.py ``--fit`` writes them; ``alphas`` per road (the file's
        ``alphas`` when None; a road missing there gets 1, a road whose alpha is None is left as it is) and
        ``levels`` per stored road (the file's when None; 0 where missing)."""
        keys = [k for k, v in data.items() if isinstance(v, dict) and "mean" in v]
        if "text" not in keys:
            raise ConfigError("re-centring statistics need the text passages' mean ('text')")
        chosen = dict(data.get("alphas") or {}) if alphas is None else dict(alphas)
        off = {k for k, a in chosen.items() if a is None}
        roads = [k for k in keys if k not in off]
        a = {k: float(chosen.get(k) or 1.0) for k in roads if k in ROADS}
        lv = dict(data.get("levels") or {}) if levels is None else dict(levels)
        lv = {k: float(v) for k, v in lv.items() if k in a and k != "speech_query" and v}
        raw = json.dumps([{k: data[k] for k in keys}, sorted(a.items()), sorted(lv.items())], sort_keys=True)
        return cls(
            means={k: np.asarray(data[k]["mean"], dtype=np.float32) for k in roads},
            rms={k: float(data[k]["rms"]) for k in roads},
            alphas=a,
            digest=hashlib.sha256(raw.encode()).hexdigest()[:12],
            source=str(data.get("source", "")),
            levels=lv,
        )

    @classmethod
    def load(cls, path: Path = DEFAULT_FILE, alphas: dict[str, float | None] | None = None) -> Recentring:
        """Read a statistics file; ConfigError naming it when it is missing or unreadable."""
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")), alphas)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"cannot read the re-centring statistics {path}: {e}") from e

    def apply(self, road: str | None, v: np.ndarray) -> np.ndarray:
        """Unit vectors ``(n, d)`` of one road moved to the reference level; unchanged for text or an unfitted road."""
        if road is None or road not in self.means:
            return v
        ref = "text_query" if road == "speech_query" else "text"
        if ref not in self.means:
            return v
        scale = self.alphas.get(road, 1.0) * self.rms[ref] / max(self.rms[road], 1e-6)
        out = self.means[ref] + scale * (np.asarray(v, dtype=np.float32) - self.means[road])
        level = self.levels.get(road, 0.0)
        if level and "text_query" in self.means:
            # Raises every typed query's cosine with this road's items alike (queries lie near their mean).
            out = out + level * self.means["text_query"]
        return (out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class RecentredEmbedder:
    """An embedder whose non-text roads are re-centred (:class:`Recentring`); everything else is the inner one's.

    >>> from loupe.embedder.fake import FakeEmbedder
    >>> stats = {"text": {"mean": [0.0] * 8, "rms": 1.0}, "image": {"mean": [0.0] * 8, "rms": 1.0}}
    >>> e = RecentredEmbedder(FakeEmbedder(dim=8), Recentring.from_json(stats))
    >>> e.model_ids["unified"].endswith(e.recentring.digest)
    True
    """

    def __init__(self, inner: Embedder, recentring: Recentring) -> None:
        self.inner = inner
        self.recentring = recentring
        self.name = f"{inner.name}+recentred"
        self.dim = inner.dim
        self.kinds: frozenset[InputKind] = inner.kinds

    @property
    def model_ids(self) -> dict[str, str]:
        """The inner space's id plus the statistics' digest (a re-centred space is a different space)."""
        ids = dict(self.inner.model_ids)
        r = self.recentring
        moved = ", ".join(
            f"{k} {a:g}" + (f"+{r.levels[k]:g}" if r.levels.get(k) else "") for k, a in sorted(r.alphas.items())
        )
        ids["unified"] = f"{ids['unified']}; re-centred [{moved}] {self.recentring.digest}"
        return ids

    def __getattr__(self, name: str) -> Any:
        # token_count, interleaves, passage_kinds, ...: the inner embedder's (only called for missing names)
        return getattr(self.inner, name)

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """The inner vectors, each row moved along its road."""
        out = self.inner.embed(items, role=role)
        roads = [road_of(item, role) for item in items]
        for road in set(roads) - {None}:
            idx = [i for i, r in enumerate(roads) if r == road]
            out[idx] = self.recentring.apply(road, out[idx])
        return out


#: How much of the speech road's own direction a spoken query loses (β below); chosen on the validation collection
#: (``lab/evaluation/recentre.py --deflate``: β 0 / 0.5 / 1 / 1.5 / 2 / 3 → segment-level R@5 over every type
#: 0.595 / 0.609 / 0.616 / 0.611 / 0.614 / 0.566).
SPOKEN_QUERY_DEFLATION = 1.0


@dataclass(frozen=True)
class SpokenQueryDeflation:
    """A spoken query without the direction that every speech-head output shares.

    The speech head puts spoken queries and stored speech clips in one region of the space (both are its outputs),
    so a spoken query's nearest neighbours were recordings of *anything* rather than the page, text or picture it
    names: speech clips, 0.9 % of the dev collection, took 16-30 % of the spoken queries' top-5 places. The
    speech road's direction is ``d = normalise(μ_speech_clips − μ_text_passages)`` (the statistics file's means,
    fitted on the validation collection), and a spoken query becomes

        q' = normalise(q − β · (q·d) · d)

    Query side only: stored vectors, and so the collection's model id, are unchanged (no re-ingest).
    """

    direction: np.ndarray
    beta: float
    digest: str

    @classmethod
    def from_stats(cls, data: dict[str, Any], beta: float) -> SpokenQueryDeflation:
        """The deflation from re-centring statistics (their ``speech`` and ``text`` means)."""
        d = np.asarray(data["speech"]["mean"], dtype=np.float32) - np.asarray(data["text"]["mean"], dtype=np.float32)
        d /= max(float(np.linalg.norm(d)), 1e-12)
        return cls(d, float(beta), hashlib.sha256(d.tobytes() + str(beta).encode()).hexdigest()[:12])

    def apply(self, q: np.ndarray) -> np.ndarray:
        """Unit query vectors ``(n, d)`` with ``beta`` of their component along the speech direction removed."""
        q = np.asarray(q, dtype=np.float32)
        out = q - self.beta * (q @ self.direction)[:, None] * self.direction[None, :]
        return (out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def spoken_query_deflation(
    model_id: str, beta: float = SPOKEN_QUERY_DEFLATION, path: Path = DEFAULT_FILE
) -> SpokenQueryDeflation | None:
    """The deflation for the space ``model_id`` from the statistics in ``path``; None when ``beta`` is 0, or (with a
    warning) when the file is missing or was fitted on another space."""
    if not beta:
        return None
    if not path.is_file():
        log.warning("re-centring statistics %s are missing: spoken queries are not deflated", path)
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("model_id") != model_id or "speech" not in data or "text" not in data:
        log.warning("statistics %s were fitted on another space: spoken queries are not deflated", path)
        return None
    return SpokenQueryDeflation.from_stats(data, beta)


def recentred(
    inner: Embedder,
    path: Path = DEFAULT_FILE,
    alphas: dict[str, float | None] | None = None,
    levels: dict[str, float] | None = None,
) -> Embedder:
    """``inner`` re-centred with the statistics in ``path`` when they were fitted on ``inner``'s space; otherwise
    ``inner`` itself, with a warning (its model id then says nothing of re-centring, so no space is mixed).

    ``alphas`` replaces the file's per-road alphas (a road missing or None there is left as it is), e.g.
    ``{"speech": 1.0, "speech_query": 2.0}`` to move only the speech roads; ``levels`` the file's levels."""
    if alphas is not None:
        unknown = sorted(set(alphas) - set(ROADS))
        if unknown:
            raise ConfigError(f"recentre_alphas: unknown roads {unknown}; the roads are {list(ROADS)}")
        alphas = {road: alphas.get(road) for road in ROADS}
    if not path.is_file():
        log.warning("re-centring statistics %s are missing: the offline space is not re-centred", path)
        return inner
    data = json.loads(path.read_text(encoding="utf-8"))
    fitted_on = data.get("model_id")
    if fitted_on != inner.model_ids["unified"]:
        log.warning(
            "re-centring statistics %s were fitted on another space (%s); the offline space is not re-centred "
            "(refit with lab/evaluation/recentre.py --fit on a validation collection)",
            path,
            fitted_on,
        )
        return inner
    return RecentredEmbedder(inner, Recentring.from_json(data, alphas, levels))
