"""EmbeddingGemma 2 through the ``egemma2`` runtime (PyPI ``egemma2``: a Rust binary and a client that keeps it
loaded): the ``native-gemma2`` profile with ``runtime: egemma2``.

Same model, same folder, same prompts and same inputs as :class:`embedder.gemma2.EmbeddingGemma2Embedder`; the
vectors agree with the transformers backend's to a cosine of 0.9999+ in float32 (tests/test_gemma2_rust.py, on
the tiny random model with every tower), so both runtimes share one model id and a collection built with one
opens with the other. Inputs map one to one: text → a string; an image → ``{"image": path}``; a clip →
``{"audio": (samples, rate)}``; a window → ``{"video": [frame paths], "fps": 1}``; text riding with media → the
media part first and then the text, in ONE input (the same order as the transformers backend). The prompt is
passed as a literal string, so both runtimes use the same one.

Weights: only a local folder or an id already in the local Hugging Face cache (resolved here, offline); the
client's own fallback (downloading the model) is never reached because the folder is always passed.
"""

from __future__ import annotations

import atexit
import importlib.util
import threading
from collections.abc import Sequence
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
    l2_normalize,
)
from loupe.embedder.gemma2 import (
    DEFAULT_MODEL,
    MAX_ATTACHED_CHARS,
    EmbeddingGemma2Embedder,
    frame_indices,
)
from loupe.embedder.native import MAX_VIDEO_FRAMES
from loupe.errors import ConfigError, EmbedError

INSTALL_HINT = "pip install egemma2==0.3.2 (or install Loupe with the egemma2 extra)"


def have_egemma2() -> bool:
    """Whether the egemma2 client is importable (its binary is looked for when the backend starts)."""
    return importlib.util.find_spec("egemma2") is not None


class Egemma2Embedder:
    """EmbeddingGemma 2 on the egemma2 runtime; the identity (model ids, dims, prompts) of the transformers backend.

    >>> e = Egemma2Embedder("/models/embeddinggemma-2", dim=256)  # doctest: +SKIP
    >>> e.embed([TextInput("a dog")], role="query").shape  # doctest: +SKIP
    (1, 256)
    """

    name = "egemma2"
    kinds: frozenset[InputKind] = frozenset({"text", "image", "audio", "video"})
    interleaves = True

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dim: int | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 16,
        allow_download: bool = False,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        embed_pages: bool = False,
        max_text_tokens: int | None = None,
        exe: str | None = None,
        **ignored: Any,
    ) -> None:
        if not have_egemma2():
            raise EmbedError(f"the egemma2 runtime is not installed: {INSTALL_HINT}")
        if allow_download:
            raise ConfigError("runtime egemma2 reads local folders only; fetch the model first (allow_download=false)")
        if dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"runtime egemma2 runs float32 or bfloat16 (GPU), not {dtype!r}")
        # The transformers backend holds the identity, the prompts and the folder resolution; it loads nothing here.
        self.reference = EmbeddingGemma2Embedder(
            model, dim=dim, query_prompt=query_prompt, document_prompt=document_prompt, embed_pages=embed_pages
        )
        self.model = model
        self.device_preference = device
        self.dtype_preference = dtype
        self.batch_size = max(1, int(batch_size))
        self.max_text_tokens = max_text_tokens
        self.embeds_pages = bool(embed_pages)
        self.exe = exe
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        """The Matryoshka size, else the model's (read from its config)."""
        return self.reference.dim

    @property
    def model_ids(self) -> dict[str, str]:
        """The transformers backend's ids: the same model, prompts and size give the same space."""
        return self.reference.model_ids

    def prompts(self) -> tuple[str, str]:
        """``(query, document)`` prompts, as the transformers backend picks them."""
        return self.reference.prompts()

    def folder(self) -> str:
        """The model folder: a local folder, or the snapshot of an id in the local Hugging Face cache."""
        path = Path(self.model).expanduser()
        if path.is_dir():
            return str(path.resolve())
        try:
            from huggingface_hub import snapshot_download

            return str(snapshot_download(self.model, local_files_only=True))
        except Exception as e:  # not cached (or no hub library): the same advice as the transformers backend
            raise self.reference._fail("folder", e) from e

    def _ensure(self) -> Any:
        with self._lock:
            if self._client is None:
                from egemma2 import Egemma2

                device = self.device_preference
                if device.startswith("mps"):
                    raise ConfigError("runtime egemma2 runs on cpu or cuda, not mps")
                precision = "bf16" if self.dtype_preference == "bfloat16" else None
                if self.dtype_preference == "auto" and device != "cpu":
                    from loupe.embedder.native import pick_device

                    precision = "bf16" if pick_device(device).startswith("cuda") else None
                try:
                    self._client = Egemma2(
                        exe=self.exe,
                        model_dir=self.folder(),
                        device=device,
                        precision=precision,
                        max_tokens=self.max_text_tokens,
                    )
                except FileNotFoundError as e:
                    raise EmbedError(f"the egemma2 binary was not found ({e}): {INSTALL_HINT}") from e
                atexit.register(self.close)
        return self._client

    def close(self) -> None:
        """Stop the runtime's process (it is started again on the next embed)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @staticmethod
    def _input(item: EmbedInput) -> Any:
        """One Loupe input as the client's input (media first, then any text: one interleaved input)."""
        if isinstance(item, TextInput):
            return item.text
        text = (getattr(item, "text", None) or "")[:MAX_ATTACHED_CHARS]
        part: dict[str, Any]
        if isinstance(item, ImageInput):
            part = {"image": item.path}
        elif isinstance(item, AudioInput):
            part = {"audio": (np.asarray(item.samples, dtype=np.float32), int(item.sample_rate))}
        else:
            frames = [item.frames[i] for i in frame_indices(len(item.frames), MAX_VIDEO_FRAMES)]
            if not frames:
                raise EmbedError("a video window with no frames cannot be embedded")
            part = {"video": frames, "fps": 1}
        if text:
            return {"parts": [part, text]}
        return part

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed ``items`` in batches of ``batch_size``; rows in input order, L2-normalised."""
        for item in items:
            if not isinstance(item, TextInput | ImageInput | AudioInput | VideoInput):
                raise EmbedError(f"the egemma2 backend cannot embed {type(item).__name__}")
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        client = self._ensure()
        query, document = self.prompts()
        prompt = query if role == "query" else document
        dims = self.reference.requested_dim
        for start in range(0, len(items), self.batch_size):
            part = [self._input(it) for it in items[start : start + self.batch_size]]
            try:
                vecs = client.embed_numpy(part, prompt=prompt, dimensions=dims)
            except Exception as e:  # the server's error message names the input it could not read
                raise EmbedError(f"egemma2 ({self.model}) could not embed a batch: {e}") from e
            out[start : start + len(part)] = vecs
        return l2_normalize(out)
