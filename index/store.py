"""``Index``: one front class over the Qdrant collection, embedded or server (design.md §4).

>>> idx = Index.open(IndexConfig(data_dir=Path("/tmp/loupe")), profile.info)  # doctest: +SKIP
>>> idx.upsert(segments, vectors)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from loupe.embedder.profiles import ProfileInfo
from loupe.errors import ProfileMismatchError, StoreError, UnknownNameError
from loupe.index.engines import (
    BM25,
    PIECES,
    UNIFIED,
    ClientEngine,
    EdgeEngine,
    Engine,
    FieldFilter,
    Found,
    PointData,
    Sparse,
    VectorQuery,
)
from loupe.index.points import payload_segment, point_id, segment_payload
from loupe.index.tenants import TenantEngine
from loupe.types import Segment

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class IndexConfig:
    """Where the collection lives. ``qdrant_url`` set → server mode; else embedded under ``data_dir``."""

    data_dir: Path
    collection: str = "default"
    engine: Literal["edge", "local", "memory"] = "edge"
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    tenant: str = "default"
    # Server mode only, applied when Loupe creates the collection (None: the server's defaults).
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None

    def describe(self) -> str:
        """Where, in words, for messages."""
        if self.qdrant_url:
            return f"Qdrant server {self.qdrant_url}"
        return f"{self.engine} index in {self.data_dir}"


class Bm25Encoder:
    """BM25 term weights via Qdrant's own BM25 model (the Edge binding ships it), so sparse vectors built here
    match what a Qdrant server's built-in BM25 would produce; IDF is applied by the collection (Modifier.IDF).
    """

    def __init__(self) -> None:
        import qdrant_edge as qe

        self._bm25 = qe.Bm25()

    def document(self, text: str) -> Sparse:
        """Term-frequency weights of a stored text."""
        v = self._bm25.embed_document(text)
        return Sparse(list(v.indices), list(v.values))

    def query(self, text: str) -> Sparse:
        """Unit weights for each distinct query term."""
        v = self._bm25.embed_query(text)
        return Sparse(list(v.indices), list(v.values))


class PieceEncoder(Protocol):
    """Sparse word-piece weights of a stored text (embedder.pieces.WordPieces)."""

    def document(self, text: str) -> tuple[list[int], list[float]]:
        """Piece ids and weights."""
        ...


def _collections_root(data_dir: Path) -> Path:
    return data_dir / "collections"


def _make_engine(cfg: IndexConfig) -> Engine:
    if cfg.qdrant_url:
        from qdrant_client import QdrantClient

        client = QdrantClient(url=cfg.qdrant_url, api_key=cfg.qdrant_api_key, timeout=30)
        layout = {
            "shard_number": cfg.shard_number,
            "replication_factor": cfg.replication_factor,
            "write_consistency_factor": cfg.write_consistency_factor,
        }
        return ClientEngine(client, cfg.collection, cfg.qdrant_url, layout={k: v for k, v in layout.items() if v})
    if cfg.engine == "edge":
        return EdgeEngine(_collections_root(cfg.data_dir) / cfg.collection)
    if cfg.engine in ("local", "memory"):
        from qdrant_client import QdrantClient

        if cfg.engine == "memory":
            return ClientEngine(QdrantClient(location=":memory:"), cfg.collection, ":memory:")
        folder = cfg.data_dir / "qdrant-local"
        return ClientEngine(QdrantClient(path=str(folder)), cfg.collection, str(folder))
    raise UnknownNameError(f"unknown index engine {cfg.engine!r}; valid: edge, local, memory")


@dataclass(frozen=True)
class SourceState:
    """What the index holds for one source file."""

    uri: str
    sha256: str
    points: int
    expected: int

    @property
    def complete(self) -> bool:
        """All segments of this version are stored (an interrupted ingest leaves it incomplete)."""
        return self.points >= self.expected > 0


class Index:
    """The one Qdrant collection of a knowledge base: every modality, named vectors, BM25, payload indexes."""

    def __init__(
        self, cfg: IndexConfig, engine: Engine, profile: ProfileInfo, pieces: PieceEncoder | None = None
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.profile = profile
        self.bm25 = Bm25Encoder()
        # Word-piece weights of stored text, for spoken queries (embedder/pieces.py); None: no pieces stage.
        self.pieces = pieces

    # -- opening ---------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        cfg: IndexConfig,
        profile: ProfileInfo,
        *,
        create: bool = True,
        pieces: PieceEncoder | None = None,
        tenant_scoped: bool = False,
    ) -> Index:
        """Open (or create) the collection and check it was built with ``profile``.

        ``pieces`` gives stored text a sparse word-piece vector (the profile's, embedder/pieces.py); a collection
        created before that vector existed gets none and its spoken queries stay dense.
        ``tenant_scoped`` restricts every read to points of ``cfg.tenant`` and stamps it on every write
        (index/tenants.py); the API opens each tenant's collections this way.
        Raises ProfileMismatchError when the stored profile name, a model id or a dimension differs.
        """
        engine = _make_engine(cfg)
        try:
            meta = engine.metadata()
            if meta is None or "profile" not in meta:
                if meta is not None and meta == {}:
                    raise StoreError(
                        f"collection {cfg.collection!r} in {cfg.describe()} was not created by Loupe (no metadata); "
                        "use another collection name"
                    )
                if not create:
                    raise StoreError(
                        f"collection {cfg.collection!r} does not exist in {cfg.describe()}; "
                        "ingest something into it first (loupe ingest PATH --collection NAME)"
                    )
                engine.create(
                    dict(profile.dims),
                    {
                        "loupe_schema": SCHEMA_VERSION,
                        "collection": cfg.collection,
                        "profile": profile.to_json(),
                        "sparse": [BM25, PIECES],
                        "created_at": time.time(),
                    },
                )
                has_pieces = True
            else:
                _check_profile(cfg.collection, ProfileInfo.from_json(meta["profile"]), profile)
                has_pieces = PIECES in meta.get("sparse", [])
            engine.attach()
        except Exception:
            engine.close()
            raise
        if tenant_scoped:
            engine = TenantEngine(engine, cfg.tenant)
        return cls(cfg, engine, profile, pieces if has_pieces else None)

    @staticmethod
    def stored_profile(cfg: IndexConfig) -> ProfileInfo | None:
        """The profile a collection was built with, without opening it for writes (None if it does not exist)."""
        engine = _make_engine(cfg)
        try:
            meta = engine.metadata()
        finally:
            engine.close()
        if not meta or "profile" not in meta:
            return None
        return ProfileInfo.from_json(meta["profile"])

    @staticmethod
    def list_collections(cfg: IndexConfig) -> list[str]:
        """Names of the Loupe collections at this location."""
        if cfg.qdrant_url or cfg.engine != "edge":
            engine = _make_engine(cfg)
            try:
                assert isinstance(engine, ClientEngine)
                names = [c.name for c in engine.client.get_collections().collections]
            finally:
                engine.close()
            return sorted(names)
        root = _collections_root(cfg.data_dir)
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "collection.json").exists())

    def close(self) -> None:
        """Flush and release the collection."""
        self.engine.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------------------
    def upsert(
        self, segments: Sequence[Segment], vectors: Sequence[Mapping[str, np.ndarray] | None], source_segments: int
    ) -> int:
        """Store segments with their vectors; segments without a vector (nothing to embed) are not stored.
        Returns how many points were written.

        Every point carries the profile name and model ids (mixing spaces is refused at open). Text gets BM25
        and, with a piece encoder, word-piece weights; a speech clip's piece weights come with its vectors under
        ``pieces`` as a ``(2, n)`` array of ids over weights (embedder.pieces.as_array).
        """
        if len(segments) != len(vectors):
            raise ValueError("segments and vectors differ in length")
        points = []
        for seg, given in zip(segments, vectors, strict=True):
            if given is None:
                continue
            vecs = {k: v for k, v in given.items() if k != PIECES}
            for name, v in vecs.items():
                if name not in self.profile.dims or v.shape != (self.profile.dims[name],):
                    raise StoreError(
                        f"vector {name!r} of shape {v.shape} does not fit collection {self.cfg.collection!r} "
                        f"(profile {self.profile.describe()})"
                    )
            payload = segment_payload(
                seg,
                collection=self.cfg.collection,
                tenant=self.cfg.tenant,
                profile=self.profile.name,
                model_ids=self.profile.model_ids,
                source_segments=source_segments,
            )
            text = seg.text if seg.text and seg.text.strip() else None
            sparse = self.bm25.document(text) if text else None
            pieces = None
            if self.pieces is not None and PIECES in given:  # a speech clip's heard pieces (embedder/pieces.py)
                arr = given[PIECES]
                pieces = Sparse([int(i) for i in arr[0]], [float(v) for v in arr[1]])
            elif self.pieces is not None and text:
                pieces = Sparse(*self.pieces.document(text))
            points.append(PointData(point_id(seg.id), vecs, sparse, payload, pieces))
        self.engine.upsert(points)
        return len(points)

    def delete_source(self, uri: str, *, keep_sha256: str | None = None) -> int:
        """Delete a source's points (all versions, or all but ``keep_sha256``). Returns how many were deleted."""
        flt = FieldFilter(must={"source.uri": uri}, must_not={"source.sha256": keep_sha256} if keep_sha256 else {})
        n = self.engine.count(flt)
        if n:
            self.engine.delete(flt)
        return n

    # -- reading ---------------------------------------------------------------------------------------------
    def source_states(self, uri: str) -> list[SourceState]:
        """Versions of a source in the index with their point counts (more than one only mid-replace)."""
        counts: Counter[str] = Counter()
        expected: dict[str, int] = {}
        for f in self.engine.scroll(FieldFilter(must={"source.uri": uri}), ["source"]):
            src = f.payload["source"]
            counts[src["sha256"]] += 1
            expected[src["sha256"]] = int(src.get("segments", 0))
        return [SourceState(uri, sha, n, expected[sha]) for sha, n in counts.items()]

    def sources(self, under: str | None = None) -> dict[str, int]:
        """Every source uri in the collection (optionally only those under a folder) with its point count."""
        counts: Counter[str] = Counter()
        for f in self.engine.scroll(None, ["source.uri"]):
            uri = f.payload["source"]["uri"]
            if under is None or uri == under or uri.startswith(under.rstrip("/") + "/"):
                counts[uri] += 1
        return dict(counts)

    def count(self, flt: FieldFilter | None = None) -> int:
        """Points matching a filter (all when None)."""
        return self.engine.count(flt)

    def stats(self) -> dict[str, Any]:
        """Counts per modality, number of sources, the profile and where the collection lives."""
        per_modality: Counter[str] = Counter()
        sources: set[str] = set()
        for f in self.engine.scroll(None, ["modality", "source.uri"]):
            per_modality[f.payload["modality"]] += 1
            sources.add(f.payload["source"]["uri"])
        return {
            "collection": self.cfg.collection,
            "location": self.cfg.describe(),
            "points": sum(per_modality.values()),
            "sources": len(sources),
            "per_modality": dict(sorted(per_modality.items())),
            "profile": self.profile.to_json(),
        }

    def search(
        self,
        dense: Sequence[tuple[str, np.ndarray, float]],
        text: str | None,
        *,
        flt: FieldFilter | None = None,
        limit: int = 10,
        prefetch_limit: int = 100,
        bm25_weight: float = 1.0,
        pieces: Sparse | None = None,
        pieces_weight: float = 1.0,
    ) -> list[tuple[Segment, float]]:
        """Hybrid search: each dense stage ``(named vector, query vector, weight)``, BM25 over ``text`` and the
        word-piece vector ``pieces`` (a spoken query's, embedder/pieces.py) are one stage each, fused with weighted
        RRF inside Qdrant. A single stage is a plain k-NN search. ``pieces`` is ignored where the collection has
        no piece vectors.
        """
        stages = [VectorQuery(name, np.asarray(v, dtype=np.float32), prefetch_limit, w) for name, v, w in dense]
        if text and text.strip():
            sp = self.bm25.query(text)
            if sp.indices:
                stages.append(VectorQuery(BM25, sp, prefetch_limit, bm25_weight))
        if pieces is not None and pieces.indices and self.pieces is not None:
            stages.append(VectorQuery(PIECES, pieces, prefetch_limit, pieces_weight))
        if not stages:
            return []
        found = deterministic_order(self.engine.query(stages, flt, limit + TIE_MARGIN), limit)
        return [(payload_segment(f.payload), f.score) for f in found]

    def iter_points(self, flt: FieldFilter | None = None) -> Iterator[Found]:
        """Every stored point matching a filter (payloads included)."""
        return self.engine.scroll(flt, None)

    def iter_vectors(self, name: str = UNIFIED, flt: FieldFilter | None = None) -> Iterator[tuple[Segment, np.ndarray]]:
        """Every stored point matching a filter that has the named vector ``name``, with that vector (for the
        modality-gap measurements and calibration fits, lab/evaluation/gap.py)."""
        for f in self.engine.scroll(flt, None, vector=name):
            if f.vector is not None and f.vector.size:
                yield payload_segment(f.payload), f.vector

    def drop(self) -> None:
        """Delete the whole collection."""
        self.engine.drop()


# RRF scores tie often (two points ranked 1st and 2nd by two equally weighted stages), and the engine returns tied
# points in an order that changes from process to process: the same query gave R@5 0.781 and 0.789 on the spoken
# dev set in two runs. A few more points than asked are fetched, sorted by score then id, and cut.
TIE_MARGIN = 16


def deterministic_order(found: Sequence[Found], limit: int) -> list[Found]:
    """The best ``limit`` points by score, ties broken by point id, so a query always ranks the same."""
    return sorted(found, key=lambda f: (-round(f.score, 9), f.id))[:limit]


def _check_profile(collection: str, stored: ProfileInfo, requested: ProfileInfo) -> None:
    if stored.name != requested.name:
        raise ProfileMismatchError(collection, stored.describe(), requested.describe())
    for key in sorted(set(stored.dims) | set(requested.dims)):
        if stored.dims.get(key) != requested.dims.get(key):
            raise ProfileMismatchError(
                collection,
                stored.describe(),
                requested.describe(),
                f"vector {key!r}: dimension {stored.dims.get(key)} vs {requested.dims.get(key)}",
            )
    for key in sorted(set(stored.model_ids) | set(requested.model_ids)):
        if stored.model_ids.get(key) != requested.model_ids.get(key):
            raise ProfileMismatchError(
                collection,
                stored.describe(),
                requested.describe(),
                f"vector {key!r}: model {stored.model_ids.get(key)} vs {requested.model_ids.get(key)}",
            )
