"""Video: 1 frame per second through a pipe → frame thumbnails in the media store → frame and window segments;
the audio track goes to :mod:`ingest.audio` on the video's timeline.

- Probe (duration, streams, rotation, fps) with :func:`ingest.ffmpeg.probe`. No video stream (or only cover art):
  the file is read as audio. No audio stream: frames only.
- ffmpeg decodes, samples 1 FPS by timestamp (variable frame rates are fine), applies the rotation of phone
  videos (ffmpeg's autorotate), scales once to fit ``video_frame_px`` square, pads with black and writes raw
  RGB to a pipe; Python reads one frame at a time (the pipe holds a few frames: a bounded buffer), writes it as
  ``<media_dir>/<sha[:2]>/<sha>/frame-000123.jpg`` and forgets the pixels. Memory does not depend on length.
- Segments, text None (the embedder reads the pixels, or bridges them into text space):
  ``video_frame`` per second: TimeLoc(t, t+1), media = the frame JPEG, meta ``{"frame_s": t}``;
  ``video_window`` every ``video_stride_s`` frames, covering ``video_window_s`` frames (≤ 32): TimeLoc(start,
  end), media = the source video with start/end (playable at once), meta ``{"frames": [...], "thumbnail": ...}``.

Usage::

    for seg in iter_video(Path("talk.mp4"), source, IngestOptions(media_dir=Path("media"))):
        print(seg.modality, seg.locator)
"""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loupe.errors import IngestError
from loupe.ingest.audio import audio_segments, clip_folder
from loupe.ingest.ffmpeg import PROTOCOLS, FfmpegReader, MediaInfo, Tools, compile_args, input_url, probe, tools_for
from loupe.ingest.ocr import OcrEngine, video_ocr
from loupe.ingest.options import IngestOptions
from loupe.threads import interleave, machine_threads, prefetch
from loupe.types import MediaRef, Segment, SourceRef, TimeLoc, segment_id

# The design samples video at 1 frame per second (design.md §1): frame n shows t = n s.
FPS = 1
# Frames the pipe may hold ahead of the reader (the bounded buffer between ffmpeg and Python); the kernel caps a
# pipe at 1 MiB for unprivileged processes, i.e. ~6 frames of 224x224 RGB.
PIPE_FRAMES = 4
# Decoded frames (OCR-size pictures, ~1.2 MB each at 640 px) the decoding thread may hold ahead of the OCR.
DECODE_AHEAD = 8
# Audio clips (paths and metadata; the samples are in the clip files) the audio-track thread may hold ahead.
AUDIO_AHEAD = 32
# A decode that ends this many seconds before the container's duration is reported as stopped early.
EARLY_END_S = 2.0


def decode_threads(requested: int = 0) -> int:
    """ffmpeg decoder threads: ``requested``, or for 0 half the cores this process may use (at least 1)."""
    return requested if requested > 0 else max(1, machine_threads() // 2)


def frame_args(
    path: Path,
    stream_index: int,
    px: int,
    tools: Tools,
    *,
    skip_nonref: bool = False,
    skip_loop_filter: bool = False,
    threads: int = 0,
) -> list[str]:
    """ffmpeg arguments that write one video stream as ``px``x``px`` RGB frames at 1 FPS to stdout."""
    import ffmpeg  # ffmpeg-python builds the filter graph and command line

    extra: dict[str, Any] = {"threads": decode_threads(threads)}
    if skip_nonref:
        extra["skip_frame"] = "noref"
    if skip_loop_filter:
        extra["skip_loop_filter"] = "all"
    inp = ffmpeg.input(input_url(path), protocol_whitelist=PROTOCOLS, **extra)
    v = (
        inp[str(stream_index)]
        # start_time=0: output frame n is t = n s of the file even when the video starts late (leading frames
        # repeat the first picture), so frames, windows and audio clips share one timeline.
        .filter("fps", fps=FPS, start_time=0)
        # One scale, straight to the target: area averaging keeps 8K→224 free of aliasing.
        .filter("scale", px, px, force_original_aspect_ratio="decrease", flags="area")
        .filter("format", "rgb24")
        .filter("pad", px, px, "(ow-iw)/2", "(oh-ih)/2", color="black")
    )
    out = ffmpeg.output(v, "pipe:", format="rawvideo", pix_fmt="rgb24")
    return compile_args(out, tools)


# Frames are compared on a grid of colour means (16x16 cells of 14x14 px in a 224-px frame): cheap, blind to
# H.264 noise and small enough that a changed caption line moves whole cells.
GRID = 16
# "auto" OCR may read this many frames at once before its per-minute budget applies (the opening titles).
OCR_BURST = 3
# Frame text on a window: the distinct lines of its frames, at most this many characters (e5 reads 512 tokens).
WINDOW_TEXT_CHARS = 2000


def signature(frame: Any) -> np.ndarray:
    """A frame (PIL image) as its ``GRID`` x ``GRID`` x 3 grid of colour means (float32, 0-255)."""
    from PIL import Image

    return np.asarray(frame.resize((GRID, GRID), Image.Resampling.BOX), dtype=np.float32)


def max_cell_change(a: np.ndarray, b: np.ndarray) -> float:
    """The largest change of one cell's mean (over its colours) between two signatures: a local change."""
    return float(np.abs(a - b).mean(axis=2).max())


def mean_change(a: np.ndarray, b: np.ndarray) -> float:
    """The mean absolute difference of two signatures: a change of the whole picture (a cut)."""
    return float(np.abs(a - b).mean())


class FrameTexts:
    """Which frames to OCR, and the text of every frame (pure logic around an OCR engine).

    A frame whose signature is within ``change`` of the last OCR'd frame's reuses that frame's text; a changed
    frame is OCR'd ("on"), or, in "auto", OCR'd once the wait since the last OCR has passed and the budget
    allows: the wait doubles after each OCR that found no text or the same text as before (the picture moved,
    the text did not; up to ``max_gap``) and is one frame again after one that found new text; the budget is
    ``per_min`` OCRs per minute of video plus :data:`OCR_BURST` (counted in calls, not seconds, so the same file
    always gets the same text). A changed frame that is not OCR'd gets no
    text (None: unknown), never a stale one.

    >>> texts = FrameTexts(engine, mode="on")  # doctest: +SKIP
    >>> texts.text_for(t, signature(small), lambda: big_frame_array)  # doctest: +SKIP
    """

    def __init__(
        self,
        engine: OcrEngine,
        *,
        mode: str = "auto",
        change: float = 8.0,
        max_gap: int = 8,
        per_min: float = 6.0,
        min_score: float = 0.7,
    ) -> None:
        self.engine, self.mode, self.change, self.max_gap, self.min_score = engine, mode, change, max_gap, min_score
        self.per_min = per_min
        self._sig: np.ndarray | None = None
        self._text: str | None = None
        self._last_t: float = float("-inf")
        self._gap = 1
        self.calls = 0
        self.seconds = 0.0
        self.failures: list[str] = []

    def text_for(self, t: float, sig: np.ndarray, image: Callable[[], np.ndarray]) -> str | None:
        """The text of the frame at ``t`` s with signature ``sig``; ``image()`` gives the pixels to OCR."""
        if self._sig is not None and max_cell_change(sig, self._sig) < self.change:
            return self._text
        if self.mode == "auto" and (
            t - self._last_t < self._gap or self.calls + 1 > OCR_BURST + self.per_min * t / 60.0
        ):
            return None
        t0 = time.perf_counter()
        try:
            lines = self.engine(image())
        except IngestError:
            raise  # OCR is not installed: the caller decides
        except Exception as e:  # an engine failure on one frame must not lose the video; say so in the report
            self.failures.append(f"OCR failed at {t:.0f} s: {type(e).__name__}: {e}")
            lines = []
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        text = "\n".join(ln.text.strip() for ln in lines if ln.score >= self.min_score and ln.text.strip()) or None
        # New text: read the next change at once. No text, or the same text again (the change was motion, not
        # text): wait twice as long before the next read.
        self._gap = 1 if text and text != self._text else min(self._gap * 2, self.max_gap)
        self._sig, self._text, self._last_t = sig, text, t
        return text


def window_text(texts: Sequence[str | None]) -> str | None:
    """The distinct lines of a window's frame texts, in order of first appearance, capped."""
    seen: dict[str, None] = {}
    for text in texts:
        for line in (text or "").splitlines():
            if line.strip():
                seen.setdefault(line.strip(), None)
    out = "\n".join(seen)
    return out[:WINDOW_TEXT_CHARS] or None


def _crop(image: Any, box: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(image.crop(box))


def _save_jpeg(image: Any, dest: Path, quality: int) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    image.save(tmp, "JPEG", quality=quality)
    tmp.replace(dest)


def _end(t: float, duration: float | None) -> float:
    """End of the second starting at t, clamped to the container's duration when that lies inside it."""
    return float(min(t + 1, duration)) if duration is not None and t < duration < t + 1 else float(t + 1)


def content_box(info: MediaInfo, px: int) -> tuple[int, int, int, int]:
    """Where the picture lies in a ``px`` square frame (ffmpeg fits it, keeping its aspect, and pads with black):
    ``(x0, y0, x1, y1)``, one pixel inside against rounding. The whole square when the size is unknown."""
    v = info.video
    if v is None or not v.width or not v.height:
        return (0, 0, px, px)
    w, h = (v.height, v.width) if v.rotation in (90, 270) else (v.width, v.height)
    scale = min(px / w, px / h)
    sw, sh = max(1, int(w * scale)), max(1, int(h * scale))
    x0, y0 = (px - sw) // 2, (px - sh) // 2
    return (min(x0 + 1, px - 1), min(y0 + 1, px - 1), max(x0 + sw - 1, 1), max(y0 + sh - 1, 1))


class _Windows:
    """Window boundaries over the frame stream: a window every ``stride`` frames, ``size`` frames long, ended
    early at a scene cut once it holds ``min_size`` frames (the stride grid then restarts at the cut)."""

    def __init__(self, size: int, stride: int, min_size: int) -> None:
        self.size, self.stride, self.min_size = size, stride, min_size
        self.open: collections.deque[int] = collections.deque()
        self.next_start = 0
        self.last_end = 0

    def frame(self, t: int, cut: bool) -> list[tuple[int, int]]:
        """Frame ``t`` arrives (``cut``: it starts a new scene); the windows this closes, as (start, end)."""
        out = []
        if cut and self.open and t - self.open[0] >= self.min_size:
            out.append((self.open[0], t))
            self.open.clear()
            self.next_start = t
        if t == self.next_start:
            self.open.append(t)
            self.next_start += self.stride
        while self.open and t + 1 - self.open[0] >= self.size:
            out.append((self.open.popleft(), t + 1))
        if out:
            self.last_end = out[-1][1]
        return out

    def finish(self, n: int) -> list[tuple[int, int]]:
        """End of stream after ``n`` frames: the earliest open window, if it holds frames no window has."""
        return [(self.open[0], n)] if self.open and n > self.last_end else []


def frame_segments(
    path: Path,
    source: SourceRef,
    opts: IngestOptions,
    info: MediaInfo,
    report: dict[str, Any] | None = None,
    *,
    tools: Tools | None = None,
    ocr: OcrEngine | None = None,
) -> Iterator[Segment]:
    """``video_frame`` and ``video_window`` segments of the first video stream; ``report`` gets ``frames``,
    ``windows``, ``scene_cuts``, ``frames_ocr`` and ``ocr_s`` and, when ffmpeg complained or stopped early, a
    line in ``warnings``. ``ocr`` replaces the default frame OCR engine (tests)."""
    from PIL import Image

    stream = info.video
    if stream is None:
        raise IngestError(str(path), "has no video stream")
    tools = tools or tools_for(path)
    folder = clip_folder(opts, source, path, "video")
    px = opts.video_frame_px
    # With OCR, ffmpeg writes the larger OCR copy and Python scales it down for the thumbnail and the embedder.
    big = max(opts.video_ocr_px, px) if opts.video_ocr != "off" else px
    size = big * big * 3
    x0, y0, x1, y1 = content_box(info, big)
    texts = None
    if opts.video_ocr != "off":
        texts = FrameTexts(
            ocr or video_ocr(),
            mode=opts.video_ocr,
            change=opts.video_ocr_change,
            max_gap=opts.video_ocr_max_gap_s,
            per_min=opts.video_ocr_per_min,
            min_score=opts.ocr_min_score,
        )
    windows = _Windows(opts.video_window_s, opts.video_stride_s, opts.video_window_min_s)
    recent: collections.deque[tuple[int, str, str | None]] = collections.deque(maxlen=opts.video_window_s)
    stats: dict[str, Any] = report if report is not None else {}
    warnings = stats.setdefault("warnings", [])
    n = n_windows = cuts = 0
    prev: np.ndarray | None = None
    key_sig: np.ndarray | None = None  # the last frame whose own pixels are embedded, and its file
    key_jpg = ""
    same = 0
    args = frame_args(
        path,
        stream.index,
        big,
        tools,
        skip_nonref=opts.video_skip_nonref,
        skip_loop_filter=opts.video_skip_loop_filter,
        threads=opts.video_decode_threads,
    )
    with FfmpegReader(args, path, pipe_bytes=PIPE_FRAMES * size) as reader:

        def decoded() -> Iterator[tuple[Any, Path, np.ndarray]]:
            """Frames as (OCR-size image, thumbnail file, signature), the thumbnail already written."""
            for t, block in enumerate(reader.blocks(size)):
                if len(block) < size:
                    break  # a partial frame at the end of a damaged stream
                image = Image.frombuffer("RGB", (big, big), block, "raw", "RGB", 0, 1)
                small = image if big == px else image.resize((px, px), Image.Resampling.BOX)
                jpg = folder / f"frame-{t:06d}.jpg"
                try:
                    _save_jpeg(small, jpg, opts.video_jpeg_quality)
                except OSError as e:
                    raise IngestError(str(path), f"cannot write frame {jpg} to the media store: {e}") from e
                yield image, jpg, signature(small)

        # Decoding (reading the pipe, scaling, writing thumbnails) runs a few frames ahead in its own thread
        # while this one OCRs: frame OCR is the longest step of a video with text, and the two overlap.
        for image, jpg, sig in prefetch(decoded(), DECODE_AHEAD, "loupe-decode"):
            t = n
            text = None
            if texts is not None:
                try:
                    text = texts.text_for(t, sig, functools.partial(_crop, image, (x0, y0, x1, y1)))
                except IngestError as e:  # OCR not installed: frames without text, said once
                    warnings.append(f"video: frames were not OCR'd ({e.reason})")
                    texts = None
            cut = opts.video_scene_cuts and prev is not None and mean_change(sig, prev) >= opts.video_scene_change
            cuts += cut
            prev = sig
            # Compared with the last embedded frame, not the previous one, so a slow drift still makes a new one.
            if key_sig is not None and not cut and max_cell_change(sig, key_sig) < opts.video_same_picture:
                picture = key_jpg
                same += 1
            else:
                key_sig, key_jpg = sig, str(jpg)
                picture = key_jpg
            loc = TimeLoc(float(t), _end(t, info.duration_s))
            yield Segment(
                id=segment_id(source, "video_frame", loc),
                source=source,
                modality="video_frame",
                locator=loc,
                text=text,
                media=MediaRef(path=str(jpg), kind="image"),
                meta={
                    "frame_s": float(t),
                    **({"ocr": True} if text else {}),
                    **({"picture": picture} if picture != str(jpg) else {}),
                },
            )
            n += 1
            closed = windows.frame(t, cut)
            # A window cut off by this frame ends before it: made before the frame joins the recent ones.
            for a, b in closed:
                if b <= t:
                    yield _window(source, recent, a, b, info.duration_s)
                    n_windows += 1
            recent.append((t, picture, text))
            for a, b in closed:
                if b > t:
                    yield _window(source, recent, a, b, info.duration_s)
                    n_windows += 1
        for a, b in windows.finish(n):
            yield _window(source, recent, a, b, info.duration_s)
            n_windows += 1
        code = reader.finish()
        stats["frames"] = n
        stats["windows"] = n_windows
        stats["scene_cuts"] = cuts
        stats["frames_same_picture"] = same
        if texts is not None:
            stats["frames_ocr"] = texts.calls
            stats["ocr_s"] = round(texts.seconds, 3)
            warnings.extend(texts.failures[:5])
        if n and (code != 0 or reader.stderr_lines):
            warnings.append(f"video: ffmpeg reported damage, the readable frames were kept: {reader.reason()}")
        if n and info.duration_s and n < info.duration_s - EARLY_END_S:
            warnings.append(f"video: decoding stopped at {n} s of {info.duration_s:.1f} s (truncated file?)")
        if n == 0:
            stats["video_error"] = reader.reason()
        if not warnings:
            del stats["warnings"]


def _window(
    source: SourceRef,
    recent: collections.deque[tuple[int, str, str | None]],
    start: int,
    end: int,
    duration: float | None,
) -> Segment:
    inside = [(p, text) for t, p, text in recent if start <= t < end]
    frames = [p for p, _ in inside]
    loc = TimeLoc(float(start), _end(end - 1, duration))
    return Segment(
        id=segment_id(source, "video_window", loc),
        source=source,
        modality="video_window",
        locator=loc,
        text=window_text([text for _, text in inside]),
        media=MediaRef(path=source.uri, kind="video", start_s=loc.start_s, end_s=loc.end_s),
        meta={"frames": frames, "thumbnail": frames[len(frames) // 2], "n_frames": len(frames)},
    )


def iter_video(
    path: Path, source: SourceRef, opts: IngestOptions, report: dict[str, Any] | None = None
) -> Iterator[Segment]:
    """Yield frame and window segments, then the audio track's clips, of a video file.

    A file without a video stream is read as audio; without an audio stream, frames only. Raises IngestError
    naming the file when ffmpeg is missing, the file is not a media file, or nothing at all decodes.
    """
    tools = tools_for(path)
    info = probe(path, tools)
    stats: dict[str, Any] = report if report is not None else {}
    stats.update({k: v for k, v in info.to_meta().items() if k in ("duration_s", "video", "audio")})
    if info.video is None:
        stats["treated_as"] = "audio"
        yield from audio_segments(path, source, opts, info, stats, tools=tools)
        return
    frames_out = frame_segments(path, source, opts, info, stats, tools=tools)
    if info.audio is None:
        yield from frames_out
        if int(stats.get("frames", 0)) == 0:
            raise IngestError(
                str(path), f"no video frame could be decoded (zero duration or damaged; ffmpeg: {stats['video_error']})"
            )
        return
    # The audio track is decoded and cut in its own thread while the frames are (its report apart, merged after),
    # so the embedder gets clips to embed while it would otherwise wait for frame OCR.
    audio_stats: dict[str, Any] = {}
    audio_error: list[IngestError] = []

    def audio_track() -> Iterator[Segment]:
        try:
            yield from audio_segments(path, source, opts, info, audio_stats, tools=tools)
        except IngestError as e:  # judged below, once the frames are known
            audio_error.append(e)

    yield from interleave(frames_out, audio_track(), AUDIO_AHEAD, "loupe-audio-track")
    warnings = audio_stats.pop("warnings", [])
    stats.update(audio_stats)
    if warnings:
        stats.setdefault("warnings", []).extend(warnings)
    frames = int(stats.get("frames", 0))
    if audio_error:
        e = audio_error[0]
        if frames == 0:
            raise IngestError(
                str(path), "nothing could be decoded: no video frame and no audio (zero duration or damaged file)"
            ) from e
        stats.setdefault("warnings", []).append(f"audio track skipped: {e.reason}")
    if frames == 0:
        stats.setdefault("warnings", []).append(
            f"no video frame could be decoded, only the audio track was read (ffmpeg: {stats.get('video_error')})"
        )
