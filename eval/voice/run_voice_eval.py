"""Spoken queries → PDF pages and text files: native speech head vs ASR cascade vs the same queries typed.

``python eval/voice/run_voice_eval.py [--out docs/eval/voice-devset.json]`` (after make_voice_queries.py).
It ingests eval/devset/corpus/{pdf,text} into a collection of its own (offline profile, reused on a rerun) and
runs every spoken query of eval/voice/queries.jsonl three ways through the app's retrieval:

- ``native``: the recording → Whisper encoder + speech head → the e5 space, plus the soft tokens' e5 word-piece
  mass as a sparse stage (embedder/pieces.py) — the product's voice path; no transcript. ``native dense`` leaves
  the sparse stage out;
- ``cascade``: the recording → Whisper tiny.en decoder transcript → e5 query (+ BM25 on the transcript, as any
  typed query gets), the ASR baseline;
- ``typed``: the original typed query text (the ceiling).

Every mode is also scored dense-only (no BM25, no pieces) so that the embeddings are compared like for like. Latency is
audio file in → hits, per query, on this machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from loupe.app.config import load_settings  # noqa: E402
from loupe.app.retrieve import search  # noqa: E402
from loupe.app.service import Loupe, decode_query_audio  # noqa: E402
from loupe.embedder.bridge import offline_backends  # noqa: E402
from loupe.embedder.pieces import WordPieces  # noqa: E402
from loupe.embedder.profiles import EmbeddingProfile, Query  # noqa: E402
from loupe.embedder.speech import SpeechEncoder, SpeechRoutedEmbedder  # noqa: E402
from loupe.lab.evaluation.retrieval import EvalQuery, load_queries, run_queries  # noqa: E402


class PassageRoleSpeechEncoder(SpeechEncoder):
    """The speech encoder with its passage output used for queries too (for the --spoken-role comparison)."""

    def embed(self, items: Any, *, role: Any = "passage") -> Any:
        return super().embed(items, role="passage")


def groups(queries: list[EvalQuery], langs: dict[str, str]) -> dict[str, list[str]]:
    """Query ids per group: English spoken queries, and German/French/Spanish ones (cross-lingual)."""
    return {
        "en": [q.id for q in queries if langs[q.id] == "en"],
        "de/fr/es": [q.id for q in queries if langs[q.id] != "en"],
    }


def summarise(report: dict[str, Any], ids: list[str]) -> dict[str, Any]:
    """R@1/5/10 and MRR@10 over the rows of ``ids``."""
    from loupe.lab.evaluation.retrieval import summarize

    rows = [r for r in report["queries"] if r["id"] in ids]
    return summarize(rows)


def main() -> None:
    """Run the three modes and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queries", type=Path, default=HERE / "queries.jsonl")
    ap.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "loupe" / "voice-eval")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "eval" / "voice-devset.json")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--ingest-only", action="store_true", help="only build the corpus collection")
    ap.add_argument("--modes", nargs="+", default=["native", "cascade", "typed"], help="which modes to run")
    ap.add_argument(
        "--spoken-role",
        choices=["query", "passage"],
        default="query",
        help="head output for spoken queries (the product uses query; passage is the measured alternative)",
    )
    args = ap.parse_args()

    raw = {d["id"]: d for d in map(json.loads, args.queries.read_text(encoding="utf-8").splitlines()) if d}
    queries = load_queries(args.queries)
    langs = {qid: d["lang"] for qid, d in raw.items()}
    settings = load_settings(data_dir=str(args.data_dir), collection="voice-devset-pieces")
    corpus = ROOT / "eval" / "devset" / "corpus"
    results: dict[str, Any] = {}
    # The corpus is text and PDF only, whose vectors do not depend on the speech head: it is indexed under the
    # bridge-only offline profile, so that retraining the head does not force a re-ingest; queries are embedded
    # with the full offline profile (bridge + speech routing).
    unified, extra = offline_backends()
    speech = SpeechEncoder() if args.spoken_role == "query" else PassageRoleSpeechEncoder()
    pieces = WordPieces(speech)
    # The stored word-piece vectors depend on e5's vocabulary only, not on the head (embedder/pieces.py).
    text_profile = EmbeddingProfile("offline", unified, extra=dict(extra), pieces=pieces)
    with Loupe(settings, profile=text_profile) as lp:
        t = time.time()
        ingest = lp.ingest([corpus / "pdf", corpus / "text"], prune=True, show_progress=False)
        print(f"ingest: {ingest.summary()} in {time.time() - t:.0f} s")
        if args.ingest_only:
            return
        profile = EmbeddingProfile("offline", SpeechRoutedEmbedder(unified, speech), extra=dict(extra), pieces=pieces)
        idx = lp.index()
        transcripts: dict[str, str] = {}
        asr_s: list[float] = []

        def run(q: EvalQuery, base: Path, mode: str, hybrid: bool) -> list[tuple[str, Any, float]]:
            if mode == "native":
                query = Query(audio=decode_query_audio(str(base / (q.audio or ""))))
            elif mode == "cascade":
                if q.id not in transcripts:
                    t0 = time.perf_counter()
                    audio = decode_query_audio(str(base / (q.audio or "")))
                    transcripts[q.id] = speech.encoder.transcribe([audio.samples])[0]
                    asr_s.append(time.perf_counter() - t0)
                query = Query(text=transcripts[q.id])
            else:
                query = Query(text=raw[q.id]["typed_text"])
            hits = search(idx, profile, query, k=args.k, hybrid=hybrid)
            return [(h.segment.source.uri, h.locator_json, h.score) for h in hits]

        for mode, hybrid in (("native", True), ("native", False), ("cascade", True), ("cascade", False),
                             ("typed", True), ("typed", False)):  # fmt: skip
            if mode not in args.modes:
                continue
            keyword = " +pieces" if mode == "native" else " +bm25"
            name = f"{mode}{keyword if hybrid else ' dense'}"
            rep = run_queries(queries, HERE, functools.partial(run, mode=mode, hybrid=hybrid), k=args.k)
            results[name] = {
                "all": rep["overall"],
                **{g: summarise(rep, ids) for g, ids in groups(queries, langs).items()},
                "latency_ms": rep["latency_ms"],
                "ranks": {r["id"]: r["rank"] for r in rep["queries"]},
            }
            print(name, json.dumps({k: v for k, v in results[name].items() if k != "ranks"}))
    out = {
        "spoken_role": args.spoken_role,
        "what": "spoken dev-set queries (espeak-ng, held-out voices and sentences) -> pdf_page/text, offline profile",
        "queries": str(args.queries.relative_to(ROOT)),
        "n": len(queries),
        "models": profile.info.model_ids,
        "results": results,
        "asr_transcribe_s_p50": round(statistics.median(asr_s), 3) if asr_s else None,
        "transcripts": transcripts,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
