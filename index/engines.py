"""Two engines behind one small interface: Qdrant Edge (embedded, in-process Rust) and qdrant-client.

:class:`~index.store.Index` talks to an engine through plain Python values (:class:`FieldFilter`,
:class:`VectorQuery`), so the same Index code runs embedded, against a Qdrant server, and against
qdrant-client's local mode (which tests use to exercise the server code path without a server).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from loupe.errors import StoreError
from loupe.index.points import FLOAT_FIELDS, INTEGER_FIELDS, KEYWORD_FIELDS

BM25 = "bm25"
# e5 word-piece weights: a text's piece counts, a spoken recording's soft-token piece mass (embedder/speech.py);
# the sparse half of a spoken query's hybrid search, as BM25 is a typed query's.
PIECES = "pieces"
UNIFIED = "unified"
# Only ``unified`` stays in RAM: the ``visual``/``audio`` vectors are declared on every point but filled on a
# few (images, frames, clips), and in RAM their empty slots roughly tripled memory (measured in bench query).
# RRF constant from the original paper (Cormack et al. 2009); Qdrant's default too.
RRF_K = 60


@dataclass(frozen=True)
class Sparse:
    """A sparse vector (BM25 term weights)."""

    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class VectorQuery:
    """One retrieval stage: nearest neighbours of ``vector`` in the named vector ``using``."""

    using: str
    vector: np.ndarray | Sparse
    limit: int
    weight: float = 1.0


@dataclass(frozen=True)
class FieldFilter:
    """Engine-neutral filter: exact matches (value or any of a list), exclusions, and numeric ranges."""

    must: Mapping[str, Any] = field(default_factory=dict)
    must_not: Mapping[str, Any] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def merged(self, other: FieldFilter | None) -> FieldFilter:
        """Both filters at once (other's keys win on a clash)."""
        if other is None:
            return self
        return FieldFilter(
            {**self.must, **other.must}, {**self.must_not, **other.must_not}, {**self.ranges, **other.ranges}
        )

    def is_empty(self) -> bool:
        """True when the filter matches everything."""
        return not (self.must or self.must_not or self.ranges)


@dataclass(frozen=True)
class PointData:
    """A point ready to store: id, dense vectors by name, optional sparse BM25 and word-piece vectors, payload."""

    id: str
    vectors: Mapping[str, np.ndarray]
    sparse: Sparse | None
    payload: Mapping[str, Any]
    pieces: Sparse | None = None

    def named(self) -> dict[str, np.ndarray | Sparse]:
        """Every vector of the point by name (empty sparse vectors left out)."""
        out: dict[str, np.ndarray | Sparse] = dict(self.vectors)
        for name, sp in ((BM25, self.sparse), (PIECES, self.pieces)):
            if sp is not None and sp.indices:
                out[name] = sp
        return out


def _named_vector(raw: Any, name: str | None) -> np.ndarray | None:
    """A dense named vector out of a scrolled record's vectors (a mapping by name, or the one vector)."""
    if not name or raw is None:
        return None
    v = raw.get(name) if isinstance(raw, Mapping) else raw
    if v is None or isinstance(v, Mapping):
        return None
    try:
        return np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):  # a sparse vector object: not what ``vector=`` asks for
        return None


@dataclass(frozen=True)
class Found:
    """A point returned by a query or scroll."""

    id: str
    score: float
    payload: Mapping[str, Any]
    # The named vector asked for by ``scroll(..., vector=NAME)`` (None otherwise, or when the point has none).
    vector: np.ndarray | None = None


class Engine(Protocol):
    """What :class:`~index.store.Index` needs from a vector engine."""

    def metadata(self) -> dict[str, Any] | None:
        """The Loupe metadata stored with the collection, or None when it does not exist yet."""
        ...

    def create(self, dims: Mapping[str, int], metadata: dict[str, Any]) -> None:
        """Create the collection with these dense vector sizes, a sparse BM25 vector and payload indexes."""
        ...

    def attach(self) -> None:
        """Open the existing collection for use (takes the embedded lock; fails early and clearly)."""
        ...

    def upsert(self, points: Sequence[PointData]) -> None:
        """Insert or replace points (ids are content-derived, so a replay changes nothing)."""
        ...

    def delete(self, flt: FieldFilter) -> None:
        """Delete every point matching the filter."""
        ...

    def query(self, stages: Sequence[VectorQuery], flt: FieldFilter | None, limit: int) -> list[Found]:
        """Nearest neighbours for one stage, or RRF fusion of several."""
        ...

    def scroll(
        self, flt: FieldFilter | None, fields: Sequence[str] | None, batch: int = 512, vector: str | None = None
    ) -> Iterator[Found]:
        """Every point matching the filter (payload restricted to ``fields`` when given; with the dense named
        vector ``vector`` when given)."""
        ...

    def count(self, flt: FieldFilter | None) -> int:
        """Exact number of points matching the filter."""
        ...

    def drop(self) -> None:
        """Delete the whole collection."""
        ...

    def close(self) -> None:
        """Flush and release files and connections."""
        ...


# ---------------------------------------------------------------------------------------------------------------
# Qdrant Edge: Qdrant's engine in-process. One shard per collection, in a folder of the data dir.
# ---------------------------------------------------------------------------------------------------------------


class EdgeEngine:
    """Embedded engine over ``qdrant_edge.EdgeShard``; metadata lives in ``collection.json`` beside the shard.

    A shard can be open in one process only; a lock file turns a second opener's obscure failure into a clear
    error.
    """

    def __init__(self, folder: Path) -> None:
        import qdrant_edge as qe

        self._qe = qe
        self.folder = folder
        self._shard: Any = None
        self._lock_fd: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def _meta_path(self) -> Path:
        return self.folder / "collection.json"

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise StoreError(
                f"collection folder {self.folder} is open in another Loupe process (an ingest, the UI or the API). "
                "Stop that process, or run a Qdrant server (LOUPE_QDRANT_URL) so several processes can share it."
            ) from e
        self._lock_fd = fd

    def _open(self) -> Any:
        if self._shard is None:
            self._lock()
            try:
                self._shard = self._qe.EdgeShard.load(str(self.folder / "shard"))
            except Exception as e:  # the binding raises plain exceptions; name the folder and the fix
                raise StoreError(f"cannot open the index at {self.folder / 'shard'}: {e}") from e
        return self._shard

    def attach(self) -> None:
        """Load the shard now, so that a second process fails at open rather than mid-operation."""
        self._open()

    def metadata(self) -> dict[str, Any] | None:
        """Read ``collection.json``; None when the collection was never created."""
        if not self._meta_path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(self._meta_path.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"collection metadata {self._meta_path} is unreadable: {e}") from e
        return data

    def create(self, dims: Mapping[str, int], metadata: dict[str, Any]) -> None:
        """Create the shard, its payload indexes and the metadata file (written last: it marks completion)."""
        qe = self._qe
        self._lock()
        shard_dir = self.folder / "shard"
        if shard_dir.exists():  # a create interrupted before the metadata was written
            shutil.rmtree(shard_dir)
        config = qe.EdgeConfig(
            vectors={
                name: qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine, on_disk=name != UNIFIED)
                for name, d in dims.items()
            },
            sparse_vectors={name: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf) for name in (BM25, PIECES)},
            on_disk_payload=True,
        )
        self._shard = qe.EdgeShard.create(str(shard_dir), config)
        schema = (
            [(f, qe.PayloadSchemaType.Keyword) for f in KEYWORD_FIELDS]
            + [(f, qe.PayloadSchemaType.Float) for f in FLOAT_FIELDS]
            + [(f, qe.PayloadSchemaType.Integer) for f in INTEGER_FIELDS]
        )
        for name, kind in schema:
            self._shard.update(qe.UpdateOperation.create_field_index(name, kind))
        self._shard.flush()
        tmp = self._meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(metadata, indent=2))
        tmp.replace(self._meta_path)

    def close(self) -> None:
        """Flush, close the shard and release the lock."""
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def drop(self) -> None:
        """Close and delete the collection folder."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- data ------------------------------------------------------------------------------------------------
    def _filter(self, flt: FieldFilter | None) -> Any:
        if flt is None or flt.is_empty():
            return None
        qe = self._qe

        def match(key: str, value: Any) -> Any:
            if isinstance(value, list | tuple | set | frozenset):
                return qe.FieldCondition(key=key, match=qe.MatchAny(list(value)))
            return qe.FieldCondition(key=key, match=qe.MatchValue(value))

        must = [match(k, v) for k, v in flt.must.items()]
        must += [qe.FieldCondition(key=k, range=qe.RangeFloat(gte=lo, lte=hi)) for k, (lo, hi) in flt.ranges.items()]
        must_not = [match(k, v) for k, v in flt.must_not.items()]
        return qe.Filter(must=must or None, must_not=must_not or None)

    def _vector(self, v: np.ndarray | Sparse) -> Any:
        if isinstance(v, Sparse):
            return self._qe.SparseVector(indices=v.indices, values=v.values)
        return np.asarray(v, dtype=np.float32).tolist()

    def upsert(self, points: Sequence[PointData]) -> None:
        """Upsert a batch of points."""
        if not points:
            return
        qe = self._qe
        shard = self._open()
        built = []
        for p in points:
            vec = {k: self._vector(v) for k, v in p.named().items()}
            built.append(qe.Point(p.id, vec, dict(p.payload)))
        shard.update(qe.UpdateOperation.upsert_points(built))

    def delete(self, flt: FieldFilter) -> None:
        """Delete points matching a (non-empty) filter."""
        if flt.is_empty():
            raise StoreError("refusing to delete with an empty filter (it would delete the whole collection)")
        self._open().update(self._qe.UpdateOperation.delete_points_by_filter(self._filter(flt)))

    def query(self, stages: Sequence[VectorQuery], flt: FieldFilter | None, limit: int) -> list[Found]:
        """Nearest neighbours (one stage) or weighted RRF across stages, all in the engine."""
        qe = self._qe
        shard = self._open()
        f = self._filter(flt)
        if len(stages) == 1:
            st = stages[0]
            req = qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(self._vector(st.vector), using=st.using),
                filter=f,
                with_payload=True,
            )
        else:
            prefetches = [
                qe.Prefetch(limit=st.limit, query=qe.Query.Nearest(self._vector(st.vector), using=st.using), filter=f)
                for st in stages
            ]
            req = qe.QueryRequest(
                limit=limit,
                prefetches=prefetches,
                query=qe.Fusion.Rrf(k=RRF_K, weights=[st.weight for st in stages]),
                with_payload=True,
            )
        return [Found(str(p.id), float(p.score), p.payload or {}) for p in shard.query(req)]

    def scroll(
        self, flt: FieldFilter | None, fields: Sequence[str] | None, batch: int = 512, vector: str | None = None
    ) -> Iterator[Found]:
        """Page through matching points."""
        qe = self._qe
        shard = self._open()
        offset: Any = None
        with_payload: Any = list(fields) if fields else True
        while True:
            req = qe.ScrollRequest(
                offset=offset,
                limit=batch,
                filter=self._filter(flt),
                with_payload=with_payload,
                with_vector=[vector] if vector else False,
            )
            records, offset = shard.scroll(req)
            for r in records:
                yield Found(str(r.id), 0.0, r.payload or {}, _named_vector(r.vector, vector))
            if offset is None:
                return

    def count(self, flt: FieldFilter | None) -> int:
        """Exact count."""
        return int(self._open().count(self._qe.CountRequest(exact=True, filter=self._filter(flt))))

    def flush(self) -> None:
        """Persist pending writes."""
        if self._shard is not None:
            self._shard.flush()


# ---------------------------------------------------------------------------------------------------------------
# qdrant-client: a Qdrant server by URL, or the client's pure-Python local mode (":memory:" or a folder).
# ---------------------------------------------------------------------------------------------------------------


class ClientEngine:
    """Engine over ``qdrant_client.QdrantClient``; Loupe metadata is the collection's own metadata."""

    def __init__(self, client: Any, collection: str, where: str, *, layout: Mapping[str, int] | None = None) -> None:
        from qdrant_client import models

        self._m = models
        self.client = client
        self.collection = collection
        self.where = where  # for messages: the URL or folder
        # shard_number / replication_factor / write_consistency_factor for a new collection on a cluster.
        self.layout = dict(layout or {})

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StoreError:
            raise
        except Exception as e:  # network errors, HTTP errors, schema errors: one clear message
            raise StoreError(
                f"Qdrant at {self.where} failed to {what} in collection {self.collection!r}: {e}. "
                "Check that the server is running and LOUPE_QDRANT_URL / LOUPE_QDRANT_API_KEY are right."
            ) from e

    def attach(self) -> None:
        """Nothing to hold: the server serves many clients."""

    def metadata(self) -> dict[str, Any] | None:
        """The collection's metadata, or None when it does not exist."""
        if not self._call("check for", self.client.collection_exists, self.collection):
            return None
        info = self._call("read", self.client.get_collection, self.collection)
        meta = info.config.metadata or {}
        return dict(meta) if meta else {}

    def create(self, dims: Mapping[str, int], metadata: dict[str, Any]) -> None:
        """Create the collection with named dense vectors, sparse BM25 (IDF) and payload indexes."""
        m = self._m
        self._call(
            "create",
            self.client.create_collection,
            self.collection,
            vectors_config={
                name: m.VectorParams(size=d, distance=m.Distance.COSINE, on_disk=name != UNIFIED)
                for name, d in dims.items()
            },
            sparse_vectors_config={name: m.SparseVectorParams(modifier=m.Modifier.IDF) for name in (BM25, PIECES)},
            on_disk_payload=True,
            metadata=metadata,
            **self.layout,
        )
        # Tenants are payload partitions of one collection (Qdrant's multitenancy guidance for many small
        # tenants): is_tenant makes the server keep each tenant's points together for tenant-filtered reads.
        tenant_index = m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, is_tenant=True)
        schema: list[tuple[str, Any]] = (
            [(f, tenant_index if f == "tenant" else m.PayloadSchemaType.KEYWORD) for f in KEYWORD_FIELDS]
            + [(f, m.PayloadSchemaType.FLOAT) for f in FLOAT_FIELDS]
            + [(f, m.PayloadSchemaType.INTEGER) for f in INTEGER_FIELDS]
        )
        with warnings.catch_warnings():
            # Local mode warns that payload indexes have no effect there; a server uses them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for name, kind in schema:
                self._call("index", self.client.create_payload_index, self.collection, name, field_schema=kind)

    def _filter(self, flt: FieldFilter | None) -> Any:
        if flt is None or flt.is_empty():
            return None
        m = self._m

        def match(key: str, value: Any) -> Any:
            if isinstance(value, list | tuple | set | frozenset):
                return m.FieldCondition(key=key, match=m.MatchAny(any=list(value)))
            return m.FieldCondition(key=key, match=m.MatchValue(value=value))

        must = [match(k, v) for k, v in flt.must.items()]
        must += [m.FieldCondition(key=k, range=m.Range(gte=lo, lte=hi)) for k, (lo, hi) in flt.ranges.items()]
        must_not = [match(k, v) for k, v in flt.must_not.items()]
        return m.Filter(must=must or None, must_not=must_not or None)

    def _vector(self, v: np.ndarray | Sparse) -> Any:
        if isinstance(v, Sparse):
            return self._m.SparseVector(indices=v.indices, values=v.values)
        return np.asarray(v, dtype=np.float32).tolist()

    def upsert(self, points: Sequence[PointData]) -> None:
        """Upsert and wait, so that a following count sees the points."""
        if not points:
            return
        built = []
        for p in points:
            vec = {k: self._vector(v) for k, v in p.named().items()}
            built.append(self._m.PointStruct(id=p.id, vector=vec, payload=dict(p.payload)))
        self._call("upsert", self.client.upsert, self.collection, points=built, wait=True)

    def delete(self, flt: FieldFilter) -> None:
        """Delete points matching a (non-empty) filter."""
        if flt.is_empty():
            raise StoreError("refusing to delete with an empty filter (it would delete the whole collection)")
        selector = self._m.FilterSelector(filter=self._filter(flt))
        self._call("delete", self.client.delete, self.collection, points_selector=selector, wait=True)

    def query(self, stages: Sequence[VectorQuery], flt: FieldFilter | None, limit: int) -> list[Found]:
        """Nearest neighbours or weighted RRF through the query API."""
        m = self._m
        f = self._filter(flt)
        if len(stages) == 1:
            st = stages[0]
            res = self._call(
                "query",
                self.client.query_points,
                self.collection,
                query=self._vector(st.vector),
                using=st.using,
                query_filter=f,
                limit=limit,
                with_payload=True,
            )
        else:
            prefetch = [
                m.Prefetch(query=self._vector(st.vector), using=st.using, limit=st.limit, filter=f) for st in stages
            ]
            res = self._call(
                "query",
                self.client.query_points,
                self.collection,
                prefetch=prefetch,
                query=m.RrfQuery(rrf=m.Rrf(k=RRF_K, weights=[st.weight for st in stages])),
                limit=limit,
                with_payload=True,
            )
        return [Found(str(p.id), float(p.score), p.payload or {}) for p in res.points]

    def scroll(
        self, flt: FieldFilter | None, fields: Sequence[str] | None, batch: int = 512, vector: str | None = None
    ) -> Iterator[Found]:
        """Page through matching points."""
        offset: Any = None
        with_payload: Any = list(fields) if fields else True
        while True:
            records, offset = self._call(
                "scroll",
                self.client.scroll,
                self.collection,
                scroll_filter=self._filter(flt),
                limit=batch,
                offset=offset,
                with_payload=with_payload,
                with_vectors=[vector] if vector else False,
            )
            for r in records:
                yield Found(str(r.id), 0.0, r.payload or {}, _named_vector(r.vector, vector))
            if offset is None:
                return

    def count(self, flt: FieldFilter | None) -> int:
        """Exact count."""
        return int(
            self._call("count", self.client.count, self.collection, count_filter=self._filter(flt), exact=True).count
        )

    def drop(self) -> None:
        """Delete the collection."""
        self._call("delete", self.client.delete_collection, self.collection)

    def flush(self) -> None:
        """Nothing to do: writes wait for the server."""

    def close(self) -> None:
        """Close the client connection."""
        self.client.close()
