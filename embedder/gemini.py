"""The ``gemini`` profile: Gemini Embedding 2 through its public HTTP API (text, images, audio, video, PDF).

Requests follow the documented REST contract of the Generative Language API:
``POST {base}/v1beta/models/{model}:batchEmbedContents`` with the key in the ``x-goog-api-key`` header and a
body ``{"requests": [{"model": "models/{model}", "content": {"parts": [...]}, "outputDimensionality": N}]}``;
a part is ``{"text": ...}`` or ``{"inline_data": {"mime_type": ..., "data": <base64>}}``. The answer is
``{"embeddings": [{"values": [...]}, ...]}`` in request order. One content may interleave parts (an image and
its caption give one embedding).

- Output size: 128-3072 (Matryoshka; 768, 1536 and 3072 are the recommended sizes). Vectors are normalised
  here, since only the full size comes normalised from the service.
- Images: PNG/JPEG inline. Video windows: up to 6 of their frames as images in one content (the documented
  per-request image limit). Audio clips: 16-bit PCM WAV inline. :meth:`GeminiEmbedder.embed_file` sends a whole
  file (PDF of at most 6 pages, MP4/MOV video up to 120 s, MP3/WAV audio) for callers that have one.
- Batches hold at most 100 requests (the service's per-call limit) and about 16 MB of inline data (requests
  above 20 MB are refused by the service).
- 429 and 5xx are retried with bounded exponential backoff (``Retry-After`` honoured up to the cap); 401/403
  mean the key was rejected. The key is only ever sent in the header: it appears in no URL, error, log or repr.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import SecretStr

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
from loupe.errors import ConfigError, EmbedError

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-embedding-2"
# 768 is one of the documented recommended sizes (768/1536/3072): a quarter of the RAM of the full size.
DEFAULT_DIM = 768
MIN_DIM, MAX_DIM = 128, 3072
# Service limits: 100 requests per batch call; 20 MB per request (we stay below with base64 overhead).
MAX_BATCH = 100
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Documented per-request image limit; video windows are subsampled to it.
MAX_IMAGES = 6
IMAGE_MIMES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """Mono float samples in [-1, 1] as a 16-bit PCM WAV file in memory."""
    import wave

    pcm = (np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def _inline(data: bytes, mime: str) -> dict[str, Any]:
    return {"inline_data": {"mime_type": mime, "data": base64.b64encode(data).decode("ascii")}}


def _image_part(path: str) -> dict[str, Any]:
    """An image file as an inline part: PNG/JPEG as they are, other formats re-encoded to PNG."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix in IMAGE_MIMES:
            return _inline(Path(path).read_bytes(), IMAGE_MIMES[suffix])
        from loupe.embedder.image_labels import load_image

        buf = io.BytesIO()
        load_image(path).save(buf, format="PNG")
        return _inline(buf.getvalue(), "image/png")
    except OSError as e:
        raise EmbedError(f"cannot read image {path}: {e}") from e


class GeminiEmbedder:
    """Gemini Embedding 2 over HTTP: every input kind into one space of ``dim`` (128-3072) dimensions.

    >>> e = GeminiEmbedder(api_key="...", dim=768)  # doctest: +SKIP
    >>> e.embed([TextInput("a dog"), ImageInput("dog.jpg")]).shape  # doctest: +SKIP
    (2, 768)
    """

    name = "gemini"
    kinds: frozenset[InputKind] = frozenset({"text", "image", "audio", "video"})
    # PDF pages go in as the rendered page image with the page's text (one interleaved content).
    embeds_pages = True

    def __init__(
        self,
        api_key: str | SecretStr | None = None,
        *,
        model: str = DEFAULT_MODEL,
        dim: int = DEFAULT_DIM,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        batch_size: int = MAX_BATCH,
        query_task: str | None = None,
        passage_task: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if api_key is None or not (api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key):
            raise ConfigError(
                "the gemini embedding profile needs an API key: set LOUPE_GEMINI_API_KEY or gemini_api_key in "
                "the config file"
            )
        if not MIN_DIM <= int(dim) <= MAX_DIM:
            raise ConfigError(f"gemini output dimensionality must be {MIN_DIM}-{MAX_DIM}, not {dim}")
        try:
            import httpx  # noqa: F401
        except ImportError as e:
            raise EmbedError("the gemini profile needs httpx: pip install httpx==0.28.1") from e
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.model = model
        self.dim = int(dim)
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max(0, int(max_retries))
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.batch_size = max(1, min(int(batch_size), MAX_BATCH))
        # Task types are documented for gemini-embedding-001; off unless asked for.
        self.query_task = query_task
        self.passage_task = passage_task
        self._sleep = sleep
        self._client: Any = None

    def __repr__(self) -> str:
        return f"GeminiEmbedder(model={self.model!r}, dim={self.dim}, base_url={self.base_url!r})"

    @property
    def model_ids(self) -> dict[str, str]:
        """The service model and output size (the space depends on both)."""
        return {"unified": f"gemini:{self.model} (dim {self.dim})"}

    # --- request building ----------------------------------------------------------------------------------

    def parts(self, item: EmbedInput) -> list[dict[str, Any]]:
        """The content parts for one input (inline media first, then any text known about it)."""
        if isinstance(item, TextInput):
            return [{"text": item.text}]
        if isinstance(item, ImageInput):
            parts = [_image_part(item.path)]
        elif isinstance(item, VideoInput):
            from loupe.embedder.native import subsample_frames

            parts = [_image_part(f) for f in subsample_frames(item.frames, MAX_IMAGES)]
        elif isinstance(item, AudioInput):
            return [_inline(wav_bytes(item.samples, item.sample_rate), "audio/wav")]
        else:
            raise EmbedError(f"the gemini embedder cannot embed {type(item).__name__}")
        text = (item.text or "").strip()
        return [*parts, {"text": text}] if text else parts

    def _request(self, parts: list[dict[str, Any]], role: Role) -> dict[str, Any]:
        req: dict[str, Any] = {
            "model": f"models/{self.model}",
            "content": {"parts": parts},
            "outputDimensionality": self.dim,
        }
        task = self.query_task if role == "query" else self.passage_task
        if task:
            req["taskType"] = task
        return req

    # --- transport -----------------------------------------------------------------------------------------

    def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.timeout_s)
        return self._client

    def close(self) -> None:
        """Close the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _post(self, requests: list[dict[str, Any]]) -> list[list[float]]:
        import httpx

        url = f"{self.base_url}/v1beta/models/{self.model}:batchEmbedContents"
        headers = {"x-goog-api-key": self._key.get_secret_value(), "Content-Type": "application/json"}
        for attempt in range(self.max_retries + 1):
            try:
                resp = self._http().post(url, json={"requests": requests}, headers=headers)
            except httpx.HTTPError as e:
                if attempt < self.max_retries:
                    self._sleep(self._delay(attempt, None))
                    continue
                raise EmbedError(f"cannot reach the Gemini API at {self.base_url}: {type(e).__name__}: {e}") from e
            if resp.status_code == 200:
                return self._parse(resp, len(requests))
            if resp.status_code in (401, 403):
                raise EmbedError(
                    f"the Gemini API rejected the key (HTTP {resp.status_code}): check LOUPE_GEMINI_API_KEY "
                    f"and that the key may use {self.model}"
                )
            retryable = resp.status_code == 429 or resp.status_code >= 500
            if retryable and attempt < self.max_retries:
                self._sleep(self._delay(attempt, resp.headers.get("retry-after")))
                continue
            detail = self._error_message(resp)
            hint = " (rate limited: retried, try a smaller batch or later)" if resp.status_code == 429 else ""
            raise EmbedError(f"the Gemini API answered HTTP {resp.status_code}{hint}: {detail}")
        raise AssertionError("unreachable")  # the loop returns or raises

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Exponential backoff (1, 2, 4, ... s) capped at ``max_backoff_s``; a numeric Retry-After wins."""
        if retry_after:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return float(min(self.max_backoff_s, self.backoff_s * (2**attempt)))

    @staticmethod
    def _error_message(resp: Any) -> str:
        try:
            return str(resp.json()["error"]["message"])[:300]
        except Exception:
            return resp.text[:300] or "(no message)"

    def _parse(self, resp: Any, n: int) -> list[list[float]]:
        try:
            embs = resp.json()["embeddings"]
            values = [list(e["values"]) for e in embs]
        except Exception as e:
            raise EmbedError(f"unexpected answer from the Gemini API (no embeddings[].values): {e}") from e
        if len(values) != n or any(len(v) != self.dim for v in values):
            raise EmbedError(
                f"the Gemini API returned {len(values)} embeddings of sizes {sorted({len(v) for v in values})} "
                f"for {n} requests of size {self.dim}"
            )
        return values

    # --- public --------------------------------------------------------------------------------------------

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed items in batches of at most 100 requests / ~16 MB; rows in input order, L2-normalised."""
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        batch: list[dict[str, Any]] = []
        idx: list[int] = []
        size = 0
        for i, item in enumerate(items):
            req = self._request(self.parts(item), role)
            req_size = sum(
                len(p.get("inline_data", {}).get("data", "")) + len(p.get("text", "")) for p in req["content"]["parts"]
            )
            if batch and (len(batch) >= self.batch_size or size + req_size > MAX_BATCH_BYTES):
                out[idx] = self._post(batch)
                batch, idx, size = [], [], 0
            batch.append(req)
            idx.append(i)
            size += req_size
        if batch:
            out[idx] = self._post(batch)
        return l2_normalize(out)

    def embed_file(self, path: str | Path, *, role: Role = "passage", mime: str | None = None) -> np.ndarray:
        """One vector for a whole file sent inline (PDF up to 6 pages, MP4/MOV up to 120 s, MP3/WAV, PNG/JPEG)."""
        p = Path(path)
        kind = mime or mimetypes.guess_type(p.name)[0]
        if not kind:
            raise EmbedError(f"cannot tell the media type of {p}; pass mime=")
        try:
            data = p.read_bytes()
        except OSError as e:
            raise EmbedError(f"cannot read {p}: {e}") from e
        return l2_normalize(np.asarray(self._post([self._request([_inline(data, kind)], role)]), dtype=np.float32))[0]
