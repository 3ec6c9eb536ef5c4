"""``loupe bench voice``: spoken-query latency, audio file in -> hits."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from loupe.errors import ConfigError
from loupe.lab.bench.common import QUESTIONS, TOP_K, Result, summarize

# --- voice: spoken query latency ----------------------------------------------------------------------------

# espeak-ng voices the speech head never trained on (lab/training/speech.py HELD_OUT_*), per query language.
VOICE_BENCH_VOICES = {"en": "en-029+m6", "de": "de+f4", "fr": "fr-ch+m6"}


def bench_voice(corpus: Path, *, repeats: int, profile: str, workdir: Path) -> Result:
    """Spoken QUESTIONS (espeak-ng WAV files) through ``Loupe.search(audio=...)``: decode, embed, search.

    The corpus is ingested into a fresh collection first; the first query warms the models and is not counted.
    """
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe, decode_query_audio
    from loupe.lab.training.speech_data import espeak

    if not corpus.is_dir():
        raise ConfigError(f"corpus folder {corpus} does not exist")
    import soundfile

    wavs = []
    for i, q in enumerate(QUESTIONS):
        lang = "de" if "Welche" in q else "fr" if "Combien" in q else "en"
        path = workdir / f"q{i:02d}.wav"
        soundfile.write(path, espeak(q, VOICE_BENCH_VOICES[lang]), 16000, subtype="PCM_16")
        wavs.append(path)
    settings = load_settings(data_dir=str(workdir / "data"), collection="bench-voice", profile=profile)
    total: list[float] = []
    decode: list[float] = []
    with Loupe(settings) as lp:
        lp.ingest([corpus], show_progress=False)
        lp.search(audio=str(wavs[0]))  # load the encoder, head and index
        for _ in range(repeats):
            for w in wavs:
                t0 = time.perf_counter()
                hits = lp.search(audio=str(w), k=TOP_K)
                total.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                decode_query_audio(str(w))
                decode.append(time.perf_counter() - t0)
        models = lp.profile.info.model_ids
    ms = sorted(1000 * t for t in total)
    return {
        "queries": len(wavs),
        "audio_s": summarize([soundfile.info(str(w)).duration for w in wavs]),
        "latency_ms": {"p50": statistics.median(ms), "p95": ms[min(len(ms) - 1, int(0.95 * len(ms)))], "n": len(ms)},
        "decode_ms": summarize([1000 * t for t in decode]),
        "last_hits": len(hits),
        "models": models,
    }


def format_voice(report: Result) -> str:
    """One line: spoken query latency p50/p95 and the audio lengths."""
    lat, aud = report["latency_ms"], report["audio_s"]
    return (
        f"spoken query (audio file in -> hits), {lat['n']} runs of {report['queries']} queries "
        f"({aud['min']:.1f}-{aud['max']:.1f} s of speech): p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms "
        f"(decode p50 {report['decode_ms']['median']:.0f} ms)"
    )
