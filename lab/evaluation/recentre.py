"""Re-centring each road into the space at the text passages' level, measured on stored vectors (issue 21).

``python -m loupe.lab.evaluation.recentre --queries Q.jsonl --corpus DIR --data-dir D --out X.json
[--fit STATS.json | --stats STATS.json]`` reads a collection ``loupe eval`` built (nothing is ingested) and the
queries' vectors, and ranks every segment by dense cosine (segment level, no BM25, no grouping: a measure of the
space, not the product's R@5) before and after re-centring:

    v' = normalise(μ_text + α · (σ_text / σ_road) · (v − μ_road) + λ · μ_query)

for the vectors of each road other than e5 text (pictures and frames, video windows, sounds, speech clips, and on
the query side spoken queries towards the typed queries' mean), with μ the road's mean vector and σ the RMS
length of its vectors' distance from it. A road's shared direction no longer counts, and what tells its items
apart is as long as what tells text passages apart. ``--fit`` computes the statistics on this collection and its
queries (validation collections only: a collection holding dev-set files is refused); ``--stats`` applies
statistics fitted elsewhere. Reports R@1/R@5 per query type and the crowding (each family's share of the top-5
segments next to its share of the collection) for each α in ``--alphas``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from loupe.app.calibration import FAMILIES, FAMILY_OF
from loupe.app.config import load_settings
from loupe.app.service import Loupe
from loupe.embedder.profiles import UNIFIED, profile_from_settings
from loupe.embedder.recentre import ROADS, Recentring, SpokenQueryDeflation
from loupe.errors import ConfigError
from loupe.lab.evaluation.gap import _locator, load_space
from loupe.lab.evaluation.retrieval import Place, corpus_collection_name, load_queries, matches

# The road a stored segment took into the space (None: e5 text, the reference).
ROAD_OF: dict[str, str | None] = {
    "text": None,
    "page": None,
    "region": None,
    "image": "image",
    "video_frame": "image",
    "video_window": "window",
    "audio_clip": "sound",
    "speech_clip": "speech",
}
# The road of a query by its kind (app/calibration.query_kind): typed text is the reference; a spoken query is
# moved from the spoken queries' mean to the typed queries' mean, pictures and sounds as their passages are.
QUERY_ROAD: dict[str, str | None] = {"text": None, "image": "image", "audio": "sound", "speech": "speech_query"}


def _stats(v: np.ndarray) -> dict[str, Any]:
    mean = v.mean(axis=0)
    return {"mean": mean.tolist(), "rms": float(np.sqrt(np.mean(np.sum((v - mean) ** 2, axis=1)))), "n": len(v)}


def fit(vecs: np.ndarray, roads: list[str | None], qvecs: np.ndarray, qkinds: list[str]) -> dict[str, Any]:
    """Mean and RMS spread of text passages, of each road's vectors, and of typed and spoken query vectors."""
    out: dict[str, Any] = {"text": _stats(vecs[[r is None for r in roads]])}
    for road in sorted({r for r in roads if r is not None}):
        out[road] = _stats(vecs[[r == road for r in roads]])
    typed = qvecs[[k == "text" for k in qkinds]]
    spoken = qvecs[[k == "speech" for k in qkinds]]
    if len(typed) and len(spoken):
        out["text_query"] = _stats(typed)
        out["speech_query"] = _stats(spoken)
    return out


ALPHA_GRID: tuple[float | None, ...] = (None, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
LEVEL_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def objective(scored: dict[str, Any]) -> float:
    """Macro mean over query types of (R@1 + R@5) / 2."""
    per = [(v["R@1"] + v["R@5"]) / 2 for t, v in scored.items() if t != "overall"]
    return float(np.mean(per))


def score(vecs: np.ndarray, fams: np.ndarray, qm: np.ndarray, rel: np.ndarray, types: list[str]) -> dict[str, Any]:
    """Segment-level R@1/R@5 per query type and the top-5 share of each family."""
    cos = qm @ vecs.T
    best = np.where(rel, cos, -np.inf).max(axis=1)
    rank = (np.where(rel, -np.inf, cos) > best[:, None]).sum(axis=1) + 1
    top5 = np.argsort(-cos, axis=1)[:, :5]
    out: dict[str, Any] = {}
    for t in sorted(set(types)):
        rows = np.array([x == t for x in types])
        share = {f: round(float(np.mean(fams[top5[rows]] == f)), 3) for f in FAMILIES}
        out[t] = {
            "n": int(rows.sum()),
            "R@1": round(float(np.mean(rank[rows] <= 1)), 3),
            "R@5": round(float(np.mean(rank[rows] <= 5)), 3),
            "top5_share": share,
        }
    out["overall"] = {"R@5": round(float(np.mean(rank <= 5)), 3), "n": len(types)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure re-centring on one ingested collection."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--fit", type=Path, help="fit the statistics here (validation collections only)")
    group.add_argument("--stats", type=Path, help="apply statistics fitted on another collection")
    ap.add_argument("--alphas", type=float, nargs="*", default=[], help="one alpha for every road, each reported")
    ap.add_argument("--search", action="store_true", help="search one alpha per road (validation only)")
    ap.add_argument(
        "--deflate", type=float, nargs="*", default=[], help="spoken queries deflated by each beta (the rest raw)"
    )
    ap.add_argument(
        "--roads", nargs="+", choices=ROADS, default=list(ROADS), help="roads --search may move (others stay)"
    )
    ap.add_argument("--query-cache", type=Path)
    args = ap.parse_args(argv)
    settings = load_settings(data_dir=str(args.data_dir))
    # The statistics describe the space before re-centring: the profile is built without it.
    opts = dict(getattr(settings, "profile_options", None) or {})
    settings = settings.model_copy(
        update={"profile_options": {**opts, "recentre": False, "spoken_query_deflation": 0.0}}
    )
    base = args.queries.absolute().parent
    queries = load_queries(args.queries)
    profile = profile_from_settings(settings)
    collection = corpus_collection_name(args.corpus, settings.profile, profile.info.describe())
    with Loupe(settings.model_copy(update={"collection": collection}), profile=profile) as lp:
        segs, vecs, qvecs, kinds = load_space(lp, queries, base, args.query_cache)
        model_id = lp.profile.info.model_ids[UNIFIED]
    fams = np.array([FAMILY_OF[s.modality] for s in segs])
    roads = [ROAD_OF[s.modality] for s in segs]
    places = [Place(os.path.relpath(s.source.uri, base), _locator(s)) for s in segs]
    kept = [q for q in queries if q.id in qvecs]
    rel = np.array([[any(matches(p, r) for r in q.relevant) for p in places] for q in kept])
    keep = [bool(row.any()) for row in rel]
    kept = [q for q, k in zip(kept, keep, strict=True) if k]
    rel = rel[np.array(keep)]
    qm = np.stack([qvecs[q.id] for q in kept])
    qkinds = [kinds[q.id] for q in kept]
    types = [q.modality for q in kept]
    if args.fit:
        if any("/eval/devset/" in s.source.uri for s in segs):
            raise ConfigError(f"collection {collection} holds dev-set files: fit on validation only")
        stats = fit(vecs, roads, qm, qkinds)
        stats["source"] = f"{args.queries} ({len(segs)} segments, {len(kept)} queries)"
        stats["model_id"] = model_id  # the space the statistics describe (the embedder checks it)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.fit.write_text(json.dumps(stats))
    else:
        stats = json.loads(args.stats.read_text())
    report: dict[str, Any] = {
        "collection": collection,
        "stats": stats.get("source"),
        "collection_share": {f: round(float(np.mean(fams == f)), 3) for f in FAMILIES},
        "spread": {k: {"rms": round(v["rms"], 4), "mean_norm": round(float(np.linalg.norm(v["mean"])), 4)}
                   for k, v in stats.items() if isinstance(v, dict) and "mean" in v},
        "raw": score(vecs, fams, qm, rel, types),
    }  # fmt: skip
    road_arr = np.array([r or "" for r in roads])

    def run(alphas: dict[str, float | None], levels: dict[str, float] | None = None) -> dict[str, Any]:
        moving = Recentring.from_json(stats, alphas, levels or {})
        moved = vecs.copy()
        for road in {r for r in roads if r is not None}:
            sel = road_arr == road
            moved[sel] = moving.apply(road, vecs[sel])
        qmoved = np.stack([moving.apply(QUERY_ROAD.get(k), v[None])[0] for v, k in zip(qm, qkinds, strict=True)])
        return score(moved, fams, qmoved, rel, types)

    for alpha in args.alphas:
        report[f"alpha={alpha}"] = run(dict.fromkeys(ROADS, alpha))
    spoken = np.array([k == "speech" for k in qkinds])
    for beta in args.deflate:
        # The spoken-query deflation (embedder/recentre.py), from these statistics' means.
        deflation = SpokenQueryDeflation.from_stats(stats, beta)
        qd = qm.copy()
        qd[spoken] = deflation.apply(qm[spoken])
        report[f"deflate={beta}"] = score(vecs, fams, qd, rel, types)
    if args.search:
        # Coordinate ascent over one alpha per road (None: the road is left as it is), on the macro mean over
        # query types of (R@1 + R@5) / 2; validation collections only (the search reads the labels).
        if any("/eval/devset/" in s.source.uri for s in segs):
            raise ConfigError(f"collection {collection} holds dev-set files: search on validation only")
        best: dict[str, float | None] = dict.fromkeys(ROADS, None)
        lv: dict[str, float] = {}
        best_score = objective(run(best))
        start = best_score
        for _ in range(2):
            for road in args.roads:
                for a in ALPHA_GRID:
                    trial = {**best, road: a}
                    got = objective(run(trial, lv))
                    if got > best_score + 1e-4:
                        best, best_score = trial, got
                if road == "speech_query" or best[road] is None:
                    continue
                for lam in LEVEL_GRID:
                    trial_lv = {**lv, road: lam}
                    got = objective(run(best, trial_lv))
                    if got > best_score + 1e-4:
                        lv, best_score = trial_lv, got
        lv = {k: v for k, v in lv.items() if v and best.get(k) is not None}
        report["search"] = {"alphas": best, "levels": lv, "objective_before": start, "objective_after": best_score}
        report["searched"] = run(best, lv)
        print("search:", json.dumps(report["search"]))
        if args.fit:
            stats["alphas"], stats["levels"] = best, lv
            args.fit.write_text(json.dumps(stats))
    elif "alphas" in stats:
        report["file_alphas"] = run(stats["alphas"], stats.get("levels"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    shown = ("raw", "searched", "file_alphas")
    for key in [k for k in report if k in shown or k.startswith(("alpha=", "deflate="))]:
        print(key, json.dumps({t: (v.get("R@1"), v["R@5"]) for t, v in report[key].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
