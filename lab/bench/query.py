"""``loupe bench query`` / ``scale``: Qdrant Edge latency, recall, RAM and disk through Loupe's own Index."""

from __future__ import annotations

import gc
import hashlib
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loupe.errors import ConfigError
from loupe.lab.bench.common import (
    PREFETCH_LIMIT,
    QUERY_LIMIT,
    QUESTIONS,
    SYNTH_TEXT_CHARS,
    TOP_K,
    UPSERT_BATCH,
    WARMUP_QUERIES,
    Result,
    find_e5,
    format_table,
    med,
    rss_mb,
    run_child,
    span,
    summarize,
)
from loupe.lab.bench.engines import (
    PAGES_PER_FILE,
    dir_size_mb,
    exact_top_k,
    latency_stats,
    make_queries,
    make_vectors,
    recall_at_k,
)

# ---------------------------------------------------------------------------------------------------------------
# bench query / scale
# ---------------------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def _vocabulary() -> list[str]:
    """Words for synthetic texts: the question words first (so BM25 finds matches) and filler words."""
    from loupe.lab.bench.engines import _WORDS

    words: list[str] = []
    for q in QUESTIONS:
        words.extend(w.lower() for w in _WORD_RE.findall(q))
    words.extend(_WORDS)
    return list(dict.fromkeys(words))


def _synthetic_texts(n: int, rng: Any, vocab: Sequence[str], chars: int = SYNTH_TEXT_CHARS) -> list[str]:
    """``n`` texts of about ``chars`` characters; word frequencies follow Zipf's law over a shuffled vocabulary."""
    import numpy as np

    order = rng.permutation(len(vocab))
    weights = 1.0 / (np.arange(len(vocab)) + 1.0)
    weights /= weights.sum()
    n_words = max(1, chars // 7)  # ~6.5 characters per word with its space, measured on these vocabularies
    draws = rng.choice(len(vocab), size=(n, n_words), p=weights)
    return [" ".join(vocab[order[w]] for w in row)[:chars] for row in draws]


def _bench_segments(start: int, texts: Sequence[str]) -> list[Any]:
    """Loupe segments for synthetic points ``start..``: 20 pages per file, a page locator with a box."""
    from loupe.types import PageLoc, Segment, SourceRef

    segs = []
    for j, text in enumerate(texts):
        i = start + j
        file_no = i // PAGES_PER_FILE
        uri = f"/bench/file_{file_no:07d}.pdf"
        src = SourceRef(
            uri=uri,
            sha256=hashlib.sha256(uri.encode()).hexdigest(),
            mime="application/pdf",
            title=f"bench file {file_no}",
            size=250_000,
            mtime=1.7e9,
        )
        segs.append(
            Segment(
                id=f"bench-{i}",
                source=src,
                modality="page",
                locator=PageLoc(page=i % PAGES_PER_FILE + 1, bbox=(72.0, 72.0, 540.0, 720.0)),
                text=text,
            )
        )
    return segs


class ConfigInjector:
    """Stands in for the ``qdrant_edge`` module inside an EdgeEngine so its ``EdgeConfig`` gets extra settings.

    Loupe's EdgeEngine has no quantization option yet; this lets the bench build an int8 shard through
    ``EdgeEngine.create`` unchanged (same vectors, sparse BM25 and payload indexes) plus the extra config.
    """

    def __init__(self, qe: Any, extra: Mapping[str, Any]) -> None:
        self._qe = qe
        self._extra = dict(extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._qe, name)

    def EdgeConfig(self, **kwargs: Any) -> Any:  # the name mirrors the module attribute it replaces
        return self._qe.EdgeConfig(**kwargs, **self._extra)


def quant_config(quantization: str, optimize: bool) -> tuple[Result, str]:
    """EdgeConfig extras for a variant, and how it is built, in words."""
    import qdrant_edge as qe

    if quantization == "none":
        how = "Loupe's EdgeEngine.create as is"
        return {}, how + (" then EdgeShard.optimize() (HNSW, default config)" if optimize else " (exact, no optimize)")
    if quantization != "int8":
        raise ConfigError(f"unknown quantization {quantization!r}; valid: none, int8")
    extra: Result = {
        "quantization_config": qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)
    }
    how = (
        "Loupe's EdgeEngine.create with ScalarQuantizationConfig(Int8, quantile=0.99, always_ram=True) injected "
        "into its EdgeConfig (EdgeEngine has no quantization option yet); "
    )
    if optimize:
        return extra, how + "then EdgeShard.optimize() (HNSW, default config, quantized vectors)"
    # Qdrant builds quantized vectors only in optimized segments. HNSW m=0 makes the optimizer skip the graph and
    # indexing_threshold=1 KB makes it convert any segment, so the shard holds int8 vectors searched exhaustively.
    extra["hnsw_config"] = qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000)
    extra["optimizers"] = qe.EdgeOptimizersConfig(indexing_threshold=1)
    return (
        extra,
        how + "HNSW m=0 (no graph) and indexing_threshold=1 KB, then EdgeShard.optimize() to build the int8 vectors",
    )


def _bench_profile_info(profile: str, unified_only: bool) -> Any:
    """The collection schema: the profile's named vectors as Loupe creates them, or ``unified`` alone."""
    from loupe.embedder.profiles import UNIFIED, ProfileInfo, create_profile

    info = create_profile(profile).info
    if not unified_only:
        return info
    return ProfileInfo(info.name, {UNIFIED: info.model_ids[UNIFIED]}, {UNIFIED: info.dims[UNIFIED]})


def child_query_build(p: Result) -> Result:
    """Generate the synthetic collection, upsert it through Loupe's Index, optimize if asked, measure disk."""
    import numpy as np

    from loupe.index.engines import EdgeEngine
    from loupe.index.store import SCHEMA_VERSION, Index, IndexConfig

    folder = Path(p["folder"])
    size, seed = int(p["size"]), int(p["seed"])
    info = _bench_profile_info(p["profile"], bool(p.get("unified_only")))
    dim = info.dims["unified"]
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    vectors = make_vectors(size, dim, rng, "clustered")
    queries = make_queries(vectors, int(p["n_queries"]), seed + 1, "clustered")
    truth = exact_top_k(vectors, queries, TOP_K)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "queries.npy", queries)
    np.save(folder / "truth.npy", truth)
    generate_s = time.perf_counter() - t0

    cfg = IndexConfig(data_dir=folder, collection="bench")
    extra, how = quant_config(p["quantization"], bool(p["optimize"]))
    t0 = time.perf_counter()
    if extra:
        engine = EdgeEngine(folder / "collections" / "bench")
        engine_setup: Any = engine  # EdgeEngine keeps the qdrant_edge module in _qe; swap in the injector
        engine_setup._qe = ConfigInjector(engine._qe, extra)
        meta = {"loupe_schema": SCHEMA_VERSION, "collection": "bench", "profile": info.to_json(), "created_at": 0}
        engine.create(dict(info.dims), meta)
        engine.close()
        index = Index.open(cfg, info, create=False)
    else:
        index = Index.open(cfg, info, create=True)
    create_s = time.perf_counter() - t0

    vocab = _vocabulary()
    text_rng = np.random.default_rng(seed + 2)
    upsert_s = 0.0
    text_chars = 0
    for start in range(0, size, UPSERT_BATCH):
        stop = min(start + UPSERT_BATCH, size)
        segs = _bench_segments(start, _synthetic_texts(stop - start, text_rng, vocab))
        text_chars += sum(len(s.text) for s in segs)
        vecs = [{"unified": vectors[i]} for i in range(start, stop)]
        t0 = time.perf_counter()
        index.upsert(segs, vecs, source_segments=PAGES_PER_FILE)
        upsert_s += time.perf_counter() - t0
    engine_any: Any = index.engine
    t0 = time.perf_counter()
    engine_any.flush()
    flush_s = time.perf_counter() - t0
    out: Result = {
        "n_points": size,
        "dim": dim,
        # Every point gets a ``unified`` vector only (text chunks); other named vectors of the profile stay empty.
        "collection_vectors": dict(info.dims),
        "vectors_filled": ["unified"],
        "built_as": how,
        "generate_s": generate_s,
        "create_s": create_s,
        "upsert_s": upsert_s,
        "flush_s": flush_s,
        "upsert_points_per_s": size / (upsert_s + flush_s) if size else None,
        "mean_text_chars": text_chars / size if size else None,
    }
    if extra or p["optimize"]:
        shard = engine_any._open()
        t0 = time.perf_counter()
        out["optimize_changed"] = bool(shard.optimize())
        shard.flush()
        out["optimize_s"] = time.perf_counter() - t0
    si = engine_any._open().info()
    out["shard"] = {
        "segments": si.segments_count,
        "points": si.points_count,
        "indexed_vectors": si.indexed_vectors_count,
    }
    index.close()
    coll = folder / "collections" / "bench"
    out["quantized_vectors_on_disk"] = any(coll.rglob("quantized.data"))
    graph_files = [f for pat in ("graph*.bin", "links*.bin") for f in coll.rglob(pat)]
    out["hnsw_graph_mb"] = sum(getattr(f.stat(), "st_blocks", 0) * 512 for f in graph_files) / 1e6
    disk = dir_size_mb(coll)
    out["disk_mb"] = disk
    # Qdrant keeps the write-ahead log after a flush; it is a large share of a freshly built collection.
    out["disk_mb_breakdown"] = {part: dir_size_mb(coll / "shard" / part)["allocated"] for part in ("wal", "segments")}
    out["disk_mb_per_million_points"] = {k: v / size * 1e6 for k, v in disk.items()} if size else None
    return out


def child_query_serve(p: Result) -> Result:
    """Open the collection in a fresh process and time queries; RSS before/after gives the serving memory."""
    import numpy as np

    from loupe.index.store import Index, IndexConfig

    folder = Path(p["folder"])
    queries = np.load(folder / "queries.npy")
    truth = np.load(folder / "truth.npy")
    cfg = IndexConfig(data_dir=folder, collection="bench")
    # Open with the profile recorded at build time: the vectors are synthetic, so only the schema matters.
    info = Index.stored_profile(cfg)
    if info is None:
        raise ConfigError(f"no bench collection under {folder}")
    # The baseline includes the engine's native library and its BM25 tokenizer, so the delta is the collection's.
    import qdrant_edge

    qdrant_edge.Bm25()
    gc.collect()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    index = Index.open(cfg, info, create=False)
    open_s = time.perf_counter() - t0
    rss_open = rss_mb()

    def run(mode: str) -> tuple[list[float], list[list[int]]]:
        times: list[float] = []
        found: list[list[int]] = []
        for j, q in enumerate(queries):
            text = QUESTIONS[j % len(QUESTIONS)] if mode == "hybrid" else None
            t = time.perf_counter()
            hits = index.search([("unified", q, 1.0)], text, limit=QUERY_LIMIT, prefetch_limit=PREFETCH_LIMIT)
            times.append(time.perf_counter() - t)
            found.append([int(seg.id.rsplit("-", 1)[1]) for seg, _ in hits[:TOP_K]])
        return times, found

    modes: Result = {}
    for mode in p["modes"]:
        for j in range(min(WARMUP_QUERIES, len(queries))):
            warm_text = QUESTIONS[j] if mode == "hybrid" else None
            index.search([("unified", queries[j], 1.0)], warm_text, limit=QUERY_LIMIT, prefetch_limit=PREFETCH_LIMIT)
        reps = []
        for _ in range(int(p["repeats"])):
            times, found = run(mode)
            rep: dict[str, float | None] = dict(latency_stats(times))
            # Recall against exact dense search only means something for the dense path; hybrid reorders by BM25.
            rep["recall_at_10"] = recall_at_k(found, truth) if mode == "dense" else None
            reps.append(rep)
        modes[mode] = {
            "repeats": reps,
            **{k: summarize([r[k] for r in reps]) for k in ("p50_ms", "p95_ms", "mean_ms", "recall_at_10")},
        }
    rss_after = rss_mb()
    index.close()
    n = int(p["size"])
    delta = (rss_after - rss0) if rss_after is not None and rss0 is not None else None
    return {
        "open_s": open_s,
        "n_queries": len(queries),
        "modes": modes,
        "rss_baseline_mb": rss0,
        "rss_delta_after_open_mb": (rss_open - rss0) if rss_open is not None and rss0 is not None else None,
        "rss_delta_after_queries_mb": delta,
        "rss_delta_mb_per_million_points": delta / n * 1e6 if delta is not None and n else None,
    }


def time_query_embedder(profile: str, repeats: int, questions: Sequence[str] = QUESTIONS) -> Result:
    """Latency of embedding one question at a time with the profile's text embedder (role ``query``)."""
    from loupe.embedder.base import TextInput
    from loupe.embedder.profiles import create_profile

    emb = create_profile(profile).unified
    t0 = time.perf_counter()
    emb.embed([TextInput(questions[0])], role="query")
    first_s = time.perf_counter() - t0
    reps = []
    for _ in range(repeats):
        times = []
        for q in questions:
            t = time.perf_counter()
            emb.embed([TextInput(q)], role="query")
            times.append(time.perf_counter() - t)
        reps.append(latency_stats(times))
    out: Result = {
        "embedder": emb.model_ids.get("unified"),
        "call": "profile.unified.embed([TextInput(question)], role='query'), one question at a time",
        "n_questions": len(questions),
        "first_call_s_incl_model_load": first_s,
        "repeats": reps,
        **{k: summarize([r[k] for r in reps]) for k in ("p50_ms", "p95_ms", "mean_ms")},
    }
    e5 = find_e5(emb)
    if e5 is not None:
        counts = [e5.token_count(q) for q in questions]
        out["mean_tokens"] = sum(counts) / len(counts)
    return out


def bench_query(
    sizes: Sequence[int],
    *,
    quantization: Sequence[str] = ("none", "int8"),
    optimize: bool = False,
    modes: Sequence[str] = ("dense", "hybrid"),
    n_queries: int = 100,
    repeats: int = 3,
    profile: str = "offline",
    seed: int = 0,
    workdir: Path,
    embedder: bool = True,
    unified_only: bool = False,
    keep_data: bool = False,
    child_timeout_s: float = 3600.0,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Build each (size, quantization) collection in one subprocess, query it from another; time the embedder."""
    say = on_progress or (lambda _m: None)
    bad = set(modes) - {"dense", "hybrid"}
    if bad:
        raise ConfigError(f"unknown query modes {sorted(bad)}; valid: dense, hybrid")
    for q in quantization:
        if q not in ("none", "int8"):
            raise ConfigError(f"unknown quantization {q!r}; valid: none, int8")
    cases = []
    for size in sizes:
        for quant in quantization:
            folder = workdir / f"query-{size}-{quant}"
            shutil.rmtree(folder, ignore_errors=True)
            params = {
                "folder": str(folder),
                "size": size,
                "quantization": quant,
                "optimize": optimize,
                "seed": seed,
                "n_queries": n_queries,
                "profile": profile,
                "unified_only": unified_only,
                "modes": list(modes),
                "repeats": repeats,
            }
            say(f"query n={size} quantization={quant}: build")
            build = run_child("query-build", params, workdir, timeout_s=child_timeout_s)
            serve: Result = {"error": "not run: the build failed"}
            if "error" not in build:
                say(f"query n={size} quantization={quant}: queries")
                serve = run_child("query-serve", params, workdir, timeout_s=child_timeout_s)
            cases.append({"size": size, "quantization": quant, "optimize": optimize, "build": build, "serve": serve})
            if not keep_data:
                shutil.rmtree(folder, ignore_errors=True)
    out: Result = {"cases": cases, "per_million_marginal": marginal_per_million(cases)}
    if embedder:
        say("query embedder")
        out["query_embedder"] = time_query_embedder(profile, repeats)
    return out


def marginal_per_million(cases: Sequence[Result]) -> Result:
    """RAM and disk per million points from the slope between the smallest and largest size of each variant.

    Unlike dividing one measurement by its size, the slope cancels fixed overheads (thread pools, payload index
    files, the engine's own allocations). Still a linear extrapolation: say so wherever it is quoted.
    """
    out: Result = {}
    for quant in sorted({c["quantization"] for c in cases}):
        ok = [
            c for c in cases if c["quantization"] == quant and "error" not in c["build"] and "error" not in c["serve"]
        ]
        ok.sort(key=lambda c: c["size"])
        if len(ok) < 2 or ok[0]["size"] == ok[-1]["size"]:
            continue
        lo, hi = ok[0], ok[-1]
        dn = hi["size"] - lo["size"]
        rss_lo, rss_hi = lo["serve"].get("rss_delta_after_queries_mb"), hi["serve"].get("rss_delta_after_queries_mb")
        out[quant] = {
            "between_sizes": [lo["size"], hi["size"]],
            "rss_mb": (rss_hi - rss_lo) / dn * 1e6 if rss_lo is not None and rss_hi is not None else None,
            "disk_mb_allocated": (hi["build"]["disk_mb"]["allocated"] - lo["build"]["disk_mb"]["allocated"]) / dn * 1e6,
            "method": "linear extrapolation of the slope between the two sizes",
        }
    return out


def format_query(report: Result) -> str:
    """Table of a :func:`bench_query` report (latencies in ms, medians over repeats)."""
    rows = []
    for c in report["cases"]:
        b, s = c["build"], c["serve"]
        base = {"size": c["size"], "quant": c["quantization"] + (" +hnsw" if c["optimize"] else "")}
        if "error" in b or "error" in s:
            rows.append({**base, "mode": "ERROR: " + str(b.get("error") or s.get("error"))})
            continue
        for mode, m in s["modes"].items():
            rows.append(
                {
                    **base,
                    "mode": mode,
                    "p50": med(m["p50_ms"]),
                    "p95": med(m["p95_ms"]),
                    "recall": med(m["recall_at_10"]),
                    "upsert": b.get("upsert_points_per_s"),
                    "optimize": b.get("optimize_s"),
                    "rss": s.get("rss_delta_after_queries_mb"),
                    "rss_m": s.get("rss_delta_mb_per_million_points"),
                    "disk": b["disk_mb"]["allocated"],
                    "disk_m": b["disk_mb_per_million_points"]["allocated"],
                }
            )
    out = [
        format_table(
            rows,
            [
                ("size", "points", "{}"),
                ("quant", "quant", "{}"),
                ("mode", "mode", "{}"),
                ("p50", "p50 ms", "{:.2f}"),
                ("p95", "p95 ms", "{:.2f}"),
                ("recall", "R@10", "{:.3f}"),
                ("upsert", "upsert pts/s", "{:.0f}"),
                ("optimize", "optimize s", "{:.1f}"),
                ("rss", "RSS MB", "{:.0f}"),
                ("rss_m", "RSS MB/1M*", "{:.0f}"),
                ("disk", "disk MB", "{:.0f}"),
                ("disk_m", "disk MB/1M*", "{:.0f}"),
            ],
        ),
        "* per million points: linear extrapolation from the measured size (fixed overheads included).",
    ]
    for quant, m in report.get("per_million_marginal", {}).items():
        rss = "-" if m["rss_mb"] is None else f"{m['rss_mb']:.0f}"
        lo, hi = m["between_sizes"]
        out.append(
            f"{quant}: marginal per million points (slope {lo}->{hi}, extrapolated): RSS {rss} MB, "
            f"disk {m['disk_mb_allocated']:.0f} MB"
        )
    qe = report.get("query_embedder")
    if qe:
        out.append(
            f"query embedder {qe['embedder']}: p50 {span(qe['p50_ms'], '{:.1f}')} ms, "
            f"p95 {span(qe['p95_ms'], '{:.1f}')} ms over {qe['n_questions']} questions "
            f"(first call incl. model load {qe['first_call_s_incl_model_load']:.2f} s)"
        )
    return "\n".join(out)
