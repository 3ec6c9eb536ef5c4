"""Retrieval: query → hits. Dense ``unified`` + sparse BM25, fused with RRF in Qdrant, then grouped.

Grouping keeps the best segment per (source, page or time) and at most ``per_source`` hits per source, so
one long PDF does not fill the page and the ranking is over distinct places (as ``loupe eval`` scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from app.types import Hit, PageLoc, Segment, TimeLoc
from embedder.profiles import EmbeddingProfile, Query
from index.engines import FieldFilter
from index.store import Index


@dataclass(frozen=True)
class Filters:
    """What a user can restrict a search to."""

    modalities: Sequence[str] = field(default_factory=tuple)
    sources: Sequence[str] = field(default_factory=tuple)
    page_range: tuple[int, int] | None = None
    # Seconds within audio/video sources: segments starting in [start, end].
    time_range: tuple[float, float] | None = None
    # Source file modification time (Unix seconds), e.g. "documents changed since …".
    modified_range: tuple[float | None, float | None] | None = None

    def to_field_filter(self) -> FieldFilter | None:
        """The engine-neutral filter (None when nothing is restricted)."""
        must: dict[str, object] = {}
        ranges: dict[str, tuple[float | None, float | None]] = {}
        if self.modalities:
            must["modality"] = list(self.modalities)
        if self.sources:
            must["source.uri"] = list(self.sources)
        if self.page_range:
            ranges["locator.page"] = (float(self.page_range[0]), float(self.page_range[1]))
        if self.time_range:
            ranges["locator.start_s"] = (float(self.time_range[0]), float(self.time_range[1]))
        if self.modified_range:
            ranges["source.mtime"] = self.modified_range
        flt = FieldFilter(must=must, ranges=ranges)
        return None if flt.is_empty() else flt


def _place(seg: Segment) -> tuple[str, object]:
    loc = seg.locator
    if isinstance(loc, PageLoc):
        return (seg.source.uri, loc.page)
    if isinstance(loc, TimeLoc):
        return (seg.source.uri, (round(loc.start_s, 1), round(loc.end_s, 1)))
    return (seg.source.uri, None)


def group_hits(found: Sequence[tuple[Segment, float]], k: int, per_source: int) -> list[Hit]:
    """Best segment per place, at most ``per_source`` places per source, ranks 1..k.

    While a changed file is being replaced, both versions are briefly in the index; only the newest version
    (by file mtime) of each source is kept, so a result list never mixes two versions of one file.
    """
    newest: dict[str, tuple[float, str]] = {}
    for seg, _ in found:
        cand = (seg.source.mtime, seg.source.sha256)
        if cand > newest.get(seg.source.uri, (float("-inf"), "")):
            newest[seg.source.uri] = cand
    seen_places: set[tuple[str, object]] = set()
    per: dict[str, int] = {}
    out: list[Hit] = []
    for seg, score in found:
        if newest[seg.source.uri][1] != seg.source.sha256:
            continue
        place = _place(seg)
        if place in seen_places:
            continue
        if per.get(seg.source.uri, 0) >= per_source:
            continue
        seen_places.add(place)
        per[seg.source.uri] = per.get(seg.source.uri, 0) + 1
        out.append(Hit(seg, score, rank=len(out) + 1))
        if len(out) >= k:
            break
    return out


def search(
    index: Index,
    profile: EmbeddingProfile,
    query: Query,
    *,
    k: int = 10,
    filters: Filters | None = None,
    per_source: int = 3,
    hybrid: bool = True,
) -> list[Hit]:
    """Embed each query part into ``unified``, add BM25 over the query text, fuse with RRF, group.

    >>> hits = search(index, profile, Query(text="quarterly revenue"), k=5)  # doctest: +SKIP
    """
    vectors = profile.embed_query(query)
    w = query.weights
    dense = [(qv.using, qv.vector, w.get(qv.part, 1.0)) for qv in vectors]
    flt = filters.to_field_filter() if filters else None
    # Ask for more than k: grouping removes repeated places and sources.
    limit = max(k * 5, 50)
    found = index.search(
        dense,
        query.text if hybrid else None,
        flt=flt,
        limit=limit,
        prefetch_limit=max(limit, 100),
        bm25_weight=w.get("bm25", 1.0),
    )
    return group_hits(found, k, per_source)
