"""The speech head's training data: sentences, espeak-ng voices and augmentation, Whisper features (cached).

Steps 1-3 of the recipe in lab/training/speech.py: text that is neither reserved nor in the dev set, synthesised
in many voices, speeds and pitches with noise, reverberation and telephone band, featurised once per recipe.
"""

from __future__ import annotations

import ast
import gettext
import hashlib
import io
import json
import random
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loupe.embedder.speech import (
    ENCODER_DIM,
    SAMPLE_RATE,
    SpeechFeatures,
    WhisperEncoder,
    to_16k,
)
from loupe.errors import ConfigError, EmbedError

REPO = Path(__file__).resolve().parents[2]  # lab/training/speech.py -> the checkout
DEV_QUERY_FILES = (REPO / "eval" / "devset" / "queries.jsonl", REPO / "eval" / "voice" / "queries.jsonl")

# Voices: espeak-ng accents × variants. Validation and the spoken dev set use only HELD_OUT ones: a whole accent
# (Caribbean English) and whole variants that no training utterance uses.
EN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f5", "klatt", "Alex", "Andy", "Annie",
                  "Auntie", "belinda", "benjamin", "david", "ed", "john", "linda", "max", "Michael")  # fmt: skip
HELD_OUT_EN_ACCENTS = ("en-029",)
HELD_OUT_VARIANTS = ("m6", "f4", "edward", "Lee")
OTHER_LANGS = {"de": ("de",), "fr": ("fr", "fr-be"), "es": ("es", "es-419")}
HELD_OUT_OTHER = {"de": ("de",), "fr": ("fr-ch",), "es": ("es",)}
LANGS = ("en", "de", "fr", "es")

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
_BAD_MSG = re.compile(r"[%{}<>\\|_=@#$^~`*\[\]]|\.\.\.|--")


@dataclass(frozen=True)
class Recipe:
    """Sizes and seed of one training run (the defaults made the shipped head)."""

    seed: int = 7
    en_sentences: int = 20000
    other_sentences: int = 2500  # per language (de, fr, es)
    renders_per_sentence: float = 1.3
    val_fraction: float = 0.08
    arch: str = "soft-tokens"  # or "pooled" (the version-1 head: pooled frames -> MLP)
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    hidden: int = 768
    # soft-tokens: frames per soft token (6 x 40 ms) and how often a word piece must occur to join the codebook
    stack: int = 6
    rank: int = 256
    min_piece_count: int = 2
    e2e_steps: int = 150  # soft-tokens: batches of the second stage (through e5); 0 = bag loss only
    e2e_lr: float = 3e-4
    # soft-tokens: a checkpoint whose soft-token head stage 2 continues from (stage 1 skipped); "" = train anew
    e2e_from: str = ""
    # soft-tokens: share of the pooled head (a version-1 checkpoint in embedder/data) in the spoken-query vector
    blend_pooled: float = 0.3
    pooled_head: str = "speech_head_pooled.pt"
    # pooled only: InfoNCE temperature and weight, attention-pooling heads
    temperature: float = 0.05
    nce_weight: float = 0.5
    heads: int = 2

    def key(self) -> str:
        """Digest of everything that shapes the cached features (not the optimiser settings)."""
        data = (self.seed, self.en_sentences, self.other_sentences, self.renders_per_sentence, self.val_fraction, 2)
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:10]


# --- text ------------------------------------------------------------------------------------------------


def clean(text: str) -> str:
    """One line, single spaces, no surrounding punctuation noise."""
    return _WS.sub(" ", text).strip().strip(" .:;,-")


def words(text: str) -> list[str]:
    """Lower-cased word tokens."""
    return [w.lower() for w in _WORD.findall(text)]


def usable(text: str, lo: int = 3, hi: int = 28) -> bool:
    """A sentence worth speaking: ``lo``-``hi`` words, mostly letters, no markup or format codes."""
    n = len(words(text))
    if not lo <= n <= hi or len(text) > 220 or _BAD_MSG.search(text):
        return False
    letters = sum(c.isalpha() for c in text)
    return letters >= 0.7 * len(text.replace(" ", ""))


def manpage_descriptions() -> list[str]:
    """One-line descriptions of the installed manual pages (``man -k .``)."""
    try:
        out = subprocess.run(["man", "-k", "."], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [clean(line.split(" - ", 1)[1]) for line in out.splitlines() if " - " in line]


def package_synopses(status: Path = Path("/var/lib/dpkg/status")) -> list[str]:
    """The one-line synopsis of every installed Debian package."""
    try:
        text = status.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [clean(m) for m in re.findall(r"^Description: (.+)$", text, flags=re.M)]


def docstring_sentences(root: Path, limit_files: int = 4000) -> list[str]:
    """First sentences of function and class docstrings in the Python standard library (parsed, not imported)."""
    out: list[str] = []
    for i, path in enumerate(sorted(root.rglob("*.py"))):
        if i >= limit_files or "test" in path.parts or "idlelib" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    out.append(clean(re.split(r"(?<=[.!?])\s|\n\n", doc.strip(), maxsplit=1)[0]))
    return out


def gettext_messages(lang: str, root: Path = Path("/usr/share/locale")) -> list[tuple[str, str]]:
    """(English message, translation) pairs from the installed gettext catalogs of ``lang``."""
    pairs: list[tuple[str, str]] = []
    for mo in sorted((root / lang / "LC_MESSAGES").glob("*.mo")):
        try:
            with mo.open("rb") as f:
                catalog = gettext.GNUTranslations(f)
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        for k, v in getattr(catalog, "_catalog", {}).items():
            if isinstance(k, str) and isinstance(v, str) and k and v and k != v:
                pairs.append((clean(k), clean(v)))
    return pairs


# Question forms written for this trainer: spoken queries are mostly questions or imperative phrases.
QUESTION_FORMS = (
    "{d}",
    "how do I {d}",
    "how can I {d}",
    "which tool can {d}",
    "is there a way to {d}",
    "I need to {d}",
    "what should I use to {d}",
    "where is the {d}",
    "tell me about the {d}",
    "show me how to {d}",
)


def dev_queries() -> list[str]:
    """Query sentences of the dev sets: kept out of training."""
    out: list[str] = []
    for path in DEV_QUERY_FILES:
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    d = json.loads(line)
                    out.extend(str(d[k]) for k in ("query_text", "typed_text") if d.get(k))
    return out


def overlaps_dev(sentence: str, dev_sets: Sequence[set[str]], threshold: float = 0.5) -> bool:
    """True when the sentence shares at least ``threshold`` of its or a dev query's words (Jaccard-like)."""
    w = set(words(sentence))
    if not w:
        return True
    return any(len(w & d) / min(len(w), len(d)) >= threshold for d in dev_sets if d)


def gather_sentences(recipe: Recipe, log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Sentences per language, de-duplicated, dev-set-free, shuffled with the recipe's seed."""
    rng = random.Random(recipe.seed)
    import sysconfig

    man = [d for d in manpage_descriptions() if usable(d)]
    en: list[str] = list(man)
    en += [rng.choice(QUESTION_FORMS[1:]).format(d=d[0].lower() + d[1:]) for d in rng.sample(man, len(man) // 2)]
    en += package_synopses()
    en += docstring_sentences(Path(sysconfig.get_paths()["stdlib"]))
    other: dict[str, list[str]] = {}
    for lang in OTHER_LANGS:
        pairs = gettext_messages(lang)
        en += [k for k, _ in pairs]
        other[lang] = [v for _, v in pairs]
    dev = [set(words(q)) for q in dev_queries()]
    out: dict[str, list[str]] = {}
    for lang, sents in (("en", en), *other.items()):
        seen: set[str] = set()
        keep = []
        for s in sents:
            key = " ".join(words(s))
            if key in seen or not usable(s) or overlaps_dev(s, dev):
                continue
            seen.add(key)
            keep.append(s)
        keep.sort()
        rng.shuffle(keep)
        limit = recipe.en_sentences if lang == "en" else recipe.other_sentences
        out[lang] = keep[:limit]
        log(f"{lang}: {len(keep)} usable sentences, using {len(out[lang])}")
    return out


# --- speech ----------------------------------------------------------------------------------------------


def espeak(text: str, voice: str, speed: int = 165, pitch: int = 50, gap: int = 0) -> np.ndarray:
    """Speak ``text`` with espeak-ng (``voice`` like ``en-us+f2``) → 16 kHz mono float32."""
    import soundfile

    try:
        wav = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(gap), "--stdout", text],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        data, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    except FileNotFoundError as e:
        raise ConfigError("espeak-ng is not installed: apt-get install espeak-ng") from e
    except (subprocess.SubprocessError, RuntimeError) as e:
        raise EmbedError(f"espeak-ng failed for voice {voice}: {e}") from e
    return to_16k(data.reshape(len(data), -1).mean(axis=1), rate)


def voice_name(accent: str, variant: str) -> str:
    """espeak-ng voice spec: accent plus optional variant."""
    return f"{accent}+{variant}" if variant else accent


def voices(lang: str, held_out: bool) -> list[str]:
    """Training or held-out voices of one language."""
    if lang == "en":
        if held_out:
            return [voice_name(a, v) for a in HELD_OUT_EN_ACCENTS for v in ("", *HELD_OUT_VARIANTS)] + [
                voice_name(a, v) for a in EN_ACCENTS for v in HELD_OUT_VARIANTS
            ]
        return [voice_name(a, v) for a in EN_ACCENTS for v in TRAIN_VARIANTS]
    if held_out:
        return [voice_name(a, v) for a in HELD_OUT_OTHER[lang] for v in HELD_OUT_VARIANTS]
    return [voice_name(a, v) for a in OTHER_LANGS[lang] for v in TRAIN_VARIANTS[:12]]


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """White or brown-ish noise at ``snr_db`` below the signal's power."""
    noise = rng.standard_normal(x.size).astype(np.float32)
    if rng.random() < 0.5:
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(400) / 400, mode="same")  # keep it audible, not a DC drift
    p_sig = float(np.mean(x**2)) + 1e-12
    p_noise = float(np.mean(noise**2)) + 1e-12
    return (x + noise * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Convolve with a synthetic room response: exponentially decaying noise with reverberation time ``rt60``."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0
    size = 1 << (x.size + n - 1).bit_length()  # a power of two: numpy's FFT is several times slower off it
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: x.size]
    return (y / (np.abs(y).max() + 1e-9) * np.abs(x).max()).astype(np.float32)


def telephone(x: np.ndarray) -> np.ndarray:
    """Telephone band: 300-3400 Hz, through 8 kHz and back."""
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
    spec[(freqs < 300) | (freqs > 3400)] = 0
    y = np.fft.irfft(spec, x.size).astype(np.float32)
    return _narrowband(y)


def _narrowband(x: np.ndarray) -> np.ndarray:
    """Down to 8 kHz and back up (what a phone line keeps)."""
    from loupe.embedder.audio_labels import resample

    return resample(resample(x, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)[: x.size]


def augment(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random mix of gain, reverberation, telephone band and noise; about a quarter stays clean."""
    tags = []
    if rng.random() < 0.3:
        x = reverb(x, rng, float(rng.uniform(0.15, 0.7)))
        tags.append("reverb")
    if rng.random() < 0.15:
        x = telephone(x)
        tags.append("phone")
    if rng.random() < 0.5:
        x = add_noise(x, rng, float(rng.uniform(5, 30)))
        tags.append("noise")
    x = x * float(10 ** (rng.uniform(-12, 3) / 20))
    # pad with a little silence on either side, as a recording has
    pre, post = (int(rng.uniform(0, 0.4) * SAMPLE_RATE) for _ in range(2))
    x = np.pad(x, (pre, post))
    return np.clip(x, -1, 1).astype(np.float32), "+".join(tags) or "clean"


@dataclass
class Utterance:
    """One synthetic recording: which sentence, language, voice and augmentation."""

    sentence: int
    lang: str
    voice: str
    speed: int
    pitch: int
    aug: str = ""


@dataclass
class Dataset:
    """Cached features of a split: concatenated frames, per-utterance offsets, voiced masks, sentence ids."""

    frames: np.ndarray  # (total, 384) float16
    voiced: np.ndarray  # (total,) bool
    offsets: np.ndarray  # (n + 1,) int64
    sentence: np.ndarray  # (n,) int64 into the sentence table
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.sentence.size)

    def item(self, i: int) -> SpeechFeatures:
        """Features of utterance ``i``."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return SpeechFeatures(self.frames[a:b].astype(np.float32), self.voiced[a:b])


def plan(
    sentences: dict[str, list[str]], recipe: Recipe
) -> tuple[list[str], list[str], list[Utterance], list[Utterance]]:
    """Sentence table (text, language) and the train / validation utterances (held-out voices and sentences)."""
    rng = random.Random(recipe.seed + 1)
    table: list[str] = []
    langs: list[str] = []
    train: list[Utterance] = []
    val: list[Utterance] = []
    for lang in LANGS:
        sents = sentences.get(lang, [])
        n_val = max(1, int(len(sents) * recipe.val_fraction)) if sents else 0
        for j, s in enumerate(sents):
            sid = len(table)
            table.append(s)
            langs.append(lang)
            held = j < n_val
            pool = voices(lang, held_out=held)
            renders = 1 if held else int(recipe.renders_per_sentence) + (rng.random() < recipe.renders_per_sentence % 1)
            for _ in range(renders):
                u = Utterance(sid, lang, rng.choice(pool), rng.randint(125, 210), rng.randint(25, 75))
                (val if held else train).append(u)
    return table, langs, train, val


def featurise(
    utts: Sequence[Utterance],
    table: Sequence[str],
    seed: int,
    encoder: WhisperEncoder,
    log: Callable[[str], None] = print,
    augment_prob: float = 1.0,
) -> Dataset:
    """Synthesise, augment and encode every utterance; utterances espeak-ng cannot speak are skipped."""
    from concurrent.futures import ThreadPoolExecutor

    feats: list[SpeechFeatures] = []
    keep: list[Utterance] = []
    t0 = time.time()
    chunk = 64

    def synth(job: tuple[int, Utterance]) -> np.ndarray | None:
        # one generator per utterance (seed, index): the same audio whatever the thread scheduling
        i, u = job
        rng = np.random.default_rng([seed, i])
        try:
            x = espeak(table[u.sentence], u.voice, u.speed, u.pitch)
        except EmbedError:
            return None
        if x.size < SAMPLE_RATE // 4:
            return None
        if rng.random() < augment_prob:
            x, u.aug = augment(x, rng)
        else:
            u.aug = "clean"
        return x[: 29 * SAMPLE_RATE]

    # espeak-ng runs in a subprocess and numpy's FFTs release the GIL: two threads overlap them with the encoder
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(utts), chunk):
            jobs = list(enumerate(utts[start : start + chunk], start=start))
            waves, batch = [], []
            for (_, u), x in zip(jobs, pool.map(synth, jobs), strict=True):
                if x is not None:
                    waves.append(x)
                    batch.append(u)
            feats += encoder.features(waves)
            keep += batch
            if (start // chunk) % 10 == 0:
                log(f"  featurised {len(keep)}/{len(utts)} utterances in {time.time() - t0:.0f} s")
    lengths = np.array([f.frames.shape[0] for f in feats], dtype=np.int64)
    return Dataset(
        frames=np.concatenate([f.frames for f in feats]).astype(np.float16) if feats else np.zeros((0, ENCODER_DIM)),
        voiced=np.concatenate([f.voiced for f in feats]) if feats else np.zeros(0, bool),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
        sentence=np.array([u.sentence for u in keep], dtype=np.int64),
        meta=[asdict(u) for u in keep],
    )


def save_dataset(ds: Dataset, path: Path) -> None:
    """Write a dataset cache (npz + utterance metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, frames=ds.frames, voiced=ds.voiced, offsets=ds.offsets, sentence=ds.sentence)
    path.with_suffix(".json").write_text(json.dumps(ds.meta))


def load_dataset(path: Path) -> Dataset:
    """Read a dataset cache written by :func:`save_dataset`."""
    with np.load(path) as z:
        ds = Dataset(z["frames"], z["voiced"], z["offsets"], z["sentence"])
    ds.meta = json.loads(path.with_suffix(".json").read_text())
    return ds
