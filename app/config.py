"""Settings: one object built at the entry point from a YAML file and ``LOUPE_*`` environment variables.

Library code never reads the environment; CLI, API and UI call :func:`load_settings` once and pass the
result (or the typed options derived from it) down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from loupe.errors import ConfigError


class Settings(BaseSettings):
    """Everything an entry point needs to know. Environment variables are ``LOUPE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="LOUPE_", extra="forbid")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".loupe")
    collection: str = "default"
    profile: str = "offline"
    # Options of the embedding profile, e.g. for native {"image_text_model": "google/siglip2-base-patch16-224",
    # "audio_text_model": "laion/clap-htsat-unfused"} (embedder/native.py); JSON in LOUPE_PROFILE_OPTIONS.
    profile_options: Annotated[dict[str, Any], NoDecode] = Field(default_factory=dict)
    # The gemini embedding profile's key (never logged; embedder/gemini.py).
    gemini_api_key: SecretStr | None = None
    # Embedded engine: "edge" is Qdrant's Rust engine in-process (qdrant-edge-py); "local" is qdrant-client's
    # pure-Python local mode. Measured in the foundation issue: edge is 10-100x faster at 10k-100k points.
    engine: Literal["edge", "local"] = "edge"
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # Server mode, collections Loupe creates (None: the server's defaults; docs/distributed.md). Shards spread a
    # collection over the peers (Qdrant's default is one per peer); replicas keep it readable with a peer down;
    # writes are acknowledged once this many replicas of a shard applied them.
    qdrant_shard_number: int | None = Field(default=None, ge=1)
    qdrant_replication_factor: int | None = Field(default=None, ge=1)
    qdrant_write_consistency_factor: int | None = Field(default=None, ge=1)
    # Ingest on a Ray cluster (app/distributed.py, the optional extra `ray`): None ingests in this process;
    # "local" starts a Ray instance for the ingest; else a ray.init address ("auto", HOST:6379, ray://HOST:10001).
    ray_address: str | None = None
    # Ray actors (None: one per ray_cpus_per_worker CPUs, or one per GPU where the cluster has GPUs).
    ray_workers: int | None = Field(default=None, ge=1)
    ray_cpus_per_worker: float = Field(default=1.0, gt=0)
    # None: 1 GPU per actor where the cluster has GPUs, else 0.
    ray_gpus_per_worker: float | None = Field(default=None, ge=0)
    # multilingual-e5-small reads at most 512 tokens; ~1,000 characters of prose is ~250-300 tokens, which
    # leaves room for the page context without truncation (stack-notes: longer chunks cost time and are cut).
    chunk_chars: int = Field(default=1000, ge=100, le=8000)
    chunk_overlap: int = Field(default=150, ge=0, le=2000)
    max_file_mb: float = Field(default=512.0, gt=0)
    max_pdf_pages: int = Field(default=5000, ge=1)
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    # PDF pages: OCR where there is no text layer ("auto"), always ("on") or never ("off"); page image dpi.
    ocr: Literal["auto", "on", "off"] = "auto"
    render_dpi: int = Field(default=100, ge=36, le=300)
    # Video frames: OCR where the picture changed, within a per-minute budget ("auto"), every change ("on"), never.
    video_ocr: Literal["auto", "on", "off"] = "auto"
    # A query picture with text in it (a photo of a page, a slide, a frame with a caption): its OCR text becomes the
    # query's text part when the user typed none (fused with the picture by RRF). Off: pictures are matched by
    # their pixels only.
    query_image_ocr: bool = True
    # Answers (app/llm.py): "local" runs a packaged GGUF model in-process; "openai" any OpenAI-compatible URL
    # (Ollama, vLLM, llama.cpp server); "gemini" needs a key; "vlm" a local transformers VLM folder (GPU);
    # "extractive" quotes the best passages. Any generator that fails falls back to the extractive answer.
    # Default extractive: on the 28 dev questions the packaged SmolLM2-135M contained the answer in 21% of its
    # answers and cited a supporting passage in 18%, the extractive answer 75% and 96% (docs/eval/rag-*.json).
    generator: Literal["extractive", "local", "openai", "gemini", "vlm"] = "extractive"
    generator_url: str | None = None
    # A model name (openai, gemini) or path (local: a .gguf file; vlm: a folder).
    generator_model: str | None = None
    generator_api_key: SecretStr | None = None
    generator_max_tokens: int = Field(default=256, ge=16, le=8192)
    # Prompt + answer tokens for the local model; 5 passages of ~1,000 characters need ~1,800 tokens.
    generator_context: int = Field(default=4096, ge=512, le=131072)
    generator_timeout_s: float = Field(default=60.0, gt=0)
    # Send page images and frames to an OpenAI-compatible endpoint (only for vision models).
    generator_images: bool = False
    # REST API (loupe serve). Keys file: YAML of hashed keys → tenant + collection rights (app/tenants.py);
    # None means no key is accepted (loupe serve then needs --no-auth, which also binds only to loopback).
    api_keys_file: Path | None = None
    # Folders the API may ingest by path (uploads need none); a ':'-separated list in LOUPE_API_ALLOWED_ROOTS.
    api_allowed_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # One upload request (all its files); larger bodies are refused with 413 before they are stored.
    api_max_upload_mb: float = Field(default=256.0, gt=0)
    # A request that has not produced its response by then gets 504 (ingest runs as a job, not in the request).
    api_request_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("api_allowed_roots", mode="before")
    @classmethod
    def _roots(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p for p in v.split(os.pathsep) if p]
        return v

    @field_validator("profile_options", mode="before")
    @classmethod
    def _profile_options_json(cls, v: Any) -> Any:
        # Environment variables arrive as strings: accept a JSON object there.
        if isinstance(v, str):
            import json

            try:
                return json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"profile_options must be a JSON object: {e}") from e
        return v

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v) or len(v) > 64:
            raise ValueError("collection names use letters, digits, '-' and '_' (1-64 characters)")
        return v


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build the settings: YAML file (``config_file`` or ``$LOUPE_CONFIG``), then env, then ``overrides``.

    >>> s = load_settings(data_dir="/tmp/loupe")  # doctest: +SKIP
    """
    values: dict[str, Any] = {}
    path = config_file or os.environ.get("LOUPE_CONFIG")
    if path:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read config file {p}: {e}. Fix the file or unset LOUPE_CONFIG.") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of settings, got {type(loaded).__name__}")
        values.update(loaded)
    # Environment variables win over the file: pydantic-settings gives init kwargs priority, so merge by hand.
    env_names = {f"LOUPE_{k.upper()}": k for k in Settings.model_fields}
    for env, key in env_names.items():
        if env in os.environ:
            values[key] = os.environ[env]
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid settings: {problems}") from e
