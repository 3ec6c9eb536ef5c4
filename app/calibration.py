"""Scores made comparable across modalities: one z-scale per target modality family (issue 21).

In the offline profile every modality reaches e5's text space by a different road (e5 itself, the label bridge,
the speech head), and each family of vectors sits in its own region: the cosine of a query with *any* recording
is higher than with most photos, whatever the query says. A raw-cosine ranking over one collection is then
decided by which region the query lies nearer to, not by which item fits it (the modality gap; measured in
lab/evaluation/gap.py → docs/eval/modality-gap-*.json).

The fix here changes no stored vector. Each family *f* is described by the mean ``μ_f`` and the covariance
``Σ_f`` of its vectors (a low-rank eigen-decomposition plus an isotropic rest), fitted on a validation
collection (eval/modality/make_validation.py; never the dev set). A query ``q``'s cosine with an item ``x`` of
family *f* becomes

    z = (q·x − q·μ_f) / sqrt(qᵀ Σ_f q)

the number of standard deviations by which the item stands out among *all* items of its family for this query
(Z-normalisation, as speaker verification normalises scores per model). The mean direction a whole family shares
no longer counts, and a family whose items all look alike for this query (small spread) does not get to rank
its best item high by default. Retrieval (app/retrieve.py) asks each family for its own candidates and merges
them by ``z``; within one family the order is the previous search's. The statistics are the searched
collection's own (:func:`collection_calibration`); a fitted file (lab/evaluation/gap.py ``--fit``) can be passed
instead for analysis.

>>> cal = ModalityCalibration.fit("demo", {"text": np.eye(3)[[0, 1, 2, 0]], "image": np.eye(3)[[1, 1, 2]]})
>>> round(float(cal.z("text", "text", np.eye(3)[0], np.array([1.0]))[0]), 2)
0.87
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loupe.errors import ConfigError
from loupe.types import MODALITIES

# Target families: segment modalities whose vectors come out of the same road into the space. Text chunks, whole
# pages and layout regions are all e5 passages of text, so they form one family and keep their cosine order among
# themselves (typed text -> page/text rankings do not change within the family).
FAMILIES: dict[str, tuple[str, ...]] = {
    "text": ("text", "page", "region"),
    "image": ("image",),
    "video": ("video_window", "video_frame"),
    "audio": ("audio_clip",),
    "speech": ("speech_clip",),
}
FAMILY_OF: dict[str, str] = {m: fam for fam, mods in FAMILIES.items() for m in mods}
assert set(FAMILY_OF) == set(MODALITIES), "every segment modality belongs to one family"
# Principal directions kept per family: the spread of bridge vectors lives in few directions (the classifier's
# top classes); 48 of 384 hold 80-95 % of each validation family's variance (lab/evaluation/gap.py reports it).
RANK = 48
# The isotropic floor under a family's spread, as a share of its mean variance per dimension (see FamilyStats.fit);
# a plain shrinkage constant, not tuned.
SHRINK = 0.1
# At most this many vectors per family are read to fit a collection's statistics (a scroll of 2,000 x 384 floats
# takes well under a second; the mean and the top directions are stable long before).
MAX_PER_FAMILY = 2000
DATA_DIR = Path(__file__).parent / "data"


@dataclass(frozen=True)
class FamilyStats:
    """Mean and covariance (top ``basis`` directions with their ``variances``, ``residual`` elsewhere) of one
    family's unit vectors."""

    mean: np.ndarray
    basis: np.ndarray
    variances: np.ndarray
    residual: float
    count: int

    @classmethod
    def fit(cls, vectors: np.ndarray, rank: int = RANK) -> FamilyStats:
        """Fit on ``(n, d)`` vectors (rows are L2-normalised first, as every stored vector is)."""
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need at least 2 vectors of one family to fit its spread, got shape {x.shape}")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        mean = x.mean(axis=0)
        c = x - mean
        cov = c.T @ c / (x.shape[0] - 1)
        w, v = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1]
        w, v = np.clip(w[order], 0.0, None), v[:, order]
        r = min(rank, x.shape[1] - 1, x.shape[0] - 1)
        rest = w[r:]
        residual = float(rest.mean()) if rest.size else 0.0
        # A floor on the rest (shrinkage towards an isotropic spread): a family of a dozen items spans a dozen
        # directions, and a query's part outside them must not get a spread near zero (a division by ~0).
        residual = max(residual, SHRINK * float(w.sum()) / x.shape[1], 1e-8)
        return cls(mean.astype(np.float32), v[:, :r].T.astype(np.float32), w[:r].astype(np.float32), residual, len(x))

    def centre_and_spread(self, q: np.ndarray) -> tuple[float, float]:
        """``q·μ`` and ``sqrt(qᵀΣq)``: where this family's scores for ``q`` centre, and how far they spread."""
        q = np.asarray(q, dtype=np.float64)
        proj = self.basis.astype(np.float64) @ q
        var = float(np.sum(self.variances * proj**2) + self.residual * max(float(q @ q) - float(proj @ proj), 0.0))
        return float(q @ self.mean), float(np.sqrt(max(var, 1e-12)))


def robust_centre_and_spread(scores: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 × MAD of a query's cosines with a family (the MAD scaled to a normal σ), with a floor.

    Robust, because in a small family the item that fits *is* an outlier: a mean and standard deviation that
    include it cap its z-score near (n − 1)/√n (3.3 for 13 images), below the tail of a family of 1,000 passages.
    """
    x = np.asarray(scores, dtype=np.float64)
    med = float(np.median(x))
    mad = 1.4826 * float(np.median(np.abs(x - med)))
    # A family whose items all score alike (MAD ~ 0, e.g. two near-identical clips) falls back to the standard
    # deviation, then to a small constant.
    spread = mad if mad > 1e-6 else float(x.std())
    return med, max(spread, 1e-4)


@dataclass(frozen=True)
class ModalityCalibration:
    """Per-family statistics for one space (``model_id`` is the collection's ``unified`` model id), plus an
    optional offset per (query kind, family) in z units, fitted on validation queries (0 when not fitted)."""

    model_id: str
    families: Mapping[str, FamilyStats]
    offsets: Mapping[str, float] = field(default_factory=dict)
    source: str = ""
    # The family's own vectors (or a sample of them): when given, a query's scores are standardised robustly
    # against them (median and MAD of the query's cosines with every one), which :meth:`z` prefers.
    samples: Mapping[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, model_id: str, vectors: Mapping[str, np.ndarray], rank: int = RANK, source: str = ""
    ) -> ModalityCalibration:
        """Statistics for every family with at least two vectors."""
        fams = {f: FamilyStats.fit(v, rank) for f, v in vectors.items() if len(v) >= 2}
        return cls(model_id, fams, {}, source)

    def with_offsets(self, offsets: Mapping[str, float]) -> ModalityCalibration:
        """The same statistics with per (query kind, family) offsets, keys like ``"speech>image"``."""
        return ModalityCalibration(self.model_id, self.families, dict(offsets), self.source, self.samples)

    def z(self, kind: str, family: str, q: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Cosines of ``q`` with items of ``family`` → z-scores (+ the fitted offset for ``kind``)."""
        s = np.asarray(scores, dtype=np.float64)
        offset = float(self.offsets.get(f"{kind}>{family}", 0.0))
        sample = self.samples.get(family)
        if sample is not None and len(sample) >= 2:
            centre, spread = robust_centre_and_spread(sample @ np.asarray(q, dtype=np.float32))
            return (s - centre) / spread + offset
        stats = self.families.get(family)
        if stats is None:
            return s
        centre, spread = stats.centre_and_spread(q)
        return (s - centre) / spread + offset

    # -- storage (one small .npz; the arrays and a JSON header) --------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the calibration as ``.npz`` (float16 bases, ~40 kB per family at rank 48)."""
        arrays: dict[str, np.ndarray] = {}
        header = {"model_id": self.model_id, "offsets": dict(self.offsets), "source": self.source, "families": {}}
        for f, st in self.families.items():
            arrays[f"{f}.mean"] = st.mean.astype(np.float32)
            arrays[f"{f}.basis"] = st.basis.astype(np.float16)
            arrays[f"{f}.variances"] = st.variances.astype(np.float32)
            header["families"][f] = {"residual": st.residual, "count": st.count}  # type: ignore[index]
        arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> ModalityCalibration:
        """Inverse of :meth:`save`; a broken file raises ConfigError naming it."""
        try:
            with np.load(path) as z:
                header = json.loads(bytes(z["header"]).decode())
                fams = {
                    f: FamilyStats(
                        z[f"{f}.mean"].astype(np.float32),
                        z[f"{f}.basis"].astype(np.float32),
                        z[f"{f}.variances"].astype(np.float32),
                        float(meta["residual"]),
                        int(meta["count"]),
                    )
                    for f, meta in header["families"].items()
                }
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(
                f"modality calibration {path} is unreadable ({e}); rebuild it (lab/evaluation/gap.py --fit)"
            ) from e
        return cls(str(header["model_id"]), fams, dict(header.get("offsets") or {}), str(header.get("source", "")))


def calibration_file(model_id: str, folder: Path = DATA_DIR) -> Path:
    """Where the shipped calibration for a space lives: named by a digest of its ``unified`` model id, so a
    changed model (another head, other bridge settings) finds none and ranks by cosine as before."""
    return folder / f"modality-calibration-{hashlib.sha256(model_id.encode()).hexdigest()[:12]}.npz"


@functools.lru_cache(maxsize=8)
def shipped_calibration(model_id: str) -> ModalityCalibration | None:
    """The calibration that ships for this ``unified`` model id, or None."""
    path = calibration_file(model_id)
    if not path.is_file():
        return None
    cal = ModalityCalibration.load(path)
    return cal if cal.model_id == model_id else None


def families_present(counts: Mapping[str, int]) -> list[str]:
    """Families with points, from per-modality counts (``Index.stats()['per_modality']``)."""
    return [f for f, mods in FAMILIES.items() if any(counts.get(m, 0) for m in mods)]


def family_filter_values(family: str) -> list[str]:
    """The segment modalities of a family, for a payload filter."""
    return list(FAMILIES[family])


def query_kind(part: str, speech: bool) -> str:
    """The calibration's query kind of a query part: ``text``, ``image``, ``speech`` or ``audio``."""
    return "speech" if part == "audio" and speech else part


def group_by_family(segments: Sequence[str]) -> dict[str, list[int]]:
    """Indices of segment modalities per family (a helper for measurements)."""
    out: dict[str, list[int]] = {}
    for i, m in enumerate(segments):
        out.setdefault(FAMILY_OF[m], []).append(i)
    return out


_COLLECTION_CACHE: dict[tuple[int, str, int], ModalityCalibration] = {}


def collection_calibration(index: Any, model_id: str, max_per_family: int = MAX_PER_FAMILY) -> ModalityCalibration:
    """Per-family statistics of the collection being searched (``index``: an :class:`~index.store.Index`).

    Like BM25's IDF, they come from the collection's own (unlabelled) vectors, so they describe the families a
    query is actually ranked against. Statistics fitted on another collection (a validation set of photos and
    animal sounds) did not transfer: on the dev collection (charts, desktop wallpapers, test tones) they ranked
    its images and sounds below everything else (docs/eval/devset-offline-issue21-validation-stats.json). Cached
    per open index and point count, so an ingest refits on the next search; a family with a single point keeps
    its raw cosine.
    """
    from loupe.index.engines import FieldFilter

    key = (id(index), model_id, int(index.count()))
    cal = _COLLECTION_CACHE.get(key)
    if cal is None:
        vectors: dict[str, np.ndarray] = {}
        for fam, mods in FAMILIES.items():
            rows = []
            for _, v in index.iter_vectors("unified", FieldFilter(must={"modality": list(mods)})):
                rows.append(v)
                if len(rows) >= max_per_family:
                    break
            if len(rows) >= 2:
                vectors[fam] = np.stack(rows)
        fitted = ModalityCalibration.fit(model_id, vectors, source=f"collection {index.cfg.collection!r}")
        samples = {f: v.astype(np.float32) for f, v in vectors.items()}
        cal = ModalityCalibration(model_id, fitted.families, {}, fitted.source, samples)
        if len(_COLLECTION_CACHE) > 32:
            _COLLECTION_CACHE.clear()
        _COLLECTION_CACHE[key] = cal
    return cal
