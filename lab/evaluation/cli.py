"""``loupe eval``: score retrieval on labelled queries (R@k, MRR, nDCG per query type), optionally the answers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from loupe.app.cli import Handler, add_common_options, settings_from_args
from loupe.app.service import Loupe
from loupe.embedder.profiles import profile_from_settings
from loupe.errors import ConfigError
from loupe.lab.evaluation.retrieval import (
    check_places,
    corpus_collection_name,
    crowding,
    format_crowding,
    format_table,
    load_queries,
    run_queries,
)


def register(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add ``loupe eval`` to the CLI (the ``loupe.commands`` entry point)."""
    p = sub.add_parser("eval", help="score retrieval on labelled queries (R@k, MRR, nDCG per modality)")
    add_common_options(p)
    p.add_argument("--queries", required=True, help="queries JSONL (paths inside are relative to its folder)")
    p.add_argument("--corpus", required=True, help="folder to ingest (reused when unchanged)")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--answers", action="store_true", help="also answer each query: citation support, answer terms, first token"
    )
    p.add_argument(
        "--calibration",
        action="store_true",
        help="merge modality families by calibrated scores (experimental, app/calibration.py; default: cosine)",
    )
    p.add_argument("--generator", help="generator for --answers (default: the settings' generator)")
    p.add_argument("--generator-model", help="model name, .gguf file or VLM folder for --answers")

    return {"eval": cmd_eval}


def _calibration_source(lp: Loupe) -> str:
    """Which modality calibration the search used (app/calibration.py), in words."""
    return "per-family statistics of the searched collection (app/calibration.collection_calibration)"


def cmd_eval(args: argparse.Namespace) -> int:
    """Run ``loupe eval``: ingest the corpus (reused when unchanged), run the queries, print and write the report."""
    queries = load_queries(args.queries)
    problems = check_places(queries, Path(args.queries).absolute().parent)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigError(f"queries file {args.queries}: " + "; ".join(problems[:5]) + more)
    corpus = Path(args.corpus)
    if not corpus.is_dir():
        raise ConfigError(f"corpus folder {corpus} does not exist")
    settings = settings_from_args(args)
    if args.generator or args.generator_model:
        gen = {"generator": args.generator, "generator_model": args.generator_model}
        settings = settings.model_copy(update={k: v for k, v in gen.items() if v})
    if not args.collection:
        # The name hashes the corpus folder and the profile's models, so a changed profile gets a new collection.
        space = profile_from_settings(settings).info.describe()
        settings = settings.model_copy(update={"collection": corpus_collection_name(corpus, settings.profile, space)})
    with Loupe(settings) as lp:
        ingest_report = lp.ingest([corpus], prune=True, show_progress=sys.stderr.isatty())
        if ingest_report.has_failures:
            failed = [f for f in ingest_report.files if f.status == "failed"]
            print(f"warning: {len(failed)} corpus files failed to ingest, e.g. {failed[0].path}: {failed[0].reason}")

        def search(q: Any, base: Path) -> list[tuple[Any, ...]]:
            image = str(base / q.image) if q.image else None
            audio = str(base / q.audio) if q.audio else None
            hits = lp.search(q.text, image=image, audio=audio, k=args.k, calibrated=args.calibration)
            return [(h.segment.source.uri, h.locator_json, h.score, h.segment.modality) for h in hits]

        report = run_queries(queries, Path(args.queries).absolute().parent, search, k=args.k)
        per_modality = lp.index().stats()["per_modality"]
        report = {
            "profile": lp.profile.info.name,
            "models": lp.profile.info.model_ids,
            "collection": settings.collection,
            "calibration": _calibration_source(lp) if args.calibration else "off",
            "ingest": ingest_report.summary(),
            "collection_modalities": per_modality,
            **report,
            "crowding": crowding(report["queries"], per_modality),
        }
        if args.answers:
            from loupe.lab.evaluation.answers import evaluate_answers, expected_terms, format_answers

            base = Path(args.queries).absolute().parent
            report["answers"] = evaluate_answers(lp, queries, expected_terms(args.queries), base, k=5)
    print(format_table(report))
    print(format_crowding(report["crowding"]))
    if args.answers:
        print(format_answers(report["answers"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"report: {args.out}")
    return 0
