"""Video frames read by OCR, and windows cut at scene changes (issue 5, acceptance 1).

A generated video with known content per second: scenes of a few seconds, each a flat colour with a drawn title,
and espeak-ng speech at known times. Frames carry the title of their scene (OCR'd once per scene, reused while
the picture does not change), windows start at the scene changes, clips sit at the speech (±0.5 s), and a text
query for the title shown at t=37 s returns a window containing 37 s.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loupe import ingest
from loupe.errors import IngestError
from loupe.ingest.ffmpeg import MediaInfo, StreamInfo
from loupe.ingest.ocr import VIDEO_OCR_PARAMS, OcrLine, RapidOcr
from loupe.ingest.options import IngestOptions
from loupe.ingest.video import FrameTexts, _Windows, content_box, max_cell_change, mean_change, window_text
from loupe.types import Segment, TimeLoc
from tests.media_fixtures import Event, ffmpeg, have_espeak, have_ffmpeg, make_track, scene_colour

# (start, end, title): the picture of [start, end) seconds. Scenes are shorter than the 16-s window, so every
# window should begin at a scene change.
SCRIPT: list[tuple[int, int, str]] = [
    (0, 6, "HARBOUR TOUR"),
    (6, 13, "NORTH GATE"),
    (13, 20, "EAST QUAY"),
    (20, 27, "FISH MARKET"),
    (27, 34, "LIGHTHOUSE"),
    (34, 41, "CUSTOMS HOUSE"),
    (41, 45, "THE END"),
]
SPEECH = [
    Event(8.0, "speech", "The north gate opens at dawn."),
    Event(29.0, "speech", "The lighthouse keeper rings the bell."),
]
SIZE = (320, 180)
FPS = 2


def title_at(t: float) -> str:
    return next(title for a, b, title in SCRIPT if a <= t < b)


def scene_frame(k: int, title: str) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    w, h = SIZE
    im = Image.new("RGB", SIZE, scene_colour(k * 2))
    font = ImageFont.load_default(size=h // 7)
    ImageDraw.Draw(im).text((w // 12, h // 3), title, fill=(255, 255, 255), font=font)
    return im.tobytes()


def make_script_video(path: Path, track: Path | None) -> Path:
    frames = b"".join(scene_frame(k, title) * ((b - a) * FPS) for k, (a, b, title) in enumerate(SCRIPT))
    w, h = SIZE
    args: list[str | Path] = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "pipe:0"]
    if track is not None:
        args += ["-i", track, "-c:a", "aac", "-b:a", "48k", "-shortest"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", path]
    ffmpeg(*args, stdin=frames)
    return path


@pytest.fixture(scope="module")
def script_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    if not (have_ffmpeg() and have_espeak()):
        pytest.skip("needs ffmpeg and espeak-ng: apt-get install ffmpeg espeak-ng")
    pytest.importorskip("rapidocr")
    d = tmp_path_factory.mktemp("script")
    spans = make_track(d / "voice.wav", SCRIPT[-1][1], SPEECH)
    return make_script_video(d / "harbour.mp4", d / "voice.wav"), spans


def loc(seg: Segment) -> TimeLoc:
    assert isinstance(seg.locator, TimeLoc)
    return seg.locator


def window_span(seg: Segment) -> tuple[float, float]:
    """The window a hit came from: retrieval may refine a window hit to its best frame (meta refined_from)."""
    if seg.meta.get("refined_from"):
        a, b = seg.meta["refined_from"]
        return float(a), float(b)
    return loc(seg).start_s, loc(seg).end_s


def of(segs: Sequence[Segment], modality: str) -> list[Segment]:
    return [s for s in segs if s.modality == modality]


# --- acceptance ---------------------------------------------------------------------------------------------


def test_frames_carry_their_scene_text_and_windows_start_at_scene_changes(
    script_video: tuple[Path, list[tuple[float, float]]], tmp_path: Path
) -> None:
    src, spans = script_video
    opts = IngestOptions(media_dir=tmp_path / "media", video_ocr="auto")
    report: dict[str, Any] = {}
    segs = list(ingest.segments(ingest.prepare(src, opts), opts, report))
    frames, windows = of(segs, "video_frame"), of(segs, "video_window")
    assert [loc(f).start_s for f in frames] == [float(t) for t in range(45)]
    for f in frames:
        assert f.text == title_at(loc(f).start_s), (loc(f), f.text)
        assert f.meta["ocr"] is True
    # One OCR per scene: unchanged frames reuse the text of the scene's first frame.
    assert report["frames_ocr"] == len(SCRIPT) and report["scene_cuts"] == len(SCRIPT) - 1
    # Windows of at most 16 frames that begin at the scene changes and carry the scene's title.
    starts = {a for a, _, _ in SCRIPT}
    assert [(loc(w).start_s, loc(w).end_s) for w in windows] == [(float(a), float(b)) for a, b, _ in SCRIPT]
    for w in windows:
        assert loc(w).start_s in starts and len(w.meta["frames"]) <= 16
        assert w.text == title_at(loc(w).start_s)
    # The audio track keeps the video's timeline: the clips sit on the speech (±0.5 s).
    speech = of(segs, "speech_clip")
    assert len(speech) == len(SPEECH)
    for clip, (start, end) in zip(speech, spans, strict=True):
        assert abs(loc(clip).start_s - start) <= 0.5 and abs(loc(clip).end_s - end) <= 0.5, (clip.locator, start)


@contextlib.contextmanager
def ingested(src: Path, tmp_path: Path, profile: str) -> Iterator[Any]:
    """A Loupe app (data in tmp_path) with the video ingested through the whole pipeline."""
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(src, corpus / src.name)
    with Loupe(load_settings(None, data_dir=str(tmp_path / "data"), profile=profile, collection="v")) as lp:
        assert lp.ingest([corpus]).summary()["ok"] == 1
        yield lp


def test_text_query_for_the_title_at_37_s_returns_a_window_containing_37_s(
    script_video: tuple[Path, list[tuple[float, float]]], tmp_path: Path
) -> None:
    """Through the whole app with the fake profile: the OCR text reaches the index (BM25 and the dense text)."""
    from loupe.app.retrieve import Filters

    with ingested(script_video[0], tmp_path, "fake") as lp:
        hits = lp.search(title_at(37).lower(), k=3, filters=Filters(modalities=["video_window"]))
        top = hits[0].segment
        start, end = window_span(top)
        assert top.modality == "video_window" and start <= 37 < end, hits
        # A refined moment is a frame of that window.
        assert start <= loc(top).start_s < end
        hits = lp.search("fish market", k=3, filters=Filters(modalities=["video_window"]))
        start, end = window_span(hits[0].segment)
        assert start <= 22 < end


@pytest.mark.model
def test_offline_profile_finds_the_moment_of_the_title(
    script_video: tuple[Path, list[tuple[float, float]]], tmp_path: Path
) -> None:
    """With the real offline profile (e5 + the label bridge), unfiltered: the first hit covers t=37 s."""
    with ingested(script_video[0], tmp_path, "offline") as lp:
        hits = lp.search("customs house", k=5)
        first = hits[0].segment
        assert first.modality in ("video_window", "video_frame") and title_at(loc(first).start_s) == "CUSTOMS HOUSE"
        window = next(h.segment for h in hits if h.segment.modality == "video_window")
        start, end = window_span(window)
        assert start <= 37 < end, hits


# --- the OCR policy -----------------------------------------------------------------------------------------


class CountingOcr:
    """Fake OCR: answers each call with the next text of a list (None: nothing found)."""

    name = "counting"

    def __init__(self, answers: Sequence[str | None], score: float = 0.9) -> None:
        self.answers = list(answers)
        self.score = score
        self.calls = 0

    def __call__(self, image: np.ndarray) -> list[OcrLine]:
        text = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return [] if text is None else [OcrLine(text, self.score, (0, 0, 1, 1))]


def sig(level: float, cell: tuple[int, int] | None = None) -> np.ndarray:
    """A 16x16x3 signature at one grey level, optionally with one cell changed by 50."""
    s = np.full((16, 16, 3), level, dtype=np.float32)
    if cell is not None:
        s[cell] += 50
    return s


def no_image() -> np.ndarray:
    return np.zeros((4, 4, 3), np.uint8)


def test_the_openvino_detector_reads_what_onnxruntime_reads() -> None:
    """Frame OCR's detector on OpenVINO (f32) finds the same lines in the same boxes as on onnxruntime."""
    pytest.importorskip("rapidocr")
    pytest.importorskip("openvino")
    fast, plain = RapidOcr(VIDEO_OCR_PARAMS), RapidOcr(VIDEO_OCR_PARAMS, detector="onnxruntime")
    w, h = SIZE
    for k, (_, _, title) in enumerate(SCRIPT):
        frame = np.frombuffer(scene_frame(k, title), dtype=np.uint8).reshape(h, w, 3)
        a, b = fast(frame), plain(frame)
        assert [ln.text for ln in a] == [ln.text for ln in b]
        assert title.replace(" ", "") in "".join(ln.text for ln in a).replace(" ", "").upper()
        np.testing.assert_allclose([ln.box for ln in a], [ln.box for ln in b], atol=1.0)
    # The swap into RapidOCR's pipeline took (a rapidocr upgrade that moved its detector would show here).
    assert (fast.detector, plain.detector) == ("openvino", "onnxruntime")
    with pytest.raises(ValueError, match="openvino"):
        RapidOcr(detector="tensorrt")
    # Settings naming another detector model keep RapidOCR's own session.
    import rapidocr

    shipped = Path(rapidocr.__file__).parent / "models"
    own = RapidOcr({**VIDEO_OCR_PARAMS, "Det.model_path": str(shipped / "PP-OCRv6_det_small.onnx")})
    own(np.zeros((32, 32, 3), dtype=np.uint8))
    assert own.detector == "onnxruntime"


def test_without_openvino_the_detector_stays_on_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    pytest.importorskip("rapidocr")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    ocr = RapidOcr(VIDEO_OCR_PARAMS)
    w, h = SIZE
    lines = ocr(np.frombuffer(scene_frame(1, "NORTH GATE"), dtype=np.uint8).reshape(h, w, 3))
    assert ocr.detector == "onnxruntime" and "NORTHGATE" in "".join(ln.text for ln in lines).replace(" ", "")


def test_unchanged_frames_reuse_the_text_and_a_changed_cell_triggers_ocr() -> None:
    eng = CountingOcr(["A", "B"])
    texts = FrameTexts(eng, mode="on", change=8.0)
    got = [texts.text_for(t, s, no_image) for t, s in enumerate([sig(100), sig(101), sig(103), sig(100, (3, 4))])]
    assert got == ["A", "A", "A", "B"] and eng.calls == 2
    # The comparison is against the last OCR'd frame, so a slow drift adds up and is read again.
    eng = CountingOcr(["A", "B"])
    texts = FrameTexts(eng, mode="on", change=8.0)
    got = [texts.text_for(t, sig(100 + 3 * t), no_image) for t in range(4)]
    assert got == ["A", "A", "A", "B"] and eng.calls == 2
    assert max_cell_change(sig(0, (1, 1)), sig(0)) == 50.0 and mean_change(sig(0, (1, 1)), sig(0)) == 50.0 / 256


def test_auto_backs_off_while_frames_have_no_text_and_never_reuses_stale_text() -> None:
    eng = CountingOcr([None])
    texts = FrameTexts(eng, mode="auto", change=8.0, max_gap=4, per_min=60)
    # Every frame changes: OCR at 0, then after waits of 2, 4, 4, 4 seconds.
    got = [texts.text_for(t, sig(10.0 * t), no_image) for t in range(15)]
    assert got == [None] * 15 and eng.calls == 5 and texts.calls == 5
    eng = CountingOcr(["T0", None, "T3"])
    texts = FrameTexts(eng, mode="auto", change=8.0, max_gap=8, per_min=60)
    got = [texts.text_for(t, sig(10.0 * t), no_image) for t in range(5)]
    # Text found: the next changed frame is read at once; none found: the next waits 2 s and gets None meanwhile.
    assert got == ["T0", None, None, "T3", "T3"] and eng.calls == 4
    on = FrameTexts(CountingOcr([None]), mode="on")
    assert [on.text_for(t, sig(10.0 * t), no_image) for t in range(5)] == [None] * 5 and on.calls == 5


def test_auto_keeps_to_its_budget_of_ocr_per_minute() -> None:
    """A burned-in clock changes every frame and always has text: auto reads 3 at once, then 6 per minute."""
    clock = [f"12:00:{s:02d}" for s in range(60)]
    eng = CountingOcr(clock)
    texts = FrameTexts(eng, mode="auto", change=8.0, per_min=6.0)
    got = [texts.text_for(t, sig(float(t % 20) * 10), no_image) for t in range(60)]
    assert eng.calls == 8 and got[:3] == clock[:3] and got[3] is None and got[10] == clock[3]


def test_auto_reads_moving_footage_with_a_fixed_caption_less_often() -> None:
    """The picture moves every frame but the caption stays: each read finds the same text, so the wait doubles."""
    eng = CountingOcr(["HARBOUR LIVE"])
    texts = FrameTexts(eng, mode="auto", change=8.0, max_gap=8, per_min=60)
    got = [texts.text_for(t, sig(10.0 * t), no_image) for t in range(24)]
    # Reads at 0, 1, 3, 7, 15, 23; frames in between moved and were not read: no text, never a stale one.
    assert eng.calls == 6 and got[0] == got[15] == "HARBOUR LIVE" and got[2] is None


def test_low_confidence_lines_are_dropped_and_engine_failures_are_reported() -> None:
    texts = FrameTexts(CountingOcr(["junk"], score=0.5), mode="on", min_score=0.7)
    assert texts.text_for(0, sig(0), no_image) is None

    def broken(image: np.ndarray) -> list[OcrLine]:
        raise RuntimeError("onnx says no")

    texts = FrameTexts(broken, mode="on")  # type: ignore[arg-type]
    assert texts.text_for(0, sig(0), no_image) is None and "onnx says no" in texts.failures[0]

    def missing(image: np.ndarray) -> list[OcrLine]:
        raise IngestError("ocr", "OCR needs the 'rapidocr' package")

    with pytest.raises(IngestError):
        FrameTexts(missing, mode="on").text_for(0, sig(0), no_image)  # type: ignore[arg-type]


def test_window_text_keeps_distinct_lines_in_order_and_is_capped() -> None:
    assert window_text(["A\nB", None, "B", "C\n\nA"]) == "A\nB\nC"
    assert window_text([None, None]) is None
    assert len(window_text([f"line {i} " + "x" * 90 for i in range(100)]) or "") == 2000


# --- windows ------------------------------------------------------------------------------------------------


def run_windows(n: int, size: int, stride: int, min_size: int, cuts: set[int]) -> list[tuple[int, int]]:
    w = _Windows(size, stride, min_size)
    out = [span for t in range(n) for span in w.frame(t, t in cuts)]
    return out + w.finish(n)


def test_windows_follow_the_stride_grid_without_cuts() -> None:
    assert run_windows(20, 8, 8, 2, set()) == [(0, 8), (8, 16), (16, 20)]
    assert run_windows(9, 4, 2, 2, set()) == [(0, 4), (2, 6), (4, 8), (6, 9)]
    assert run_windows(16, 8, 8, 2, set()) == [(0, 8), (8, 16)]


def test_windows_end_at_scene_cuts_once_long_enough() -> None:
    # A cut at 5 ends the first window there; the grid restarts at 5.
    assert run_windows(20, 8, 8, 2, {5}) == [(0, 5), (5, 13), (13, 20)]
    # A cut one frame into a window is too early (min 2 frames): ignored.
    assert run_windows(12, 8, 8, 2, {9}) == [(0, 8), (8, 12)]
    # Rapid cuts: windows of at least min_size frames each.
    assert run_windows(6, 8, 8, 2, {1, 2, 3, 4, 5}) == [(0, 2), (2, 4), (4, 6)]
    # Overlapping windows: the cut closes the oldest open window; the shorter open ones are inside it.
    assert run_windows(10, 4, 2, 2, {3}) == [(0, 3), (3, 7), (5, 9), (7, 10)]


def test_content_box_follows_aspect_and_rotation() -> None:
    def info(w: int, h: int, rot: int = 0) -> MediaInfo:
        return MediaInfo(10.0, "mp4", (StreamInfo(0, "video", "h264", w, h, 25.0, rotation=rot),))

    assert content_box(info(1920, 1080), 640) == (1, 141, 639, 499)
    assert content_box(info(1920, 1080, 90), 640) == (141, 1, 499, 639)
    assert content_box(MediaInfo(None, "x", (StreamInfo(0, "video"),)), 640) == (0, 0, 640, 640)


def test_video_ocr_options_are_bounded() -> None:
    with pytest.raises(ValueError):
        IngestOptions(video_ocr="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        IngestOptions(video_ocr_px=100)
    with pytest.raises(ValueError):
        IngestOptions(video_window_s=4, video_window_min_s=5)


@pytest.mark.parametrize(
    ("error", "warning"),
    [
        (IngestError("ocr", "OCR needs the 'rapidocr' package: pip install rapidocr==3.10.0"), "were not OCR'd"),
        (RuntimeError("onnx says no"), "OCR failed at 0 s"),
    ],
)
def test_ocr_trouble_keeps_the_frames_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, warning: str
) -> None:
    """OCR missing or failing: every frame and window is still made (without text) and the report says why."""
    if not have_ffmpeg():
        pytest.skip("needs ffmpeg")
    import loupe.ingest.video as ingest_video

    def broken(image: np.ndarray) -> list[OcrLine]:
        raise error

    monkeypatch.setattr(ingest_video, "video_ocr", lambda: broken)
    video = make_script_video(tmp_path / "short.mp4", None)
    opts = IngestOptions(media_dir=tmp_path / "media", video_ocr="on")
    report: dict[str, Any] = {}
    segs = list(ingest.segments(ingest.prepare(video, opts), opts, report))
    assert len(of(segs, "video_frame")) == 45 and of(segs, "video_window")
    assert all(s.text is None for s in segs)
    assert any(warning in w for w in report["warnings"]), report


def test_rapidocr_log_keeps_warnings_but_not_the_empty_picture_one() -> None:
    import logging

    from loupe.ingest.ocr import _quiet_rapidocr

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("RapidOCR", level, "main.py", 164, msg, None, None)

    assert not _quiet_rapidocr(record(logging.INFO, "Using engine_name: onnxruntime"))
    assert not _quiet_rapidocr(record(logging.WARNING, "The text detection result is empty"))
    assert _quiet_rapidocr(record(logging.WARNING, "model file is damaged"))
    assert _quiet_rapidocr(record(logging.ERROR, "inference failed"))
