"""The dev set's video and audio queries (issue 5, acceptance 4): time ranges are checked against the media, and
a moment hit counts when it overlaps the target."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from loupe.lab.evaluation.retrieval import EvalQuery, Place, check_places, first_relevant_rank, load_queries, matches
from tests.media_fixtures import make_testsrc_video, needs_ffmpeg

DEVSET = Path(__file__).resolve().parents[1] / "eval" / "devset"


def query(target: Place) -> EvalQuery:
    return EvalQuery("q", "text->video_moment", target, text="x")


@needs_ffmpeg
def test_time_ranges_must_be_ordered_and_inside_the_media(tmp_path: Path) -> None:
    make_testsrc_video(tmp_path / "ten.mp4", 10)
    (tmp_path / "notes.mp4").write_text("not a video")
    good = query(Place("ten.mp4", [2.0, 4.0]))
    assert check_places([good, query(Place("ten.mp4", [9.0, 10.4]))], tmp_path) == []
    problems = check_places(
        [
            query(Place("ten.mp4", [4.0, 2.0])),
            query(Place("ten.mp4", [8.0, 12.0])),
            query(Place("notes.mp4", [1.0, 2.0])),
            query(Place("ten.mp4", 3)),
        ],
        tmp_path,
    )
    assert len(problems) == 4
    assert "0 <= start < end" in problems[0]
    assert "10.0 s long" in problems[1] and "12" in problems[1]
    assert "not a readable audio/video file" in problems[2]
    assert "has no pages" in problems[3]


def test_a_moment_counts_when_it_overlaps_the_target_within_a_second() -> None:
    want = Place("v.mp4", [31.0, 44.0])
    assert matches(Place("v.mp4", [36.0, 37.0]), want)  # a refined frame inside the scene
    assert matches(Place("v.mp4", [44.5, 45.5]), want)  # within the 1-s slack
    assert not matches(Place("v.mp4", [46.0, 47.0]), want)
    assert not matches(Place("v.mp4", None), want) and not matches(Place("w.mp4", [36.0, 37.0]), want)
    q = query(want)
    hits = [Place("v.mp4", [0.0, 8.0]), Place("v.mp4", [0.0, 8.0]), Place("v.mp4", [39.0, 44.0])]
    assert first_relevant_rank(hits, q) == 2  # ranks are over distinct places


def test_dev_set_media_queries_point_at_generated_media() -> None:
    """The committed queries cover >= 10 video moments and >= 10 audio targets, each inside its file's manifest
    times (make_media.py wrote both), and query recordings stay out of the ingested corpus."""
    queries = load_queries(DEVSET / "queries.jsonl")
    video = [q for q in queries if q.modality.endswith("->video_moment")]
    audio = [q for q in queries if q.modality.endswith("->audio")]
    assert len(video) >= 10 and len(audio) >= 10
    manifest = json.loads((DEVSET / "media-manifest.json").read_text())
    for q in [*video, *audio]:
        kind, name = Path(q.target.file).parent.name, Path(q.target.file).name
        assert kind in ("video", "audio") and name in manifest[kind], q.id
        assert isinstance(q.target.locator, list)
        length = manifest[kind][name]["seconds"] if kind == "video" else max(e[1] for e in manifest[kind][name])
        assert 0 <= q.target.locator[0] < q.target.locator[1] <= length, q.id
        if q.audio:
            assert q.audio.startswith("query-audio/") and (DEVSET / q.audio).is_file()
    total = sum(p.stat().st_size for p in DEVSET.glob("**/*") if p.suffix in (".mp4", ".ogg"))
    assert total < 3_000_000


def test_dev_set_checker_accepts_the_committed_set() -> None:
    spec = importlib.util.spec_from_file_location("check_queries", DEVSET / "check_queries.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    problems, counts = mod.check(DEVSET / "queries.jsonl")
    if problems and "ffmpeg" in " ".join(problems):
        pytest.skip("needs ffmpeg to probe the media")
    assert problems == [] and counts["text->video_moment"] >= 10
