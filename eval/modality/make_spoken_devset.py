"""Spoken twins of the dev set's typed queries for every target modality (issue 21's acceptance 1).

``python eval/modality/make_spoken_devset.py`` writes ``eval/modality/spoken-devset.jsonl`` (committed) and the
recordings under ``eval/modality/audio/`` (regenerated, not committed; espeak-ng is deterministic). For every dev
query typed at a PDF page, a text file, an image, a video moment or a recording it holds two rows over the same
words: ``speech->X`` (spoken by one of the speech head's *held-out* espeak-ng voices, of the query's language, as
eval/voice/make_voice_queries.py does) and ``typed->X`` (the same words typed). Scored on the dev collection:

    loupe eval --queries eval/modality/spoken-devset.jsonl --corpus eval/devset/corpus --data-dir /tmp/wt21-dev

The dev set is only reported on, never tuned on (the calibration is fitted on eval/modality/make_validation.py).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
sys.path.insert(0, str(HERE.parent / "voice"))

from make_voice_queries import language, spoken  # noqa: E402

from loupe.lab.training.speech_data import espeak, voices  # noqa: E402

DEVSET = HERE.parent / "devset" / "queries.jsonl"
SEED = 2121
TARGETS = ("pdf_page", "text", "image", "video_moment", "audio")


def rel(path: str) -> str:
    """A dev-set path (relative to eval/devset) relative to this folder."""
    return f"../devset/{path}"


def main() -> None:
    """Write spoken-devset.jsonl and synthesise every recording."""
    import soundfile

    rng = random.Random(SEED)
    base = [json.loads(line) for line in DEVSET.read_text(encoding="utf-8").splitlines() if line.strip()]
    base = [q for q in base if q["modality"] in {f"text->{t}" for t in TARGETS} and q.get("query_text")]
    audio = HERE / "audio"
    audio.mkdir(exist_ok=True)
    rows = []
    for q in base:
        lang = language(q["id"])
        voice = rng.choice(voices(lang, held_out=True))
        speed, pitch = rng.randint(140, 190), rng.randint(35, 65)
        words = spoken(q["query_text"])
        wav = f"audio/{q['id']}.wav"
        if not (HERE / wav).exists():
            soundfile.write(HERE / wav, espeak(words, voice, speed, pitch), 16000, subtype="PCM_16")
        target = q["modality"].split("->")[1]
        common = {
            "query_image": None,
            "target_file": rel(q["target_file"]),
            "target_locator": q["target_locator"],
            "also_relevant": [{"file": rel(a["file"]), "locator": a["locator"]} for a in q["also_relevant"]],
            "lang": lang,
        }
        rows.append({"id": f"sp-{q['id']}", "query_text": None, "query_audio": wav, "modality": f"speech->{target}",
                     "voice": voice, "speed": speed, "pitch": pitch, **common})  # fmt: skip
        rows.append({"id": f"ty-{q['id']}", "query_text": words, "query_audio": None, "modality": f"typed->{target}",
                     **common})  # fmt: skip
    with (HERE / "spoken-devset.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} queries ({len(rows) // 2} spoken + typed twins) in {HERE / 'spoken-devset.jsonl'}")


if __name__ == "__main__":
    main()
