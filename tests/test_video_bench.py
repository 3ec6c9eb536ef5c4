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
    assert got["decode_and_segment_s"] == 7.0 and got["ocr_s"] == 3.0
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
