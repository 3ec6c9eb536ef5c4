"""Build the spoken-query dev set: the dev set's text→pdf_page and text→text queries, spoken by espeak-ng.

``python eval/voice/make_voice_queries.py`` writes ``eval/voice/queries.jsonl`` (committed) and the recordings
under ``eval/voice/audio/`` (regenerated, not committed: espeak-ng output is deterministic for a voice, speed and
pitch). Voices are the trainer's HELD-OUT voices only (lab/training/speech.py), and the trainer drops every
training sentence that shares most of its words with these queries, so both speakers and sentences are unseen.

Each query keeps its target; ``query_text`` is what was spoken (LaTeX backslashes and brackets read aloud make
no sense, so they are removed), ``typed_text`` the original typed query for the typed baseline. Non-English
dev queries are spoken by a voice of their language; TRANSLATIONS adds spoken German, French and Spanish
versions of some English queries (written for this set) for the cross-lingual figures.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from loupe.lab.training.speech_data import espeak, voices  # noqa: E402

DEVSET = HERE.parent / "devset" / "queries.jsonl"
SEED = 11
# Translations written for this set: (id of the English dev query, language, spoken text).
TRANSLATIONS = (
    ("pdf-22", "de", "Wie drehe ich eine Box im Uhrzeigersinn oder gebe den Drehwinkel im Bogenmaß an?"),
    ("pdf-47", "de", "An wen schreibe ich, wenn ich eine Sicherheitslücke in einem Debian-Paket finde?"),
    ("pdf-37", "de", "Woher kommt der Name natbib?"),
    ("pdf-43", "fr", "Comment prévenir les autres développeurs Debian que je pars en vacances ?"),
    ("pdf-36", "fr", "Trier et regrouper les citations numériques dans natbib"),
    ("txt-10", "fr", "Faire une copie de sauvegarde compactée d'une base de données active dans un nouveau fichier"),
    ("pdf-29", "es", "Atajo de teclado para buscar hacia atrás en el historial de comandos de Octave"),
    ("txt-08", "es", "Las restricciones de clave foránea no se aplican por defecto en SQLite, ¿cómo las activo?"),
    ("pdf-21", "es", "Dibujar un rectángulo en lugar de cargar el archivo de imagen real"),
)


def spoken(text: str) -> str:
    """What a person would say: no backslashes, braces or brackets."""
    return re.sub(r"\s+", " ", re.sub(r"[\\{}\[\]]", " ", text)).strip()


def language(qid: str) -> str:
    """The dev set marks non-English queries in their id (pdf-de-01, txt-fr-01)."""
    m = re.match(r"^\w+-(de|fr|es)-", qid)
    return m.group(1) if m else "en"


def rel(path: str) -> str:
    """A dev-set path (relative to eval/devset) relative to this folder."""
    return f"../devset/{path}"


def main() -> None:
    """Write queries.jsonl and synthesise every recording."""
    import soundfile

    rng = random.Random(SEED)
    base = [json.loads(line) for line in DEVSET.read_text(encoding="utf-8").splitlines() if line.strip()]
    base = [q for q in base if q["modality"] in ("text->pdf_page", "text->text")]
    by_id = {q["id"]: q for q in base}
    rows = []
    items = [(q["id"], language(q["id"]), q["query_text"], q) for q in base]
    items += [(f"{qid}-{lang}", lang, text, by_id[qid]) for qid, lang, text in TRANSLATIONS]
    audio = HERE / "audio"
    audio.mkdir(exist_ok=True)
    for qid, lang, text, src in items:
        voice = rng.choice(voices(lang, held_out=True))
        speed, pitch = rng.randint(140, 190), rng.randint(35, 65)
        wav = f"audio/{qid}.wav"
        soundfile.write(HERE / wav, espeak(spoken(text), voice, speed, pitch), 16000, subtype="PCM_16")
        rows.append(
            {
                "id": f"voice-{qid}",
                "query_text": spoken(text),
                "typed_text": text,
                "query_audio": wav,
                "query_image": None,
                "lang": lang,
                "voice": voice,
                "speed": speed,
                "pitch": pitch,
                "target_file": rel(src["target_file"]),
                "target_locator": src["target_locator"],
                "modality": src["modality"].replace("text->", "voice->"),
                "also_relevant": [{"file": rel(a["file"]), "locator": a["locator"]} for a in src["also_relevant"]],
            }
        )
    with (HERE / "queries.jsonl").open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} spoken queries in {HERE / 'queries.jsonl'}")


if __name__ == "__main__":
    main()
