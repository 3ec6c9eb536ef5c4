"""The video and audio rows of ``loupe bench ingest --media-minutes`` (lab/bench/media.py): generated corpora,
totals from ingest reports, the split of the time. No timings are asserted (they go to docs/bench JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loupe.ingest.ffmpeg import probe
from loupe.lab.bench.media import format_media, make_media_corpora, media_phases, media_rows, media_totals
from tests.media_fixtures import needs_espeak, needs_ffmpeg


@dataclass
class FileRow:
    path: str
    details: dict[str, Any] = field(default_factory=dict)


def test_media_totals_count_video_and_audio_only_files_apart() -> None:
    files = [
        FileRow("/c/a.mp4", {"duration_s": 60.0, "frames": 60, "frames_ocr": 9, "ocr_s": 3.5, "audio_s": 60.0}),
        FileRow("/c/b.ogg", {"duration_s": 30.2, "audio_s": 30.0}),
        FileRow("/c/c.mp4", {"duration_s": 12.0, "audio_s": 12.0}),  # no video stream: read as audio
        FileRow("/c/d.pdf", {"pages": 3}),
    ]
    assert media_totals(files) == {"video_s": 60.0, "audio_s": 42.0, "frames": 60, "frames_ocr": 9, "ocr_s": 3.5}


def test_media_phases_split_parse_and_embed() -> None:
    phases = {"parse_s": 10.0, "embed_s": 8.0, "model_load_s": 2.0, "upsert_s": 0.5}
    timer = {"embed_image": 4.0, "embed_sound": 1.0, "embed_e5": 2.5}
    got = media_phases(phases, timer, ocr_s=3.0)
    assert got["split_wait_s"] == 10.0 and got["ocr_s"] == 3.0  # OCR runs in the splitting thread: overlapped
    assert (got["image_classifier_s"], got["sound_classifier_s"], got["e5_s"]) == (4.0, 1.0, 2.5)
    assert got["embed_other_s"] == pytest.approx(0.5)


def test_media_rows_give_real_time_factors_per_kind() -> None:
    run = {
        "process_s": 30.0,
        "cpu_s": 40.0,
        "media": {"video_s": 600.0, "audio_s": 0.0, "frames": 600, "frames_ocr": 63, "ocr_s": 9.0},
        "media_phases": media_phases({"parse_s": 12.0, "embed_s": 15.0}, {}, 9.0),
    }
    rows = media_rows([{"corpus": "/w/media-video-600s", "loupe": {"runs": [run, {"error": "x"}]}}])
    assert len(rows) == 1 and rows[0]["kind"] == "video" and rows[0]["media_s"] == 600.0
    assert rows[0]["x_real_time_wall"] == 20.0 and rows[0]["x_real_time_cpu_2_cores"] == 30.0
    assert "x real time" in format_media(rows) and "media-video-600s" in format_media(rows)


def test_warm_rows_time_the_files_ingest_alone() -> None:
    media = {"video_s": 300.0, "audio_s": 0.0, "frames": 300, "frames_ocr": 30, "ocr_s": 5.0}
    cold = {"process_s": 30.0, "ingest_s": 20.0, "cpu_s": 45.0, "media": media, "media_phases": {"ocr_s": 5.0}}
    warm = {**cold, "process_s": 40.0, "ingest_s": 15.0, "cpu_s": 30.0, "warm_up_s": 12.0}
    cli = {"process_s": 25.0, "ingest_s": 25.0, "cpu_s": 40.0, "media": media}  # no phases: the bare CLI
    entry = {"corpus": "/w/media-video-300s", "loupe": {"runs": [cold]}, "loupe_warm": {"runs": [warm]}}
    entry["loupe_cli"] = {"runs": [cli]}
    rows = media_rows([entry])
    got = [(r["start"], r["x_real_time_wall"]) for r in rows]
    assert got == [("cold", 10.0), ("cold (loupe ingest)", 12.0), ("warm", 20.0)]
    assert rows[2]["x_real_time_cpu_2_cores"] == 20.0 and rows[1]["x_real_time_cpu_2_cores"] == 15.0
    assert rows[1].get("ocr_s") is None
    assert "warm" in format_media(rows)


@needs_ffmpeg
@needs_espeak
def test_generated_media_corpora_have_the_asked_length(tmp_path: Path) -> None:
    dirs = make_media_corpora(tmp_path, 0.25)
    (video,) = dirs["video"].iterdir()
    (audio,) = dirs["audio"].iterdir()
    v, a = probe(video), probe(audio)
    assert v.video is not None and (v.video.width, v.video.height) == (1280, 720) and v.audio is not None
    assert v.duration_s == pytest.approx(15, abs=0.2) and a.duration_s == pytest.approx(15, abs=0.2)
    mtime = video.stat().st_mtime
    assert make_media_corpora(tmp_path, 0.25) == dirs and video.stat().st_mtime == mtime  # reused


@needs_ffmpeg
def test_a_warm_run_ingests_a_cut_first_and_times_the_file_alone(tmp_path: Path) -> None:
    """The bench child with ``warm_up``: the 15-s cut is ingested first; the report covers the real file only."""
    from loupe.lab.bench.common import run_child
    from loupe.lab.bench.ingest import _warm_up_cut
    from tests.media_fixtures import make_testsrc_video

    corpus = tmp_path / "media-video-20s"
    corpus.mkdir()
    make_testsrc_video(corpus / "clip.mp4", 20, size="64x64", rate=5)
    cut = _warm_up_cut(corpus, tmp_path)
    assert cut is not None
    (warm,) = cut.iterdir()
    assert probe(warm).duration_s == pytest.approx(15, abs=1.0)
    params = {"corpus": str(corpus), "data_dir": str(tmp_path / "d"), "profile": "fake", "media": True}
    got = run_child("loupe-ingest", {**params, "warm_up": str(cut)}, tmp_path, timeout_s=300)
    assert "error" not in got, got
    assert got["files"] == 1 and got["media"]["video_s"] == pytest.approx(20, abs=1.0)
    assert got["warm_up_s"] > 0 and got["ingest_s"] < got["process_s"]


@needs_ffmpeg
def test_the_cli_run_times_loupe_ingest_as_a_user_types_it(tmp_path: Path) -> None:
    from loupe.lab.bench.ingest import run_cli_ingest
    from tests.media_fixtures import make_testsrc_video

    corpus = tmp_path / "media-video-8s"
    corpus.mkdir()
    make_testsrc_video(corpus / "clip.mp4", 8, size="64x64", rate=5)
    got = run_cli_ingest(corpus, tmp_path / "d", profile="fake", timeout_s=300)
    assert "error" not in got, got
    assert got["media"]["video_s"] == pytest.approx(8, abs=1.0) and got["cpu_s"] > 0 and got["process_s"] > 0
    bad = run_cli_ingest(tmp_path / "missing", tmp_path / "d2", profile="fake", timeout_s=300)
    assert "error" in bad
