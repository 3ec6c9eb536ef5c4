"""Video and audio ingest (issue 5): frames at 1 FPS, windows, audio clips cut at silences with voice activity,
streamed in bounded memory; bad input gets a clear error and nothing readable is lost.

All media are generated in tmp_path (tests/media_fixtures.py). Tests that need ffmpeg or espeak-ng skip with
the install hint when the binary is missing (the Makefile installs ffmpeg on CI, so they normally run).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import loupe.ingest.ffmpeg as ff
from loupe import ingest
from loupe.errors import IngestError
from loupe.ingest.audio import FRAME, AudioSegmenter, Clip, SileroVad, decode_to_array, speech_probabilities
from loupe.ingest.options import IngestOptions
from loupe.ingest.video import frame_args
from loupe.types import Segment, TimeLoc
from tests.media_fixtures import (
    RATE,
    Event,
    corrupt_middle,
    espeak,
    ffmpeg,
    make_halves_video,
    make_scene_video,
    make_testsrc_video,
    make_track,
    make_vfr_video,
    needs_espeak,
    needs_ffmpeg,
    noise,
    scene_colour,
    set_rotation,
    tone,
    truncate,
    write_wav,
)

REPO = Path(__file__).resolve().parents[1]
UTTERANCES = [
    Event(5.0, "speech", "The harbour master opened the north gate at dawn."),
    Event(21.0, "speech", "Containers are stacked four high on the east quay."),
    Event(30.0, "tone", seconds=3.0),
]


def opts_for(tmp: Path, **kw: Any) -> IngestOptions:
    """Options for the layout tests: a fixed 8-s window grid, no frame OCR (tests/test_video_ocr.py has those)."""
    fixed: dict[str, Any] = {"video_ocr": "off", "video_scene_cuts": False, "video_window_s": 8, "video_stride_s": 8}
    return IngestOptions(media_dir=tmp / "media", **(fixed | kw))


def run_ingest(path: Path, opts: IngestOptions) -> tuple[list[Segment], dict[str, Any]]:
    """prepare + segments, as the pipeline calls them."""
    report: dict[str, Any] = {}
    prepared = ingest.prepare(path, opts)
    return list(ingest.segments(prepared, opts, report)), report


def of(segs: list[Segment], modality: str) -> list[Segment]:
    return [s for s in segs if s.modality == modality]


def loc(seg: Segment) -> TimeLoc:
    assert isinstance(seg.locator, TimeLoc)
    return seg.locator


def pixel(path: str, xy: tuple[int, int]) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        value: tuple[int, int, int] = rgb.getpixel(xy)  # type: ignore[assignment]
        return value


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def scene_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[float, float]]]:
    """40 s: second k is colour k with "SCENE k" drawn; speech at 5 s and 21 s, a 440 Hz tone at 30-33 s."""
    if not (ff_ok() and shutil.which("espeak-ng")):
        pytest.skip("needs ffmpeg and espeak-ng: apt-get install ffmpeg espeak-ng")
    d = tmp_path_factory.mktemp("scene")
    spans = make_track(d / "track.wav", 40, UTTERANCES)
    return make_scene_video(d / "scenes.mp4", 40, audio=d / "track.wav"), spans


def ff_ok() -> bool:
    try:
        ff.find_tools()
    except ff.FfmpegNotFoundError:
        return False
    return True


@pytest.fixture
def static_ffmpeg() -> Iterator[ff.Tools]:
    """Make Loupe use imageio-ffmpeg's static ffmpeg (no ffprobe), as on a pip-only install."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    tools = ff.Tools(imageio_ffmpeg.get_ffmpeg_exe(), None, "imageio-ffmpeg")
    ff.find_tools.cache_clear()
    mp = pytest.MonkeyPatch()
    mp.setattr(ff, "find_tools", lambda: tools)
    yield tools
    mp.undo()
    ff.find_tools.cache_clear()


# --- acceptance: a video with known content per second --------------------------------------------------------


def check_scene_video(segs: list[Segment], spans: list[tuple[float, float]], src: Path) -> None:
    frames, windows = of(segs, "video_frame"), of(segs, "video_window")
    assert [loc(f).start_s for f in frames] == [float(t) for t in range(40)]
    for f in frames:
        assert f.media is not None and f.media.kind == "image" and f.text is None
        assert Path(f.media.path).is_file() and Path(f.media.path).name == f"frame-{int(loc(f).start_s):06d}.jpg"
        assert f.meta["frame_s"] == loc(f).start_s and loc(f).end_s == loc(f).start_s + 1
        # Known content per second: the frame of second k shows colour k (below the drawn text).
        assert close(pixel(f.media.path, (112, 150)), scene_colour(int(loc(f).start_s))), loc(f)
    assert [(loc(w).start_s, loc(w).end_s) for w in windows] == [(float(a), float(a + 8)) for a in range(0, 40, 8)]
    for w in windows:
        assert w.media is not None and w.media.kind == "video" and w.media.path == str(src.absolute())
        assert (w.media.start_s, w.media.end_s) == (loc(w).start_s, loc(w).end_s)
        assert [Path(p).name for p in w.meta["frames"]] == [
            f"frame-{t:06d}.jpg" for t in range(int(loc(w).start_s), int(loc(w).end_s))
        ]
        assert w.meta["thumbnail"] in w.meta["frames"] and w.text is None
    # The window holding t=37 s has the frame of second 37.
    w37 = next(w for w in windows if loc(w).start_s <= 37 < loc(w).end_s)
    assert any(p.endswith("frame-000037.jpg") for p in w37.meta["frames"])

    speech, sound = of(segs, "speech_clip"), of(segs, "audio_clip")
    assert len(speech) == 2 and len(sound) == 1, [(s.modality, s.locator) for s in segs if "clip" in s.modality]
    for clip, (start, end) in zip([*speech, *sound], spans, strict=True):
        assert abs(loc(clip).start_s - start) <= 0.5 and abs(loc(clip).end_s - end) <= 0.5, (clip.locator, start, end)
    for clip in speech:
        assert clip.meta["speech_ratio"] >= 0.5
    assert sound[0].meta["speech_ratio"] < 0.5


@needs_ffmpeg
@needs_espeak
def test_scene_video_frames_windows_and_clips(
    scene_video: tuple[Path, list[tuple[float, float]]], tmp_path: Path
) -> None:
    src, spans = scene_video
    segs, report = run_ingest(src, opts_for(tmp_path))
    check_scene_video(segs, spans, src)
    assert report["frames"] == 40 and report["windows"] == 5 and report["speech_clips"] == 2
    assert report["duration_s"] == pytest.approx(40, abs=0.1) and "warnings" not in report
    assert len({s.id for s in segs}) == len(segs)
    # Clips are what the embedder reads: 16 kHz mono 16-bit WAV, named clip-<start_ms>-<end_ms>.wav.
    import soundfile

    from loupe.embedder.profiles import load_clip

    for clip in of(segs, "speech_clip") + of(segs, "audio_clip"):
        assert clip.media is not None and clip.media.kind == "audio" and clip.text is None
        info = soundfile.info(clip.media.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        start_ms, end_ms = round(loc(clip).start_s * 1000), round(loc(clip).end_s * 1000)
        assert Path(clip.media.path).name == f"clip-{start_ms}-{end_ms}.wav"
        assert len(load_clip(clip.media.path)) == pytest.approx((loc(clip).end_s - loc(clip).start_s) * RATE, abs=2)
        assert (clip.media.start_s, clip.media.end_s) == (loc(clip).start_s, loc(clip).end_s)
    # Re-ingest is deterministic: same ids (the audio track's clips come between the frames as they are ready,
    # so only each stream's own order is fixed).
    again, _ = run_ingest(src, opts_for(tmp_path))
    assert sorted(s.id for s in again) == sorted(s.id for s in segs)
    for modality in ("video_frame", "video_window", "speech_clip", "audio_clip"):
        assert [s.id for s in of(again, modality)] == [s.id for s in of(segs, modality)]


@needs_ffmpeg
@needs_espeak
def test_static_ffmpeg_without_ffprobe_gives_the_same(
    scene_video: tuple[Path, list[tuple[float, float]]], tmp_path: Path, static_ffmpeg: ff.Tools
) -> None:
    src, spans = scene_video
    assert ff.find_tools().ffprobe is None
    info = ff.probe(src)
    assert info.duration_s == pytest.approx(40, abs=0.1) and info.video is not None and info.audio is not None
    assert (info.video.width, info.video.height, info.video.fps) == (320, 240, 5.0)
    segs, _ = run_ingest(src, opts_for(tmp_path))
    check_scene_video(segs, spans, src)


BANNER = """
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'file:/data/phone.mp4':
  Metadata:
    major_brand     : isom
  Duration: 00:01:02.50, start: 0.000000, bitrate: 1206 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709), 1920x1080 [SAR 1:1 DAR 16:9], \
1000 kb/s, 29.97 fps, 30 tbr, 90k tbn (default)
    Metadata:
      handler_name    : VideoHandler
    Side data:
      displaymatrix: rotation of -90.00 degrees
  Stream #0:1[0x2](eng): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 192 kb/s (default)
  Stream #0:2: Video: mjpeg (Baseline), yuvj420p(pc), 600x600, 90k tbr, 90k tbn (attached pic)
At least one output file must be specified
"""


def test_ffmpeg_banner_is_parsed_when_there_is_no_ffprobe() -> None:
    info = ff.parse_ffmpeg_banner(BANNER)
    assert info is not None and info.duration_s == pytest.approx(62.5)
    v, a = info.video, info.audio
    assert v is not None and (v.index, v.codec, v.width, v.height, v.rotation) == (0, "h264", 1920, 1080, 270)
    assert v.fps == pytest.approx(29.97) and not v.variable_fps  # NTSC 29.97 vs 30 tbr is not a variable rate
    assert a is not None and (a.index, a.sample_rate, a.channels) == (1, 48000, 2)
    assert info.streams[2].attached_pic  # cover art is not the video
    assert ff.parse_ffmpeg_banner("/x.mp4: Invalid data found when processing input") is None


def test_no_ffmpeg_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import imageio_ffmpeg

    def missing() -> str:
        raise RuntimeError("no ffmpeg exe could be found")

    monkeypatch.setattr(ff.shutil, "which", lambda name: None)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    ff.find_tools.cache_clear()
    try:
        path = tmp_path / "a.mp4"
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
        with pytest.raises(IngestError) as e:
            run_ingest(path, opts_for(tmp_path))
        assert str(path) in str(e.value) and "apt-get install ffmpeg, or pip install imageio-ffmpeg" in str(e.value)
    finally:
        ff.find_tools.cache_clear()


@needs_ffmpeg
def test_window_and_stride_options(tmp_path: Path) -> None:
    video = make_scene_video(tmp_path / "nine.mp4", 9, size=(64, 48))
    segs, report = run_ingest(video, opts_for(tmp_path, video_window_s=4, video_stride_s=2))
    spans = [(loc(w).start_s, loc(w).end_s, len(w.meta["frames"])) for w in of(segs, "video_window")]
    assert spans == [(0, 4, 4), (2, 6, 4), (4, 8, 4), (6, 9, 3)]
    assert report["frames"] == 9 and not of(segs, "audio_clip") and not of(segs, "speech_clip")
    with pytest.raises(ValueError):
        IngestOptions(video_window_s=33)


# --- bad input ----------------------------------------------------------------------------------------------


@needs_ffmpeg
def test_truncated_mp4_keeps_what_decodes(tmp_path: Path) -> None:
    make_track(tmp_path / "t.wav", 20, [Event(2, "tone", seconds=2), Event(16, "tone", seconds=2)])
    whole = make_scene_video(tmp_path / "w.mp4", 20, audio=tmp_path / "t.wav", extra=["-movflags", "+faststart"])
    cut = truncate(whole, tmp_path / "cut.mp4", 0.5)
    segs, report = run_ingest(cut, opts_for(tmp_path))
    frames = of(segs, "video_frame")
    assert 5 <= len(frames) < 20
    for f in frames:  # the frames that decoded are the right ones
        assert f.media is not None and close(pixel(f.media.path, (112, 150)), scene_colour(int(loc(f).start_s)))
    assert [loc(c).start_s for c in of(segs, "audio_clip")] == pytest.approx([1.9], abs=0.5)
    assert any("stopped at" in w for w in report["warnings"]), report

    # Without faststart the index (moov) is at the end: nothing can be read, and the message says why.
    plain = make_scene_video(tmp_path / "p.mp4", 20, size=(64, 48))
    with pytest.raises(IngestError, match=r"moov atom\) is missing"):
        run_ingest(truncate(plain, tmp_path / "p_cut.mp4", 0.5), opts_for(tmp_path))


@needs_ffmpeg
def test_video_container_without_video_stream_is_read_as_audio(tmp_path: Path) -> None:
    make_track(tmp_path / "t.wav", 8, [Event(2, "tone", seconds=2)])
    for ext, codec in ((".mp4", "aac"), (".webm", "libopus")):
        path = tmp_path / f"only_audio{ext}"
        ffmpeg("-i", tmp_path / "t.wav", "-c:a", codec, path)
        segs, report = run_ingest(path, opts_for(tmp_path))
        assert report["treated_as"] == "audio" and not of(segs, "video_frame") and not of(segs, "video_window")
        (clip,) = of(segs, "audio_clip")
        assert abs(loc(clip).start_s - 1.9) <= 0.5 and abs(loc(clip).end_s - 4.1) <= 0.5


@needs_ffmpeg
def test_video_without_audio_stream_gives_frames_only(tmp_path: Path) -> None:
    video = make_scene_video(tmp_path / "silent_film.mkv", 3, size=(64, 48))
    segs, report = run_ingest(video, opts_for(tmp_path))
    assert Counter(s.modality for s in segs) == {"video_frame": 3, "video_window": 1}
    assert "audio" not in report and "warnings" not in report


@needs_ffmpeg
def test_zero_duration_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    empty_mp4 = tmp_path / "zero.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "0", empty_mp4)
    with pytest.raises(IngestError, match="no audio or video stream"):
        run_ingest(empty_mp4, opts_for(tmp_path))
    header_only = tmp_path / "zero.wav"
    ffmpeg("-f", "lavfi", "-i", "sine", "-t", "0", header_only)
    with pytest.raises(IngestError, match="no audio could be decoded"):
        run_ingest(header_only, opts_for(tmp_path))


@needs_ffmpeg
def test_variable_frame_rate_keeps_the_timeline(tmp_path: Path) -> None:
    segs, _ = run_ingest(make_vfr_video(tmp_path / "vfr.mkv"), opts_for(tmp_path))
    frames = of(segs, "video_frame")
    assert [loc(f).start_s for f in frames] == [float(t) for t in range(10)]
    for f in frames:
        assert f.media is not None and close(pixel(f.media.path, (112, 112)), scene_colour(int(loc(f).start_s)))


@needs_ffmpeg
@pytest.mark.parametrize("degrees", [90, 270])
def test_rotated_phone_video_is_upright(tmp_path: Path, degrees: int) -> None:
    # Landscape pixels (left red, right blue) stored with rotation metadata, as phones write portrait video.
    rotated = set_rotation(make_halves_video(tmp_path / "land.mp4"), tmp_path / f"rot{degrees}.mp4", degrees)
    info = ff.probe(rotated)
    assert info.video is not None and info.video.rotation == degrees
    segs, report = run_ingest(rotated, opts_for(tmp_path))
    assert report["video"]["rotation"] == degrees
    f = of(segs, "video_frame")[0]
    assert f.media is not None
    red, blue = (220, 20, 20), (20, 20, 220)
    # Portrait after rotation: black bars left and right, the halves now on top of each other.
    assert close(pixel(f.media.path, (5, 112)), (0, 0, 0), 10) and close(pixel(f.media.path, (218, 112)), (0, 0, 0), 10)
    top, bottom = pixel(f.media.path, (112, 40)), pixel(f.media.path, (112, 184))
    assert (close(top, blue) and close(bottom, red)) if degrees == 90 else (close(top, red) and close(bottom, blue))


@needs_ffmpeg
def test_decoder_flags_threads_and_deblocking() -> None:
    tools = ff.tools_for(Path("x.mp4"))
    args = frame_args(Path("x.mp4"), 0, 224, tools, skip_loop_filter=True, threads=3)
    assert args[args.index("-threads") + 1] == "3" and args[args.index("-skip_loop_filter") + 1] == "all"
    assert args.index("-skip_loop_filter") < args.index("-i")  # a decoder option: before the input
    plain = frame_args(Path("x.mp4"), 0, 224, tools)
    assert "-skip_loop_filter" not in plain and int(plain[plain.index("-threads") + 1]) >= 1


@needs_ffmpeg
def test_skipping_the_deblocking_filter_keeps_the_frames(tmp_path: Path) -> None:
    """The default (deblocking skipped) gives the same frames, timestamps and nearly the same pixels."""
    from PIL import Image

    video = make_testsrc_video(tmp_path / "moving.mp4", 6, size="640x360", rate=25)
    fast, _ = run_ingest(video, opts_for(tmp_path / "a", video_skip_loop_filter=True, video_decode_threads=1))
    full, _ = run_ingest(video, opts_for(tmp_path / "b", video_skip_loop_filter=False, video_decode_threads=2))
    ff_, fu = of(fast, "video_frame"), of(full, "video_frame")
    assert [loc(s) for s in ff_] == [loc(s) for s in fu] and len(ff_) == 6
    for a, b in zip(ff_, fu, strict=True):
        assert a.media is not None and b.media is not None
        with Image.open(a.media.path) as ia, Image.open(b.media.path) as ib:
            diff = np.abs(np.asarray(ia, dtype=np.int16) - np.asarray(ib, dtype=np.int16))
        assert float(diff.mean()) < 4.0, float(diff.mean())


@needs_ffmpeg
def test_8k_frames_are_scaled_in_ffmpeg_not_in_python(tmp_path: Path) -> None:
    video = make_testsrc_video(tmp_path / "8k.mp4", 2, size="7680x4320", rate=1)
    tracemalloc.start()
    try:
        segs, report = run_ingest(video, opts_for(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["video"]["width"] == 7680 and report["frames"] == 2
    from PIL import Image

    for f in of(segs, "video_frame"):
        assert f.media is not None
        with Image.open(f.media.path) as im:
            assert im.size == (224, 224)
        assert close(pixel(f.media.path, (112, 10)), (0, 0, 0), 12)  # 16:9 letterboxed into the square
    # One raw 8K frame is 99.5 MB; Python only ever holds 224x224 frames (150 KB).
    assert peak < 20e6, peak


@needs_ffmpeg
def test_corrupt_audio_frames_mid_file_keep_the_good_parts(tmp_path: Path) -> None:
    events = [Event(2, "tone", seconds=2), Event(9, "tone", seconds=2), Event(16, "tone", seconds=2)]
    spans = make_track(tmp_path / "t.wav", 20, events)
    for ext, codec in ((".m4a", "aac"), (".ogg", "libvorbis"), (".mp3", "libmp3lame")):
        clean = tmp_path / f"clean{ext}"
        ffmpeg("-i", tmp_path / "t.wav", "-c:a", codec, clean)
        damaged = corrupt_middle(clean, tmp_path / f"damaged{ext}", 0.45, 0.1)
        segs, report = run_ingest(damaged, opts_for(tmp_path))
        starts = [loc(c).start_s for c in of(segs, "audio_clip")]
        assert starts and abs(starts[0] - spans[0][0]) <= 0.5, (ext, starts)  # before the damage: intact
        assert len(starts) >= 2, (ext, starts)  # after the damage: still there
        if ext != ".mp3":  # timestamped containers keep the timeline across the damage
            assert abs(starts[-1] - spans[-1][0]) <= 0.5, (ext, starts)
        assert report["warnings"] and "damage" in report["warnings"][0], report


@needs_ffmpeg
def test_four_hour_silent_recording_is_fast_and_yields_nothing(tmp_path: Path) -> None:
    # FLAC of digital silence: 2.7 MB for 4 h, a few seconds to make. Decoding is the whole cost: silence never
    # reaches the VAD model (energy gate).
    path = tmp_path / "night.flac"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "14400", "-c:a", "flac", path)
    t0 = time.perf_counter()
    segs, report = run_ingest(path, opts_for(tmp_path))
    elapsed = time.perf_counter() - t0
    assert report["audio_s"] == pytest.approx(14400, abs=1) and segs == []
    assert elapsed < 30, f"4 h of silence took {elapsed:.1f} s"


@pytest.mark.parametrize("name", ["notes.mp4", "notes.mp3", "playlist.webm"])
def test_text_file_named_as_media_is_refused_before_ffmpeg(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("#EXTM3U\nhttp://example.invalid/a.ts\nmeeting notes, not a video\n")
    with pytest.raises(IngestError, match="content is text"):
        run_ingest(path, opts_for(tmp_path))


@needs_ffmpeg
def test_ts_is_video_only_when_it_is_an_mpeg_transport_stream(tmp_path: Path) -> None:
    code = tmp_path / "app.ts"
    code.write_text("export const answer: number = 42;\n")
    assert not ingest.is_supported(code)  # TypeScript: skipped, not a failed video
    video = make_scene_video(tmp_path / "broadcast.ts", 3, size=(64, 48))
    assert ingest.is_supported(video)
    segs, _ = run_ingest(video, opts_for(tmp_path))
    assert len(of(segs, "video_frame")) == 3


def test_other_formats_named_as_media_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "holiday.mp4"
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    with pytest.raises(IngestError, match="content is a png file"):
        run_ingest(png, opts_for(tmp_path))


@needs_ffmpeg
def test_binary_junk_named_as_media_says_ffmpeg_cannot_read_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(IngestError) as e:
        run_ingest(junk, opts_for(tmp_path))
    assert str(junk) in str(e.value) and "not a readable audio or video file" in str(e.value)


@needs_ffmpeg
def test_decode_to_array_for_recorded_queries(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "q.wav", np.concatenate([tone(1.5), np.zeros(RATE // 2, dtype=np.float32)]))
    ffmpeg("-i", src, "-ar", "44100", "-ac", "2", "-c:a", "libvorbis", tmp_path / "q.ogg")
    samples = decode_to_array(tmp_path / "q.ogg")
    assert samples.dtype == np.float32 and len(samples) == pytest.approx(2 * RATE, abs=RATE // 20)
    assert len(decode_to_array(tmp_path / "q.ogg", max_s=0.5)) == RATE // 2
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(IngestError):
        decode_to_array(tmp_path / "empty.wav")


@needs_ffmpeg
def test_media_needs_a_media_store(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", tone(2))
    with pytest.raises(IngestError, match="media store"):
        run_ingest(wav, IngestOptions())


# --- the audio segmenter (numpy only) -----------------------------------------------------------------------


def segment(
    samples: np.ndarray, opts: IngestOptions | None = None, piece: int = 40_000, vad: bool = False
) -> list[Clip]:
    seg = AudioSegmenter(opts or IngestOptions(), SileroVad() if vad else None)
    out: list[Clip] = []
    for a in range(0, len(samples), piece):
        out.extend(seg.feed(samples[a : a + piece]))
    out.extend(seg.finish())
    return out


def test_long_sound_is_cut_into_bounded_overlapping_clips() -> None:
    signal = np.concatenate([np.zeros(RATE), tone(25) + noise(25, 0.02), np.zeros(RATE)])
    clips = segment(signal)
    assert clips[0].start_s == pytest.approx(0.9, abs=0.05) and clips[-1].end_s == pytest.approx(26.1, abs=0.05)
    for a, b in itertools.pairwise(clips):
        assert 0.4 <= a.end_s - b.start_s <= 0.6  # overlap at forced cuts
    assert all(1.0 <= c.end_s - c.start_s <= 10.0 + 1e-6 for c in clips)
    assert all(len(c.samples) == round((c.end_s - c.start_s) * RATE) for c in clips)


def test_short_sounds_are_widened_and_clicks_dropped() -> None:
    signal = np.zeros(8 * RATE, dtype=np.float32)
    signal[2 * RATE : int(2.3 * RATE)] = tone(0.3)
    signal[6 * RATE : 6 * RATE + 200] = 0.9  # a 12 ms click
    (clip,) = segment(signal)
    assert clip.end_s - clip.start_s == pytest.approx(1.0, abs=0.04)
    assert clip.start_s <= 2.0 and clip.end_s >= 2.3


def test_clips_cut_at_silences_and_independent_of_block_size() -> None:
    parts = [np.zeros(RATE), tone(2), np.zeros(RATE // 2), tone(3, 660), np.zeros(RATE)]
    signal = np.concatenate(parts)
    whole = segment(signal, piece=len(signal))
    for piece in (FRAME - 7, 3 * FRAME + 1, 50_000):
        other = segment(signal, piece=piece)
        assert [(c.start_s, c.end_s) for c in other] == [(c.start_s, c.end_s) for c in whole]
    assert [(round(c.start_s, 1), round(c.end_s, 1)) for c in whole] == [(0.9, 3.1), (3.4, 6.6)]


def test_silence_is_cheap() -> None:
    seg = AudioSegmenter(IngestOptions(), SileroVad())
    block = np.zeros(RATE * 60, dtype=np.float32)
    t0 = time.perf_counter()
    for _ in range(60):  # one hour
        assert not list(seg.feed(block))
    assert not list(seg.finish())
    assert time.perf_counter() - t0 < 5


@needs_espeak
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # silero_vad's importlib.resources.path
def test_vad_tells_speech_from_tone_and_matches_silero() -> None:
    speech = espeak("Ships leave the harbour when the tide turns.")
    signal = np.concatenate([np.zeros(RATE), speech, np.zeros(RATE), tone(2), np.zeros(RATE)])
    clips = segment(signal, vad=True)
    assert [c.speech_ratio >= 0.5 for c in clips] == [True, False], [(c.start_s, c.speech_ratio) for c in clips]

    # Our streaming runner (sequence ONNX model, state carried across calls) is silero-vad's own computation.
    silero_vad = pytest.importorskip("silero_vad")
    import torch

    threads = torch.get_num_threads()
    try:
        reference = silero_vad.load_silero_vad(onnx=True, sequence=True).audio_forward(signal)
    finally:
        torch.set_num_threads(threads)  # importing silero_vad sets it to 1 for the whole process
    ours = speech_probabilities(signal)
    assert np.allclose(ours, reference, atol=1e-5)


# --- end to end and memory ----------------------------------------------------------------------------------


@needs_ffmpeg
def test_pipeline_ingests_video_and_audio_with_the_fake_profile(tmp_path: Path) -> None:
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    make_track(tmp_path / "t.wav", 6, [Event(1, "tone", seconds=2)])
    make_scene_video(corpus / "clip.mp4", 6, size=(64, 48), audio=tmp_path / "t.wav")
    ffmpeg("-i", tmp_path / "t.wav", "-c:a", "libopus", corpus / "memo.opus")
    data = tmp_path / "data"
    with Loupe(load_settings(None, data_dir=str(data), profile="fake", collection="av")) as lp:
        report = lp.ingest([corpus]).to_json()
        assert report["summary"]["ok"] == 2 and report["summary"]["failed"] == 0, report
        by = {Path(f["path"]).name: f for f in report["files"]}
        # 6 frames, 3 windows (the colour changes every second: scene cuts after the 2-frame minimum), 1 clip.
        assert by["clip.mp4"]["segments"] == 6 + 3 + 1 and by["memo.opus"]["segments"] == 1
        assert by["clip.mp4"]["details"]["scene_cuts"] == 5
        assert lp.index().count() == report["summary"]["segments"]
        assert lp.ingest([corpus]).to_json()["summary"]["unchanged"] == 2
    assert list((data / "media").rglob("frame-000005.jpg")) and list((data / "media").rglob("clip-*.wav"))


_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from loupe.types import SourceRef
    from loupe.ingest.options import IngestOptions
    from loupe.ingest.video import iter_video
    p, media, ocr = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    src = SourceRef(str(p), "ab" * 32, "video/x-matroska", p.stem, p.stat().st_size, 0.0)
    report = {}
    n = sum(1 for _ in iter_video(p, src, IngestOptions(media_dir=media, video_ocr=ocr), report))
    print(n, report["frames"], report["audio_clips"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)
# Tone bursts (3 s on, 4 s off) so the audio path cuts clips and runs the VAD all along.
_BURSTS = "aevalsrc='0.3*sin(2*PI*440*t)*lt(mod(t\\,7)\\,3)':s=8000"


def peak_rss_kb(video: Path, media: Path, ocr: str) -> tuple[int, int]:
    done = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(video), str(media), ocr],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    _n, frames, _clips, rss = map(int, done.stdout.split())
    return frames, rss


def check_constant_memory(tmp_path: Path, short_s: int, long_s: int, ocr: str) -> None:
    short = make_testsrc_video(tmp_path / "short.mkv", short_s, audio=_BURSTS)
    long = make_testsrc_video(tmp_path / "long.mkv", long_s, audio=_BURSTS)
    f_short, rss_short = peak_rss_kb(short, tmp_path / "m1", ocr)
    f_long, rss_long = peak_rss_kb(long, tmp_path / "m2", ocr)
    assert (f_short, f_long) == (short_s, long_s)
    assert rss_long <= 1.2 * rss_short, (rss_short, rss_long)


@needs_ffmpeg
def test_memory_does_not_grow_with_length(tmp_path: Path) -> None:
    # Without frame OCR (the streaming path alone), to keep the default run short.
    check_constant_memory(tmp_path, 60, 600, "off")


@needs_ffmpeg
@pytest.mark.slow
def test_two_hour_video_in_the_memory_of_ten_minutes(tmp_path: Path) -> None:
    # The streaming path without frame OCR (as measured before OCR existed: 1.01x). OCR keeps O(1) state (the last
    # read frame's signature and text); with "auto" this run would add ~730 reads of testsrc's counter.
    check_constant_memory(tmp_path, 600, 7200, "off")


@needs_ffmpeg
def test_frames_showing_the_same_picture_are_embedded_from_one_file(tmp_path: Path) -> None:
    """A still scene is classified once: its later frames point at the first frame's pixels (meta["picture"]),
    windows list those files, and the profile embeds them from there; a changed picture starts a new one."""
    from loupe.embedder.profiles import create_profile
    from tests.media_fixtures import scene_picture

    w, h, fps = 320, 240, 5
    frames = scene_picture(0, (w, h), True) * fps * 4 + scene_picture(3, (w, h), True) * fps * 4
    src = tmp_path / "still.mp4"
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0"]
    ffmpeg(*args, "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", src, stdin=frames)

    segs, report = run_ingest(src, opts_for(tmp_path))
    frame_segs = of(segs, "video_frame")
    assert len(frame_segs) == 8 and report["frames_same_picture"] == 6
    own = [s.media.path for s in frame_segs if s.media is not None]
    pictures = [str(s.meta.get("picture", s.media.path if s.media else "")) for s in frame_segs]
    assert pictures == [own[0]] * 4 + [own[4]] * 4
    assert all("picture" not in s.meta for s in (frame_segs[0], frame_segs[4]))
    windows = of(segs, "video_window")
    assert [f for w_ in windows for f in w_.meta["frames"]] == pictures
    profile = create_profile("fake")
    inputs = [profile.segment_input(s) for s in frame_segs]
    assert [getattr(i, "path", None) for i in inputs] == pictures

    # 0 turns it off: every frame is its own picture.
    segs, report = run_ingest(src, opts_for(tmp_path / "off", video_same_picture=0.0))
    assert report["frames_same_picture"] == 0 and not any("picture" in s.meta for s in of(segs, "video_frame"))


@needs_espeak
def test_a_query_recording_is_speech_the_way_a_clip_would_be(tmp_path: Path) -> None:
    """A spoken question goes to the speech head; a sound given as an example (a tone, noise) is embedded as the
    sound clips it should find are; silence stays speech (nothing else to go on)."""
    from loupe.app.service import decode_query_audio
    from loupe.ingest.audio import is_speech
    from tests.media_fixtures import espeak, noise, tone, write_wav

    said = espeak("where are the minutes of the harbour meeting")
    assert is_speech(said)
    assert not is_speech(tone(2.0)) and not is_speech(noise(2.0, amp=0.3))
    assert is_speech(np.zeros(16000, np.float32))
    assert decode_query_audio(str(write_wav(tmp_path / "q.wav", said))).speech
    assert not decode_query_audio(str(write_wav(tmp_path / "beep.wav", tone(2.0)))).speech
