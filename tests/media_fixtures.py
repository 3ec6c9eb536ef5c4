"""Generated audio and video for the media tests: everything is made here, in tmp_path, by ffmpeg (lavfi
sources, tones, noise), PIL-drawn frames piped into ffmpeg, numpy signals and espeak-ng speech.

Nothing here comes from a package's data files (see conventions: reserved material).
"""

from __future__ import annotations

import colorsys
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from loupe.ingest.ffmpeg import FfmpegNotFoundError, find_tools

RATE = 16_000


def ffmpeg_exe() -> str:
    """The ffmpeg Loupe itself would use (system first, else imageio-ffmpeg's static build)."""
    return find_tools().ffmpeg


def have_ffmpeg() -> bool:
    try:
        find_tools()
    except FfmpegNotFoundError:
        return False
    return True


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


needs_ffmpeg = pytest.mark.skipif(
    not have_ffmpeg(), reason="needs ffmpeg: apt-get install ffmpeg, or pip install imageio-ffmpeg"
)
needs_espeak = pytest.mark.skipif(not have_espeak(), reason="needs espeak-ng: apt-get install espeak-ng")


def ffmpeg(*args: str | Path, stdin: bytes | None = None) -> None:
    """Run ffmpeg quietly; raise with its message when it fails."""
    cmd = [ffmpeg_exe(), "-nostdin" if stdin is None else "-hide_banner", "-v", "error", "-y", *map(str, args)]
    done = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{done.stderr.decode(errors='replace')[-2000:]}")


# --- pictures -----------------------------------------------------------------------------------------------


def scene_colour(k: int) -> tuple[int, int, int]:
    """A distinct saturated colour for second k (neighbouring seconds differ by ~100 degrees of hue)."""
    r, g, b = colorsys.hsv_to_rgb(((k * 0.29) % 1.0), 0.9, 0.9)
    return round(r * 255), round(g * 255), round(b * 255)


def scene_picture(k: int, size: tuple[int, int], text: bool = True) -> bytes:
    """Raw RGB of second k: a flat ``scene_colour(k)`` with "SCENE k" drawn in white in the upper band."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = size
    im = Image.new("RGB", (w, h), scene_colour(k))
    if text:
        font = ImageFont.load_default(size=max(10, h // 6))
        ImageDraw.Draw(im).text((w // 10, h // 12), f"SCENE {k}", fill=(255, 255, 255), font=font)
    return im.tobytes()


def scene_frames(seconds: int, fps: int, size: tuple[int, int], text: bool = True) -> bytes:
    """Raw RGB frames at ``fps``: second k shows :func:`scene_picture` k."""
    return b"".join(scene_picture(k, size, text) * fps for k in range(seconds))


def make_scene_video(
    path: Path,
    seconds: int,
    *,
    fps: int = 5,
    size: tuple[int, int] = (320, 240),
    audio: Path | None = None,
    extra: Sequence[str] = (),
) -> Path:
    """An H.264 video whose second k shows colour ``scene_colour(k)`` and the text "SCENE k"; optional audio."""
    w, h = size
    args: list[str | Path] = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "pipe:0"]
    if audio is not None:
        args += ["-i", audio, "-c:a", "aac", "-b:a", "64k", "-shortest"]
    # veryfast (unlike ultrafast) uses B-frames: decoding with -skip_frame noref then really skips frames.
    args += ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", *extra, path]
    ffmpeg(*args, stdin=scene_frames(seconds, fps, size))
    return path


def make_vfr_video(path: Path) -> Path:
    """Variable frame rate (Matroska keeps each frame's timestamp): seconds 0-4 at 5 FPS, seconds 5-9 at 25 FPS;
    every frame shows ``scene_colour`` of the second it is shown in."""
    w, h = 96, 64
    frames = b"".join(scene_picture(k, (w, h), text=False) * (5 if k < 5 else 25) for k in range(10))
    setpts = "setpts='if(lt(N,25),N/5,5+(N-25)/25)/TB'"
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25", "-i", "pipe:0",
        "-vf", setpts, "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path,
        stdin=frames,
    )  # fmt: skip
    return path


def make_halves_video(path: Path, size: tuple[int, int] = (320, 180), seconds: int = 2) -> Path:
    """Landscape frames, left half red and right half blue (to see a rotation in the decoded frames)."""
    from PIL import Image

    w, h = size
    im = Image.new("RGB", (w, h), (220, 20, 20))
    im.paste((20, 20, 220), (w // 2, 0, w, h))
    frame = im.tobytes()
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "2", "-i", "pipe:0",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path,
        stdin=frame * 2 * seconds,
    )  # fmt: skip
    return path


def set_rotation(src: Path, dest: Path, degrees: int) -> Path:
    """Copy a video with display rotation metadata, as a phone writes it (no re-encode).

    ffmpeg ≥ 6.1 takes ``-display_rotation`` on the input; older ones take the ``rotate`` stream tag.
    """
    try:
        ffmpeg("-display_rotation:v:0", str(degrees), "-i", src, "-c", "copy", dest)
    except RuntimeError:
        ffmpeg("-i", src, "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", dest)
    return dest


def make_testsrc_video(
    path: Path,
    seconds: float,
    *,
    size: str = "32x32",
    rate: float = 1,
    audio: str | None = None,
    codec: str = "libx264",
) -> Path:
    """A cheap lavfi ``testsrc`` video (default 32x32 at 1 FPS), optionally with a lavfi audio source."""
    args: list[str | Path] = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}"]
    if audio is not None:
        args += ["-f", "lavfi", "-i", audio, "-map", "0:v", "-map", "1:a", "-c:a", "flac", "-t", str(seconds)]
    if codec == "libx264":
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "250"]
    else:
        args += ["-c:v", codec]
    ffmpeg(*args, path)
    return path


# --- sound --------------------------------------------------------------------------------------------------


def espeak(text: str, *, voice: str = "en", speed: int = 160) -> np.ndarray:
    """espeak-ng speech as 16 kHz float32 samples."""
    import io

    import soundfile

    done = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], capture_output=True, check=True
    )
    data, rate = soundfile.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    n = int(len(mono) * RATE / rate)
    return np.interp(np.linspace(0, len(mono) - 1, n), np.arange(len(mono)), mono).astype(np.float32)


def tone(seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


@dataclass(frozen=True)
class Event:
    """Something audible at a known time: ``speech`` (text) or ``tone`` (seconds long)."""

    t: float
    kind: str
    text: str = ""
    seconds: float = 0.0

    def samples(self) -> np.ndarray:
        return espeak(self.text) if self.kind == "speech" else tone(self.seconds)


def trimmed(samples: np.ndarray, level: float = 1e-3) -> tuple[np.ndarray, float]:
    """Samples without leading/trailing near-silence, and the seconds cut from the front."""
    loud = np.flatnonzero(np.abs(samples) > level)
    if len(loud) == 0:
        return samples[:0], 0.0
    return samples[loud[0] : loud[-1] + 1], loud[0] / RATE


def make_track(path: Path, seconds: float, events: Sequence[Event]) -> list[tuple[float, float]]:
    """A 16 kHz WAV with each event placed so its sound starts at ``event.t``; returns the (start, end) of each."""
    import soundfile

    track = np.zeros(int(seconds * RATE), dtype=np.float32)
    spans = []
    for ev in events:
        sound, _ = trimmed(ev.samples())
        a = int(ev.t * RATE)
        b = min(len(track), a + len(sound))
        track[a:b] += sound[: b - a]
        spans.append((ev.t, b / RATE))
    soundfile.write(str(path), track, RATE, subtype="PCM_16")
    return spans


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    import soundfile

    soundfile.write(str(path), samples, rate, subtype="PCM_16")
    return path


# --- damage -------------------------------------------------------------------------------------------------


def truncate(src: Path, dest: Path, keep: float) -> Path:
    """A copy with only the first ``keep`` share of the bytes (a download cut short)."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def corrupt_middle(src: Path, dest: Path, start: float, length: float, seed: int = 1) -> Path:
    """A copy with random bytes over ``[start, start + length)`` (shares of the file): damaged frames mid-file."""
    data = bytearray(src.read_bytes())
    a, b = int(len(data) * start), int(len(data) * (start + length))
    data[a:b] = np.random.default_rng(seed).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    dest.write_bytes(bytes(data))
    return dest
