"""Scoring rules of ``loupe eval`` on hand-made rankings, and the command end to end (fake profile)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loupe.app.cli import main
from loupe.errors import ConfigError, EmbedError
from loupe.lab.evaluation.retrieval import (
    EvalQuery,
    Place,
    first_relevant_rank,
    load_queries,
    matches,
    ndcg_at,
    run_queries,
)

PDF = EvalQuery("q1", "text->pdf_page", Place("corpus/a.pdf", 3), text="x")
VID = EvalQuery("q2", "text->video_moment", Place("corpus/v.mp4", [30.0, 36.5]), text="x")
IMG = EvalQuery("q3", "text->image", Place("corpus/i.png"), text="x", also_relevant=(Place("corpus/j.png"),))


def test_page_must_match_exactly() -> None:
    assert matches(Place("corpus/a.pdf", 3), PDF.target)
    assert matches(Place("./corpus/a.pdf", 3), PDF.target)  # normalised paths
    assert not matches(Place("corpus/a.pdf", 4), PDF.target)
    assert not matches(Place("corpus/b.pdf", 3), PDF.target)
    assert first_relevant_rank([Place("corpus/a.pdf", 2), Place("corpus/a.pdf", 3)], PDF) == 2


def test_time_overlap_with_one_second_slack() -> None:
    assert matches(Place("corpus/v.mp4", [36.0, 40.0]), VID.target)
    assert matches(Place("corpus/v.mp4", [37.4, 45.0]), VID.target)  # starts within 1 s after the end
    assert not matches(Place("corpus/v.mp4", [37.6, 45.0]), VID.target)
    assert matches(Place("corpus/v.mp4", [20.0, 29.1]), VID.target)  # ends within 1 s before the start
    assert not matches(Place("corpus/v.mp4", [20.0, 28.9]), VID.target)
    assert not matches(Place("corpus/v.mp4", None), VID.target)


def test_also_relevant_and_grouping() -> None:
    hits = [Place("corpus/z.png"), Place("corpus/z.png"), Place("corpus/j.png"), Place("corpus/i.png")]
    # Duplicate places collapse: j.png is at distinct rank 2 and counts through also_relevant.
    assert first_relevant_rank(hits, IMG) == 2
    # nDCG: relevant at distinct ranks 2 and 3, ideal at 1 and 2.
    expected = (1 / 1.584962500721156 + 1 / 2.0) / (1 + 1 / 1.584962500721156)
    assert ndcg_at(hits, IMG) == pytest.approx(expected)
    assert ndcg_at([Place("corpus/i.png")], IMG) == pytest.approx(1 / (1 + 1 / 1.584962500721156))
    assert first_relevant_rank([Place("corpus/z.png")], IMG) is None


def test_metrics_and_unsupported_queries_are_reported(tmp_path: Path) -> None:
    audio_q = EvalQuery("q4", "speech->text", Place("corpus/t.txt"), audio="x.wav")
    rankings = {
        "q1": [("corpus/a.pdf", 3)],
        "q2": [("corpus/x.mp4", [0.0, 1.0])] * 3,
        "q3": [("corpus/z.png", None)] * 4,
    }
    rankings["q3"] = [("corpus/z.png", None), ("corpus/y.png", None), ("corpus/i.png", None)]

    def search(q: EvalQuery, base: Path) -> list[tuple[str, object, float]]:
        if q.audio:
            raise EmbedError("no audio")
        return [(str(base / f), loc, 1.0) for f, loc in rankings[q.id]]

    rep = run_queries([PDF, VID, IMG, audio_q], tmp_path, search)
    assert rep["overall"]["n"] == 3 and rep["overall"]["unsupported"] == 1
    assert rep["overall"]["R@1"] == 0.3333
    assert rep["overall"]["R@5"] == 0.6667 and rep["overall"]["MRR@10"] == round((1 + 1 / 3) / 3, 4)
    assert rep["per_modality"]["speech->text"] == {"n": 0, "unsupported": 1}
    row = next(r for r in rep["queries"] if r["id"] == "q1")
    assert row["rank"] == 1 and row["hits"][0] == {"file": "corpus/a.pdf", "locator": 3, "score": 1.0}


def test_bad_query_files_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"id": "a", "query_text": "x", "target_file": "f", "modality": "text->text"}\n{"id": "a"}\n')
    with pytest.raises(ConfigError, match="duplicate"):
        load_queries(f)
    f.write_text('{"id": "a", "query_text": "x", "target_file": "f", "modality": "m", "target_locator": "p3"}\n')
    with pytest.raises(ConfigError, match="locator"):
        load_queries(f)


def test_eval_command_end_to_end(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qfile = corpus.parent / "queries.jsonl"
    lines = [
        {"id": "p2", "query_text": "dredging north channel silt", "target_file": "corpus/report.pdf",
         "target_locator": 2, "modality": "text->pdf_page"},
        {"id": "t1", "query_text": "grey seals sandbank breakwater", "target_file": "corpus/notes.md",
         "target_locator": None, "modality": "text->text"},
        {"id": "s1", "query_audio": "spoken.wav", "target_file": "corpus/notes.md", "modality": "speech->text"},
    ]  # fmt: skip
    qfile.write_text("\n".join(json.dumps(x) for x in lines))
    import soundfile

    t = np.arange(16000, dtype=np.float32) / 16000
    soundfile.write(corpus.parent / "spoken.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    out = tmp_path / "report.json"
    common = ["--data-dir", str(tmp_path / "d"), "--profile", "fake"]
    assert main(["eval", "--queries", str(qfile), "--corpus", str(corpus), "--out", str(out), *common]) == 0
    rep = json.loads(out.read_text())
    assert rep["profile"] == "fake" and rep["per_modality"]["text->pdf_page"]["R@1"] == 1.0
    assert rep["per_modality"]["text->text"]["R@1"] == 1.0
    speech = rep["per_modality"]["speech->text"]
    assert speech["n"] + speech["unsupported"] == 1  # scored or reported unsupported, never dropped
    assert rep["queries"][0]["hits"][0]["file"] == "corpus/report.pdf"
    assert "overall" in capsys.readouterr().out
    # A second run reuses the collection: nothing is re-ingested.
    assert main(["eval", "--queries", str(qfile), "--corpus", str(corpus), "--out", str(out), *common]) == 0
    assert json.loads(out.read_text())["ingest"]["unchanged"] == 5


def test_eval_refuses_queries_pointing_nowhere(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from loupe.lab.evaluation.retrieval import check_places

    qs = [
        EvalQuery("ok", "text->pdf_page", Place("corpus/report.pdf", 3), text="x"),
        EvalQuery("typo", "text->text", Place("corpus/notes.mdx"), text="x"),
        EvalQuery("page", "text->pdf_page", Place("corpus/report.pdf", 9), text="x"),
        EvalQuery("nopage", "text->pdf_page", Place("corpus/report.pdf"), text="x"),
        EvalQuery("paged", "text->text", Place("corpus/notes.md", 2), text="x"),
    ]
    problems = check_places(qs, corpus.parent)
    assert [p.split(":")[0] for p in problems] == ["query 'typo'", "query 'page'", "query 'nopage'", "query 'paged'"]
    qfile = corpus.parent / "bad.jsonl"
    qfile.write_text(
        json.dumps({"id": "t", "query_text": "x", "target_file": "corpus/gone.md", "modality": "text->text"})
    )
    code = main(
        ["eval", "--queries", str(qfile), "--corpus", str(corpus), "--data-dir", str(tmp_path), "--profile", "fake"]
    )
    assert code == 2 and "corpus/gone.md does not exist" in capsys.readouterr().err
