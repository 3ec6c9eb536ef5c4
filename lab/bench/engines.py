"""Side-by-side benchmark of the two embedded vector engines Loupe can use.

Why one file of ~700 lines: it is one self-contained harness (generators, exact search, both engines' loops,
the report), run on its own with ``python -m loupe.lab.bench.engines``; split, each part would need the others.

Engines:

* ``edge``: qdrant-edge-py (Qdrant's Rust engine, in-process). Measured on the plain (appendable) segments right
  after upsert, then again after :meth:`EdgeShard.optimize` has built the HNSW graph.
* ``local``: ``qdrant_client.QdrantClient(path=...)`` local mode (pure-Python brute force, persisted in SQLite).

Both get the same synthetic data: seeded random unit-norm float32 vectors in a named dense vector ``unified``
(cosine), a sparse ``bm25`` slot (declared, left empty), a keyword payload index on ``modality`` and payloads
shaped like Loupe's (``modality``, ``source.uri``, ``source.sha256``, ``locator.page``, ``text`` of about 300
characters). ``modality`` is ``"page"`` for about 10% of points; filtered queries ask for ``modality == "page"``.

Per engine and collection size the result holds upsert throughput, top-10 query latency p50/p95 (unfiltered and
filtered), recall@10 against exact numpy brute force on the same queries, reopen time and on-disk size; for edge
also the optimize (HNSW build) time and an ``hnsw_ef`` sweep.

``data_kind="uniform"`` (default) draws i.i.d. random directions for points and queries: the worst case for HNSW
(in 384-d a random query's top-10 cosines are about 0.16–0.19 against a spread of about 0.05, so neighbours are
nearly equidistant) and a lower bound on recall. ``data_kind="clustered"`` puts points around random centres
and makes queries noisy copies of points, closer to the topical structure of real embeddings.

Run ``python -m loupe.lab.bench.engines --sizes 10000 100000 --out /tmp/bench/engines.json``. Library functions do no
printing; progress goes through the optional ``on_result`` callback and everything is in the returned dict.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VECTOR_NAME = "unified"
SPARSE_NAME = "bm25"
FILTER_FIELD = "modality"
FILTER_VALUE = "page"
COLLECTION = "bench"
TOP_K = 10
WARMUP_QUERIES = 3
MODALITIES: tuple[str, ...] = ("page", "text", "image", "frame", "audio", "video", "table", "slide")
#: ``page`` gets 10%, the other seven share the rest, so the filter keeps about a tenth of the points.
MODALITY_WEIGHTS: tuple[float, ...] = (0.10,) + (0.90 / 7,) * 7
PAGES_PER_FILE = 20
TEXT_CHARS = 300
_WORDS_TEXT = (
    "archive page figure table chart section report annual revenue growth margin quarter audio video frame "
    "speaker meeting summary result method data model vector search index query answer source document image "
    "caption diagram slide scene camera street river mountain contract clause party term payment invoice total "
    "engine shard segment payload filter recall latency throughput memory disk cache thread core batch"
)
_WORDS: tuple[str, ...] = tuple(_WORDS_TEXT.split(" "))

Result = dict[str, Any]


@dataclass(frozen=True)
class SyntheticData:
    """One synthetic collection: vectors, point ids, payloads and the filter mask."""

    vectors: np.ndarray
    """(n, dim) float32, each row of unit norm."""
    ids: list[str]
    """UUID strings; point ``i`` has ``uuid.UUID(int=i)``."""
    payloads: list[dict[str, Any]]
    """Payloads shaped like Loupe's."""
    filter_mask: np.ndarray
    """(n,) bool, True where ``modality == FILTER_VALUE``."""


def random_unit_vectors(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``n`` random float32 vectors of ``dim`` components, each normalised to unit length."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_payload(i: int, modality: str, rng: np.random.Generator) -> dict[str, Any]:
    """Build the payload of point ``i``: modality, source (uri + sha256), locator (page) and ~300 chars of text."""
    file_no = i // PAGES_PER_FILE
    uri = f"/data/file_{file_no}.pdf"
    words = rng.choice(len(_WORDS), size=TEXT_CHARS // 5)
    text = " ".join(_WORDS[w] for w in words)[:TEXT_CHARS]
    return {
        "modality": modality,
        "source": {"uri": uri, "sha256": hashlib.sha256(uri.encode()).hexdigest()},
        "locator": {"page": i % PAGES_PER_FILE + 1},
        "text": text,
    }


DATA_KINDS: tuple[str, ...] = ("uniform", "clustered")
#: Clustered data: one centre per this many points; member and query noise norms (relative to a unit centre).
CLUSTER_SIZE = 200
CLUSTER_NOISE = 0.6
QUERY_NOISE = 0.5


def _add_noise(base: np.ndarray, norm: float, rng: np.random.Generator) -> np.ndarray:
    """Add isotropic Gaussian noise of expected norm ``norm`` to each row of ``base`` and renormalise."""
    dim = base.shape[1]
    x = base + rng.standard_normal(base.shape, dtype=np.float32) * np.float32(norm / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32, copy=False)


def make_vectors(n: int, dim: int, rng: np.random.Generator, kind: str = "uniform") -> np.ndarray:
    """Unit vectors for the collection.

    ``uniform``: i.i.d. random directions, the worst case for HNSW (all neighbours nearly equidistant).
    ``clustered``: ``n / CLUSTER_SIZE`` random centres, each point a centre plus noise, a crude stand-in for the
    topical structure of real embeddings.
    """
    if kind == "uniform":
        return random_unit_vectors(n, dim, rng)
    if kind == "clustered":
        centres = random_unit_vectors(max(1, n // CLUSTER_SIZE), dim, rng)
        return _add_noise(centres[rng.integers(0, len(centres), size=n)], CLUSTER_NOISE, rng)
    raise ValueError(f"unknown data kind {kind!r}; use one of {DATA_KINDS}")


def make_queries(vectors: np.ndarray, n_queries: int, seed: int, kind: str = "uniform") -> np.ndarray:
    """Query vectors: random unit vectors (``uniform``) or noisy copies of random points (``clustered``)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return random_unit_vectors(n_queries, vectors.shape[1], rng)
    if kind == "clustered":
        return _add_noise(vectors[rng.integers(0, len(vectors), size=n_queries)], QUERY_NOISE, rng)
    raise ValueError(f"unknown data kind {kind!r}; use one of {DATA_KINDS}")


def make_data(n: int, dim: int, seed: int, kind: str = "uniform") -> SyntheticData:
    """Generate ``n`` points of dimension ``dim`` deterministically from ``seed`` (``kind``: see make_vectors)."""
    rng = np.random.default_rng(seed)
    vectors = make_vectors(n, dim, rng, kind)
    codes = rng.choice(len(MODALITIES), size=n, p=np.asarray(MODALITY_WEIGHTS))
    payloads = [make_payload(i, MODALITIES[int(c)], rng) for i, c in enumerate(codes)]
    ids = [str(uuid.UUID(int=i)) for i in range(n)]
    return SyntheticData(vectors=vectors, ids=ids, payloads=payloads, filter_mask=codes == 0)


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Exact cosine top-``k`` point indices per query (vectors and queries are unit norm), best first.

    With ``mask``, only points where it is True are eligible. Returns an int64 array of shape (n_queries, k).
    """
    scores = queries @ vectors.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k that the engine returned (recall@k, k = truth width)."""
    if len(found) == 0:
        return float("nan")
    hits = [len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95, mean and max of per-query latencies, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "mean_ms": float("nan"), "max_ms": float("nan")}
    p50, p95 = np.percentile(ms, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def dir_size_mb(path: Path) -> dict[str, float]:
    """Size of a folder tree in MB (10^6 bytes): ``apparent`` (sum of file sizes) and ``allocated`` (blocks, as du)."""
    apparent = 0
    allocated = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name), follow_symlinks=False)
            except FileNotFoundError:
                continue
            apparent += st.st_size
            allocated += getattr(st, "st_blocks", 0) * 512
    return {"apparent": apparent / 1e6, "allocated": allocated / 1e6}


def point_index(point_id: object) -> int:
    """Map an engine's point id (``uuid.UUID``, UUID string or int) back to the synthetic row index."""
    if isinstance(point_id, uuid.UUID):
        return point_id.int
    if isinstance(point_id, int):
        return point_id
    return uuid.UUID(str(point_id)).int


def machine_info() -> dict[str, Any]:
    """CPU count, platform, Python and package versions, and the load average when called."""
    versions: dict[str, str | None] = {}
    for pkg in ("qdrant-edge-py", "qdrant-client", "numpy"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": sys.version.split()[0],
        "versions": versions,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


QueryFn = Callable[[np.ndarray, bool], list[int]]


def run_queries(query: QueryFn, queries: np.ndarray, filtered: bool) -> tuple[list[float], list[list[int]]]:
    """Run each query through ``query`` after a short warm-up; return per-query seconds and result indices."""
    for q in queries[:WARMUP_QUERIES]:
        query(q, filtered)
    times: list[float] = []
    found: list[list[int]] = []
    for q in queries:
        t0 = time.perf_counter()
        idx = query(q, filtered)
        times.append(time.perf_counter() - t0)
        found.append(idx)
    return times, found


def measure_queries(query: QueryFn, queries: np.ndarray, truth: np.ndarray, truth_filtered: np.ndarray) -> Result:
    """Latency and recall@10 for unfiltered and filtered top-10 queries."""
    out: Result = {"n_queries": len(queries)}
    for label, filtered, t in (("unfiltered", False, truth), ("filtered", True, truth_filtered)):
        times, found = run_queries(query, queries, filtered)
        out[label] = {**latency_stats(times), "recall_at_10": recall_at_k(found, t[: len(queries)])}
    return out


def _fresh_dir(path: Path) -> Path:
    """Remove ``path`` if present (it is a benchmark-owned subfolder) and create its parent."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def bench_edge(
    data: SyntheticData,
    queries: np.ndarray,
    truth: np.ndarray,
    truth_filtered: np.ndarray,
    path: Path,
    *,
    batch_size: int = 512,
    optimize: bool = True,
    hnsw_ef_sweep: Sequence[int] = (64, 256),
) -> Result:
    """Benchmark qdrant-edge-py on ``data`` in a fresh shard at ``path``.

    Upsert time includes building the ``Point`` objects and a final ``flush()``. Queries run before
    ``optimize()`` (plain segments, exact) and, when ``optimize`` is set, after it (HNSW), plus an ``hnsw_ef``
    sweep on the unfiltered queries. Reload is ``close()`` then ``EdgeShard.load`` on the final state.
    """
    from qdrant_edge import (
        Distance,
        EdgeConfig,
        EdgeShard,
        EdgeSparseVectorParams,
        EdgeVectorParams,
        FieldCondition,
        Filter,
        MatchValue,
        Modifier,
        PayloadSchemaType,
        Point,
        Query,
        QueryRequest,
        SearchParams,
        UpdateOperation,
    )

    dim = int(data.vectors.shape[1])
    n = len(data.ids)
    config = EdgeConfig(
        vectors={VECTOR_NAME: EdgeVectorParams(size=dim, distance=Distance.Cosine)},
        sparse_vectors={SPARSE_NAME: EdgeSparseVectorParams(modifier=Modifier.Idf)},
    )
    flt = Filter(must=[FieldCondition(key=FILTER_FIELD, match=MatchValue(FILTER_VALUE))])
    res: Result = {"engine": "qdrant-edge-py", "n_points": n, "dim": dim, "batch_size": batch_size}

    t0 = time.perf_counter()
    shard = EdgeShard.create(str(_fresh_dir(path)), config)
    shard.update(UpdateOperation.create_field_index(FILTER_FIELD, PayloadSchemaType.Keyword))
    res["create_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = data.vectors[start:stop].tolist()
        points = [Point(data.ids[i], {VECTOR_NAME: rows[i - start]}, data.payloads[i]) for i in range(start, stop)]
        shard.update(UpdateOperation.upsert_points(points))
    t_upsert = time.perf_counter() - t0
    t0 = time.perf_counter()
    shard.flush()
    t_flush = time.perf_counter() - t0
    res["upsert"] = {
        "upsert_s": t_upsert,
        "flush_s": t_flush,
        "points_per_s": n / (t_upsert + t_flush),
    }

    def make_query(params: SearchParams | None = None) -> QueryFn:
        def query(vec: np.ndarray, filtered: bool) -> list[int]:
            req = QueryRequest(
                limit=TOP_K,
                query=Query.Nearest(vec.tolist(), using=VECTOR_NAME),
                filter=flt if filtered else None,
                with_payload=True,
                params=params,
            )
            return [point_index(p.id) for p in shard.query(req)]

        return query

    def info() -> Result:
        si = shard.info()
        return {
            "segments": si.segments_count,
            "points": si.points_count,
            "indexed_vectors": si.indexed_vectors_count,
        }

    res["before_optimize"] = {"info": info(), **measure_queries(make_query(), queries, truth, truth_filtered)}
    res["disk_mb_before_optimize"] = dir_size_mb(path)

    if optimize:
        t0 = time.perf_counter()
        changed = shard.optimize()
        res["optimize"] = {"optimize_s": time.perf_counter() - t0, "changed": changed}
        t0 = time.perf_counter()
        shard.flush()
        res["optimize"]["flush_s"] = time.perf_counter() - t0
        res["after_optimize"] = {"info": info(), **measure_queries(make_query(), queries, truth, truth_filtered)}
        sweep: dict[str, Result] = {}
        for ef in hnsw_ef_sweep:
            times, found = run_queries(make_query(SearchParams(hnsw_ef=ef)), queries, False)
            sweep[str(ef)] = {**latency_stats(times), "recall_at_10": recall_at_k(found, truth[: len(queries)])}
        res["after_optimize"]["hnsw_ef_sweep_unfiltered"] = sweep

    shard.close()
    del shard
    res["disk_mb"] = dir_size_mb(path)

    t0 = time.perf_counter()
    shard = EdgeShard.load(str(path))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = make_query()(queries[0], False)
    t_first = time.perf_counter() - t0
    res["reload"] = {
        "load_s": t_load,
        "first_query_ms": t_first * 1000.0,
        "points": shard.info().points_count,
        "first_query_matches_exact": first == truth[0].tolist(),
    }
    shard.close()
    return res


def bench_local(
    data: SyntheticData,
    queries: np.ndarray,
    truth: np.ndarray,
    truth_filtered: np.ndarray,
    path: Path,
    *,
    batch_size: int = 512,
) -> Result:
    """Benchmark ``QdrantClient(path=...)`` local mode on ``data`` in a fresh folder at ``path``.

    Same named vector, sparse slot, payload index (local mode accepts it but does not use it) and filter as edge.
    Upsert time includes building the ``PointStruct`` objects; local mode persists each batch as it goes. Reload
    is ``close()`` then a new ``QdrantClient(path=...)``, which reads every point back from SQLite.
    """
    from qdrant_client import QdrantClient, models

    dim = int(data.vectors.shape[1])
    n = len(data.ids)
    flt = models.Filter(must=[models.FieldCondition(key=FILTER_FIELD, match=models.MatchValue(value=FILTER_VALUE))])
    res: Result = {"engine": "qdrant-client local", "n_points": n, "dim": dim, "batch_size": batch_size}

    t0 = time.perf_counter()
    client = QdrantClient(path=str(_fresh_dir(path)))
    client.create_collection(
        COLLECTION,
        vectors_config={VECTOR_NAME: models.VectorParams(size=dim, distance=models.Distance.COSINE)},
        sparse_vectors_config={SPARSE_NAME: models.SparseVectorParams(modifier=models.Modifier.IDF)},
    )
    client.create_payload_index(COLLECTION, FILTER_FIELD, models.PayloadSchemaType.KEYWORD)
    res["create_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = data.vectors[start:stop].tolist()
        points = [
            models.PointStruct(id=data.ids[i], vector={VECTOR_NAME: rows[i - start]}, payload=data.payloads[i])
            for i in range(start, stop)
        ]
        client.upsert(COLLECTION, points=points, wait=True)
    t_upsert = time.perf_counter() - t0
    res["upsert"] = {"upsert_s": t_upsert, "flush_s": 0.0, "points_per_s": n / t_upsert}

    def make_query(cl: QdrantClient) -> QueryFn:
        def query(vec: np.ndarray, filtered: bool) -> list[int]:
            resp = cl.query_points(
                COLLECTION,
                query=vec.tolist(),
                using=VECTOR_NAME,
                query_filter=flt if filtered else None,
                limit=TOP_K,
                with_payload=True,
            )
            return [point_index(p.id) for p in resp.points]

        return query

    res["queries"] = measure_queries(make_query(client), queries, truth, truth_filtered)
    client.close()
    del client
    res["disk_mb"] = dir_size_mb(path)

    t0 = time.perf_counter()
    client = QdrantClient(path=str(path))
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = make_query(client)(queries[0], False)
    t_first = time.perf_counter() - t0
    res["reload"] = {
        "load_s": t_load,
        "first_query_ms": t_first * 1000.0,
        "points": client.count(COLLECTION, exact=True).count,
        "first_query_matches_exact": first == truth[0].tolist(),
    }
    client.close()
    return res


def bench_engines(
    sizes: Sequence[int] = (10_000, 100_000),
    dim: int = 384,
    n_queries: int = 200,
    seed: int = 0,
    *,
    workdir: Path,
    data_kind: str = "uniform",
    optimize_edge: bool = True,
    engines: Sequence[str] = ("edge", "local"),
    batch_size: int = 512,
    local_query_cap: Mapping[int, int] | None = None,
    hnsw_ef_sweep: Sequence[int] = (64, 256),
    keep_data: bool = False,
    on_result: Callable[[str, int, Result], None] | None = None,
) -> Result:
    """Benchmark the embedded engines side by side on synthetic data, one size at a time.

    Args:
        sizes: Collection sizes (points) to test.
        dim: Vector dimension.
        n_queries: Random unit query vectors per size (the same set for every engine).
        seed: Seed for data and queries (queries use ``seed + 1``).
        data_kind: ``"uniform"`` (i.i.d. random directions, the brief's default and HNSW's worst case) or
            ``"clustered"`` (points around random centres, queries are noisy copies of points).
        workdir: Folder for the engines' data; each run uses (and replaces) ``workdir/<engine>_<size>``.
        optimize_edge: Run edge's ``optimize()`` (HNSW build) and measure again after it.
        engines: Any of ``"edge"`` and ``"local"``.
        batch_size: Points per upsert call (256–1024 recommended).
        local_query_cap: ``{size: max_queries}`` for local mode, whose filtered queries are slow at large sizes.
        hnsw_ef_sweep: ``hnsw_ef`` values tried on edge after optimize (unfiltered recall and latency).
        keep_data: Keep the engines' folders afterwards (default: delete each once measured).
        on_result: Called as ``on_result(engine, size, result)`` after each engine/size, e.g. to log progress.

    Returns:
        ``{"machine", "params", "results": {engine: {str(size): result}}, "total_s"}``. An engine that fails at a
        size gets ``{"error", "traceback"}`` there and the run goes on.
    """
    unknown = set(engines) - {"edge", "local"}
    if unknown:
        raise ValueError(f"unknown engines {sorted(unknown)}; use 'edge' and/or 'local'")
    t_start = time.perf_counter()
    cap = dict(local_query_cap or {})
    out: Result = {
        "machine": machine_info(),
        "params": {
            "sizes": list(sizes),
            "dim": dim,
            "n_queries": n_queries,
            "seed": seed,
            "data_kind": data_kind,
            "top_k": TOP_K,
            "batch_size": batch_size,
            "optimize_edge": optimize_edge,
            "engines": list(engines),
            "local_query_cap": {str(k): v for k, v in cap.items()},
            "hnsw_ef_sweep": list(hnsw_ef_sweep),
            "filter": {FILTER_FIELD: FILTER_VALUE},
            "warmup_queries": WARMUP_QUERIES,
        },
        "results": {e: {} for e in engines},
    }
    if data_kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {data_kind!r}; use one of {DATA_KINDS}")
    for size in sizes:
        t0 = time.perf_counter()
        data = make_data(size, dim, seed, data_kind)
        queries = make_queries(data.vectors, n_queries, seed + 1, data_kind)
        truth = exact_top_k(data.vectors, queries, TOP_K)
        truth_filtered = exact_top_k(data.vectors, queries, TOP_K, data.filter_mask)
        data_info = {
            "generate_s": time.perf_counter() - t0,
            "filter_fraction": float(data.filter_mask.mean()),
        }
        for engine in engines:
            path = workdir / f"{engine}_{size}"
            try:
                if engine == "edge":
                    res = bench_edge(
                        data,
                        queries,
                        truth,
                        truth_filtered,
                        path,
                        batch_size=batch_size,
                        optimize=optimize_edge,
                        hnsw_ef_sweep=hnsw_ef_sweep,
                    )
                else:
                    nq = min(n_queries, cap.get(size, n_queries))
                    res = bench_local(data, queries[:nq], truth, truth_filtered, path, batch_size=batch_size)
            except Exception as exc:  # a failing engine must not lose the other measurements
                res = {"error": repr(exc), "traceback": traceback.format_exc()}
            res["data"] = data_info
            res["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
            out["results"][engine][str(size)] = res
            if not keep_data and path.exists():
                shutil.rmtree(path, ignore_errors=True)
            if on_result is not None:
                on_result(engine, size, res)
        del data, queries, truth, truth_filtered
    out["total_s"] = time.perf_counter() - t_start
    return out


def _g(d: Mapping[str, Any], *keys: str) -> Any:
    """Nested lookup returning None where any key is missing."""
    cur: Any = d
    for k in keys:
        if not isinstance(cur, Mapping) or k not in cur:
            return None
        cur = cur[k]
    return cur


def summary_rows(report: Result) -> list[dict[str, Any]]:
    """Flatten a :func:`bench_engines` report into one row per engine, size and stage (edge: plain / hnsw)."""
    rows: list[dict[str, Any]] = []
    for engine, by_size in report["results"].items():
        for size, r in by_size.items():
            if "error" in r:
                rows.append({"engine": engine, "stage": "ERROR", "size": int(size), "error": r["error"]})
                continue
            if engine == "edge":
                stages = [("plain", r.get("before_optimize"))]
                if "after_optimize" in r:
                    stages.append(("hnsw", r["after_optimize"]))
            else:
                stages = [("brute", r.get("queries"))]
            for stage, q in stages:
                q = q or {}
                rows.append(
                    {
                        "engine": engine,
                        "stage": stage,
                        "size": int(size),
                        "upsert_pts_s": _g(r, "upsert", "points_per_s"),
                        "n_q": q.get("n_queries"),
                        "unf_p50": _g(q, "unfiltered", "p50_ms"),
                        "unf_p95": _g(q, "unfiltered", "p95_ms"),
                        "flt_p50": _g(q, "filtered", "p50_ms"),
                        "flt_p95": _g(q, "filtered", "p95_ms"),
                        "recall_unf": _g(q, "unfiltered", "recall_at_10"),
                        "recall_flt": _g(q, "filtered", "recall_at_10"),
                        "optimize_s": _g(r, "optimize", "optimize_s") if stage == "hnsw" else None,
                        "reload_s": _g(r, "reload", "load_s"),
                        "disk_mb": _g(r, "disk_mb", "allocated"),
                    }
                )
    return rows


def format_table(report: Result) -> str:
    """Render :func:`summary_rows` as a fixed-width text table (latencies in ms)."""
    cols = [
        ("engine", "engine", "{}"),
        ("stage", "stage", "{}"),
        ("size", "N", "{}"),
        ("upsert_pts_s", "upsert/s", "{:.0f}"),
        ("n_q", "nq", "{}"),
        ("unf_p50", "p50", "{:.2f}"),
        ("unf_p95", "p95", "{:.2f}"),
        ("flt_p50", "flt p50", "{:.2f}"),
        ("flt_p95", "flt p95", "{:.2f}"),
        ("recall_unf", "R@10", "{:.3f}"),
        ("recall_flt", "flt R@10", "{:.3f}"),
        ("optimize_s", "optim s", "{:.1f}"),
        ("reload_s", "reload s", "{:.2f}"),
        ("disk_mb", "disk MB", "{:.1f}"),
    ]
    rows = summary_rows(report)
    cells = [[h for _, h, _ in cols]]
    for row in rows:
        if row["stage"] == "ERROR":
            cells.append([row["engine"], "ERROR", str(row["size"]), row["error"]] + [""] * (len(cols) - 4))
            continue
        cells.append(["-" if row[k] is None else f.format(row[k]) for k, _, f in cols])
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].rjust(widths[i]) for i in range(len(cols))) for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _parse_cap(items: Sequence[str]) -> dict[int, int]:
    """Parse ``SIZE=N`` strings into ``{size: n}``."""
    cap: dict[int, int] = {}
    for item in items:
        size, _, n = item.partition("=")
        cap[int(size)] = int(n)
    return cap


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: run the benchmark, print a table, write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=DATA_KINDS, default="uniform", help="synthetic vector distribution")
    ap.add_argument("--engines", nargs="+", default=["edge", "local"], choices=["edge", "local"])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--no-optimize", action="store_true", help="skip edge optimize() (HNSW build)")
    ap.add_argument(
        "--local-query-cap", nargs="*", default=[], metavar="SIZE=N", help="fewer local-mode queries at SIZE"
    )
    ap.add_argument("--hnsw-ef", type=int, nargs="*", default=[64, 256], help="edge hnsw_ef sweep after optimize")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench/data"))
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="JSON report (also rewritten after each engine/size)")
    args = ap.parse_args(argv)

    partial: Result = {"results": {}}

    def progress(engine: str, size: int, res: Result) -> None:
        partial["results"].setdefault(engine, {})[str(size)] = res
        status = res.get("error", "ok")
        print(f"[{time.strftime('%H:%M:%S')}] {engine} n={size}: {status}", file=sys.stderr, flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"partial": True, **partial}, indent=2, default=str))

    report = bench_engines(
        sizes=args.sizes,
        dim=args.dim,
        n_queries=args.queries,
        seed=args.seed,
        data_kind=args.data,
        workdir=args.workdir,
        optimize_edge=not args.no_optimize,
        engines=args.engines,
        batch_size=args.batch_size,
        local_query_cap=_parse_cap(args.local_query_cap),
        hnsw_ef_sweep=args.hnsw_ef,
        keep_data=args.keep_data,
        on_result=progress,
    )
    print(format_table(report))
    m = report["machine"]
    print(f"\n{m['cpu_count']} CPUs, {m['platform']}, versions {m['versions']}, total {report['total_s']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
