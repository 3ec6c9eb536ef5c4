"""Ingesting the hostile corpus (tests/hostile/make_hostile.py): every bad file reported with a reason, no
crash, every good file indexed; files that vanish mid-ingest are reported too."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loupe.app.config import load_settings
from loupe.app.pipeline import FileReport, IngestReport
from loupe.app.service import Loupe
from tests.hostile.make_hostile import Item, counts, make_corpus

# The default run ingests every kind of hostile file (two of each); the slow run the full corpus (>= 200 bad).
FULL = [pytest.param(None, marks=pytest.mark.slow, id="full"), pytest.param(2, id="two-per-kind")]


@pytest.fixture(scope="module", params=FULL)
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Item], IngestReport, Path]:
    base = tmp_path_factory.mktemp("hostile")
    corpus = base / "corpus"
    items = make_corpus(corpus, per_kind=request.param)
    vanish = {str(corpus / n) for n, it in items.items() if it.expect == "vanish"}

    def on_file(i: int, n: int, path: str) -> None:
        if path in vanish:  # deleted after the walk listed it, just before it is read
            Path(path).unlink()

    settings = load_settings(data_dir=base / "data", profile="fake", max_file_mb=64)
    with Loupe(settings) as lp:
        report = lp.ingest([corpus], on_file=on_file)
    return items, report, corpus


def _by_name(report: IngestReport, corpus: Path) -> dict[str, FileReport]:
    return {str(Path(f.path).relative_to(corpus)): f for f in report.files}


def test_every_file_is_reported_once(hostile: tuple[dict[str, Item], IngestReport, Path]) -> None:
    items, report, corpus = hostile
    names = [str(Path(f.path).relative_to(corpus)) for f in report.files]
    assert len(names) == len(set(names))
    assert set(items) <= set(names), sorted(set(items) - set(names))[:10]
    # Only the generator's files (the folder link back up is not followed, so nothing is walked twice).
    assert set(names) <= set(items), sorted(set(names) - set(items))[:10]
    if len(items) > 250:
        assert counts(items)["bad"] >= 200


def test_bad_files_fail_with_a_reason_and_good_files_are_indexed(
    hostile: tuple[dict[str, Item], IngestReport, Path],
) -> None:
    items, report, corpus = hostile
    got = _by_name(report, corpus)
    wrong: list[str] = []
    per_kind: dict[str, Counter[str]] = {}
    for name, it in items.items():
        f = got[name]
        per_kind.setdefault(it.kind, Counter())[f.status] += 1
        if f.status in ("failed", "skipped") and not (f.reason and f.reason.strip()):
            wrong.append(f"{name}: {f.status} without a reason")
        if it.expect in ("bad", "vanish") and f.status not in ("failed", "skipped"):
            wrong.append(f"{name} ({it.kind}): expected a failure, got {f.status}")
        if it.expect == "good" and f.status != "ok":
            wrong.append(f"{name} ({it.kind}): expected ok, got {f.status}: {f.reason}")
        if f.reason and "unexpected error" in f.reason:
            wrong.append(f"{name} ({it.kind}): a parser crashed: {f.reason}")
    summary: dict[str, Any] = {
        "files": len(items),
        **counts(items),
        "report": report.summary(),
        "per_kind": {k: dict(v) for k, v in sorted(per_kind.items())},
    }
    print("hostile corpus:", json.dumps(summary))
    assert not wrong, "\n".join(wrong)


def test_hostile_collection_is_searchable(hostile: tuple[dict[str, Item], IngestReport, Path]) -> None:
    items, _report, corpus = hostile
    with Loupe(load_settings(data_dir=corpus.parent / "data", profile="fake")) as lp:
        stats = lp.stats()
        hits = lp.search("ferry timetable last crossing", k=5)
    assert stats["sources"] >= sum(1 for it in items.values() if it.expect == "good")
    assert hits and "ferry" in (hits[0].segment.text or "").lower()
