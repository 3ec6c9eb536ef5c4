"""Generate the dev set's video and audio files (deterministic): titled scenes with espeak-ng narration, synthetic
sound events, spoken memos, and the recorded queries that search them.

    python eval/devset/make_media.py            # writes corpus/video, corpus/audio, query-audio, media-manifest.json
    python eval/devset/make_media.py --check    # regenerate into a temp dir and compare the manifest's times

Everything is made here: frames drawn with Pillow's bundled font, speech by espeak-ng, sounds by numpy; nothing
comes from a package's data files. Needs ffmpeg (libx264, aac, libopus) and espeak-ng. The manifest records when
each scene, narration, sound and memo happens (seconds); queries.jsonl targets those times.
"""

from __future__ import annotations

import argparse
import colorsys
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RATE = 16_000
SIZE = (320, 180)  # small on purpose: the committed media stay well under 3 MB
FPS = 2  # source frame rate; Loupe samples 1 FPS


@dataclass(frozen=True)
class Scene:
    start: int
    end: int
    title: str
    line: str = ""


@dataclass(frozen=True)
class Said:
    """Narration: ``text`` spoken by espeak-ng starting at ``t`` seconds."""

    t: float
    text: str
    voice: str = "en"
    speed: int = 150


@dataclass(frozen=True)
class Video:
    name: str
    seconds: int
    scenes: tuple[Scene, ...]
    narration: tuple[Said, ...]


VIDEOS = (
    Video(
        "harbour-tour.mp4",
        96,
        (
            Scene(0, 8, "Harbour Tour 2025", "Welcome aboard"),
            Scene(8, 20, "North Gate", "Opens daily at 6:00"),
            Scene(20, 31, "Container Terminal", "Cranes move 30 boxes per hour"),
            Scene(31, 44, "Fish Market", "Auction starts at 5 am"),
            Scene(44, 58, "Lighthouse", "Built in 1887, 42 m tall"),
            Scene(58, 70, "Ferry Pier", "Tickets 4.50 EUR"),
            Scene(70, 84, "Seal Rocks", "Grey seals rest at low tide"),
            Scene(84, 96, "Thank you", "Next tour: 14:00"),
        ),
        (
            Said(10, "The gate was rebuilt after the great storm of 1953."),
            Said(46, "Climb the two hundred steps for the view over the bay."),
            Said(72, "Please keep your distance from the animals."),
        ),
    ),
    Video(
        "pancake-recipe.mp4",
        72,
        (
            Scene(0, 8, "Simple Pancakes", "Serves four"),
            Scene(8, 18, "Step 1", "Sift 250 g flour into a bowl"),
            Scene(18, 28, "Step 2", "Whisk 2 eggs with 500 ml milk"),
            Scene(28, 38, "Step 3", "Rest the batter for 30 minutes"),
            Scene(38, 50, "Step 4", "Heat butter in a frying pan"),
            Scene(50, 62, "Step 5", "Flip when bubbles appear"),
            Scene(62, 72, "Enjoy", "Serve with lemon and sugar"),
        ),
        (
            Said(20, "Add the milk slowly so that no lumps form."),
            Said(52, "Each pancake needs about one minute per side."),
        ),
    ),
    Video(
        "solar-lecture.mp4",
        80,
        (
            Scene(0, 10, "Solar Panels 101", "Evening course, week 3"),
            Scene(10, 22, "How a cell works", "Light frees electrons in silicon"),
            Scene(22, 34, "Inverters", "Direct current in, alternating current out"),
            Scene(34, 46, "Tilt angle", "Roughly equal to your latitude"),
            Scene(46, 58, "Cleaning", "Dust can cut output by 15 %"),
            Scene(58, 70, "Battery storage", "Keep midday power for the evening"),
            Scene(70, 80, "Questions?", "Thank you for listening"),
        ),
        (
            Said(36, "In winter a steeper angle catches more of the low sun."),
            Said(60, "Lithium iron phosphate batteries last for thousands of cycles."),
        ),
    ),
)


# --- sounds -------------------------------------------------------------------------------------------------


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * RATE)) / RATE


def sine(seconds: float, freq: float, amp: float = 0.3) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * _t(seconds))


def dual(seconds: float, f1: float, f2: float) -> np.ndarray:
    """Two tones at once, as telephone signals are made."""
    return sine(seconds, f1, 0.15) + sine(seconds, f2, 0.15)


def gated(signal: np.ndarray, on: float, off: float) -> np.ndarray:
    """Switch a signal on for ``on`` s and off for ``off`` s, repeatedly."""
    period = on + off
    return signal * ((_t(len(signal) / RATE) % period) < on)


def siren(seconds: float, lo: float, hi: float, period: float = 1.6) -> np.ndarray:
    """A two-tone wail: frequency swept up and down between lo and hi."""
    t = _t(seconds)
    freq = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * np.pi * t / period))
    return 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / RATE)


DTMF = {"1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "4": (770, 1209), "5": (770, 1336),
        "6": (770, 1477), "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "0": (941, 1336)}  # fmt: skip


def dtmf(digits: str, tone_s: float = 0.15, gap_s: float = 0.1) -> np.ndarray:
    parts = []
    for d in digits:
        lo, hi = DTMF[d]
        parts += [sine(tone_s, lo, 0.15) + sine(tone_s, hi, 0.15), np.zeros(int(gap_s * RATE))]
    return np.concatenate(parts)


def white_noise(seconds: float, amp: float, seed: int) -> np.ndarray:
    return amp * np.random.default_rng(seed).standard_normal(int(seconds * RATE))


def brown_noise(seconds: float, seed: int) -> np.ndarray:
    walk = np.cumsum(np.random.default_rng(seed).standard_normal(int(seconds * RATE)))
    walk -= np.convolve(walk, np.ones(400) / 400, mode="same")  # remove the drift, keep the rumble
    return 0.3 * walk / (np.abs(walk).max() or 1.0)


def ticks(seconds: float, every: float = 0.25) -> np.ndarray:
    """Short decaying clicks, like a clock (the gaps are shorter than a pause, so they form one sound)."""
    out = np.zeros(int(seconds * RATE))
    click = 0.6 * np.exp(-_t(0.02) * 400) * np.sin(2 * np.pi * 3000 * _t(0.02))
    for k in range(int(seconds / every)):
        a = int(k * every * RATE)
        out[a : a + len(click)] += click[: len(out) - a]
    return out


def chirps(seconds: float, every: float = 0.25) -> np.ndarray:
    """Rising sweeps of 0.15 s (1-4 kHz)."""
    t = _t(0.15)
    sweep = 0.3 * np.sin(2 * np.pi * (1000 * t + 0.5 * (3000 / 0.15) * t**2)) * np.hanning(len(t))
    out = np.zeros(int(seconds * RATE))
    for k in range(int(seconds / every)):
        a = int(k * every * RATE)
        out[a : a + len(sweep)] += sweep[: len(out) - a]
    return out


def square_buzz(seconds: float, freq: float = 120.0) -> np.ndarray:
    return 0.2 * np.sign(np.sin(2 * np.pi * freq * _t(seconds)))


@dataclass(frozen=True)
class Sound:
    t: float
    name: str  # what it is, for the manifest
    samples: np.ndarray

    @property
    def end(self) -> float:
        return round(self.t + len(self.samples) / RATE, 3)


def sound_files() -> dict[str, tuple[float, list[Sound]]]:
    """Three recordings of synthetic events separated by silence (name → length, events)."""
    return {
        "phone-line.ogg": (
            30.0,
            [
                Sound(1.0, "dial tone (350 + 440 Hz)", dual(4, 350, 440)),
                Sound(7.0, "DTMF dialling 0612345789", dtmf("0612345789")),
                Sound(12.0, "ringback (440 + 480 Hz, 2 s on, 4 s off)", gated(dual(8, 440, 480), 2, 4)),
                Sound(23.0, "busy signal (480 + 620 Hz, 0.5 s on/off)", gated(dual(5, 480, 620), 0.5, 0.5)),
            ],
        ),
        "alarm-test.ogg": (
            32.0,
            [
                Sound(1.0, "siren wail 600-1300 Hz", siren(6, 600, 1300)),
                Sound(10.0, "beeping 2 kHz, 0.2 s on/off", gated(sine(4, 2000, 0.3), 0.2, 0.2)),
                Sound(17.0, "buzzer, 120 Hz square wave", square_buzz(4)),
                Sound(24.0, "chirps rising 1-4 kHz", chirps(4)),
            ],
        ),
        "lab-noise.ogg": (
            34.0,
            [
                Sound(1.0, "1 kHz sine reference tone", sine(5, 1000, 0.3)),
                Sound(9.0, "white noise", white_noise(5, 0.15, seed=7)),
                Sound(17.0, "ticking clicks, 4 per second", ticks(5)),
                Sound(25.0, "brown noise rumble", brown_noise(6, seed=3)),
            ],
        ),
    }


MEMOS = (
    Said(1.0, "Reminder: the dentist appointment moved to Thursday at ten.", "en", 150),
    Said(7.5, "Please order two new printer cartridges for the office.", "en-us", 145),
    Said(14.0, "The quarterly report is due on the last Friday of March.", "en", 160),
    Said(20.5, "Call the plumber about the leaking pipe in the basement.", "en-gb-x-rp", 150),
    Said(27.0, "Buy flowers for grandmother's birthday on Sunday.", "en-us", 155),
)
MEMO_SECONDS = 33.0

# Recorded queries (not in the corpus): spoken questions and sounds like the targets, made differently.
SPOKEN_QUERIES = {
    "speech-printer.ogg": Said(0.3, "order printer cartridges", "en-gb-x-rp", 140),
    "speech-plumber.ogg": Said(0.3, "leaking pipe plumber", "en-us", 135),
    "speech-report.ogg": Said(0.3, "when is the quarterly report due", "en", 140),
}


def sound_queries() -> dict[str, np.ndarray]:
    pad = np.zeros(int(0.3 * RATE))
    return {
        "sound-siren.ogg": np.concatenate([pad, siren(4, 700, 1500, period=1.2), pad]),
        "sound-dtmf.ogg": np.concatenate([pad, dtmf("5550199"), pad]),
        "sound-noise.ogg": np.concatenate([pad, white_noise(3, 0.25, seed=11), pad]),
    }


# --- rendering ----------------------------------------------------------------------------------------------


def speak(said: Said) -> np.ndarray:
    """espeak-ng speech at 16 kHz with leading/trailing silence trimmed."""
    import soundfile

    wav = subprocess.run(
        ["espeak-ng", "-v", said.voice, "-s", str(said.speed), "--stdout", said.text], capture_output=True, check=True
    ).stdout
    data, rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    n = int(len(mono) * RATE / rate)
    out = np.interp(np.linspace(0, len(mono) - 1, n), np.arange(len(mono)), mono)
    loud = np.flatnonzero(np.abs(out) > 1e-3)
    return out[loud[0] : loud[-1] + 1] if len(loud) else out


def mix(seconds: float, parts: Sequence[tuple[float, np.ndarray]]) -> np.ndarray:
    track = np.zeros(int(seconds * RATE), dtype=np.float64)
    for t, samples in parts:
        a = int(t * RATE)
        b = min(len(track), a + len(samples))
        track[a:b] += samples[: b - a]
    return np.clip(track, -1, 1).astype(np.float32)


def ffmpeg(*args: str | Path, stdin: bytes) -> None:
    cmd = ["ffmpeg", "-hide_banner", "-v", "error", "-y", *map(str, args)]
    done = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"ffmpeg failed: {' '.join(cmd)}\n{done.stderr.decode(errors='replace')[-1500:]}")


# Same bytes from the same tools: no encoder/muxer version strings, one encoding thread.
BITEXACT = ("-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-threads", "1")


def encode_audio(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = ["-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", "pipe:0"]
    ffmpeg(*raw, "-c:a", "libopus", "-b:a", "24k", *BITEXACT, path, stdin=samples.astype("<f4").tobytes())


def scene_picture(k: int, scene: Scene) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    w, h = SIZE
    r, g, b = colorsys.hsv_to_rgb((k * 0.37) % 1.0, 0.75, 0.55)
    im = Image.new("RGB", SIZE, (round(r * 255), round(g * 255), round(b * 255)))
    draw = ImageDraw.Draw(im)
    draw.text((w // 14, h // 4), scene.title, fill=(255, 255, 255), font=ImageFont.load_default(size=h // 8))
    if scene.line:
        draw.text((w // 14, h * 3 // 5), scene.line, fill=(255, 240, 160), font=ImageFont.load_default(size=h // 13))
    return im.tobytes()


def render_video(video: Video, out: Path) -> dict[str, object]:
    frames = b"".join(scene_picture(k, s) * ((s.end - s.start) * FPS) for k, s in enumerate(video.scenes))
    spoken = [(s.t, speak(s)) for s in video.narration]
    with tempfile.TemporaryDirectory() as tmp:
        track = Path(tmp) / "track.wav"
        import soundfile

        soundfile.write(str(track), mix(video.seconds, spoken), RATE, subtype="PCM_16")
        w, h = SIZE
        ffmpeg(
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "pipe:0", "-i", track,
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k",
            "-shortest", *BITEXACT, out,
            stdin=frames,
        )  # fmt: skip
    return {
        "seconds": video.seconds,
        "scenes": [[s.start, s.end, s.title, s.line] for s in video.scenes],
        "narration": [
            [s.t, round(s.t + len(a) / RATE, 3), s.text] for s, (_, a) in zip(video.narration, spoken, strict=True)
        ],
    }


def generate(root: Path) -> dict[str, object]:
    """Write every file under ``root`` (corpus/… and query-audio/…); return the manifest."""
    manifest: dict[str, object] = {"rate": RATE, "video": {}, "audio": {}, "queries": {}}
    for video in VIDEOS:
        out = root / "corpus" / "video" / video.name
        out.parent.mkdir(parents=True, exist_ok=True)
        manifest["video"][video.name] = render_video(video, out)  # type: ignore[index]
    for name, (seconds, events) in sound_files().items():
        encode_audio(root / "corpus" / "audio" / name, mix(seconds, [(e.t, e.samples) for e in events]))
        manifest["audio"][name] = [[e.t, e.end, e.name] for e in events]  # type: ignore[index]
    spoken = [(m.t, speak(m)) for m in MEMOS]
    encode_audio(root / "corpus" / "audio" / "voice-memos.ogg", mix(MEMO_SECONDS, spoken))
    manifest["audio"]["voice-memos.ogg"] = [  # type: ignore[index]
        [m.t, round(m.t + len(a) / RATE, 3), m.text] for m, (_, a) in zip(MEMOS, spoken, strict=True)
    ]
    for name, said in SPOKEN_QUERIES.items():
        samples = speak(said)
        encode_audio(root / "query-audio" / name, mix(len(samples) / RATE + 0.6, [(said.t, samples)]))
        manifest["queries"][name] = said.text  # type: ignore[index]
    for name, samples in sound_queries().items():
        encode_audio(root / "query-audio" / name, samples.astype(np.float32))
        manifest["queries"][name] = "generated sound"  # type: ignore[index]
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="regenerate in a temp dir; compare with media-manifest.json")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = generate(Path(tmp))
        stored = json.loads((HERE / "media-manifest.json").read_text())
        same = fresh == stored
        print("manifest matches" if same else "manifest differs (espeak-ng version?)")
        return 0 if same else 1
    manifest = generate(HERE)
    (HERE / "media-manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    sizes = sorted((p.stat().st_size, p.relative_to(HERE)) for p in HERE.glob("**/*") if p.suffix in (".mp4", ".ogg"))
    for size, rel in sizes:
        print(f"{size:>9}  {rel}")
    print(f"{sum(s for s, _ in sizes):>9}  total bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
