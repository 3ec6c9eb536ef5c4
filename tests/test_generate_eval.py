"""``loupe eval --answers`` scoring: retrieval R@5 of an answer's hits, citation support, answer terms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loupe.app.config import load_settings
from loupe.app.service import Loupe
from loupe.errors import ConfigError
from loupe.lab.evaluation.answers import evaluate_answers, expected_terms, format_answers
from loupe.lab.evaluation.retrieval import load_queries


def write_questions(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_answers_are_scored_against_supporting_places(corpus: Path, data_dir: Path, tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {
            "id": "cranes",
            "query_text": "How many ship-to-shore cranes does the container terminal operate?",
            "target_file": "corpus/report.pdf",
            "target_locator": 3,
            "modality": "text->pdf_page",
            "answer_contains": ["six"],
        },
        {
            "id": "ferry",
            "query_text": "Where can ferry tickets be bought?",
            "target_file": "corpus/faq.html",
            "modality": "text->text",
            "answer_contains": ["kiosk"],
        },
        {
            "id": "wrong-place",
            "query_text": "Where can ferry tickets be bought?",
            "target_file": "corpus/minutes.txt",
            "modality": "text->text",
            "answer_contains": ["submarine"],
        },
    ]
    qfile = write_questions(tmp_path / "questions.jsonl", rows)
    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        lp.ingest([corpus])
        report = evaluate_answers(lp, load_queries(qfile), expected_terms(qfile), tmp_path, k=5)
    by_id = {q["id"]: q for q in report["questions"]}
    assert report["generator"] == "extractive" and report["n"] == 3
    assert by_id["cranes"]["rank"] == 1 and by_id["cranes"]["contains_answer"]
    assert by_id["cranes"]["any_citation_supporting"] and by_id["ferry"]["any_citation_supporting"]
    assert not by_id["wrong-place"]["contains_answer"]
    # The extractive answer cites its top three hits, so "all citations supporting" is strict for it.
    assert report["answers"]["contains_answer"] == pytest.approx(2 / 3, abs=1e-3)
    assert report["R@5"] >= 2 / 3 - 1e-3 and report["ttft_s"]["p50"] is None  # no generator: no token timing
    assert "extractive" in format_answers(report)


def test_expected_terms_must_be_a_list_of_strings(tmp_path: Path) -> None:
    good = write_questions(tmp_path / "q.jsonl", [{"id": "a", "answer_contains": ["Six"]}, {"id": "b"}])
    assert expected_terms(good) == {"a": ["six"], "b": []}
    bad = write_questions(tmp_path / "bad.jsonl", [{"id": "a", "answer_contains": "six"}])
    with pytest.raises(ConfigError, match="answer_contains"):
        expected_terms(bad)
