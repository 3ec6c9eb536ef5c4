"""EmbeddingGemma 2: one model, one 768-d space for text, images, audio and video (the ``native-gemma2`` profile).

The model (transformers' ``EmbeddingGemma2Model``) is a bidirectional Gemma text backbone whose input sequence
may carry soft tokens from a Gemma 4 vision tower (images, video frames) and a Gemma 4 audio conformer (16 kHz
log-mel features); every token's final state is projected to ``embedding_dim`` and the sentence embedding is
the mean over the sequence, normalised (the checkpoint is meant to be wrapped by sentence-transformers' mean
pooling; transformers' docstring). So an interleaved input (an image with its caption, a clip with text) is ONE
sequence and ONE vector, not a fusion of parts.

What the backend does per input (one prompt, then the tokenizer, one forward, mean pooling):

- text: ``prompt + text``;
- an image: ``prompt + <boi> <image>*n <eoi> + text`` — pixels through the checkpoint's Gemma 4 image processor
  (aspect-preserving resize to its soft-token budget, patches, positions), ``n`` as it reports;
- an audio clip (speech or sound): ``prompt + <boa> <audio>*n <eoa> + text`` — samples (resampled to the
  feature extractor's rate, 16 kHz) through the checkpoint's Gemma 4 audio feature extractor, ``n`` from its
  frame mask with the processor's own subsampling arithmetic (``EmbeddingGemma2Processor.compute_sscp``);
  clips longer than the extractor's 30 s are cut there (ingest cuts clips at <= 30 s);
- a video window: ``prompt + (<boi> <video>*n <eoi>)`` per frame ``+ text`` — at most 32 frames (1 per second,
  as ingest cuts them), each prepared like the video processor prepares frames (its soft-token budget, 70 by
  default), with ``mm:ss`` timestamps when the checkpoint's video settings ask for them.

Why the prompts are assembled here and not by ``EmbeddingGemma2Processor``: the processor cannot be built
without its video processor, and that class needs torchvision, which Loupe keeps out (it swaps the CPU torch
build; docs/embedders.md). The pieces it would call are called directly: the tokenizer, ``Gemma4ImageProcessorPil``
for images and video frames (the video processor's resize/rescale/patchify steps are the image processor's with
another budget; its identity mean/std change nothing), ``Gemma4AudioFeatureExtractor``, and the processor's
placeholder arithmetic. The remaining difference is the resampling library (PIL's bicubic instead of
torchvision's antialiased bicubic for video frames).

Prompts: the checkpoint's own (``config_sentence_transformers.json`` → ``prompts``: ``SearchQuery`` and
``Document`` as EmbeddingGemma 2 names them, or sentence-transformers' ``query`` and ``document``) when the folder
has them; otherwise the EmbeddingGemma convention (``task: search result | query: `` for queries,
``title: none | text: `` for documents). Either can be overridden; they are part of the model id.

Matryoshka: ``dim`` 512, 256 or 128 keeps the first ``dim`` values of the pooled vector and renormalises (768 is
the full size); the size is in the model id, so a collection built at one size never opens at another.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
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
)
from loupe.embedder.native import MAX_VIDEO_FRAMES, _load_image, _TorchBackend
from loupe.errors import ConfigError, EmbedError

DEFAULT_MODEL = "google/embeddinggemma-2"
FULL_DIM = 768
# The sizes EmbeddingGemma 2 is trained to be cut to (the issue and peers' model notes: 768/512/256/128).
MATRYOSHKA_DIMS = (768, 512, 256, 128)
# EmbeddingGemma's prompt convention (its model card's retrieval prompts), used when the checkpoint has none.
QUERY_PROMPT = "task: search result | query: "
DOCUMENT_PROMPT = "title: none | text: "
# Names the checkpoint's sentence-transformers prompts go by: EmbeddingGemma 2 names them SearchQuery and Document
# (the egemma2 runtime's documentation), sentence-transformers' generic names are query and document.
QUERY_PROMPT_NAMES = ("query", "SearchQuery")
DOCUMENT_PROMPT_NAMES = ("document", "Document")
# The video processor's class defaults in transformers 5.23 (video_processing_embedding_gemma2.py).
VIDEO_DEFAULTS: dict[str, Any] = {
    "patch_size": 16,
    "pooling_kernel_size": 3,
    "max_soft_tokens": 70,
    "max_frames": MAX_VIDEO_FRAMES,
    "add_timestamps": False,
}
# Text riding with an image, clip or window is cut to this many characters (about 2k tokens at ~4 characters a
# token, EmbeddingGemma's context for text): the sequence cannot be truncated by tokens once media tokens are in.
MAX_ATTACHED_CHARS = 8_000
# Text-only inputs are truncated by the tokenizer at this many tokens (EmbeddingGemma's 2k context).
MAX_TEXT_TOKENS = 2048


@dataclass
class _Parts:
    """The checkpoint's tokenizer and preprocessors, and what the prompts need from them."""

    tokenizer: Any
    images: Any
    audio: Any
    video: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)


def _read_json(src: str, name: str, kw: dict[str, Any]) -> dict[str, Any]:
    """A JSON file of the checkpoint (local folder or Hugging Face cache), or {} when it has none."""
    from transformers.utils import cached_file

    try:
        path = cached_file(src, name, _raise_exceptions_for_missing_entries=False, **kw)
    except OSError:
        return {}
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def sscp_tokens(mask: np.ndarray) -> int:
    """Audio soft tokens for one clip's mel-frame mask: the processor's own arithmetic (two stride-2 convolutions
    of the audio tower's subsampler)."""
    from transformers.models.embedding_gemma2.processing_embedding_gemma2 import EmbeddingGemma2Processor

    return int(EmbeddingGemma2Processor.compute_sscp(np.asarray(mask)))


def frame_indices(n: int, limit: int) -> list[int]:
    """Which of ``n`` frames a window keeps: all when ``n <= limit``, else ``limit`` spread uniformly, as the video
    processor's ``uniform`` overflow strategy picks them (``np.linspace(..., dtype=int)``)."""
    if n <= limit:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, limit, dtype=int)]


class EmbeddingGemma2Embedder(_TorchBackend):
    """EmbeddingGemma 2 through transformers: text, images, audio clips and video windows in one space.

    >>> e = EmbeddingGemma2Embedder("/models/embeddinggemma-2", dim=256)  # doctest: +SKIP
    >>> e.embed([TextInput("a dog"), ImageInput("dog.jpg", text="my dog")], role="passage").shape  # doctest: +SKIP
    (2, 256)
    """

    name = "embeddinggemma2"
    kinds: frozenset[InputKind] = frozenset({"text", "image", "audio", "video"})
    matryoshka = True
    # An input's text and media go in as one sequence (profiles.EmbeddingProfile.embed_query adds a joint vector).
    interleaves = True

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dim: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        embed_pages: bool = False,
        max_text_tokens: int = MAX_TEXT_TOKENS,
        **kw: Any,
    ) -> None:
        if dim is not None and dim not in MATRYOSHKA_DIMS:
            raise ConfigError(
                f"EmbeddingGemma 2 dim must be one of {', '.join(map(str, MATRYOSHKA_DIMS))} "
                f"(its Matryoshka sizes), not {dim}"
            )
        super().__init__(model, dim=None if dim == FULL_DIM else dim, **kw)
        self._query_prompt = query_prompt
        self._document_prompt = document_prompt
        # PDF pages as page images: off by default (no document-retrieval results are known for this model here).
        self.embeds_pages = bool(embed_pages)
        self.max_text_tokens = int(max_text_tokens)
        self._prompts: tuple[str, str] | None = None
        # Where the prompts came from ("checkpoint" or "convention"), known after prompts() ran.
        self.prompt_source = ""

    # --- identity ------------------------------------------------------------------------------------------

    def prompts(self) -> tuple[str, str]:
        """``(query, document)`` prompts: the options, else the checkpoint's, else EmbeddingGemma's convention."""
        if self._prompts is None:
            own: dict[str, Any] = {}
            if self._query_prompt is None or self._document_prompt is None:
                src, kw = self._source()
                own = _read_json(src, "config_sentence_transformers.json", kw).get("prompts") or {}
            own_query = next((own[k] for k in QUERY_PROMPT_NAMES if own.get(k) is not None), None)
            own_doc = next((own[k] for k in DOCUMENT_PROMPT_NAMES if own.get(k) is not None), None)
            query = self._query_prompt if self._query_prompt is not None else own_query
            doc = self._document_prompt if self._document_prompt is not None else own_doc
            self.prompt_source = "checkpoint" if own_query is not None or own_doc is not None else "convention"
            self._prompts = (
                str(query) if query is not None else QUERY_PROMPT,
                str(doc) if doc is not None else DOCUMENT_PROMPT,
            )
        return self._prompts

    @property
    def model_ids(self) -> dict[str, str]:
        """Model identity (hub id or folder digest), the Matryoshka size when cut, and the prompts' digest."""
        ids = super().model_ids
        digest = hashlib.sha256("|".join(self.prompts()).encode()).hexdigest()[:8]
        return {k: f"{v} [prompts {digest}]" for k, v in ids.items()}

    def _config_dim(self, config: Any) -> int:
        text = getattr(config, "text_config", None) or config
        return int(getattr(text, "embedding_dim", FULL_DIM))

    # --- loading -------------------------------------------------------------------------------------------

    def _load_model(self, src: str, kw: dict[str, Any]) -> tuple[Any, Any]:
        from transformers import AutoTokenizer, EmbeddingGemma2Model
        from transformers.models.gemma4 import Gemma4AudioFeatureExtractor, Gemma4ImageProcessorPil

        self._check_pooling(src, kw)
        model = EmbeddingGemma2Model.from_pretrained(src, dtype=self._dtype, **kw)
        tokenizer = AutoTokenizer.from_pretrained(src, **kw)
        cfg = model.config
        images = Gemma4ImageProcessorPil.from_pretrained(src, **kw) if cfg.vision_config is not None else None
        audio = Gemma4AudioFeatureExtractor.from_pretrained(src, **kw) if cfg.audio_config is not None else None
        video = dict(VIDEO_DEFAULTS)
        nested = _read_json(src, "processor_config.json", kw).get("video_processor") or {}
        video.update({k: v for k, v in (nested or _read_json(src, "video_preprocessor_config.json", kw)).items()})
        parts = _Parts(tokenizer, images, audio, video, self._media_tokens(tokenizer, cfg))
        return model, parts

    def _check_pooling(self, src: str, kw: dict[str, Any]) -> None:
        """Refuse a sentence-transformers layout this backend would embed wrongly (not mean pooling, or extra
        Dense layers after pooling): better an error than vectors from another space."""
        from transformers.utils import cached_file

        try:  # modules.json is a list, not an object: read here rather than by _read_json
            path = cached_file(src, "modules.json", _raise_exceptions_for_missing_entries=False, **kw)
        except OSError:
            path = None
        if path:
            with open(path, encoding="utf-8") as f:
                layout = json.load(f)
            extra = [m.get("type", "") for m in layout if "Dense" in str(m.get("type", ""))]
            if extra:
                raise EmbedError(
                    f"{self.model!r} has sentence-transformers Dense layers after pooling ({', '.join(extra)}); "
                    "the EmbeddingGemma 2 backend only does mean pooling + normalisation. Use a checkpoint "
                    "without them or report this model."
                )
        pooling = _read_json(src, "1_Pooling/config.json", kw)
        if pooling and not pooling.get("pooling_mode_mean_tokens", False):
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
            raise EmbedError(f"{self.model!r} pools by {modes}; the EmbeddingGemma 2 backend does mean pooling only")

    def _media_tokens(self, tokenizer: Any, cfg: Any) -> dict[str, str]:
        """The tokenizer's placeholder and bracket tokens, checked against the ids the model looks for."""
        tokens: dict[str, str] = {}
        for name in ("image_token", "boi_token", "eoi_token", "audio_token", "boa_token", "eoa_token"):
            value = getattr(tokenizer, name, None)
            if value:
                tokens[name] = str(value)
        # The processor registers this placeholder itself (so it is never split), whatever the tokenizer holds.
        video = "<|video|>"
        tokenizer.add_special_tokens({"additional_special_tokens": [video]})
        tokens["video_token"] = video
        want = {"image_token": cfg.image_token_id, "audio_token": cfg.audio_token_id, "video_token": cfg.video_token_id}
        for name, cid in want.items():
            if name in tokens and int(tokenizer.convert_tokens_to_ids(tokens[name])) != int(cid):
                raise EmbedError(
                    f"{self.model!r}: the tokenizer's {name} {tokens[name]!r} has id "
                    f"{tokenizer.convert_tokens_to_ids(tokens[name])}, the model's config expects {cid}; "
                    "the folder mixes files of different checkpoints"
                )
        return tokens

    # --- embedding -----------------------------------------------------------------------------------------

    def _need(self, parts: _Parts, what: str) -> None:
        tower = parts.images if what == "image" else parts.audio
        if tower is None:
            config = "vision_config" if what == "image" else "audio_config"
            raise EmbedError(f"{self.model!r} has no {what} tower (its config has no {config})")
        brackets = {"image": ("boi_token", "eoi_token"), "audio": ("boa_token", "eoa_token")}[what]
        needed = (f"{what}_token", *brackets)
        missing = [t for t in needed if t not in parts.tokens]
        if missing:
            raise EmbedError(f"{self.model!r}: its tokenizer defines no {', '.join(missing)}")

    def _block(self, parts: _Parts, kind: str, n: int) -> str:
        t = parts.tokens
        if kind == "image":
            return f"{t['boi_token']}{t['image_token'] * n}{t['eoi_token']}"
        if kind == "video":
            return f"{t['boi_token']}{t['video_token'] * n}{t['eoi_token']}"
        return f"{t['boa_token']}{t['audio_token'] * n}{t['eoa_token']}"

    def _frames_block(self, parts: _Parts, per_frame: list[int]) -> str:
        """A window's frames as the processor expands a video: one block per frame, with ``mm:ss`` timestamps
        (frames are 1 per second) when the checkpoint's video settings ask for them."""
        blocks = [self._block(parts, "video", n) for n in per_frame]
        if not parts.video.get("add_timestamps"):
            return "".join(blocks)
        return " ".join(f"{s // 60:02d}:{s % 60:02d} {b}" for s, b in enumerate(blocks))

    def _run(self, batch: list[EmbedInput], role: Role) -> np.ndarray:
        import torch

        model, parts = self._ensure()
        query, document = self.prompts()
        prefix = query if role == "query" else document
        tensors: dict[str, Any] = {}
        media: list[str] = []  # the media block of each item, in batch order
        images = [it for it in batch if isinstance(it, ImageInput)]
        if images:
            self._need(parts, "image")
            enc = self._prepared(
                [it.path for it in images], lambda paths: parts.images(images=[_load_image(p) for p in paths])
            )
            counts = [int(n) for n in np.asarray(enc["num_soft_tokens_per_image"]).reshape(-1)]
            tensors["pixel_values"] = torch.as_tensor(np.asarray(enc["pixel_values"]))
            tensors["image_position_ids"] = torch.as_tensor(np.asarray(enc["image_position_ids"]))
            media = [self._block(parts, "image", n) for n in counts]
        windows = [it for it in batch if isinstance(it, VideoInput)]
        if windows:
            self._need(parts, "image")
            tensors.update(self._video(parts, windows, media))
        clips = [it for it in batch if isinstance(it, AudioInput)]
        if clips:
            self._need(parts, "audio")
            tensors.update(self._audio(parts, clips, media))
        prompts = []
        k = 0
        for item in batch:
            if isinstance(item, TextInput):
                prompts.append(prefix + item.text)
                continue
            text = (getattr(item, "text", None) or "")[:MAX_ATTACHED_CHARS]
            prompts.append(prefix + media[k] + text)
            k += 1
        if media:
            enc_t = parts.tokenizer(prompts, padding=True, return_tensors="pt")
        else:
            enc_t = parts.tokenizer(
                prompts, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
            )
        text_in = {"input_ids": enc_t["input_ids"], "attention_mask": enc_t["attention_mask"]}
        inputs = self._to_device({**text_in, **tensors})
        hidden = model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        # Mean pooling over every real token (prompt, brackets, soft tokens, text), as sentence-transformers pools.
        pooled = (hidden.float() * mask.float()).sum(dim=1) / mask.float().sum(dim=1).clamp(min=1.0)
        return self._finish(pooled)

    def _video(self, parts: _Parts, windows: list[VideoInput], media: list[str]) -> dict[str, Any]:
        """Frames of each window through the image processor at the video budget; one block per frame."""
        import torch

        cfg = parts.video
        limit = min(int(cfg.get("max_frames") or MAX_VIDEO_FRAMES), MAX_VIDEO_FRAMES)
        chosen = [[w.frames[i] for i in frame_indices(len(w.frames), limit)] for w in windows]
        flat = [f for frames in chosen for f in frames]
        if any(not frames for frames in chosen):
            raise EmbedError("a video window with no frames cannot be embedded")
        budget = int(cfg.get("max_soft_tokens", VIDEO_DEFAULTS["max_soft_tokens"]))
        enc = self._prepared(
            flat, lambda paths: parts.images(images=[_load_image(p) for p in paths], max_soft_tokens=budget)
        )
        per_frame = [int(n) for n in np.asarray(enc["num_soft_tokens_per_image"]).reshape(-1)]
        start = 0
        for frames in chosen:
            # Counts per frame: the processor resizes a whole clip to one size, but a window's frame files may
            # differ in size (each is resized on its own here), so each frame's block has its own count.
            media.append(self._frames_block(parts, per_frame[start : start + len(frames)]))
            start += len(frames)
        return {
            "pixel_values_videos": torch.as_tensor(np.asarray(enc["pixel_values"])),
            "video_position_ids": torch.as_tensor(np.asarray(enc["image_position_ids"])),
            "num_frames_per_video": torch.tensor([len(f) for f in chosen], dtype=torch.long),
        }

    def _audio(self, parts: _Parts, clips: list[AudioInput], media: list[str]) -> dict[str, Any]:
        """Clips at the extractor's rate through its log-mel front end (one thread: it holds the GIL, as CLAP's
        does in embedder/native.py); the soft-token count from each clip's frame mask."""
        from loupe.embedder.audio_labels import resample

        fe = parts.audio
        rate = int(fe.sampling_rate)
        waves = []
        for c in clips:
            w = resample(np.asarray(c.samples, dtype=np.float32), int(c.sample_rate), rate)
            # An empty clip still needs a few frames for the subsampler; 0.1 s of silence.
            waves.append(w if w.size >= rate // 10 else np.pad(w, (0, rate // 10 - w.size)))
        enc = fe(waves, sampling_rate=rate, return_tensors="pt")
        masks = enc["input_features_mask"].numpy()
        for m in masks:
            media.append(self._block(parts, "audio", sscp_tokens(m)))
        return {"input_features": enc["input_features"], "input_features_mask": enc["input_features_mask"]}

    def _embed_kind(self, kind: InputKind, batch: list[EmbedInput], role: Role) -> np.ndarray:
        def size(item: EmbedInput) -> int:
            if isinstance(item, TextInput):
                return len(item.text)
            if isinstance(item, VideoInput):
                return 10_000 * len(item.frames) + len(item.text or "")
            if isinstance(item, AudioInput):
                return int(item.samples.size)
            return len(item.text or "")

        return self._batched(batch, key=size, run=lambda b: self._run(b, role))


RUNTIMES = ("transformers", "egemma2")


def gemma2_backend(model: str = DEFAULT_MODEL, runtime: str = "transformers", **opts: Any) -> Any:
    """The ``native-gemma2`` profile's one backend, from the profile options (``model`` = folder or cached id;
    ``runtime`` = ``transformers`` (default) or ``egemma2``, the Rust runtime where it is installed)."""
    if runtime not in RUNTIMES:
        from loupe.errors import UnknownNameError

        raise UnknownNameError(f"unknown native-gemma2 runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
    if not isinstance(model, str) or not model:
        raise ConfigError("the native-gemma2 profile needs model: a local model folder or a cached Hugging Face id")
    known = {"dim", "device", "dtype", "batch_size", "compile", "allow_download", "prep_workers"}
    known |= {"query_prompt", "document_prompt", "embed_pages", "max_text_tokens"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ConfigError(
            f"native-gemma2: unknown profile option(s) {', '.join(unknown)}; "
            f"valid: model, runtime, {', '.join(sorted(known))}"
        )
    if Path(model).expanduser().exists() and not Path(model).expanduser().is_dir():
        raise ConfigError(f"native-gemma2: model {model!r} is a file; give the model's folder")
    if runtime == "egemma2":
        from loupe.embedder.gemma2_rust import Egemma2Embedder

        opts.pop("compile", None)  # a transformers option; the Rust runtime has its own kernels
        opts.pop("prep_workers", None)
        return Egemma2Embedder(model, **opts)
    return EmbeddingGemma2Embedder(model, **opts)
