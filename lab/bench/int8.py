"""``loupe bench embed --int8-queries``: dev-set recall of int8 vectors against float32 on a copied collection."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loupe.lab.bench.common import (
    Result,
    format_table,
)
from loupe.lab.bench.query import ConfigInjector, quant_config


class _SearchParamsInjector:
    """Stands in for ``qdrant_edge`` inside an EdgeEngine so every query and prefetch carries ``params``
    (here: quantization search parameters), since Loupe's EdgeEngine passes none."""

    def __init__(self, qe: Any, params: Any) -> None:
        self._qe = qe
        self._params = params

    def __getattr__(self, name: str) -> Any:
        return getattr(self._qe, name)

    def QueryRequest(self, **kwargs: Any) -> Any:  # the name mirrors the module attribute it replaces
        return self._qe.QueryRequest(**kwargs, params=self._params)

    def Prefetch(self, **kwargs: Any) -> Any:  # the name mirrors the module attribute it replaces
        return self._qe.Prefetch(**kwargs, params=self._params)


def int8_copy(src: Any, folder: Path, collection: str) -> Result:
    """Copy an Edge collection (every point with its vectors, BM25 and payload) into ``folder`` as a shard with
    int8 scalar quantization of the dense vectors, built by the optimizer (exhaustive int8, no graph)."""
    from loupe.index.engines import EdgeEngine

    extra, how = quant_config("int8", optimize=False)
    meta = dict(src.metadata() or {})
    meta["collection"] = collection
    dims = {k: int(v) for k, v in meta["profile"]["dims"].items()}
    dst = EdgeEngine(folder)
    setup: Any = dst
    real_qe = dst._qe
    setup._qe = ConfigInjector(real_qe, extra)
    dst.create(dims, meta)
    setup._qe = real_qe
    qe = real_qe
    shard, out_shard = src._open(), dst._open()
    offset: Any = None
    n = 0
    t0 = time.perf_counter()
    while True:
        records, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=256, with_payload=True, with_vector=True))
        points = [qe.Point(r.id, r.vector, r.payload or {}) for r in records]
        if points:
            out_shard.update(qe.UpdateOperation.upsert_points(points))
            n += len(points)
        if offset is None:
            break
    out_shard.flush()
    out_shard.optimize()
    out_shard.flush()
    quantized = any(folder.rglob("quantized.data"))
    dst.close()
    return {"points": n, "built_as": how, "seconds": time.perf_counter() - t0, "quantized_vectors_on_disk": quantized}


def bench_int8_recall(
    queries_path: Path,
    corpus: Path,
    data_dir: Path,
    *,
    profile: str = "offline",
    k: int = 10,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Dev-set retrieval with float vectors vs Qdrant int8 scalar quantization (with and without rescoring).

    One ingest (reused when the corpus is unchanged) into ``data_dir``; its collection is copied into an int8
    shard; the same queries then run against the copy with quantization ignored (exact float search), int8 with
    rescoring by the original vectors (Qdrant's default), and int8 alone. Only search parameters differ.
    """
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe
    from loupe.embedder.profiles import profile_from_settings
    from loupe.lab.evaluation.retrieval import corpus_collection_name, load_queries, run_queries

    say = on_progress or (lambda _m: None)
    import qdrant_edge as qe

    queries = load_queries(queries_path)
    base = queries_path.absolute().parent
    settings = load_settings(data_dir=data_dir, profile=profile)
    space = profile_from_settings(settings).info.describe()
    name = corpus_collection_name(corpus, profile, space)
    settings = settings.model_copy(update={"collection": name})
    say(f"ingest (reused when unchanged) into {data_dir}/{name}")
    with Loupe(settings) as lp:
        t0 = time.perf_counter()
        ingest = lp.ingest([corpus], prune=True).summary()
        ingest_s = time.perf_counter() - t0
        src = lp.index().engine
        copy_name = f"{name}-int8"
        copy_dir = Path(data_dir) / "collections" / copy_name
        if copy_dir.exists():
            shutil.rmtree(copy_dir)
        say("copy into an int8 shard")
        built = int8_copy(src, copy_dir, copy_name)
    variants = {
        "float (quantization ignored)": qe.QuantizationSearchParams(ignore=True),
        "int8 + rescore": qe.QuantizationSearchParams(ignore=False, rescore=True),
        "int8 only": qe.QuantizationSearchParams(ignore=False, rescore=False),
    }
    results: Result = {}
    with Loupe(settings.model_copy(update={"collection": copy_name})) as lp8:
        engine: Any = lp8.index().engine
        real_qe = engine._qe
        for label, qparams in variants.items():
            say(f"queries: {label}")
            engine._qe = _SearchParamsInjector(real_qe, qe.SearchParams(quantization=qparams))

            def search(q: Any, qbase: Path) -> list[tuple[str, Any, float]]:
                image = str(qbase / q.image) if q.image else None
                audio = str(qbase / q.audio) if q.audio else None
                hits = lp8.search(q.text, image=image, audio=audio, k=k)
                return [(h.segment.source.uri, h.locator_json, h.score) for h in hits]

            rep = run_queries(queries, base, search, k=k)
            results[label] = {"overall": rep["overall"], "per_modality": rep["per_modality"]}
        engine._qe = real_qe
    shutil.rmtree(copy_dir, ignore_errors=True)
    return {
        "queries": str(queries_path),
        "corpus": str(corpus),
        "collection": name,
        "ingest": ingest,
        "ingest_s": ingest_s,
        "int8_copy": built,
        "variants": results,
        "note": (
            "same collection, same queries (hybrid dense + BM25 as Loupe searches); only Qdrant's quantization "
            "search parameters differ"
        ),
    }


def format_int8(report: Result) -> str:
    """Table of a :func:`bench_int8_recall` report."""
    rows = []
    for label, r in report["variants"].items():
        rows.append({"variant": label, "scope": "all", **{m: r["overall"].get(m) for m in ("R@1", "R@5", "MRR@10")}})
        for mod, m in r["per_modality"].items():
            rows.append({"variant": "", "scope": mod, **{x: m.get(x) for x in ("R@1", "R@5", "MRR@10")}})
    return format_table(
        rows,
        [
            ("variant", "variant", "{}"),
            ("scope", "queries", "{}"),
            ("R@1", "R@1", "{:.3f}"),
            ("R@5", "R@5", "{:.3f}"),
            ("MRR@10", "MRR@10", "{:.3f}"),
        ],
    )
