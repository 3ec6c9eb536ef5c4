"""A mixed-modality validation collection (no dev-set data) for the modality gap work (issue 21).

``python eval/modality/make_validation.py [--out /tmp/wt21-val]`` writes ``corpus/`` and ``queries.jsonl`` in
``loupe eval``'s format, so the validation set is scored by the same code as the dev set:

    loupe eval --queries /tmp/wt21-val/queries.jsonl --corpus /tmp/wt21-val/corpus --data-dir /tmp/wt21-val/data

Material (none of it reserved, ../../../shared/conventions.md; none of it in eval/devset):
- photos and sounds: Debian ``gcompris-qt-data`` (public-domain / CC0 / CC-BY-SA photos, GPL sounds), as
  tools/bridge_tuning.py unpacks them; the concept of a photo comes from its file name;
- text files: long descriptions of installed Debian packages (``/var/lib/dpkg/status``);
- speech recordings: espeak-ng (held-out voices of the speech head) speaking the *first sentence of a package's
  long description*, a source the head's training sentences do not draw on (lab/training/speech_data.py uses
  synopses, manual page descriptions, docstrings and gettext messages);
- videos: generated with ffmpeg, each three photos of *other* concepts for 4 s each, half of them narrated by
  espeak-ng (a package's first sentence), half with a quiet tone.

Queries: typed and spoken (held-out voices) for images, video moments, text files and recordings; typed for
sounds. Everything is seeded; a rerun writes the same files.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import bridge_tuning as BT  # noqa: E402

from loupe.lab.training import speech_data as T  # noqa: E402

SEED = 21
SLIDE_S = 4.0


def packages(status: Path = Path("/var/lib/dpkg/status")) -> list[tuple[str, str, str]]:
    """(package, synopsis, long description) for installed packages with a usable description."""
    out = []
    seen: set[str] = set()
    for block in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        name = re.search(r"^Package: (.+)$", block, re.M)
        desc = re.search(r"^Description: (.+)\n((?: .*\n?)*)", block, re.M)
        if not (name and desc):
            continue
        body = " ".join(s.strip() for s in desc.group(2).splitlines() if s.strip() and s.strip() != ".")
        syn = T.clean(desc.group(1))
        if len(body) < 160 or syn.lower() in seen or not T.usable(syn):
            continue
        seen.add(syn.lower())
        out.append((name.group(1), syn, body))
    return sorted(out)


def first_sentence(text: str) -> str | None:
    """The first sentence of a description when it is worth speaking."""
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    s = T.clean(m.group(1) if m else text)
    return s if T.usable(s, 5, 28) else None


def say(text: str, voice: str, speed: int, pitch: int, path: Path) -> None:
    """espeak-ng → 16 kHz mono WAV at ``path``."""
    import soundfile

    soundfile.write(path, T.espeak(text, voice, speed, pitch), 16_000)


def make_video(photos: list[Path], narration: Path | None, out: Path, work: Path) -> None:
    """A slideshow: each photo for SLIDE_S seconds at 640x480 (padded), with the narration or a quiet tone."""
    import imageio_ffmpeg

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    total = SLIDE_S * len(photos)
    args = [ffmpeg, "-y", "-loglevel", "error"]
    for p in photos:
        png = work / f"{p.stem}.png"
        if not png.exists():
            from PIL import Image

            Image.open(p).convert("RGB").save(png)
        args += ["-loop", "1", "-t", str(SLIDE_S), "-i", str(png)]
    if narration is not None:
        args += ["-i", str(narration)]
    else:
        args += ["-f", "lavfi", "-t", str(total), "-i", "sine=frequency=220:sample_rate=16000"]
    n = len(photos)
    scale = "".join(
        f"[{i}:v]scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=10[v{i}];"
        for i in range(n)
    )
    concat = "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[v]"
    audio = f"[{n}:a]apad,atrim=0:{total},volume={'1.0' if narration else '0.05'}[a]"
    args += ["-filter_complex", scale + concat + ";" + audio, "-map", "[v]", "-map", "[a]"]
    args += ["-t", str(total), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-c:a", "aac", str(out)]
    subprocess.run(args, check=True)


def main() -> None:
    """Build the corpus and the queries."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("/tmp/wt21-val"))
    ap.add_argument("--texts", type=int, default=120)
    ap.add_argument("--recordings", type=int, default=40)
    ap.add_argument("--videos", type=int, default=8)
    args = ap.parse_args()
    rng = random.Random(SEED)
    out: Path = args.out
    corpus = out / "corpus"
    for sub in ("text", "images", "audio", "video", "query-audio"):
        (corpus.parent / sub if sub == "query-audio" else corpus / sub).mkdir(parents=True, exist_ok=True)
    acts = BT.fetch_gcompris(out / "gcompris-work")
    voices = T.voices("en", held_out=True)
    queries: list[dict[str, object]] = []

    def query(qid: str, modality: str, target: str, locator: object = None, text: str | None = None,
              audio: str | None = None, also: list[str] | None = None) -> None:  # fmt: skip
        queries.append(
            {
                "id": qid,
                "query_text": text,
                "query_audio": audio,
                "query_image": None,
                "target_file": target,
                "target_locator": locator,
                "modality": modality,
                "also_relevant": [{"file": a, "locator": None} for a in (also or [])],
            }
        )

    def spoken(qid: str, text: str) -> str:
        rel = f"query-audio/{qid}.wav"
        if not (out / rel).exists():
            say(text, rng.choice(voices), rng.randint(140, 190), rng.randint(35, 65), out / rel)
        return rel

    # --- photos: concepts split between still images and videos -------------------------------------------------
    photos = BT.photo_set(acts)
    by_concept: dict[str, list[Path]] = {}
    for p, c in photos:
        by_concept.setdefault(c, []).append(p)
    concepts = sorted(by_concept)
    rng.shuffle(concepts)
    n_video = 3 * args.videos
    video_concepts, image_concepts = concepts[:n_video], concepts[n_video:]
    for c in image_concepts:
        files = []
        for p in by_concept[c][:2]:
            dest = corpus / "images" / f"{p.stem}.webp"
            dest.write_bytes(p.read_bytes())
            files.append(f"corpus/images/{dest.name}")
        qid = "img-" + re.sub(r"\W+", "-", c.lower()).strip("-")
        query(qid, "text->image", files[0], text=c, also=files[1:])
        query("sp-" + qid, "speech->image", files[0], audio=spoken("sp-" + qid, c), also=files[1:])

    # --- text files and recordings from package descriptions ----------------------------------------------------
    pkgs = packages()
    rng.shuffle(pkgs)
    spoken_pkgs = [p for p in pkgs if first_sentence(p[2])][: args.recordings + args.videos]
    rest = [p for p in pkgs if p not in spoken_pkgs][: args.texts]
    for i, (name, syn, body) in enumerate(rest):
        (corpus / "text" / f"{name}.txt").write_text(f"{name}\n\n{body}\n", encoding="utf-8")
        if i < 40:
            query(f"txt-{name}", "text->text", f"corpus/text/{name}.txt", text=syn)
            query(f"sp-txt-{name}", "speech->text", f"corpus/text/{name}.txt", audio=spoken(f"sp-txt-{name}", syn))
    for name, syn, body in spoken_pkgs[: args.recordings]:
        sentence = first_sentence(body)
        assert sentence is not None
        dest = corpus / "audio" / f"memo-{name}.wav"
        if not dest.exists():
            say(sentence, rng.choice(voices), rng.randint(140, 190), rng.randint(35, 65), dest)
        query(f"rec-{name}", "text->audio", f"corpus/audio/{dest.name}", text=syn)

    # --- sounds ---------------------------------------------------------------------------------------------------
    clips: dict[str, str] = dict(BT.SOUND_QUERIES)
    for stem, q in BT.INSTRUMENTS.items():
        clips[f"instruments/resource/{stem}.ogg"] = q
    by_query: dict[str, list[str]] = {}
    for src, q in clips.items():
        if (acts / src).exists():
            dest = corpus / "audio" / Path(src).name
            dest.write_bytes((acts / src).read_bytes())
            by_query.setdefault(q, []).append(f"corpus/audio/{dest.name}")
    for q, files in sorted(by_query.items()):
        qid = "snd-" + re.sub(r"\W+", "-", q.lower()).strip("-")
        query(qid, "text->audio", files[0], text=q, also=files[1:])

    # --- videos ---------------------------------------------------------------------------------------------------
    work = out / "video-work"
    work.mkdir(exist_ok=True)
    narrators = spoken_pkgs[args.recordings :]
    for v in range(args.videos):
        cs = video_concepts[3 * v : 3 * v + 3]
        dest = corpus / "video" / f"slides-{v:02d}.mp4"
        narration = None
        if v % 2 == 0 and v // 2 < len(narrators):
            sentence = first_sentence(narrators[v // 2][2])
            assert sentence is not None
            narration = work / f"narration-{v:02d}.wav"
            if not narration.exists():
                say(sentence, rng.choice(voices), rng.randint(140, 190), rng.randint(35, 65), narration)
        if not dest.exists():
            make_video([by_concept[c][0] for c in cs], narration, dest, work)
        for j, c in enumerate(cs):
            qid = f"vid-{v:02d}-" + re.sub(r"\W+", "-", c.lower()).strip("-")
            loc = [j * SLIDE_S, (j + 1) * SLIDE_S]
            query(qid, "text->video_moment", f"corpus/video/{dest.name}", loc, text=c)
            query("sp-" + qid, "speech->video_moment", f"corpus/video/{dest.name}", loc,
                  audio=spoken("sp-" + qid, c))  # fmt: skip
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    counts: dict[str, int] = {}
    for q in queries:
        counts[str(q["modality"])] = counts.get(str(q["modality"]), 0) + 1
    print(json.dumps({"queries": len(queries), "per_type": counts, "out": str(out)}))


if __name__ == "__main__":
    main()
