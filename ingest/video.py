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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import IngestError
from app.types import MediaRef, Segment, SourceRef, TimeLoc, segment_id
from ingest.audio import audio_segments, clip_folder
from ingest.ffmpeg import PROTOCOLS, FfmpegReader, MediaInfo, Tools, compile_args, input_url, probe, tools_for
from ingest.options import IngestOptions

# The design samples video at 1 frame per second (design.md §1): frame n shows t = n s.
FPS = 1
# Frames the pipe may hold ahead of the reader (the bounded buffer between ffmpeg and Python); the kernel caps a
# pipe at 1 MiB for unprivileged processes, i.e. ~6 frames of 224x224 RGB.
PIPE_FRAMES = 4
# A decode that ends this many seconds before the container's duration is reported as stopped early.
EARLY_END_S = 2.0


def frame_args(path: Path, stream_index: int, px: int, tools: Tools, *, skip_nonref: bool = False) -> list[str]:
    """ffmpeg arguments that write one video stream as ``px``x``px`` RGB frames at 1 FPS to stdout."""
    import ffmpeg  # ffmpeg-python builds the filter graph and command line

    extra = {"skip_frame": "noref"} if skip_nonref else {}
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


def _save_jpeg(data: bytes, px: int, dest: Path, quality: int) -> None:
    from PIL import Image

    tmp = dest.with_name(dest.name + ".tmp")
    Image.frombuffer("RGB", (px, px), data, "raw", "RGB", 0, 1).save(tmp, "JPEG", quality=quality)
    tmp.replace(dest)


def _end(t: float, duration: float | None) -> float:
    """End of the second starting at t, clamped to the container's duration when that lies inside it."""
    return float(min(t + 1, duration)) if duration is not None and t < duration < t + 1 else float(t + 1)


def frame_segments(
    path: Path,
    source: SourceRef,
    opts: IngestOptions,
    info: MediaInfo,
    report: dict[str, Any] | None = None,
    *,
    tools: Tools | None = None,
) -> Iterator[Segment]:
    """``video_frame`` and ``video_window`` segments of the first video stream; ``report`` gets ``frames``,
    ``windows`` and, when ffmpeg complained or stopped early, a line in ``warnings``."""
    stream = info.video
    if stream is None:
        raise IngestError(str(path), "has no video stream")
    tools = tools or tools_for(path)
    folder = clip_folder(opts, source, path, "video")
    px = opts.video_frame_px
    size = px * px * 3
    window, stride = opts.video_window_s, opts.video_stride_s
    recent: collections.deque[tuple[int, str]] = collections.deque(maxlen=window)
    stats: dict[str, Any] = report if report is not None else {}
    n = 0
    windows = 0
    last_window: tuple[int, int] | None = None  # (start, end) frame numbers of the last window yielded
    args = frame_args(path, stream.index, px, tools, skip_nonref=opts.video_skip_nonref)
    with FfmpegReader(args, path, pipe_bytes=PIPE_FRAMES * size) as reader:
        for block in reader.blocks(size):
            if len(block) < size:
                break  # a partial frame at the end of a damaged stream
            t = n
            jpg = folder / f"frame-{t:06d}.jpg"
            try:
                _save_jpeg(block, px, jpg, opts.video_jpeg_quality)
            except OSError as e:
                raise IngestError(str(path), f"cannot write frame {jpg} to the media store: {e}") from e
            loc = TimeLoc(float(t), _end(t, info.duration_s))
            yield Segment(
                id=segment_id(source, "video_frame", loc),
                source=source,
                modality="video_frame",
                locator=loc,
                text=None,
                media=MediaRef(path=str(jpg), kind="image"),
                meta={"frame_s": float(t)},
            )
            recent.append((t, str(jpg)))
            n += 1
            start = n - window
            if start >= 0 and start % stride == 0:
                yield _window(source, recent, start, n, info.duration_s)
                windows += 1
                last_window = (start, n)
        # The tail: the next window start that holds frames not yet in any window, cut short at the end.
        start = 0 if last_window is None else last_window[0] + stride
        if n and start < n and (last_window is None or last_window[1] < n):
            yield _window(source, recent, start, n, info.duration_s)
            windows += 1
        code = reader.finish()
        stats["frames"] = n
        stats["windows"] = windows
        warnings = stats.setdefault("warnings", [])
        if n and (code != 0 or reader.stderr_lines):
            warnings.append(f"video: ffmpeg reported damage, the readable frames were kept: {reader.reason()}")
        if n and info.duration_s and n < info.duration_s - EARLY_END_S:
            warnings.append(f"video: decoding stopped at {n} s of {info.duration_s:.1f} s (truncated file?)")
        if n == 0:
            stats["video_error"] = reader.reason()
        if not warnings:
            del stats["warnings"]


def _window(
    source: SourceRef, recent: collections.deque[tuple[int, str]], start: int, end: int, duration: float | None
) -> Segment:
    frames = [p for t, p in recent if start <= t < end]
    loc = TimeLoc(float(start), _end(end - 1, duration))
    return Segment(
        id=segment_id(source, "video_window", loc),
        source=source,
        modality="video_window",
        locator=loc,
        text=None,
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
    yield from frame_segments(path, source, opts, info, stats, tools=tools)
    frames = int(stats.get("frames", 0))
    if info.audio is None:
        if frames == 0:
            raise IngestError(
                str(path), f"no video frame could be decoded (zero duration or damaged; ffmpeg: {stats['video_error']})"
            )
        return
    try:
        yield from audio_segments(path, source, opts, info, stats, tools=tools)
    except IngestError as e:
        if frames == 0:
            raise IngestError(
                str(path), "nothing could be decoded: no video frame and no audio (zero duration or damaged file)"
            ) from e
        stats.setdefault("warnings", []).append(f"audio track skipped: {e.reason}")
    if frames == 0:
        stats.setdefault("warnings", []).append(
            f"no video frame could be decoded, only the audio track was read (ffmpeg: {stats.get('video_error')})"
        )
