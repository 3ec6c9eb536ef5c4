"""Answer evaluation: for labelled questions, retrieval R@k of the hits an answer is drawn from, the share of
answers whose citations all point to supporting places, the share containing the expected answer terms, and
the generator's time to first token.

Questions use the ``loupe eval`` queries format plus ``answer_contains``: lower-case strings a right answer
contains (``eval/devset/questions.jsonl``).

>>> report = evaluate_answers(lp, load_queries(path), expected_terms(path), base)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loupe.app.generate import Answer, AnswerStream
from loupe.app.service import Loupe
from loupe.errors import ConfigError
from loupe.lab.evaluation.retrieval import EvalQuery, Place, first_relevant_rank, matches
from loupe.types import Hit


def expected_terms(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """``answer_contains`` per question id (empty where a question has none)."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        d = json.loads(line)
        terms = d.get("answer_contains") or []
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise ConfigError(f"{path}:{n}: answer_contains must be a list of strings")
        out[str(d.get("id") or f"line-{n}")] = [t.lower() for t in terms]
    return out


def _place(hit: Hit, base: Path) -> Place:
    return Place(os.path.relpath(hit.segment.source.uri, base), hit.locator_json)


def score_answer(answer: Answer, hits: Sequence[Hit], q: EvalQuery, base: Path, terms: Sequence[str]) -> dict[str, Any]:
    """Citation support and answer-term checks for one answer."""
    cited = [_place(c.hit, base) for c in answer.citations]
    supported = [any(matches(p, r) for r in q.relevant) for p in cited]
    text = answer.text.lower()
    return {
        "cited": [c.n for c in answer.citations],
        "all_citations_supporting": bool(cited) and all(supported),
        "any_citation_supporting": any(supported),
        "contains_answer": bool(terms) and all(t in text for t in terms),
        "flags": list(answer.flags),
        "mode": answer.mode,
    }


def _share(rows: Sequence[dict[str, Any]], key: str) -> float:
    return round(sum(1 for r in rows if r[key]) / len(rows), 4) if rows else 0.0


def _pct(values: Sequence[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, math.ceil(p * len(v)) - 1)], 3)


def evaluate_answers(
    lp: Loupe, queries: Sequence[EvalQuery], terms: Mapping[str, Sequence[str]], base: Path, *, k: int = 5
) -> dict[str, Any]:
    """Ask every question (retrieve ``k`` hits, generate with the configured generator) and score it.

    The extractive answer over the same hits is scored alongside, as the baseline every generator must beat.
    """
    rows: list[dict[str, Any]] = []
    for q in queries:
        t0 = time.perf_counter()
        stream = lp.ask_stream(q.text or "", k=k)
        pieces = sum(1 for _ in stream)
        total = time.perf_counter() - t0
        answer = stream.answer
        rank = first_relevant_rank([_place(h, base) for h in stream.hits], q)
        extractive = AnswerStream(q.text or "", stream.hits, None).answer
        rows.append(
            {
                "id": q.id,
                "question": q.text,
                "rank": rank,
                "answer": answer.text,
                **score_answer(answer, stream.hits, q, base, terms.get(q.id, ())),
                "extractive": score_answer(extractive, stream.hits, q, base, terms.get(q.id, ())),
                "ttft_s": round(stream.ttft_s, 3) if stream.ttft_s is not None else None,
                "pieces": pieces,
                "total_s": round(total, 3),
            }
        )
    ttft = [r["ttft_s"] for r in rows if r["ttft_s"] is not None and r["mode"] == "generated"]
    gen = [r for r in rows if r["mode"] == "generated"]
    rates = [r["pieces"] / (r["total_s"] - r["ttft_s"]) for r in gen if r["pieces"] > 1 and r["total_s"] > r["ttft_s"]]
    flags = Counter(f for r in rows for f in r["flags"])
    ex_rows = [r["extractive"] for r in rows]
    return {
        "generator": lp.llm.model_label() if lp.llm is not None else "extractive",
        "n": len(rows),
        f"R@{k}": _share([{"x": r["rank"] is not None and r["rank"] <= k} for r in rows], "x"),
        "answers": {
            "all_citations_supporting": _share(rows, "all_citations_supporting"),
            "any_citation_supporting": _share(rows, "any_citation_supporting"),
            "contains_answer": _share(rows, "contains_answer"),
            "generated": len(gen),
            "flags": dict(flags),
        },
        "extractive_baseline": {
            "all_citations_supporting": _share(ex_rows, "all_citations_supporting"),
            "any_citation_supporting": _share(ex_rows, "any_citation_supporting"),
            "contains_answer": _share(ex_rows, "contains_answer"),
        },
        "ttft_s": {"p50": round(statistics.median(ttft), 3) if ttft else None, "p95": _pct(ttft, 0.95)},
        "pieces_per_s_p50": round(statistics.median(rates), 1) if rates else None,
        "questions": rows,
    }


def format_answers(report: Mapping[str, Any]) -> str:
    """A few plain lines for the terminal."""
    a, x, t = report["answers"], report["extractive_baseline"], report["ttft_s"]
    k_key = next(key for key in report if key.startswith("R@"))
    return "\n".join(
        [
            f"generator {report['generator']}: {report['n']} questions, retrieval {k_key} {report[k_key]}",
            f"answers: all citations supporting {a['all_citations_supporting']}, any supporting "
            f"{a['any_citation_supporting']}, contains the answer {a['contains_answer']}, flags {a['flags']}",
            f"extractive baseline: all citations supporting {x['all_citations_supporting']}, any supporting "
            f"{x['any_citation_supporting']}, contains the answer {x['contains_answer']}",
            f"time to first token p50 {t['p50']} s, p95 {t['p95']} s; ~{report['pieces_per_s_p50']} tokens/s",
        ]
    )
