"""Video and audio rows of ``loupe bench ingest --media-minutes N`` (issue 5, acceptance 2).

Generates two corpora in the bench's work folder (cached by length): one 1280x720 30-FPS H.264 video with a
moving picture (lavfi ``testsrc2``), a title card that changes every 20 s (drawn with Pillow, overlaid by ffmpeg)
and espeak-ng narration every 15 s in its AAC track; and one Opus recording of the same length alternating
speech, tones, noise and silence. Each is ingested with the full pipeline (decode, frame OCR, embedding, upsert)
in its own child process; the report gives media seconds per wall second and where the time goes: decode (and
thumbnails, clip writing, VAD), OCR, the image classifier (bridge + ``visual``), the sound classifier (bridge +
``audio``), e5 (texts and OCR text), other embedding work, upsert. CPU seconds are reported too: the wall time
on a shared machine depends on its load, the CPU time much less.
"""

from __future__ import annotations

import io
import itertools
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Result = dict[str, Any]
RATE = 16_000
VIDEO_SIZE = (1280, 720)
TITLE_EVERY_S = 20
SPEECH_EVERY_S = 15
SENTENCES = (
    "The harbour master opened the north gate at dawn.",
    "Containers are stacked four high on the east quay.",
    "The ferry leaves the pier every half hour in summer.",
    "Grey seals rest on the rocks at low tide.",
    "The lighthouse was painted red and white last spring.",
)


def _ffmpeg(*args: str | Path, stdin: bytes | None = None) -> None:
    from loupe.ingest.ffmpeg import find_tools

    cmd = [find_tools().ffmpeg, "-hide_banner", "-v", "error", "-y", *map(str, args)]
    done = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{done.stderr.decode(errors='replace')[-1500:]}")


def _speech(text: str) -> np.ndarray:
    """espeak-ng speech at 16 kHz (silence when espeak-ng is missing: the bench still runs, without speech)."""
    import soundfile

    try:
        wav = subprocess.run(["espeak-ng", "-v", "en", "--stdout", text], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return np.zeros(RATE, dtype=np.float32)
    data, rate = soundfile.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    n = int(len(mono) * RATE / rate)
    return np.interp(np.linspace(0, len(mono) - 1, n), np.arange(len(mono)), mono).astype(np.float32)


def _track(seconds: float, *, sounds: bool) -> np.ndarray:
    """Speech every SPEECH_EVERY_S seconds; with ``sounds``, a tone and a noise burst in between."""
    track = np.zeros(int(seconds * RATE), dtype=np.float32)
    spoken = [_speech(s) for s in SENTENCES]
    rng = np.random.default_rng(0)
    t_axis = np.arange(int(2.0 * RATE)) / RATE
    for k, start in enumerate(range(1, int(seconds) - 5, SPEECH_EVERY_S)):
        parts = [(start, spoken[k % len(spoken)])]
        if sounds:
            parts.append((start + 6, (0.2 * np.sin(2 * np.pi * (440 + 110 * (k % 4)) * t_axis)).astype(np.float32)))
            parts.append((start + 10, (0.05 * rng.standard_normal(len(t_axis))).astype(np.float32)))
        for t, samples in parts:
            a = int(t * RATE)
            b = min(len(track), a + len(samples))
            track[a:b] += samples[: b - a]
    return track


def _title_cards(folder: Path, n: int) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGBA", (760, 150), (0, 0, 0, 170))
        draw = ImageDraw.Draw(im)
        draw.text((30, 20), f"Chapter {i + 1}", fill=(255, 255, 255, 255), font=ImageFont.load_default(size=52))
        line = SENTENCES[i % len(SENTENCES)].split(" on ")[0]
        draw.text((30, 90), line, fill=(255, 230, 150, 255), font=ImageFont.load_default(size=30))
        im.save(folder / f"title-{i:04d}.png")
    return folder / "title-%04d.png"


def make_media_corpora(root: Path, minutes: float) -> dict[str, Path]:
    """``{"video": folder, "audio": folder}`` with one generated file each, ``minutes`` long (reused if present)."""
    import soundfile

    seconds = round(minutes * 60)
    video_dir, audio_dir = root / f"media-video-{seconds}s", root / f"media-audio-{seconds}s"
    video, audio = video_dir / "titled-testsrc2-720p.mp4", audio_dir / "speech-and-sounds.ogg"
    if not video.exists():
        video_dir.mkdir(parents=True, exist_ok=True)
        tmp = root / f"media-tmp-{seconds}s"
        cards = _title_cards(tmp / "cards", seconds // TITLE_EVERY_S + 1)
        soundfile.write(str(tmp / "track.wav"), _track(seconds, sounds=False), RATE, subtype="PCM_16")
        w, h = VIDEO_SIZE
        _ffmpeg(
            "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate=30:duration={seconds}",
            "-framerate", f"1/{TITLE_EVERY_S}", "-i", cards, "-i", tmp / "track.wav",
            "-filter_complex", "[0:v][1:v]overlay=x=60:y=60:eof_action=repeat[v]", "-map", "[v]", "-map", "2:a",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-t", str(seconds), video.with_suffix(".part.mp4"),
        )  # fmt: skip
        video.with_suffix(".part.mp4").replace(video)
    if not audio.exists():
        audio_dir.mkdir(parents=True, exist_ok=True)
        raw = _track(seconds, sounds=True).astype("<f4").tobytes()
        part = audio.with_suffix(".part.ogg")
        _ffmpeg(
            "-f",
            "f32le",
            "-ar",
            str(RATE),
            "-ac",
            "1",
            "-i",
            "pipe:0",
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            part,
            stdin=raw,
        )
        part.replace(audio)
    return {"video": video_dir, "audio": audio_dir}


def media_totals(files: Sequence[Any]) -> Result:
    """Seconds of video and of audio-only files an ingest report covers, frames, OCR calls and OCR seconds."""
    from loupe.ingest.source import AUDIO_EXTS, VIDEO_EXTS

    out: Result = {"video_s": 0.0, "audio_s": 0.0, "frames": 0, "frames_ocr": 0, "ocr_s": 0.0}
    for f in files:
        d = f.details or {}
        ext = Path(f.path).suffix.lower()
        if ext in VIDEO_EXTS and d.get("frames"):
            out["video_s"] += float(d.get("duration_s") or d["frames"])
        elif ext in AUDIO_EXTS | VIDEO_EXTS:
            out["audio_s"] += float(d.get("audio_s") or d.get("duration_s") or 0.0)
        out["frames"] += int(d.get("frames") or 0)
        out["frames_ocr"] += int(d.get("frames_ocr") or 0)
        out["ocr_s"] += float(d.get("ocr_s") or 0.0)
    return out


def media_phases(phases: Mapping[str, float], timer_seconds: Mapping[str, float], ocr_s: float) -> Result:
    """Where a media ingest's time went: the pipeline phases split into decode vs OCR and per embedding model.

    Splitting (decoding, OCR) runs in threads beside the embedder, so the phases overlap and need not sum to the
    wall time: ``split_wait_s`` is the time the embedder waited for the splitter (decoding and OCR not hidden
    behind embedding), ``ocr_s`` the OCR's own time in the splitting thread.
    """
    embed = phases.get("embed_s", 0.0)
    image, sound, e5 = (timer_seconds.get(k, 0.0) for k in ("embed_image", "embed_sound", "embed_e5"))
    return {
        "split_wait_s": phases.get("parse_s", 0.0),
        "ocr_s": ocr_s,
        "image_classifier_s": image,
        "sound_classifier_s": sound,
        "e5_s": e5,
        "embed_other_s": max(0.0, embed - image - sound - e5),
        "model_load_s": phases.get("model_load_s", 0.0),
        "upsert_s": phases.get("upsert_s", 0.0),
    }


def media_rows(results: Sequence[Mapping[str, Any]]) -> list[Result]:
    """One table row per media corpus: media seconds per wall second (and per CPU second / 2 cores), phases."""
    from loupe.lab.bench.common import med, summarize

    rows = []
    # cold: the whole process (interpreter, imports, model loading and ONNX exports, ingest) as one `loupe
    # ingest` of the file; warm: the file's ingest alone, after a 15-s cut of it warmed the models.
    # cold (`loupe ingest`): the same cold start timed as a user runs it, the CLI alone in its process (the
    # instrumented child also imports the bench harness and traces imports); no phase split.
    starts = (
        ("cold", "loupe", "process_s"),
        ("cold (loupe ingest)", "loupe_cli", "process_s"),
        ("warm", "loupe_warm", "ingest_s"),
    )
    for entry, (start, key, wall_key) in itertools.product(results, starts):
        if key not in entry:
            continue
        runs = [r for r in entry[key]["runs"] if "error" not in r and r.get("media")]
        for kind in ("video", "audio"):
            seconds = [r["media"][f"{kind}_s"] for r in runs]
            if not runs or not any(seconds):
                continue
            walls = [r[wall_key] for r in runs]
            cpus = [r.get("cpu_s") or 0.0 for r in runs]
            phases = {k: med(summarize([r["media_phases"][k] for r in runs])) for k in runs[0].get("media_phases", {})}
            rows.append(
                {
                    "corpus": Path(entry["corpus"]).name,
                    "kind": kind,
                    "start": start,
                    "media_s": seconds[0],
                    "x_real_time_wall": med(summarize([s / w for s, w in zip(seconds, walls, strict=True)])),
                    # As if the run had both cores to itself: media seconds per (CPU seconds / 2).
                    "x_real_time_cpu_2_cores": med(
                        summarize([s / (c / 2) if c else None for s, c in zip(seconds, cpus, strict=True)])
                    ),
                    "frames_ocr": runs[0]["media"]["frames_ocr"],
                    **phases,
                }
            )
    return rows


def format_media(rows: Sequence[Mapping[str, Any]]) -> str:
    """The media table of ``bench ingest --media-minutes``."""
    from loupe.lab.bench.common import format_table

    keys = ["split_wait_s", "ocr_s", "image_classifier_s", "sound_classifier_s", "e5_s", "embed_other_s"]
    keys += ["model_load_s", "upsert_s"]
    cols = [("corpus", "corpus", "{}"), ("kind", "kind", "{}"), ("start", "start", "{}")]
    cols += [("media_s", "media s", "{:.0f}")]
    cols += [("x_real_time_wall", "x real time (wall)", "{:.1f}"), ("x_real_time_cpu_2_cores", "x (CPU/2)", "{:.1f}")]
    cols += [("frames_ocr", "OCRs", "{}")] + [(k, k[:-2], "{:.1f}") for k in keys]
    head = "video and audio ingest, embedding included (seconds, median; splitting, OCR and embedding overlap):"
    return head + "\n" + format_table(rows, cols)
