"""Spoken vs typed vs ASR cascade on the mixed dev collection, with and without the modality calibration.

``python eval/modality/run_spoken_eval.py --data-dir /tmp/wt21-dev --out docs/eval/spoken-mixed-devset.json``
(after ``loupe eval`` has ingested eval/devset/corpus into that data dir; the collection is reused, nothing is
ingested here). Queries: eval/modality/spoken-devset.jsonl (make_spoken_devset.py). Modes, each through the
product's search over the one collection holding every modality:

- ``native``: the recording → speech head (+ its word-piece stage) — the product's voice path;
- ``cascade``: the recording → Whisper tiny.en decoder transcript → a typed query (e5 + BM25), the ASR baseline;
- ``typed``: the same words typed.

Each mode runs with the calibrated per-family search (app/calibration.py) and with the raw cosine ranking
(``calibrated=False``, the search before issue 21), side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from loupe.app.config import load_settings  # noqa: E402
from loupe.app.service import Loupe, decode_query_audio  # noqa: E402
from loupe.embedder.profiles import profile_from_settings  # noqa: E402
from loupe.lab.evaluation.retrieval import (  # noqa: E402
    EvalQuery,
    corpus_collection_name,
    crowding,
    load_queries,
    run_queries,
    summarize,
)


def english(q: EvalQuery) -> bool:
    """The dev set marks German, French and Spanish queries in their id (img-de-01)."""
    return not any(f"-{lang}-" in q.id for lang in ("de", "fr", "es"))


def main() -> None:
    """Run native / cascade / typed, calibrated and raw, and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=Path, default=HERE / "spoken-devset.jsonl")
    ap.add_argument("--corpus", type=Path, default=ROOT / "eval" / "devset" / "corpus")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--k", type=int, default=10)
    modes = ["native", "cascade", "typed"]
    ap.add_argument("--modes", nargs="+", choices=modes, default=modes)
    ap.add_argument("--rankings", nargs="+", choices=("calibrated", "raw"), default=["calibrated", "raw"])
    args = ap.parse_args()
    settings = load_settings(data_dir=str(args.data_dir))
    profile = profile_from_settings(settings)
    collection = corpus_collection_name(args.corpus, settings.profile, profile.info.describe())
    settings = settings.model_copy(update={"collection": collection})
    queries = load_queries(args.queries)
    spoken = [q for q in queries if q.modality.startswith("speech->")]
    typed = [q for q in queries if q.modality.startswith("typed->")]
    transcripts: dict[str, str] = {}
    results: dict[str, Any] = {}
    with Loupe(settings, profile=profile) as lp:
        per_modality = lp.index().stats()["per_modality"]
        speech = getattr(lp.profile.unified, "speech", None)
        for q in spoken if "cascade" in args.modes else []:
            audio = decode_query_audio(str(HERE / (q.audio or "")))
            transcripts[q.id] = speech.encoder.transcribe([audio.samples])[0] if speech is not None else ""

        def runner(mode: str, calibrated: bool) -> Any:
            def run(q: EvalQuery, base: Path) -> list[tuple[Any, ...]]:
                if mode == "native":
                    hits = lp.search(None, audio=str(base / (q.audio or "")), k=args.k, calibrated=calibrated)
                elif mode == "cascade":
                    hits = lp.search(transcripts[q.id] or None, k=args.k, calibrated=calibrated)
                else:
                    hits = lp.search(q.text, k=args.k, calibrated=calibrated)
                return [(h.segment.source.uri, h.locator_json, h.score, h.segment.modality) for h in hits]

            return run

        for calibrated in [r == "calibrated" for r in args.rankings]:
            for mode, qs in (("native", spoken), ("cascade", spoken), ("typed", typed)):
                if mode not in args.modes:
                    continue
                t0 = time.time()
                rep = run_queries(qs, HERE, runner(mode, calibrated), k=args.k)
                name = f"{mode} {'calibrated' if calibrated else 'raw cosine'}"
                per = {m.split("->")[1]: v for m, v in rep["per_modality"].items()}
                results[name] = {
                    "overall": rep["overall"],
                    "per_target": per,
                    "english": summarize([r for r, q in zip(rep["queries"], qs, strict=True) if english(q)]),
                    "crowding": crowding(rep["queries"], per_modality),
                    "latency_ms": rep["latency_ms"],
                    "ranks": {r["id"]: r["rank"] for r in rep["queries"]},
                    "seconds": round(time.time() - t0, 1),
                }
                print(name, json.dumps({"all": rep["overall"]["R@5"], **{t: v.get("R@5") for t, v in per.items()}}))
    out = {
        "what": "spoken twins of the dev set's typed queries on the mixed dev collection (offline profile)",
        "queries": str(args.queries.relative_to(ROOT)) if args.queries.is_relative_to(ROOT) else str(args.queries),
        "collection": collection,
        "collection_modalities": per_modality,
        "models": profile.info.model_ids,
        "results": results,
        "transcripts": transcripts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
