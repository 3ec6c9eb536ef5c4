"""The modality gap, measured on an ingested collection with labelled queries (issue 21).

``python -m loupe.lab.evaluation.gap --queries Q.jsonl --corpus DIR --data-dir D --out docs/eval/X.json``
(the collection ``loupe eval`` built for that corpus; nothing is ingested here). It reports:

- per modality family (app/calibration.py: text, image, video, audio, speech): how many vectors, the norm of
  their mean (1 = all the same direction, 0 = spread around the origin) and the cosine between family means;
- per (query kind → target family): the cosine of each query with its matching item (the best-scoring relevant
  segment) against the cosines with non-matching items of every family, raw and after the calibration's
  z-scores, and how often a plain dense ranking over all segments puts the match in the top 5 (raw vs
  calibrated; segments, not grouped places, so it is a measure of the space, not of the product's R@5).

``--fit PATH`` fits the per-family statistics (app/calibration.ModalityCalibration) on this collection and writes
them; it refuses a collection holding dev-set files (the dev set is reported, never tuned on).
``--calibration PATH`` scores with a given calibration file (default: the collection's own statistics, as the
search uses them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from loupe.app.calibration import (
    FAMILIES,
    FAMILY_OF,
    ModalityCalibration,
    calibration_file,
    collection_calibration,
    query_kind,
)
from loupe.app.config import load_settings
from loupe.app.service import Loupe, decode_query_audio
from loupe.embedder.profiles import UNIFIED, Query, profile_from_settings
from loupe.errors import ConfigError
from loupe.lab.evaluation.retrieval import EvalQuery, Place, corpus_collection_name, load_queries, matches
from loupe.types import PageLoc, Segment, TimeLoc

# A text query's target modality as the queries file writes it → the family that holds it.
TARGET_FAMILY = {"pdf_page": "text", "text": "text", "image": "image", "video_moment": "video", "audio": "audio"}


def _locator(seg: Segment) -> Any:
    loc = seg.locator
    if isinstance(loc, PageLoc):
        return loc.page
    if isinstance(loc, TimeLoc):
        return [loc.start_s, loc.end_s]
    return None


def family_summary(vecs: np.ndarray, fams: np.ndarray) -> dict[str, Any]:
    """Count and mean-vector norm per family, and the cosine between family means."""
    means: dict[str, np.ndarray] = {}
    out: dict[str, Any] = {"families": {}, "mean_cosines": {}}
    for f in FAMILIES:
        x = vecs[fams == f]
        if not len(x):
            continue
        m = x.mean(axis=0)
        means[f] = m
        c = x - m
        var = np.linalg.eigvalsh(c.T @ c / max(len(x) - 1, 1))[::-1]
        out["families"][f] = {
            "count": len(x),
            "mean_norm": round(float(np.linalg.norm(m)), 4),
            "mean_pairwise_cos": round(float((np.sum(x @ x.T) - len(x)) / max(len(x) * (len(x) - 1), 1)), 4),
            "variance_in_top_48": round(float(var[:48].sum() / max(var.sum(), 1e-12)), 4),
        }
    for a in means:
        for b in means:
            if a < b:
                cos = float(means[a] @ means[b] / (np.linalg.norm(means[a]) * np.linalg.norm(means[b])))
                out["mean_cosines"][f"{a}~{b}"] = round(cos, 4)
    return out


def pair_scores(
    queries: list[EvalQuery],
    qvecs: dict[str, np.ndarray],
    kinds: dict[str, str],
    segs: list[Segment],
    vecs: np.ndarray,
    fams: np.ndarray,
    base: Path,
    cal: ModalityCalibration | None,
) -> dict[str, Any]:
    """Matching vs non-matching cosines (and z-scores) per (query kind → target family)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    places = [Place(os.path.relpath(s.source.uri, base), _locator(s)) for s in segs]
    for q in queries:
        if q.id not in qvecs:
            continue
        qv = qvecs[q.id]
        cos = vecs @ qv
        rel = np.array([any(matches(p, r) for r in q.relevant) for p in places])
        if not rel.any():
            continue
        z = cos.copy()
        if cal is not None:
            for f in FAMILIES:
                sel = fams == f
                if sel.any():
                    z[sel] = cal.z(kinds[q.id], f, qv, cos[sel])
        best = int(np.argmax(np.where(rel, cos, -np.inf)))
        fam = str(fams[best])
        row: dict[str, Any] = {
            "match_cos": float(cos[best]),
            "match_z": float(z[best]),
            "rank_raw": int(np.sum(~rel & (cos > cos[best]))) + 1,
            "rank_cal": int(np.sum(~rel & (z > z[best]))) + 1,
            "nonmatch": {},
        }
        for f in FAMILIES:
            sel = (fams == f) & ~rel
            if sel.any():
                row["nonmatch"][f] = {
                    "cos_mean": float(cos[sel].mean()),
                    "cos_max": float(cos[sel].max()),
                    "z_mean": float(z[sel].mean()),
                    "z_max": float(z[sel].max()),
                    "above_raw": int(np.sum(cos[sel] > cos[best])),
                    "above_cal": int(np.sum(z[sel] > z[best])),
                }
        rows.setdefault(f"{kinds[q.id]}->{fam}", []).append(row)
    out: dict[str, Any] = {}
    for key, rs in sorted(rows.items()):
        agg: dict[str, Any] = {
            "n": len(rs),
            "match_cos_mean": round(float(np.mean([r["match_cos"] for r in rs])), 4),
            "match_z_mean": round(float(np.mean([r["match_z"] for r in rs])), 3),
            "dense_R@5_raw": round(float(np.mean([r["rank_raw"] <= 5 for r in rs])), 4),
            "dense_R@5_calibrated": round(float(np.mean([r["rank_cal"] <= 5 for r in rs])), 4),
            "nonmatch": {},
        }
        for f in FAMILIES:
            per = [r["nonmatch"][f] for r in rs if f in r["nonmatch"]]
            if per:
                agg["nonmatch"][f] = {
                    k: round(float(np.mean([p[k] for p in per])), 4 if k.startswith("cos") else 3) for k in per[0]
                }
        out[key] = agg
    return out


OFFSET_GRID = tuple(round(x, 2) for x in np.arange(-2.0, 2.01, 0.25))


def fit_offsets(
    z0: np.ndarray, rel: np.ndarray, fams: np.ndarray, kinds: list[str], pairs: list[str], passes: int = 3
) -> tuple[dict[str, float], float, float]:
    """Offsets per (query kind, family), in z units, that raise the macro MRR@10 over query pair types
    (dense, segment level) by coordinate ascent over OFFSET_GRID; the text family is the reference (offset 0).
    Returns the offsets and the objective before and after. ``z0``: queries × segments z-scores without offsets;
    ``rel``: which segments count for each query; ``pairs``: each query's "kind->family" type."""
    fam_idx = {f: fams == f for f in FAMILIES}
    kind_rows = {k: np.array([kk == k for kk in kinds]) for k in sorted(set(kinds))}
    pair_rows = {p: np.array([pp == p for pp in pairs]) for p in sorted(set(pairs))}
    offsets: dict[str, float] = {}

    def objective(offs: dict[str, float]) -> float:
        z = z0.copy()
        for key, o in offs.items():
            k, f = key.split(">")
            if k in kind_rows and o:
                z[np.ix_(kind_rows[k], fam_idx[f])] += o
        best = np.where(rel, z, -np.inf).max(axis=1)
        rank = (np.where(rel, -np.inf, z) > best[:, None]).sum(axis=1) + 1
        rr = np.where(rank <= 10, 1.0 / rank, 0.0)
        return float(np.mean([rr[rows].mean() for rows in pair_rows.values()]))

    start = best_score = objective(offsets)
    for _ in range(passes):
        for k in kind_rows:
            for f in FAMILIES:
                if f == "text" or not fam_idx[f].any():
                    continue
                key = f"{k}>{f}"
                for o in OFFSET_GRID:
                    trial = {**offsets, key: float(o)}
                    score = objective(trial)
                    if score > best_score + 1e-4:
                        best_score, offsets = score, trial
    return {k: v for k, v in offsets.items() if v}, start, best_score


def load_space(
    lp: Loupe, queries: list[EvalQuery], base: Path, cache: Path | None = None
) -> tuple[list[Segment], np.ndarray, dict[str, np.ndarray], dict[str, str]]:
    """An open collection's segments with their unit ``unified`` vectors, and each query's unified vector and
    calibration kind (``cache``: an .npz that keeps the query vectors between runs of the same model id)."""
    idx = lp.index()
    segs: list[Segment] = []
    rows: list[np.ndarray] = []
    for seg, v in idx.iter_vectors(UNIFIED):
        segs.append(seg)
        rows.append(v)
    vecs = np.stack(rows).astype(np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    # Query-side transforms (the spoken-query deflation) leave the stored model id as it is: the cache key has both.
    model_id = lp.profile.info.model_ids[UNIFIED] + str(getattr(lp.profile.unified, "query_side", ""))
    qvecs: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    if cache is not None and cache.is_file():
        with np.load(cache) as zc:
            if str(zc["model_id"]) == model_id:
                for qid, kind, v in zip(zc["ids"], zc["kinds"], zc["vectors"], strict=True):
                    qvecs[str(qid)], kinds[str(qid)] = v, str(kind)
    for q in queries:
        if q.id in qvecs:
            continue
        audio = decode_query_audio(str(base / q.audio)) if q.audio else None
        query = Query(text=q.text if not q.audio else None, image=str(base / q.image) if q.image else None, audio=audio)
        vs = [v for v in lp.profile.embed_query(query) if v.using == UNIFIED]
        if not vs:
            continue
        qvecs[q.id] = np.asarray(vs[0].vector, dtype=np.float32)
        kinds[q.id] = query_kind(vs[0].part, bool(audio is not None and audio.speech))
    if cache is not None and qvecs:
        ids = sorted(qvecs)
        np.savez(cache, model_id=model_id, ids=ids, kinds=[kinds[i] for i in ids], vectors=[qvecs[i] for i in ids])
    return segs, vecs, qvecs, kinds


def main(argv: list[str] | None = None) -> int:
    """Measure (and optionally fit) on one ingested collection."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, required=True, help="the corpus folder `loupe eval` ingested")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--fit", type=Path, help="fit the per-family calibration here (validation collections only)")
    ap.add_argument("--calibration", type=Path, help="score with this calibration file")
    ap.add_argument("--query-cache", type=Path, help="keep the queries' vectors here (.npz) for reruns")
    args = ap.parse_args(argv)
    settings = load_settings(data_dir=str(args.data_dir))
    base = args.queries.absolute().parent
    queries = load_queries(args.queries)
    profile = profile_from_settings(settings)
    collection = corpus_collection_name(args.corpus, settings.profile, profile.info.describe())
    settings = settings.model_copy(update={"collection": collection})
    t0 = time.time()
    with Loupe(settings, profile=profile) as lp:
        idx = lp.index()
        segs, vecs, qvecs, kinds = load_space(lp, queries, base, args.query_cache)
        fams = np.array([FAMILY_OF[s.modality] for s in segs])
        model_id = lp.profile.info.model_ids[UNIFIED]
        cal: ModalityCalibration | None
        if args.fit:
            if any("/eval/devset/" in s.source.uri for s in segs):
                raise ConfigError(f"collection {collection} holds dev-set files: fit calibrations on validation only")
            cal = ModalityCalibration.fit(
                model_id, {f: vecs[fams == f] for f in FAMILIES}, source=f"{args.queries} ({len(segs)} segments)"
            )
            cal.save(args.fit)
            print(f"calibration: {args.fit} (shipped name would be {calibration_file(model_id).name})")
        elif args.calibration:
            cal = ModalityCalibration.load(args.calibration)
        else:
            cal = collection_calibration(idx, model_id)
        fitted_offsets = None
        if args.fit and cal is not None:
            ids = [q.id for q in queries if q.id in qvecs]
            qm = np.stack([qvecs[i] for i in ids])
            cos = qm @ vecs.T
            z0 = cos.copy()
            for f in FAMILIES:
                sel = fams == f
                for r, i in enumerate(ids):
                    if sel.any():
                        z0[r, sel] = cal.z(kinds[i], f, qvecs[i], cos[r, sel])
            places = [Place(os.path.relpath(s.source.uri, base), _locator(s)) for s in segs]
            by_id = {q.id: q for q in queries}
            rel = np.array([[any(matches(p, r) for r in by_id[i].relevant) for p in places] for i in ids])
            keep: list[bool] = [bool(row.any()) for row in rel]
            kinds_kept = [kinds[i] for i, k in zip(ids, keep, strict=True) if k]
            best = np.where(rel, cos, -np.inf).argmax(axis=1)
            pairs = [f"{kinds[i]}->{fams[b]}" for i, b, k in zip(ids, best.tolist(), keep, strict=True) if k]
            offs, before, after = fit_offsets(z0[np.array(keep)], rel[np.array(keep)], fams, kinds_kept, pairs)
            cal = cal.with_offsets(offs)
            cal.save(args.fit)
            fitted_offsets = {
                "offsets": offs,
                "macro_mrr10_before": round(before, 4),
                "macro_mrr10_after": round(after, 4),
            }
            print("offsets:", json.dumps(fitted_offsets))
        report = {
            "what": "modality gap: family means and matching vs non-matching cosines per (query kind -> family)",
            "queries": str(args.queries),
            "collection": collection,
            "model_id": model_id,
            "calibration": cal.source if cal is not None else None,
            "segments": len(segs),
            **family_summary(vecs, fams),
            "pairs": pair_scores(queries, qvecs, kinds, segs, vecs, fams, base, cal),
            "fitted_offsets": fitted_offsets,
            "seconds": round(time.time() - t0, 1),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("families", "mean_cosines")}, indent=1))
    for key, agg in report["pairs"].items():
        print(key, {k: v for k, v in agg.items() if k != "nonmatch"})
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
