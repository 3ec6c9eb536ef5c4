"""``loupe eval``: retrieval quality on labelled queries (R@1/5/10, MRR@10, nDCG@10 per query modality).

Scoring rules (issue "Measure what matters"): a hit counts when it is the target file and, for a PDF, the
same 1-based physical page; for a video, a returned time range that overlaps the target range widened by
1 s; otherwise the file alone. ``also_relevant`` places count too. Ranks are over distinct (file, locator)
places, which is what retrieval returns after grouping.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.errors import ConfigError, EmbedError

LocatorJSON = int | list[float] | None
TIME_SLACK_S = 1.0
KS = (1, 5, 10)


@dataclass(frozen=True)
class Place:
    """A file (path relative to the query file's folder) and an optional page or time range."""

    file: str
    locator: LocatorJSON = None


@dataclass(frozen=True)
class EvalQuery:
    """One labelled query."""

    id: str
    modality: str
    target: Place
    text: str | None = None
    audio: str | None = None
    image: str | None = None
    also_relevant: tuple[Place, ...] = ()

    @property
    def relevant(self) -> tuple[Place, ...]:
        """The target and every also-relevant place."""
        return (self.target, *self.also_relevant)


def _locator(value: Any, where: str) -> LocatorJSON:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return [float(value[0]), float(value[1])]
    raise ConfigError(f"{where}: locator must be a page number, [start_s, end_s] or null, got {value!r}")


def load_queries(path: str | os.PathLike[str]) -> list[EvalQuery]:
    """Read and validate a queries JSONL file (paths in it are relative to its folder)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read queries file {p}: {e}") from e
    out: list[EvalQuery] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{p}:{n}"
        try:
            d = json.loads(line)
        except ValueError as e:
            raise ConfigError(f"{where}: not valid JSON ({e})") from e
        qid = str(d.get("id") or f"line-{n}")
        if qid in seen:
            raise ConfigError(f"{where}: duplicate query id {qid!r}")
        seen.add(qid)
        if not (d.get("query_text") or d.get("query_audio") or d.get("query_image")):
            raise ConfigError(f"{where}: query {qid!r} has no query_text, query_audio or query_image")
        if not d.get("target_file") or not d.get("modality"):
            raise ConfigError(f"{where}: query {qid!r} needs target_file and modality")
        also = tuple(Place(str(a["file"]), _locator(a.get("locator"), where)) for a in (d.get("also_relevant") or []))
        out.append(
            EvalQuery(
                id=qid,
                modality=str(d["modality"]),
                target=Place(str(d["target_file"]), _locator(d.get("target_locator"), where)),
                text=d.get("query_text"),
                audio=d.get("query_audio"),
                image=d.get("query_image"),
                also_relevant=also,
            )
        )
    if not out:
        raise ConfigError(f"queries file {p} holds no queries")
    return out


def check_places(queries: Sequence[EvalQuery], base: Path) -> list[str]:
    """Problems with the places the queries point at: missing files, PDF pages out of range, a paged file
    without a page or a non-paged file with one, time ranges that are reversed or run past the media's end.
    A mistyped target would otherwise score as a silent miss.
    """
    problems: list[str] = []
    pages: dict[Path, int] = {}
    durations: dict[Path, float | None] = {}
    for q in queries:
        for i, place in enumerate(q.relevant):
            where = f"query {q.id!r}" + ("" if i == 0 else f" also_relevant[{i - 1}]")
            path = base / place.file
            if not path.is_file():
                problems.append(f"{where}: {place.file} does not exist under {base}")
            elif path.suffix.lower() == ".pdf":
                if path not in pages:
                    import pymupdf

                    with pymupdf.open(path) as doc:
                        pages[path] = doc.page_count
                if not isinstance(place.locator, int) or not 1 <= place.locator <= pages[path]:
                    problems.append(f"{where}: {place.file} needs a page in 1..{pages[path]}, got {place.locator!r}")
            elif isinstance(place.locator, int):
                problems.append(f"{where}: {place.file} has no pages, got page {place.locator}")
            elif isinstance(place.locator, list):
                problems.extend(_check_time_range(where, place, path, durations))
    return problems


def _check_time_range(where: str, place: Place, path: Path, durations: dict[Path, float | None]) -> list[str]:
    """A time range must be ordered and lie within the media file (probed once per file, ±0.5 s)."""
    assert isinstance(place.locator, list)
    start, end = place.locator
    if not 0 <= start < end:
        return [f"{where}: {place.file} time range must satisfy 0 <= start < end, got {place.locator!r}"]
    if path not in durations:
        from loupe.errors import IngestError
        from loupe.ingest.ffmpeg import probe

        try:
            durations[path] = probe(path).duration_s
        except IngestError as e:
            return [f"{where}: {place.file} has a time range but is not a readable audio/video file ({e.reason})"]
    duration = durations[path]
    if duration is not None and end > duration + 0.5:
        return [f"{where}: {place.file} is {duration:.1f} s long, but the time range ends at {end:g} s"]
    return []


def matches(hit: Place, want: Place) -> bool:
    """Does a returned place count for a relevant place (file + page, file + overlapping time, or file)?"""
    if os.path.normpath(hit.file) != os.path.normpath(want.file):
        return False
    if isinstance(want.locator, int):
        return hit.locator == want.locator
    if isinstance(want.locator, list):
        if not isinstance(hit.locator, list):
            return False
        start, end = want.locator[0] - TIME_SLACK_S, want.locator[1] + TIME_SLACK_S
        return hit.locator[0] <= end and hit.locator[1] >= start
    return True


def distinct_places(hits: Sequence[Place]) -> list[Place]:
    """Hits with repeated (file, locator) places removed, order kept."""
    seen: set[tuple[str, str]] = set()
    out = []
    for h in hits:
        key = (os.path.normpath(h.file), json.dumps(h.locator))
        if key not in seen:
            seen.add(key)
            out.append(h)
    return out


def first_relevant_rank(hits: Sequence[Place], q: EvalQuery) -> int | None:
    """1-based rank of the first hit that counts, over distinct places; None when none does."""
    for rank, h in enumerate(distinct_places(hits), start=1):
        if any(matches(h, r) for r in q.relevant):
            return rank
    return None


def ndcg_at(hits: Sequence[Place], q: EvalQuery, k: int = 10) -> float:
    """Binary-relevance nDCG@k; each relevant place earns credit once, however many hits fall in it."""
    credited: set[int] = set()
    dcg = 0.0
    for rank, h in enumerate(distinct_places(hits)[:k], start=1):
        for i, r in enumerate(q.relevant):
            if i not in credited and matches(h, r):
                credited.add(i)
                dcg += 1.0 / math.log2(rank + 1)
                break
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(q.relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """R@1/5/10, MRR@10 and nDCG@10 over scored rows (unsupported rows are counted, not scored)."""
    scored = [r for r in rows if r["status"] == "ok"]
    out: dict[str, Any] = {"n": len(scored), "unsupported": sum(1 for r in rows if r["status"] == "unsupported")}
    if not scored:
        return out
    for k in KS:
        out[f"R@{k}"] = round(sum(1 for r in scored if r["rank"] is not None and r["rank"] <= k) / len(scored), 4)
    out["MRR@10"] = round(sum(1 / r["rank"] for r in scored if r["rank"] and r["rank"] <= 10) / len(scored), 4)
    out["nDCG@10"] = round(sum(r["ndcg"] for r in scored) / len(scored), 4)
    return out


# A search returns (absolute file, locator, score) hits, or (file, locator, score, segment modality) for the
# crowding figure.
SearchFn = Callable[[EvalQuery, Path], Sequence[tuple[Any, ...]]]


def run_queries(queries: Sequence[EvalQuery], base: Path, search: SearchFn, k: int = 10) -> dict[str, Any]:
    """Run every query through ``search`` (absolute file, locator, score hits) and score the rankings."""
    rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    for q in queries:
        row: dict[str, Any] = {"id": q.id, "modality": q.modality}
        t0 = time.perf_counter()
        try:
            raw = search(q, base)
        except EmbedError as e:  # the profile cannot embed this query kind: report, never drop
            rows.append({**row, "status": "unsupported", "reason": str(e), "rank": None, "ndcg": 0.0, "hits": []})
            continue
        latencies.append(time.perf_counter() - t0)
        places = [Place(os.path.relpath(h[0], base), h[1]) for h in raw]
        hits = [
            {
                "file": p.file,
                "locator": p.locator,
                "score": round(h[2], 6),
                **({"modality": h[3]} if len(h) > 3 else {}),
            }
            for p, h in zip(places, raw, strict=True)
        ]
        rows.append(
            {
                **row,
                "status": "ok",
                "rank": first_relevant_rank(places, q),
                "ndcg": round(ndcg_at(places, q, k), 4),
                "hits": hits[:k],
            }
        )
    per_modality = {
        m: summarize([r for r in rows if r["modality"] == m]) for m in sorted({r["modality"] for r in rows})
    }
    lat_ms = sorted(1000 * t for t in latencies)
    return {
        "overall": summarize(rows),
        "per_modality": per_modality,
        "latency_ms": {
            "p50": round(statistics.median(lat_ms), 2) if lat_ms else None,
            "p95": round(lat_ms[min(len(lat_ms) - 1, math.ceil(0.95 * len(lat_ms)) - 1)], 2) if lat_ms else None,
        },
        "queries": rows,
    }


# The segment modalities each query type aims at ("text->audio" asks for a recording: a sound or a speech clip).
AIMED_AT: dict[str, tuple[str, ...]] = {
    "pdf_page": ("text",),
    "text": ("text",),
    "image": ("image",),
    "video_moment": ("video",),
    "audio": ("audio", "speech"),
}
CROWDING_K = 5


def crowding(
    rows: Sequence[dict[str, Any]], collection: Mapping[str, int], k: int = CROWDING_K
) -> dict[str, dict[str, Any]]:
    """Per query type, the share of top-``k`` places each modality family takes, next to that family's share of
    the collection's points (``collection``: points per segment modality, ``Index.stats()['per_modality']``).

    ``ratio`` is share of top-k over share of collection; ``worst_elsewhere`` is the largest ratio among the
    families the query type does not aim at (1.0: that family gets its fair share of places; the acceptance of
    issue 21 asks ≤ 1.5). Rows need ``modality`` on their hits (``run_queries`` with 4-tuple hits).
    """
    from loupe.app.calibration import FAMILIES, FAMILY_OF

    total = sum(collection.values()) or 1
    fam_share = {f: sum(collection.get(m, 0) for m in mods) / total for f, mods in FAMILIES.items()}
    out: dict[str, dict[str, Any]] = {}
    for qtype in sorted({r["modality"] for r in rows}):
        counts = dict.fromkeys(FAMILIES, 0)
        places = 0
        for r in rows:
            if r["modality"] != qtype or r["status"] != "ok":
                continue
            for h in r["hits"][:k]:
                if "modality" in h:
                    counts[FAMILY_OF[h["modality"]]] += 1
                    places += 1
        if not places:
            continue
        aimed = AIMED_AT.get(qtype.split("->")[-1], ())
        fams = {
            f: {
                "top_share": round(counts[f] / places, 4),
                "collection_share": round(fam_share[f], 4),
                "ratio": round(counts[f] / places / fam_share[f], 3) if fam_share[f] else None,
            }
            for f in FAMILIES
            if fam_share[f] or counts[f]
        }
        elsewhere = [v["ratio"] for f, v in fams.items() if f not in aimed and v["ratio"] is not None]
        out[qtype] = {"places": places, "families": fams, "worst_elsewhere": max(elsewhere) if elsewhere else None}
    return out


def format_crowding(table: dict[str, dict[str, Any]]) -> str:
    """Plain-text crowding table: per query type, each family's top-5 share / collection share."""
    from loupe.app.calibration import FAMILIES

    lines = [
        f"{'top-' + str(CROWDING_K) + ' share / collection share':<24}"
        + "".join(f"{f:>14}" for f in FAMILIES)
        + f"{'worst elsewhere':>17}"
    ]
    for qtype, t in table.items():
        cells = "".join(
            f"{t['families'][f]['top_share']:>7.2f}/{t['families'][f]['collection_share']:<6.2f}"
            if f in t["families"]
            else f"{'-':>14}"
            for f in FAMILIES
        )
        worst = t["worst_elsewhere"]
        lines.append(f"{qtype:<24}{cells}{worst if worst is not None else '-':>17}")
    return "\n".join(lines)


def corpus_collection_name(corpus: Path, profile: str, space: str = "") -> str:
    """A stable collection name per (corpus folder, profile, model space), so a rerun reuses the collection."""
    digest = hashlib.sha256(f"{corpus.absolute()}|{profile}|{space}".encode()).hexdigest()[:10]
    return f"eval-{profile}-{digest}"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per modality and one overall."""
    cols = ["n", "R@1", "R@5", "R@10", "MRR@10", "nDCG@10", "unsupported"]
    lines = [f"{'modality':<22}" + "".join(f"{c:>12}" for c in cols)]
    for name, m in [*report["per_modality"].items(), ("overall", report["overall"])]:
        lines.append(f"{name:<22}" + "".join(f"{m.get(c, '-')!s:>12}" for c in cols))
    lat = report["latency_ms"]
    lines.append(f"query latency p50 {lat['p50']} ms, p95 {lat['p95']} ms")
    return "\n".join(lines)
