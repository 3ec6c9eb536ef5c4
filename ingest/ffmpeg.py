"""Finding and running ffmpeg: binary discovery, probing, and raw output streamed through a bounded pipe.

The system ffmpeg is used when there is one; otherwise the static build inside the ``imageio-ffmpeg`` wheel,
so a pip-only install works. That build has no ffprobe, so probing falls back to parsing ``ffmpeg -i``.

Usage::

    info = probe(Path("talk.mp4"))          # MediaInfo: duration, streams, rotation, fps
    with FfmpegReader(args, path) as r:     # args from ffmpeg-python's .compile(cmd=find_tools().ffmpeg)
        for block in r.blocks(4096):
            ...
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from loupe.errors import IngestError, LoupeError

INSTALL_HINT = "install ffmpeg: apt-get install ffmpeg, or pip install imageio-ffmpeg"
# Probing reads only headers (and a few packets); a file that takes longer than this is hostile or on a dead mount.
PROBE_TIMEOUT_S = 60.0
# ffmpeg may read a nested file (a playlist, a concat list); only local files, never a network URL.
PROTOCOLS = "file"


class FfmpegNotFoundError(LoupeError):
    """Neither a system ffmpeg nor the imageio-ffmpeg wheel's static build is available."""

    def __init__(self) -> None:
        super().__init__(f"no ffmpeg binary found (needed for audio and video); {INSTALL_HINT}")


@dataclass(frozen=True)
class Tools:
    """The ffmpeg binary to run, the matching ffprobe if there is one, and where they came from."""

    ffmpeg: str
    ffprobe: str | None
    origin: Literal["system", "imageio-ffmpeg"]


@lru_cache(maxsize=1)
def find_tools() -> Tools:
    """System ffmpeg (with its ffprobe) first, else imageio-ffmpeg's static ffmpeg (no ffprobe).

    Raises :class:`FfmpegNotFoundError` with the install hint when neither exists.
    """
    system = shutil.which("ffmpeg")
    if system:
        sibling = Path(system).with_name("ffprobe")
        probe_exe = str(sibling) if sibling.is_file() else shutil.which("ffprobe")
        return Tools(system, probe_exe, "system")
    try:
        import imageio_ffmpeg

        exe = str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError, OSError) as e:
        raise FfmpegNotFoundError() from e
    if not Path(exe).is_file():
        raise FfmpegNotFoundError()
    return Tools(exe, None, "imageio-ffmpeg")


def tools_for(path: Path) -> Tools:
    """:func:`find_tools`, with a missing binary reported as an IngestError naming the file."""
    try:
        return find_tools()
    except FfmpegNotFoundError as e:
        raise IngestError(str(path), str(e)) from e


# Quiet, never reading the terminal; first on the command line (ffmpeg-python would put them after the output).
GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-nostats", "-v", "error")


def compile_args(spec: Any, tools: Tools) -> list[str]:
    """The command line of an ffmpeg-python output spec, with :data:`GLOBAL_ARGS` right after the binary."""
    args = [str(a) for a in spec.compile(cmd=tools.ffmpeg)]
    return [args[0], *GLOBAL_ARGS, *args[1:]]


def input_url(path: Path) -> str:
    """The path as an ffmpeg input URL: absolute and ``file:``-prefixed, so a name like ``a:b.mp4`` or one
    starting with ``-`` is never read as a protocol or an option."""
    return "file:" + str(path.absolute())


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a media file, as far as the probe tells."""

    index: int
    kind: Literal["video", "audio", "other"]
    codec: str = ""
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # average frame rate; None when unknown
    variable_fps: bool = False  # the real and average frame rates differ (a hint, not a proof)
    rotation: int = 0  # display rotation in degrees, 0/90/180/270 (ffmpeg applies it when decoding)
    attached_pic: bool = False  # cover art in an audio file: a single picture, not a video
    sample_rate: int | None = None
    channels: int | None = None


@dataclass(frozen=True)
class MediaInfo:
    """What a probe found: container duration (None when unknown), format, streams."""

    duration_s: float | None
    format_name: str
    streams: tuple[StreamInfo, ...] = field(default_factory=tuple)

    @property
    def video(self) -> StreamInfo | None:
        """The first real video stream (cover art does not count), or None."""
        return next((s for s in self.streams if s.kind == "video" and not s.attached_pic), None)

    @property
    def audio(self) -> StreamInfo | None:
        """The first audio stream, or None."""
        return next((s for s in self.streams if s.kind == "audio"), None)

    def to_meta(self) -> dict[str, Any]:
        """A JSON-friendly summary for segment meta and the ingest report."""
        out: dict[str, Any] = {"duration_s": self.duration_s, "format": self.format_name}
        if (v := self.video) is not None:
            out["video"] = {
                "codec": v.codec,
                "width": v.width,
                "height": v.height,
                "fps": v.fps,
                "variable_fps": v.variable_fps,
                "rotation": v.rotation,
            }
        if (a := self.audio) is not None:
            out["audio"] = {"codec": a.codec, "sample_rate": a.sample_rate, "channels": a.channels}
        return out


def _rate(text: str | None) -> float | None:
    """``"30000/1001"`` → 29.97; ``"0/0"``, empty or junk → None."""
    if not text:
        return None
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den) if float(den) else None
        value = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _norm_rotation(value: float) -> int:
    return round(value / 90.0) * 90 % 360


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f and f >= 0 else None  # NaN and negatives are "unknown"


def _kind(name: Any) -> Literal["video", "audio", "other"]:
    name = str(name or "").lower()
    return "video" if name == "video" else "audio" if name == "audio" else "other"


def _from_ffprobe(data: dict[str, Any]) -> MediaInfo:
    fmt = data.get("format") or {}
    streams: list[StreamInfo] = []
    for s in data.get("streams") or []:
        kind = _kind(s.get("codec_type"))
        rotation = 0.0
        for sd in s.get("side_data_list") or []:
            if "rotation" in sd:
                rotation = float(sd["rotation"])
        if not rotation and (tag := (s.get("tags") or {}).get("rotate")):
            rotation = float(tag)
        avg, real = _rate(s.get("avg_frame_rate")), _rate(s.get("r_frame_rate"))
        streams.append(
            StreamInfo(
                index=int(s.get("index", len(streams))),
                kind=kind,
                codec=str(s.get("codec_name") or ""),
                width=s.get("width"),
                height=s.get("height"),
                fps=avg or real,
                variable_fps=bool(avg and real and abs(avg - real) > 0.01 * real),
                rotation=_norm_rotation(rotation),
                attached_pic=bool((s.get("disposition") or {}).get("attached_pic")),
                sample_rate=int(s["sample_rate"]) if s.get("sample_rate") else None,
                channels=s.get("channels"),
            )
        )
    return MediaInfo(_float(fmt.get("duration")), str(fmt.get("format_name") or ""), tuple(streams))


_INPUT = re.compile(r"^Input #0, ([^,]+(?:,[^,\s]+)*), from", re.M)
_DURATION = re.compile(r"Duration: (?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)")
_STREAM = re.compile(r"^\s*Stream #0:(\d+)\S*: (Video|Audio|Subtitle|Data|Attachment): ([^\s,]+)(.*)$")
_SIZE = re.compile(r"\b(\d{1,5})x(\d{1,5})\b")
_FPS = re.compile(r"([\d.]+k?) fps")
_TBR = re.compile(r"([\d.]+k?) tbr")
_HZ = re.compile(r"(\d+) Hz, ([^,]+)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees", re.I)
_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def parse_ffmpeg_banner(text: str) -> MediaInfo | None:
    """Parse what ``ffmpeg -i FILE`` prints about its input (used when there is no ffprobe); None if no input."""
    m = _INPUT.search(text)
    if m is None:
        return None
    d = _DURATION.search(text)
    duration = None
    if d is not None and d.group(1) is not None:
        duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3))
    streams: list[StreamInfo] = []
    lines = text[m.end() :].splitlines()
    for i, line in enumerate(lines):
        sm = _STREAM.match(line)
        if sm is None:
            continue
        rest = sm.group(4)
        rotation = 0.0
        for follow in lines[i + 1 :]:  # side data lines until the next stream
            if _STREAM.match(follow) or not follow.startswith("    "):
                break
            if (rm := _ROTATION.search(follow)) is not None:
                rotation = float(rm.group(1))
        kind = _kind(sm.group(2))
        size = _SIZE.search(rest) if kind == "video" else None
        fps = _FPS.search(rest) if kind == "video" else None
        tbr = _TBR.search(rest) if kind == "video" else None
        hz = _HZ.search(rest) if kind == "audio" else None
        avg = _rate(fps.group(1)) if fps else None
        real = _rate(tbr.group(1)) if tbr else None
        layout = hz.group(2).strip() if hz else ""
        ch_match = re.match(r"(\d+) channels", layout)
        channels = (int(ch_match.group(1)) if ch_match else _CHANNELS.get(layout.split("(")[0])) if hz else None
        streams.append(
            StreamInfo(
                index=int(sm.group(1)),
                kind=kind,
                codec=sm.group(3),
                width=int(size.group(1)) if size else None,
                height=int(size.group(2)) if size else None,
                fps=avg or real,
                variable_fps=bool(avg and real and abs(avg - real) > 0.01 * real),
                rotation=_norm_rotation(rotation),
                attached_pic="(attached pic)" in rest,
                sample_rate=int(hz.group(1)) if hz else None,
                channels=channels,
            )
        )
    return MediaInfo(duration, m.group(1), tuple(streams))


_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\]\s*")
# ffmpeg's terse complaints, said in words a user can act on.
_HINTS = (
    ("moov atom not found", "the MP4 index (moov atom) is missing: the file was cut short or never finished"),
    ("partial file", "the file is cut short (truncated)"),
)


def _reason(stderr: str, path: Path) -> str:
    """The useful part of ffmpeg's complaint: its last meaningful line without the file name or
    ``[demuxer @ 0x…]`` prefix, with a plain-words hint for the common ones."""
    lines = []
    for raw in stderr.splitlines():
        line = _PREFIX.sub("", raw.strip())
        line = line.replace(input_url(path), "").replace(str(path.absolute()), "").strip(" :")
        if line and not line.startswith(("At least one output file", "Last message repeated")):
            lines.append(line)
    if not lines:
        return "ffmpeg could not read it"
    for needle, hint in _HINTS:
        if any(needle in ln for ln in lines):
            return f"{hint} (ffmpeg: {lines[-1]})"
    return lines[-1]


def probe(path: Path, tools: Tools | None = None) -> MediaInfo:
    """Duration, streams, rotation and frame rate of a media file.

    Uses ffprobe's JSON when ffprobe exists, else parses ``ffmpeg -i``. Raises IngestError naming the file when
    ffmpeg cannot read it (not a media file, truncated beyond repair, unknown codec).
    """
    tools = tools or tools_for(path)
    url = input_url(path)
    if tools.ffprobe:
        cmd = [tools.ffprobe, "-v", "error", "-protocol_whitelist", PROTOCOLS, "-print_format", "json"]
        cmd += ["-show_format", "-show_streams", url]
    else:
        cmd = [tools.ffmpeg, "-hide_banner", "-nostdin", "-protocol_whitelist", PROTOCOLS, "-i", url]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise IngestError(str(path), f"probing the file took over {PROBE_TIMEOUT_S:.0f} s; not read") from e
    except OSError as e:
        raise IngestError(str(path), f"cannot run ffmpeg ({tools.ffmpeg}): {e}; {INSTALL_HINT}") from e
    stderr = done.stderr.decode("utf-8", "replace")
    if tools.ffprobe:
        if done.returncode != 0:
            raise IngestError(str(path), f"not a readable audio or video file ({_reason(stderr, path)})")
        try:
            info = _from_ffprobe(json.loads(done.stdout or b"{}"))
        except (ValueError, TypeError, KeyError) as e:
            raise IngestError(str(path), f"ffprobe gave an unreadable answer: {e}") from e
    else:
        parsed = parse_ffmpeg_banner(stderr)
        if parsed is None:
            raise IngestError(str(path), f"not a readable audio or video file ({_reason(stderr, path)})")
        info = parsed
    if info.video is None and info.audio is None:
        empty = " (zero duration)" if not info.duration_s else ""
        raise IngestError(str(path), f"has no audio or video stream{empty}; nothing to ingest")
    return info


# The kernel's default pipe holds 64 KiB; Linux lets a process raise it to /proc/sys/fs/pipe-max-size (1 MiB).
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class FfmpegReader:
    """Run ffmpeg with raw output on stdout and read it in fixed-size blocks.

    The pipe is the bounded buffer: ffmpeg decodes ahead at most ``pipe_bytes`` (rounded by the kernel) and then
    waits, so memory does not grow with the length of the input. stderr is drained on a thread into a short
    tail (for error messages) so a chatty ffmpeg never blocks. Leaving the ``with`` block kills ffmpeg if it is
    still running (e.g. the consumer stopped early).
    """

    def __init__(self, args: list[str], path: Path, *, pipe_bytes: int = 1 << 20, tail_lines: int = 20) -> None:
        self.args = args
        self.path = path
        self.pipe_bytes = pipe_bytes
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.stderr_lines = 0
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None

    def __enter__(self) -> FfmpegReader:
        try:
            self._proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as e:
            raise IngestError(str(self.path), f"cannot run ffmpeg ({self.args[0]}): {e}; {INSTALL_HINT}") from e
        assert self._proc.stdout is not None
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._proc.stdout.fileno(), _F_SETPIPE_SZ, self.pipe_bytes)
        self._drain = threading.Thread(target=self._read_stderr, name="ffmpeg-stderr", daemon=True)
        self._drain.start()
        return self

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.stderr_lines += 1
                self.tail.append(line)

    def blocks(self, size: int) -> Iterator[bytes]:
        """Blocks of exactly ``size`` bytes; the last one may be shorter (end of stream)."""
        assert self._proc is not None and self._proc.stdout is not None
        read = self._proc.stdout.read
        while block := read(size):
            yield block

    def finish(self) -> int:
        """Wait for ffmpeg to exit (after reading to the end); its exit status."""
        assert self._proc is not None
        self.returncode = self._proc.wait()
        if self._drain is not None:
            self._drain.join(timeout=5)
        return self.returncode

    def reason(self) -> str:
        """ffmpeg's last complaint, without the file name, for messages and warnings."""
        return _reason("\n".join(self.tail), self.path) if self.tail else "no message"

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)
        if self._drain is not None:
            self._drain.join(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        if self.returncode is None:
            self.returncode = proc.returncode
