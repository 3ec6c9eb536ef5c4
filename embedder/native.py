"""The ``native`` profile: real multimodal embedders loaded with transformers, by Hugging Face id or local folder.

Why one file of ~950 lines: the backends share the loading, device, dtype, batching and preparation code that
makes them congruent on CPU and GPU (tests/test_native_gpu.py); each backend class is short.

Backends (all behind :class:`embedder.base.Embedder`):

- :class:`ImageTextEmbedder` — CLIP, SigLIP and SigLIP 2 (``AutoModel`` + ``AutoProcessor``;
  ``get_text_features`` / ``get_image_features``). A video window is the normalised mean of its frames'
  normalised image embeddings (at most 32 frames, 1 per second, as ingest cuts them).
- :class:`AudioTextEmbedder` — CLAP (``ClapModel`` + ``ClapProcessor``); our 16 kHz clips are resampled to the
  processor's rate (48 kHz) with the FFT resampler of the offline profile, and split into windows of the
  processor's length (10 s) that are averaged, so nothing is cut at random (``rand_trunc``) and the same clip
  always gives the same vector.
- :class:`Qwen3VLEmbedder` — Qwen3-VL-Embedding, one space for text, images and video: the base Qwen3-VL
  model, the model's chat format with an instruction as the system turn, last-token pooling, Matryoshka
  truncation (the 2B/8B models are trained for 64..full dims).
- :class:`NativeEmbedder` — the profile's ``unified`` backend: one of the vision-language backends above for
  text, images and video, and (optionally) CLAP for audio clips, bridged into the vision-language model's text
  space by zero-shot labels (CLAP posteriors over AudioSet class names, mixed over the vision-language model's
  text embeddings of those names — the same bridge as the offline profile, with a real audio-text model
  choosing the labels). CLAP's own audio embedding is the ``audio`` named vector, searched by CLAP's text
  embedding of a text query.

Omni-Embed-Nemotron is not here: its checkpoint needs the model's own remote code on top of the Qwen2.5-Omni
thinker; plain transformers cannot load it, and Loupe never runs downloaded code (docs/embedders.md).

Weights load on first use. By default only local folders and the local Hugging Face cache are read
(``allow_download=False``): Loupe never fetches weights behind the user's back; a missing model fails with an
:class:`~app.errors.EmbedError` that says how to fetch it. On a GPU, weights run in bf16 (fp16 where bf16 is not
supported), inputs go through pinned memory, and ``compile=True`` wraps the model in ``torch.compile``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from loupe.embedder.base import (
    AudioInput,
    EmbedInput,
    ImageInput,
    InputKind,
    Role,
    TextInput,
    VideoInput,
    input_kind,
    l2_normalize,
    length_sorted_batches,
)
from loupe.errors import ConfigError, EmbedError

INSTALL_HINT = "pip install torch==2.13.0 transformers==5.23.0 (the native profile runs models with transformers)"
# Defaults: small, permissively licensed models of each family (docs/embedders.md has the licences).
DEFAULT_IMAGE_TEXT_MODEL = "google/siglip2-base-patch16-224"
DEFAULT_AUDIO_TEXT_MODEL = "laion/clap-htsat-unfused"
# Video windows: ingest cuts at most 32 frames at 1 FPS (design.md §1); longer lists are subsampled evenly.
MAX_VIDEO_FRAMES = 32
# SigLIP and SigLIP 2 were trained on text padded to 64 tokens ("max_length" padding; transformers' docs).
SIGLIP_TEXT_LENGTH = 64
# Qwen3-VL-Embedding's documented default instruction (model card usage example).
QWEN_INSTRUCTION = "Represent the user's input."
# Pixel budgets for Qwen3-VL: the model card's reference code allows up to 1800 merged 32x32 patches per image;
# video frames get a quarter of that so 32 frames stay ~15k tokens.
QWEN_MAX_PIXELS = 1800 * 32 * 32
QWEN_FRAME_MAX_PIXELS = 450 * 32 * 32


def require_native() -> None:
    """Raise EmbedError with the install hint when torch or transformers is missing."""
    for mod in ("torch", "transformers"):
        if importlib.util.find_spec(mod) is None:
            raise EmbedError(f"the native embedding profile needs {mod!r}: {INSTALL_HINT}")


def pick_device(preference: str = "auto") -> str:
    """``cuda`` when a GPU is visible, else ``mps`` (Apple), else ``cpu``; an explicit choice is checked."""
    import torch

    if preference == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"embedding device {preference!r} was asked for but no CUDA GPU is visible; use 'auto'")
    if preference not in ("cpu", "mps") and not preference.startswith("cuda"):
        raise ConfigError(f"unknown embedding device {preference!r}; valid: auto, cpu, cuda, cuda:N, mps")
    return preference


def pick_dtype(device: str, preference: str = "auto") -> Any:
    """bf16 on GPUs that support it, else fp16 on GPU/MPS; fp32 on CPU (half precision is slow there)."""
    import torch

    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if preference != "auto":
        if preference not in names:
            raise ConfigError(f"unknown embedding dtype {preference!r}; valid: auto, {', '.join(names)}")
        return names[preference]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def default_prep_workers(device: str) -> int:
    """Image preparation threads by default: up to 8 (one core left for the main thread) on a GPU, 1 on a CPU."""
    if not device.startswith(("cuda", "mps")):
        return 1
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def model_identity(model: str) -> str:
    """The id a collection records for ``model``: the hub id, or for a local folder its name and a digest of
    its config and file sizes (moving the folder keeps the id; changing the weights changes it)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    h = hashlib.sha256()
    cfg = path / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for f in sorted(path.iterdir()):
        if f.is_file():
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"local:{path.name}@{h.hexdigest()[:12]}"


def _features(out: Any) -> Any:
    """transformers 5 returns a model output whose ``pooler_output`` is the projected embedding; 4.x a tensor."""
    return out if hasattr(out, "dim") else out.pooler_output


def compile_towers(model: Any) -> list[str]:
    """``torch.compile`` in place what the backends call: the text/vision/audio towers of a dual encoder
    (``get_*_features`` go through them, not through ``forward``), else the whole model. Returns what was compiled."""
    towers = [n for n in ("text_model", "vision_model", "audio_model") if hasattr(model, n)]
    for name in towers:
        getattr(model, name).compile()
    if not towers:
        model.compile()
    return towers or ["model"]


def subsample_frames(frames: Sequence[str], limit: int = MAX_VIDEO_FRAMES) -> list[str]:
    """At most ``limit`` frames, evenly spread over the window (first and last kept)."""
    if len(frames) <= limit:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, limit).round().astype(int)
    return [frames[i] for i in idx]


def patchify_video(video: np.ndarray, patch: int, merge: int, temporal: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Qwen-VL's flat patch layout for a clip ``(T, C, H, W)`` (H, W multiples of ``patch * merge``): rows of
    ``C * temporal * patch * patch`` values in (t, h-block, w-block, h-in-block, w-in-block) order, the last frame
    repeated to fill the final temporal patch — as transformers' Qwen3-VL video processor lays them out."""
    t, c, h, w = video.shape
    if pad := -t % temporal:
        video = np.concatenate([video, np.repeat(video[-1:], pad, axis=0)])
        t += pad
    gt, gh, gw = t // temporal, h // patch, w // patch
    x = video.reshape(gt, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x.reshape(gt * gh * gw, c * temporal * patch * patch)), (gt, gh, gw)


class _TorchBackend:
    """Lazy loading, device/dtype placement, batching helpers and Matryoshka truncation shared by backends."""

    name = "native"
    kinds: frozenset[InputKind] = frozenset()
    # Backends trained with Matryoshka losses accept ``dim`` below their full size.
    matryoshka = False
    vector_name = "unified"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        dim: int | None = None,
        compile: bool = False,
        allow_download: bool = False,
        prep_workers: int = 0,
    ) -> None:
        require_native()
        if not model:
            raise ConfigError(f"the {self.name} backend needs a model id or a local folder")
        if dim is not None and not self.matryoshka:
            raise ConfigError(
                f"{model!r} ({self.name}) was not trained for Matryoshka truncation; leave the dim option unset"
            )
        if dim is not None and dim < 1:
            raise ConfigError(f"dim must be positive, not {dim}")
        self.model = model
        self.device_preference = device
        self.dtype_preference = dtype
        self.batch_size = max(1, int(batch_size))
        self.requested_dim = dim
        self.compile = compile
        self.allow_download = allow_download
        # Threads for the CPU side of a batch (decoding, the processor); 0 = automatic (see _workers).
        self.prep_workers = max(0, int(prep_workers))
        self._pool: ThreadPoolExecutor | None = None
        self._model: Any = None
        self._processor: Any = None
        self._device: str | None = None
        self._dtype: Any = None
        self._full_dim: int | None = None
        self._lock = threading.Lock()

    # --- identity ------------------------------------------------------------------------------------------

    @property
    def model_ids(self) -> dict[str, str]:
        """The model (hub id or local folder identity) and, when truncated, the Matryoshka size."""
        ident = model_identity(self.model)
        if self.requested_dim is not None:
            ident += f" (matryoshka {self.requested_dim})"
        return {self.vector_name: ident}

    @property
    def dim(self) -> int:
        """Output size: the requested Matryoshka size, else the model's (read from its config, no weights)."""
        if self.requested_dim is not None:
            return self.requested_dim
        if self._full_dim is None:
            self._full_dim = self._config_dim(self._load_config())
        return self._full_dim

    @dim.setter
    def dim(self, value: int) -> None:
        # The protocol declares ``dim`` as an attribute; setting it fixes the model's full size without a config.
        self._full_dim = int(value)

    def _config_dim(self, config: Any) -> int:
        raise NotImplementedError

    # --- loading -------------------------------------------------------------------------------------------

    def _source(self) -> tuple[str, dict[str, Any]]:
        path = Path(self.model).expanduser()
        if path.is_dir():
            return str(path), {"local_files_only": True}
        return self.model, {"local_files_only": not self.allow_download}

    def _fail(self, what: str, e: Exception) -> EmbedError:
        return EmbedError(
            f"cannot load the {what} of {self.model!r}: it is not a local model folder and not in the local "
            f"Hugging Face cache ({type(e).__name__}: {str(e)[:200]}). Fetch it first (e.g. `hf download "
            f"{self.model}`), point the option at a local folder, or set the profile option allow_download=true."
        )

    def _load_config(self) -> Any:
        from transformers import AutoConfig

        src, kw = self._source()
        try:
            return AutoConfig.from_pretrained(src, **kw)
        except (OSError, ValueError) as e:
            raise self._fail("config", e) from e

    def _load_model(self, src: str, kw: dict[str, Any]) -> tuple[Any, Any]:
        """``(model, processor)`` from ``src``; subclasses pick the classes."""
        from transformers import AutoModel, AutoProcessor

        return AutoModel.from_pretrained(src, dtype=self._dtype, **kw), AutoProcessor.from_pretrained(src, **kw)

    def _ensure(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                self._device = pick_device(self.device_preference)
                self._dtype = pick_dtype(self._device, self.dtype_preference)
                src, kw = self._source()
                try:
                    model, processor = self._load_model(src, kw)
                except (OSError, ValueError) as e:
                    raise self._fail("weights", e) from e
                model = model.to(self._device).eval()
                if self.compile:
                    compile_towers(model)
                self._processor = processor
                self._model = model
                if self._full_dim is None:
                    self._full_dim = self._config_dim(getattr(model, "config", None) or self._load_config())
        return self._model, self._processor

    @property
    def device(self) -> str:
        """The device the weights run on (resolved on first use)."""
        return self._device or pick_device(self.device_preference)

    def _to_device(self, batch: Any) -> dict[str, Any]:
        """Tensors onto the model's device (pinned + non-blocking on CUDA); floating inputs in the model dtype."""
        import torch

        out: dict[str, Any] = {}
        cuda = bool(self._device and self._device.startswith("cuda"))
        for k, v in dict(batch).items():
            if isinstance(v, torch.Tensor):
                if cuda:
                    v = v.pin_memory()
                if v.is_floating_point():
                    v = v.to(self._device, dtype=self._dtype, non_blocking=cuda)
                else:
                    v = v.to(self._device, non_blocking=cuda)
            out[k] = v
        return out

    def _workers(self) -> int:
        """Threads for preparing a batch of images: on a GPU the CPU side is the bottleneck (for SigLIP base on
        an H100 machine one thread decoded and processed 148 photos/s, 8 threads 595/s, while the model in bf16
        keeps up with thousands: docs/embedders.md), so it is spread over up to 8 cores (one left for the main
        thread); on a CPU, torch's own threads already use them."""
        return self.prep_workers or default_prep_workers(self._device or "cpu")

    def _prepared(self, items: list[Any], prepare: Callable[[list[Any]], Any]) -> dict[str, Any]:
        """``prepare(items)`` (CPU work returning tensors whose first axis follows the items), split into
        contiguous chunks over the preparation threads and concatenated in order. PIL decoding and resizing and
        numpy release the GIL, so threads give real parallelism here."""
        import torch

        n = min(self._workers(), len(items))
        if n <= 1:
            return dict(prepare(items))
        with self._lock:  # the API embeds from several request threads: one pool per backend
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers(), thread_name_prefix="loupe-prep")
        bounds = np.linspace(0, len(items), n + 1).round().astype(int)
        parts = [dict(p) for p in self._pool.map(prepare, [items[a:b] for a, b in itertools.pairwise(bounds)])]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _finish(self, feats: Any) -> np.ndarray:
        """Model output → float32 numpy, Matryoshka-truncated, L2-normalised."""
        arr = feats.detach().float().cpu().numpy()
        if self.requested_dim is not None:
            if self.requested_dim > arr.shape[1]:
                raise ConfigError(f"dim {self.requested_dim} exceeds {self.model!r}'s size {arr.shape[1]}")
            arr = arr[:, : self.requested_dim]
        return l2_normalize(arr)

    def _refuse(self, item: EmbedInput) -> EmbedError:
        return EmbedError(
            f"the {self.name} backend ({self.model}) cannot embed {type(item).__name__}; "
            f"it embeds: {', '.join(sorted(self.kinds))}"
        )

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed a mixed batch: grouped by kind, each kind length-sorted in batches; rows in input order."""
        for item in items:
            if input_kind(item) not in self.kinds:
                raise self._refuse(item)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        import torch

        groups: dict[InputKind, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(input_kind(item), []).append(i)
        with torch.inference_mode():
            for kind, idx in groups.items():
                batch = [items[i] for i in idx]
                out[idx] = self._embed_kind(kind, batch, role)
        return out

    def _embed_kind(self, kind: InputKind, batch: list[EmbedInput], role: Role) -> np.ndarray:
        raise NotImplementedError

    def _batched(self, items: Sequence[Any], key: Callable[[Any], int], run: Callable[[list[Any]], np.ndarray]) -> Any:
        """Run ``run`` over length-sorted batches of ``items`` and put rows back in input order."""
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for idx in length_sorted_batches(items, self.batch_size, key=key):
            out[idx] = run([items[i] for i in idx])
        return out


def _load_image(path: str) -> Any:
    from loupe.embedder.image_labels import load_image

    return load_image(path)


def _mean_frames(frame_vecs: np.ndarray, spans: Sequence[tuple[int, int]], dim: int) -> np.ndarray:
    """Per window: the normalised mean of its frames' normalised vectors (zero for an empty window)."""
    out = np.zeros((len(spans), dim), dtype=np.float32)
    v = l2_normalize(frame_vecs) if len(frame_vecs) else frame_vecs
    for j, (a, b) in enumerate(spans):
        if b > a:
            out[j] = v[a:b].mean(axis=0)
    return l2_normalize(out)


class ImageTextEmbedder(_TorchBackend):
    """CLIP / SigLIP / SigLIP 2: text, images and video windows (mean of frames) in the model's joint space.

    >>> e = ImageTextEmbedder("google/siglip2-base-patch16-224")  # doctest: +SKIP
    >>> e.embed([TextInput("a dog"), ImageInput("dog.jpg")]).shape  # doctest: +SKIP
    (2, 768)
    """

    name = "image-text"
    kinds: frozenset[InputKind] = frozenset({"text", "image", "video"})

    def _config_dim(self, config: Any) -> int:
        proj = getattr(config, "projection_dim", None)
        if proj:  # CLIP projects both towers to projection_dim
            return int(proj)
        return int(config.text_config.hidden_size)  # SigLIP's heads keep the hidden size

    def _text_padding(self) -> dict[str, Any]:
        model, processor = self._ensure()
        tok = processor.tokenizer
        limit = int(min(tok.model_max_length, model.config.text_config.max_position_embeddings))
        if model.config.model_type in ("siglip", "siglip2"):
            return {"padding": "max_length", "max_length": min(SIGLIP_TEXT_LENGTH, limit), "truncation": True}
        return {"padding": True, "max_length": limit, "truncation": True}

    def _texts(self, texts: list[str]) -> np.ndarray:
        model, processor = self._ensure()
        if model.config.model_type == "siglip2" or "siglip2" in self.model.lower():
            texts = [t.lower() for t in texts]  # SigLIP 2 was trained on lowercased text (transformers' docs)
        enc = processor(text=texts, return_tensors="pt", **self._text_padding())
        inputs = self._to_device({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")})
        if model.config.model_type in ("siglip", "siglip2"):
            inputs.pop("attention_mask", None)  # SigLIP was trained without a text attention mask
        return self._finish(_features(model.get_text_features(**inputs)))

    def _images(self, paths: list[str]) -> np.ndarray:
        model, processor = self._ensure()
        enc = self._prepared(paths, lambda part: processor(images=[_load_image(p) for p in part], return_tensors="pt"))
        return self._finish(_features(model.get_image_features(**self._to_device(enc))))

    def image_vectors(self, paths: Sequence[str]) -> np.ndarray:
        """Normalised image embeddings for image files, in input order (batched)."""
        if not paths:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._ensure()
        return self._batched(list(paths), key=lambda p: 0, run=self._images)

    def _embed_kind(self, kind: InputKind, batch: list[EmbedInput], role: Role) -> np.ndarray:
        if kind == "text":
            texts = [b.text for b in batch if isinstance(b, TextInput)]
            return self._batched(texts, key=len, run=self._texts)
        if kind == "image":
            return self.image_vectors([b.path for b in batch if isinstance(b, ImageInput)])
        windows = [subsample_frames(b.frames) for b in batch if isinstance(b, VideoInput)]
        spans: list[tuple[int, int]] = []
        frames: list[str] = []
        for w in windows:
            spans.append((len(frames), len(frames) + len(w)))
            frames.extend(w)
        return _mean_frames(self.image_vectors(frames), spans, self.dim)


class AudioTextEmbedder(_TorchBackend):
    """CLAP: text and audio clips in CLAP's joint space.

    Clips are resampled to the processor's rate and cut into windows of its length (10 s for LAION CLAP),
    each padded as the processor pads, and the window embeddings averaged — deterministic, unlike the
    processor's random crop of long inputs.
    """

    name = "audio-text"
    kinds: frozenset[InputKind] = frozenset({"text", "audio"})
    vector_name = "audio"
    # Long clips are cut into at most this many windows (evenly spread); ingest's clips are <= 30 s.
    max_windows = 6

    def _config_dim(self, config: Any) -> int:
        return int(config.projection_dim)

    def _load_model(self, src: str, kw: dict[str, Any]) -> tuple[Any, Any]:
        from transformers import ClapModel, ClapProcessor

        return ClapModel.from_pretrained(src, dtype=self._dtype, **kw), ClapProcessor.from_pretrained(src, **kw)

    def _texts(self, texts: list[str]) -> np.ndarray:
        model, processor = self._ensure()
        limit = int(min(processor.tokenizer.model_max_length, model.config.text_config.max_position_embeddings - 2))
        enc = processor(text=texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        inputs = self._to_device({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")})
        return self._finish(_features(model.get_text_features(**inputs)))

    def windows(self, item: AudioInput) -> list[np.ndarray]:
        """The clip at the processor's rate, cut into at most ``max_windows`` windows of its input length."""
        from loupe.embedder.audio_labels import resample

        _, processor = self._ensure()
        fe = processor.feature_extractor
        wave = resample(item.samples, int(item.sample_rate), int(fe.sampling_rate))
        if wave.size == 0:
            wave = np.zeros(int(fe.sampling_rate) // 10, dtype=np.float32)
        size = int(fe.nb_max_samples)
        starts = list(range(0, max(1, wave.size - size // 4), size)) or [0]
        if len(starts) > self.max_windows:
            starts = [starts[i] for i in np.linspace(0, len(starts) - 1, self.max_windows).round().astype(int)]
        return [wave[s : s + size] for s in starts]

    def _audio(self, items: list[AudioInput]) -> np.ndarray:
        model, processor = self._ensure()
        fe = processor.feature_extractor
        wins: list[np.ndarray] = []
        spans = []
        for item in items:
            w = self.windows(item)
            spans.append((len(wins), len(wins) + len(w)))
            wins.extend(w)
        # One thread on purpose: the feature extractor holds the GIL; on an H100 machine 8 threads prepared CLAP
        # clips slower than one (22 vs 33 clips/s, docs/embedders.md), unlike images.
        # Every window fits the processor's length, so its truncation never fires; "repeatpad" as LAION trained.
        enc = fe(wins, sampling_rate=fe.sampling_rate, return_tensors="pt", truncation="rand_trunc")
        inputs = self._to_device({k: v for k, v in enc.items() if k in ("input_features", "is_longer")})
        vecs = self._finish(_features(model.get_audio_features(**inputs)))
        return _mean_frames(vecs, spans, self.dim)

    def _embed_kind(self, kind: InputKind, batch: list[EmbedInput], role: Role) -> np.ndarray:
        if kind == "text":
            texts = [b.text for b in batch if isinstance(b, TextInput)]
            return self._batched(texts, key=len, run=self._texts)
        clips = [b for b in batch if isinstance(b, AudioInput)]
        return self._batched(clips, key=lambda a: int(a.samples.size), run=self._audio)

    def label_posteriors(self, clips: Sequence[AudioInput], label_vectors: np.ndarray) -> np.ndarray:
        """Zero-shot posteriors ``(n, C)``: softmax over CLAP similarities scaled by the model's audio logit
        scale, against CLAP text embeddings of the labels (``label_vectors``, normalised)."""
        import torch

        model, _ = self._ensure()
        audio = self.embed(list(clips))
        scale = float(torch.exp(model.logit_scale_a.detach().float()).cpu()) if hasattr(model, "logit_scale_a") else 1.0
        from loupe.embedder.bridge import softmax

        return softmax(scale * (audio @ l2_normalize(label_vectors).T))


class Qwen3VLEmbedder(_TorchBackend):
    """Qwen3-VL-Embedding: text, images and video windows in one space; last-token pooling; Matryoshka.

    Each input is one chat in the Qwen format: the instruction as the system turn, the user turn holding the
    image (or a window's frames) and/or the text, then the assistant prefix; the embedding is the final hidden
    state of the last token. The prompt is built here and the image tokens expanded here (as the Qwen3-VL
    processor does), because transformers' Qwen3-VL processor cannot be built without torchvision (its video
    processor needs it) and Loupe keeps torchvision out (it swaps the CPU torch build). Video windows go in as
    the model's temporal video input, built here the same way: frames resized to one size within the video pixel
    budget, normalised, patchified in pairs of frames (:func:`patchify_video`), each pair announced by its
    timestamp at 1 FPS (``<0.5 seconds>``, ...). ``video_input=False`` sends the frames as images instead.
    """

    name = "qwen3-vl-embedding"
    kinds: frozenset[InputKind] = frozenset({"text", "image", "video"})
    matryoshka = True
    # Trained on visual documents (its model card reports ViDoRe/VisRAG): PDF pages go in as page images.
    embeds_pages = True
    # The Qwen chat format (ChatML with vision markers), as Qwen3-VL's chat template renders one system and
    # one user turn followed by the generation prompt.
    PROMPT = (
        "<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"
    )
    IMAGE = "<|vision_start|>{pads}<|vision_end|>"
    IMAGE_PAD = "<|image_pad|>"
    VIDEO_PAD = "<|video_pad|>"
    # Whole-clip pixel budget of transformers' Qwen3-VL video processor defaults (32 * 32 * 768 pixels in all).
    VIDEO_MAX_PIXELS = 32 * 32 * 768

    def __init__(
        self,
        model: str,
        *,
        instruction: str = QWEN_INSTRUCTION,
        query_instruction: str | None = None,
        max_pixels: int = QWEN_MAX_PIXELS,
        frame_max_pixels: int = QWEN_FRAME_MAX_PIXELS,
        video_input: bool = True,
        video_max_pixels: int = VIDEO_MAX_PIXELS,
        **kw: Any,
    ) -> None:
        super().__init__(model, **kw)
        self.instruction = instruction
        self.query_instruction = query_instruction or instruction
        self.max_pixels = max_pixels
        self.frame_max_pixels = frame_max_pixels
        self.video_input = video_input
        self.video_max_pixels = video_max_pixels
        self._video_cfg: dict[str, Any] = {}

    @property
    def model_ids(self) -> dict[str, str]:
        """Model identity plus the instructions (they shape the space)."""
        ids = super().model_ids
        digest = hashlib.sha256(f"{self.instruction}|{self.query_instruction}".encode()).hexdigest()[:8]
        return {k: f"{v} [instructions {digest}]" for k, v in ids.items()}

    def _config_dim(self, config: Any) -> int:
        return int(config.text_config.hidden_size)

    def _load_model(self, src: str, kw: dict[str, Any]) -> tuple[Any, Any]:
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen3VLModel

        model = Qwen3VLModel.from_pretrained(src, dtype=self._dtype, **kw)
        self._video_cfg = self._video_config(src, kw)
        return model, (AutoTokenizer.from_pretrained(src, **kw), AutoImageProcessor.from_pretrained(src, **kw))

    @staticmethod
    def _video_config(src: str, kw: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's ``video_preprocessor_config.json`` (mean/std, patch sizes), or {} when it has none."""
        import json

        from transformers.utils import cached_file

        try:
            path = cached_file(src, "video_preprocessor_config.json", _raise_exceptions_for_missing_entries=False, **kw)
        except OSError:
            return {}
        if not path:
            return {}
        with open(path, encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        return data

    @staticmethod
    def _shrink(img: Any, max_pixels: int) -> Any:
        w, h = img.size
        if w * h <= max_pixels:
            return img
        s = (max_pixels / float(w * h)) ** 0.5
        return img.resize((max(1, int(w * s)), max(1, int(h * s))))

    def video_patches(self, frames: Sequence[Any], image_processor: Any) -> tuple[np.ndarray, tuple[int, int, int]]:
        """A window's frames (PIL) → ``(patches, (t, h, w) grid)`` for Qwen3-VL's video input: one size for all
        frames within ``video_max_pixels`` for the clip (rounded down to 32-px blocks, at least one block),
        bicubic resize, rescale and normalise with the processor's mean/std, then :func:`patchify_video`."""
        from PIL import Image

        # The checkpoint's video processor settings win over the image processor's (they may differ).
        cfg = getattr(self, "_video_cfg", {}) or {}
        patch = int(cfg.get("patch_size", getattr(image_processor, "patch_size", 16)))
        merge = int(cfg.get("merge_size", getattr(image_processor, "merge_size", 2)))
        temporal = int(cfg.get("temporal_patch_size", getattr(image_processor, "temporal_patch_size", 2)))
        budget = int((cfg.get("size") or {}).get("longest_edge", self.video_max_pixels))
        budget = min(budget, self.video_max_pixels)
        factor = patch * merge
        w, h = frames[0].size
        scale = min(1.0, (budget / float(len(frames) * w * h)) ** 0.5)
        hh = max(factor, int(h * scale // factor) * factor)
        ww = max(factor, int(w * scale // factor) * factor)
        mean = np.asarray(cfg.get("image_mean", image_processor.image_mean), dtype=np.float32)
        std = np.asarray(cfg.get("image_std", image_processor.image_std), dtype=np.float32)
        arr = np.stack(
            [np.asarray(f.convert("RGB").resize((ww, hh), Image.Resampling.BICUBIC), dtype=np.float32) for f in frames]
        )
        arr = ((arr / 255.0 - mean) / std).transpose(0, 3, 1, 2)
        return patchify_video(arr, patch, merge, temporal)

    def _run(self, batch: list[EmbedInput], role: Role) -> np.ndarray:
        import torch

        model, (tokenizer, image_processor) = self._ensure()
        merge = int(getattr(image_processor, "merge_size", 2))
        temporal = int(getattr(image_processor, "temporal_patch_size", 2))
        per_item: list[list[Any]] = []
        videos: dict[int, tuple[np.ndarray, tuple[int, int, int]]] = {}
        for j, item in enumerate(batch):
            if isinstance(item, ImageInput):
                per_item.append([self._shrink(_load_image(item.path), self.max_pixels)])
            elif isinstance(item, VideoInput):
                frames = [_load_image(f) for f in subsample_frames(item.frames)]
                if self.video_input and len(frames) >= 2:
                    videos[j] = self.video_patches(frames, image_processor)
                    per_item.append([])
                else:
                    per_item.append([self._shrink(f, self.frame_max_pixels) for f in frames])
            elif isinstance(item, TextInput):
                per_item.append([])
            else:
                raise self._refuse(item)
        images = [im for ims in per_item for im in ims]
        pix: dict[str, Any] = {}
        counts: list[int] = []
        if images:
            pix = dict(image_processor(images=images, return_tensors="pt"))
            counts = [int(n) // (merge * merge) for n in pix["image_grid_thw"].prod(dim=1).tolist()]
        if videos:
            pix["pixel_values_videos"] = torch.from_numpy(np.concatenate([v[0] for v in videos.values()]))
            pix["video_grid_thw"] = torch.tensor([list(v[1]) for v in videos.values()], dtype=torch.long)
        prompts, k = [], 0
        instruction = self.query_instruction if role == "query" else self.instruction
        for j, (item, ims) in enumerate(zip(batch, per_item, strict=True)):
            vision = "".join(self.IMAGE.format(pads=self.IMAGE_PAD * counts[k + i]) for i in range(len(ims)))
            k += len(ims)
            if j in videos:
                gt, gh, gw = videos[j][1]
                per_group = gh * gw // (merge * merge)
                # Frames are 1 per second; a temporal patch's timestamp is the mean of its frames' (t·2 + 0.5).
                vision = "".join(
                    f"<{g * temporal + (temporal - 1) / 2:.1f} seconds>"
                    + self.IMAGE.format(pads=self.VIDEO_PAD * per_group)
                    for g in range(gt)
                )
            text = item.text if isinstance(item, TextInput) else (getattr(item, "text", None) or "")
            prompts.append(self.PROMPT.format(instruction=instruction, content=vision + text))
        enc = tokenizer(prompts, padding=True, return_tensors="pt")
        image_id = tokenizer.convert_tokens_to_ids(self.IMAGE_PAD)
        video_id = tokenizer.convert_tokens_to_ids(self.VIDEO_PAD)
        # Modality per token (0 text, 1 image, 2 video) drives Qwen3-VL's multimodal rotary positions.
        mm = (enc["input_ids"] == image_id).long() + 2 * (enc["input_ids"] == video_id).long()
        inputs = self._to_device({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], **pix})
        if images or videos:
            inputs["mm_token_type_ids"] = mm.to(inputs["input_ids"].device)
        hidden = model(**inputs).last_hidden_state
        mask = inputs["attention_mask"]
        # Last real token per row, whichever side the tokenizer pads on.
        last = mask.shape[1] - 1 - mask.flip(1).float().argmax(dim=1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self._finish(pooled)

    def _embed_kind(self, kind: InputKind, batch: list[EmbedInput], role: Role) -> np.ndarray:
        def size(item: EmbedInput) -> int:
            if isinstance(item, TextInput):
                return len(item.text)
            if isinstance(item, VideoInput):
                return 10_000 * len(item.frames) + len(item.text or "")
            return len(getattr(item, "text", None) or "")

        return self._batched(batch, key=size, run=lambda b: self._run(b, role))


class NativeEmbedder:
    """The native profile's ``unified`` backend: a vision-language space, with audio clips bridged into it.

    ``space`` embeds text, images and video windows. With ``audio`` (a CLAP backend), audio clips enter the
    space through zero-shot labels: CLAP's posteriors over ``labels`` (AudioSet's 521 class names by default),
    top-k and tempered as in the offline bridge, mixed over ``space``'s text embeddings of the templated names.
    """

    name = "native"

    def __init__(
        self,
        space: ImageTextEmbedder | Qwen3VLEmbedder,
        audio: AudioTextEmbedder | None = None,
        *,
        labels: Sequence[str] | None = None,
        top_k: int | None = None,
        temperature: float | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        from loupe.embedder.bridge import AUDIO_TEMPERATURE, AUDIO_TOP_K, default_cache_dir

        self.space = space
        # Label embeddings (521 names x 3 templates through both text towers) are cached here across runs.
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.audio = audio
        self._labels = list(labels) if labels is not None else None
        # The offline bridge's tuned values (for YAMNet posteriors); not re-tuned for CLAP (no weights here).
        self.top_k = top_k or AUDIO_TOP_K
        self.temperature = temperature or AUDIO_TEMPERATURE
        self.kinds: frozenset[InputKind] = space.kinds | (frozenset({"audio"}) if audio else frozenset())
        self._label_space: np.ndarray | None = None
        self._label_clap: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def embeds_pages(self) -> bool:
        """PDF pages go in as page images when the space is document-capable (Qwen3-VL-Embedding)."""
        return bool(getattr(self.space, "embeds_pages", False))

    @property
    def dim(self) -> int:
        """The vision-language space's size."""
        return self.space.dim

    @dim.setter
    def dim(self, value: int) -> None:
        self.space.dim = value

    @property
    def model_ids(self) -> dict[str, str]:
        """The space's model, plus the audio model and label set when audio is bridged."""
        ident = self.space.model_ids["unified"]
        if self.audio is not None:
            labels = "audioset-521" if self._labels is None else f"{len(self._labels)} labels"
            clap = self.audio.model_ids["audio"]
            ident += f" + audio label bridge [{clap}, {labels}, k={self.top_k}, T={self.temperature}]"
        return {"unified": ident}

    def labels(self) -> list[str]:
        """The label vocabulary audio clips are bridged through."""
        if self._labels is None:
            from loupe.embedder.audio_labels import audioset_class_names

            self._labels = audioset_class_names()
        return self._labels

    def _label_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        from loupe.embedder.bridge import AUDIO_TEMPLATES

        assert self.audio is not None
        with self._lock:
            if self._label_space is None or self._label_clap is None:
                names = self.labels()
                key = hashlib.sha256(
                    json.dumps(
                        [names, list(AUDIO_TEMPLATES), self.space.model_ids, self.audio.model_ids], ensure_ascii=False
                    ).encode()
                ).hexdigest()[:16]
                path = self.cache_dir / f"native-labels-{key}.npz"
                cached = self._read_cache(path, len(names))
                if cached is None:
                    prompts = [TextInput(t.format(n)) for n in names for t in AUDIO_TEMPLATES]
                    n_t = len(AUDIO_TEMPLATES)
                    sv = self.space.embed(prompts, role="passage").reshape(len(names), n_t, -1).mean(axis=1)
                    cv = self.audio.embed(prompts).reshape(len(names), n_t, -1).mean(axis=1)
                    cached = (l2_normalize(sv), l2_normalize(cv))
                    self._write_cache(path, cached)
                self._label_space, self._label_clap = cached
            return self._label_space, self._label_clap

    @staticmethod
    def _read_cache(path: Path, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            with np.load(path) as data:
                sv, cv = data["space"].astype(np.float32), data["clap"].astype(np.float32)
        except (OSError, KeyError, ValueError):
            return None
        return (sv, cv) if len(sv) == len(cv) == n else None

    @staticmethod
    def _write_cache(path: Path, vecs: tuple[np.ndarray, np.ndarray]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp.npz")
            np.savez(tmp, space=vecs[0], clap=vecs[1])
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs the recomputation next time

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Audio clips through the label bridge, everything else through the space; rows in input order."""
        from loupe.embedder.bridge import bridge_mix

        out = np.zeros((len(items), self.dim), dtype=np.float32)
        audio_idx = [i for i, it in enumerate(items) if isinstance(it, AudioInput)]
        other_idx = [i for i, it in enumerate(items) if not isinstance(it, AudioInput)]
        if audio_idx:
            if self.audio is None:
                raise EmbedError(
                    f"the native profile has no audio-text model, so it cannot embed AudioInput (audio); its space "
                    f"({self.space.model}) embeds: {', '.join(sorted(self.space.kinds))}. Set audio_text_model."
                )
            space_vecs, clap_vecs = self._label_vectors()
            clips = [it for it in items if isinstance(it, AudioInput)]
            probs = self.audio.label_posteriors(clips, clap_vecs)
            out[audio_idx] = bridge_mix(probs, space_vecs, self.top_k, self.temperature)
        if other_idx:
            out[other_idx] = self.space.embed([items[i] for i in other_idx], role=role)
        return out


class QueryOnlyText:
    """Wraps a backend whose ``text`` input serves queries only (e.g. CLAP text into the ``audio`` vector):
    text passages are not embedded into that named vector (``passage_kinds`` excludes text)."""

    def __init__(self, inner: AudioTextEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.kinds = inner.kinds
        self.passage_kinds: frozenset[InputKind] = inner.kinds - {"text"}

    @property
    def dim(self) -> int:
        """The wrapped backend's size."""
        return self.inner.dim

    @dim.setter
    def dim(self, value: int) -> None:
        self.inner.dim = value

    @property
    def model_ids(self) -> dict[str, str]:
        """The wrapped backend's ids."""
        return self.inner.model_ids

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Delegates to the wrapped backend."""
        return self.inner.embed(items, role=role)


SPACE_BACKENDS: dict[str, type[ImageTextEmbedder] | type[Qwen3VLEmbedder]] = {
    "image-text": ImageTextEmbedder,
    "qwen3-vl-embedding": Qwen3VLEmbedder,
}


def native_backends(
    image_text_model: str | None = DEFAULT_IMAGE_TEXT_MODEL,
    audio_text_model: str | None = DEFAULT_AUDIO_TEXT_MODEL,
    one_space_model: str | None = None,
    *,
    one_space_backend: str = "qwen3-vl-embedding",
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int = 16,
    dim: int | None = None,
    compile: bool = False,
    allow_download: bool = False,
    audio_labels: Sequence[str] | None = None,
    cache_dir: str | None = None,
    video_input: bool = True,
    instruction: str | None = None,
    query_instruction: str | None = None,
    prep_workers: int = 0,
) -> tuple[NativeEmbedder, dict[str, QueryOnlyText]]:
    """The native profile's backends: ``unified`` (a one-space model if given, else the image-text model,
    with audio bridged by CLAP labels) and, with an audio-text model, the ``audio`` named vector.

    Construction reads no weights; unknown backend names raise UnknownNameError listing the valid ones.
    """
    from loupe.errors import UnknownNameError

    common: dict[str, Any] = {
        "device": device,
        "dtype": dtype,
        "batch_size": batch_size,
        "prep_workers": prep_workers,
        "compile": compile,
        "allow_download": allow_download,
    }
    space: ImageTextEmbedder | Qwen3VLEmbedder
    if one_space_model:
        if one_space_backend not in SPACE_BACKENDS or one_space_backend == "image-text":
            valid = ", ".join(k for k in sorted(SPACE_BACKENDS) if k != "image-text")
            raise UnknownNameError(f"unknown one-space backend {one_space_backend!r}; valid: {valid}")
        extra_kw: dict[str, Any] = {}
        if instruction:
            extra_kw["instruction"] = instruction
        if query_instruction:
            extra_kw["query_instruction"] = query_instruction
        space = Qwen3VLEmbedder(one_space_model, dim=dim, video_input=video_input, **common, **extra_kw)
    elif image_text_model:
        space = ImageTextEmbedder(image_text_model, dim=dim, **common)
    else:
        raise ConfigError("the native profile needs image_text_model or one_space_model")
    audio = AudioTextEmbedder(audio_text_model, **common) if audio_text_model else None
    unified = NativeEmbedder(space, audio, labels=audio_labels, cache_dir=Path(cache_dir) if cache_dir else None)
    extra = {"audio": QueryOnlyText(audio)} if audio is not None else {}
    return unified, extra
