"""The REST API (FastAPI): collections, ingest jobs, search, streaming ask, source deletion and hit media.

Why one file of ~900 lines: FastAPI routes share one application state (keys, per-tenant indexes, the job
runner) and one set of dependencies; the logic lives in app/service.py, app/jobs.py and app/tenants.py.

Every route but ``/health`` needs an API key (``X-API-Key`` or ``Authorization: Bearer``); a key names a
tenant and its rights per collection (app/tenants.py). Tenants are kept apart twice: each tenant's
collections, media and uploads live in their own folder, and every index read is filtered by the payload
``tenant`` under :class:`~index.store.Index` (``TenantEngine``). A collection a key may not read is answered
404, exactly like one that does not exist.

Hostile requests: bodies above ``api_max_upload_mb`` get 413 before they are stored; uploads and query media
must have a supported extension whose magic bytes agree (ingest/source.py); file names are reduced to a safe
basename; path ingest is limited to ``api_allowed_roots`` (symlinks resolved); media are served only from a
hit's stored ``MediaRef`` and only inside the tenant's folder or the allowed roots; a request that takes longer
than ``api_request_timeout_s`` gets 504. Error bodies carry the message of a LoupeError with server folders
replaced by placeholders, and never a key, a hash or a traceback.

Run with ``loupe serve`` (uvicorn). The OpenAPI schema is at ``/openapi.json``, the docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, Security, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A server answers questions: the generator stack (llama-index, ~1 s to import) loads with the server rather than
# inside the first question's request time (the CLI and ingest skip it; app/service.py imports it lazily).
import loupe.app.llm  # noqa: F401
from loupe.app.chat import Turn
from loupe.app.config import Settings
from loupe.app.jobs import Job, JobManager
from loupe.app.pipeline import IngestReport, ProgressFn
from loupe.app.retrieve import Filters
from loupe.app.service import Loupe, index_config, ingest_runner
from loupe.app.tenants import DEFAULT_TENANT, Access, KeyStore, valid_name
from loupe.embedder.profiles import PROFILES, EmbeddingProfile, ProfileInfo, profile_from_settings
from loupe.errors import ConfigError, LoupeError, ProfileMismatchError, StoreError
from loupe.index.engines import FieldFilter
from loupe.index.store import Index, IndexConfig
from loupe.ingest.source import AUDIO_EXTS, IMAGE_EXTS, SUPPORTED_EXTS, VIDEO_EXTS, check_content_matches
from loupe.types import Hit, PageLoc, TimeLoc

log = logging.getLogger(__name__)

# Thumbnails: 256 px on the long side is what result lists show (the UI's result cards are ~240 px wide).
THUMB_PX = 256
# Upload chunks are copied to disk 1 MiB at a time, so a large upload never sits in memory.
_CHUNK = 1 << 20
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


# ---------------------------------------------------------------------------------------------------------------
# Request and response models (the OpenAPI schema is built from these)
# ---------------------------------------------------------------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class CollectionCreate(BaseModel):
    """A new collection and the embedding profile its vectors come from."""

    name: Name
    profile: str | None = Field(default=None, description="embedding profile; the server's default when omitted")


class CollectionInfo(BaseModel):
    """A collection visible to the key."""

    name: str
    right: Literal["read", "write"]
    exists: bool


class Stats(BaseModel):
    """What a collection holds for this tenant."""

    collection: str
    points: int
    sources: int
    per_modality: dict[str, int]
    profile: str


class FiltersIn(BaseModel):
    """Restrict a search; every field is optional."""

    modalities: list[str] = Field(default_factory=list, max_length=16)
    sources: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=256)
    page_range: tuple[int, int] | None = None
    time_range: tuple[float, float] | None = None
    modified_range: tuple[float | None, float | None] | None = None


class SearchRequest(BaseModel):
    """A text query (image and voice queries go to ``/search/upload``)."""

    text: Annotated[str, Field(min_length=1, max_length=4000)]
    k: int = Field(default=10, ge=1, le=100)
    filters: FiltersIn | None = None


class MediaOut(BaseModel):
    """What to show for a hit; ``url`` serves the file (``?thumb=true`` a small JPEG for images)."""

    kind: str
    url: str
    start_s: float | None = None
    end_s: float | None = None


class HitOut(BaseModel):
    """One result. ``source`` names the file as the client knows it (``upload:...`` for uploaded files)."""

    rank: int
    score: float
    segment_id: str
    source: str
    title: str
    modality: str
    page: int | None = None
    bbox: list[float] | None = None
    start_s: float | None = None
    end_s: float | None = None
    text: str | None = None
    media: MediaOut | None = None


class SearchResponse(BaseModel):
    """Hits, best first."""

    hits: list[HitOut]


class TurnIn(BaseModel):
    """One earlier message of the conversation (the client keeps the history)."""

    role: Literal["user", "assistant"]
    content: Annotated[str, Field(max_length=8000)]


class AskRequest(BaseModel):
    """A question; with ``stream`` the answer comes as server-sent events (hits, token…, done). ``history``
    lets a follow-up ("and the southern one?") be understood; it is condensed into a standalone question."""

    question: Annotated[str, Field(min_length=1, max_length=4000)]
    k: int = Field(default=5, ge=1, le=50)
    stream: bool = False
    filters: FiltersIn | None = None
    history: list[TurnIn] = Field(default_factory=list, max_length=40)


class SourceOut(BaseModel):
    """A source file in the collection and how many points it has."""

    source: str
    points: int


class CitationOut(BaseModel):
    """[n] in the answer → the hit."""

    n: int
    hit: HitOut


class AskResponse(BaseModel):
    """An answer with its citations and how it was made."""

    answer: str
    mode: str
    label: str
    flags: list[str] = Field(default_factory=list)
    citations: list[CitationOut]


class IngestPaths(BaseModel):
    """Server-side files or folders (each inside one of the configured allowed roots)."""

    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=1000)


class JobOut(BaseModel):
    """An ingest job: state, progress, and the summary and per-file failures when done."""

    id: str
    collection: str
    state: str
    created: float
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any]
    summary: dict[str, Any] | None = None
    failures: list[dict[str, str]] = Field(default_factory=list)
    error: str | None = None


class Deleted(BaseModel):
    """How many points were deleted."""

    deleted: int


class Problem(BaseModel):
    """An error: what went wrong and what to do."""

    detail: str


# ---------------------------------------------------------------------------------------------------------------
# Middleware: body size limit and request timeout
# ---------------------------------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes with 413: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                await _send_json(send, 413, f"request body above the {self.limit // (1 << 20)} MiB upload limit")
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return msg

        async def tracking(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, counted, tracking)
        except _TooLarge:
            if not started:
                await _send_json(send, 413, f"request body above the {self.limit // (1 << 20)} MiB upload limit")


class Timeout:
    """Answer 504 when a request has not started its response within ``seconds`` (streams are not cut)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = asyncio.Event()

        async def tracking(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                started.set()
            await send(msg)

        task = asyncio.ensure_future(self.app(scope, receive, tracking))
        waiter = asyncio.ensure_future(started.wait())
        done, _ = await asyncio.wait({task, waiter}, timeout=self.seconds, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            task.cancel()
            waiter.cancel()
            await _send_json(send, 504, f"the request took longer than {self.seconds:g} s; try a smaller request")
            return
        waiter.cancel()
        await task


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------------------------
# Server state: per-tenant folders, open collections, the job runner
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ServerState:
    """What the API holds between requests."""

    settings: Settings
    keys: KeyStore | None
    jobs: JobManager
    loupes: dict[tuple[str, str], Loupe]
    profiles: dict[str, EmbeddingProfile]
    lock: threading.Lock
    profile_factory: Callable[[str], EmbeddingProfile]
    no_auth: bool = False
    # Answers being generated at once. One: on CPU a second generation only halves the speed of both, and a
    # local model's server object is not assumed to be safe for concurrent calls.
    generating: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(1))

    def tenant_dir(self, tenant: str) -> Path:
        """The tenant's data folder: the root for the default tenant (CLI-made collections stay readable)."""
        root = self.settings.data_dir
        return root if tenant == DEFAULT_TENANT else root / "tenants" / tenant

    def physical(self, tenant: str, collection: str) -> str:
        """The collection's name in the engine. A Qdrant server is shared by every tenant, so other tenants'
        collections are prefixed ``<tenant>.`` there ('.' never occurs in a public name); embedded collections
        are already apart in the tenants' folders."""
        if tenant == DEFAULT_TENANT or not self.settings.qdrant_url:
            return collection
        return f"{tenant}.{collection}"

    def public_names(self, tenant: str, physical: list[str]) -> set[str]:
        """The tenant's public collection names among the engine's collection names."""
        if not self.settings.qdrant_url:
            return set(physical)
        if tenant == DEFAULT_TENANT:
            return {n for n in physical if "." not in n}
        return {n[len(tenant) + 1 :] for n in physical if n.startswith(tenant + ".")}

    def tenant_settings(self, tenant: str, collection: str) -> Settings:
        """Settings for one tenant's collection (model_copy: the prefixed server name may exceed 64 characters)."""
        return self.settings.model_copy(
            update={"data_dir": self.tenant_dir(tenant), "collection": self.physical(tenant, collection)}
        )

    def profile(self, name: str) -> EmbeddingProfile:
        """One profile object per name (weights load once for the whole server)."""
        with self.lock:
            if name not in self.profiles:
                self.profiles[name] = self.profile_factory(name)
            return self.profiles[name]

    def exists(self, tenant: str, collection: str) -> bool:
        """Whether the tenant has this collection."""
        return _stored_profile(index_config(self.tenant_settings(tenant, collection))) is not None

    def loupe(self, tenant: str, collection: str, *, create_profile_name: str | None = None) -> Loupe:
        """The open facade of a tenant's collection (404 when it does not exist and is not being created)."""
        key = (tenant, collection)
        with self.lock:
            lp = self.loupes.get(key)
        if lp is not None:
            return lp
        cfg = index_config(self.tenant_settings(tenant, collection))
        stored = _stored_profile(cfg)
        if stored is None and create_profile_name is None:
            raise HTTPException(404, f"collection {collection!r} not found")
        name = stored.name if stored is not None else str(create_profile_name)
        lp = Loupe(self.tenant_settings(tenant, collection), self.profile(name), tenant=tenant)
        lp.index(create=True)
        with self.lock:
            other = self.loupes.setdefault(key, lp)
        if other is not lp:
            lp.close()
        return other

    def forget(self, tenant: str, collection: str) -> None:
        """Close and forget an open collection (before it is dropped)."""
        with self.lock:
            lp = self.loupes.pop((tenant, collection), None)
        if lp is not None:
            lp.close()

    def scrub(self, text: str) -> str:
        """A message with server folders replaced by placeholders."""
        return text.replace(str(self.settings.data_dir), "<data>")


def _stored_profile(cfg: IndexConfig) -> ProfileInfo | None:
    """The collection's profile, or None when it does not exist (unreadable metadata counts as absent)."""
    try:
        return Index.stored_profile(cfg)
    except StoreError:
        return None


# ---------------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------------

_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key (or Authorization: Bearer)")
_bearer = HTTPBearer(auto_error=False)


def _access(
    request: Request,
    key: Annotated[str | None, Security(_key_header)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Access:
    """The key's access (401 when missing or unknown)."""
    st: ServerState = request.app.state.loupe
    if st.no_auth:
        return Access("local", DEFAULT_TENANT, {"*": "write"})
    presented = key or (bearer.credentials if bearer else None)
    found = st.keys.lookup(presented) if st.keys else None
    if found is None:
        raise HTTPException(401, "missing or unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return found


Auth = Annotated[Access, Depends(_access)]


def _settings_profile(settings: Settings, name: str) -> EmbeddingProfile:
    """The profile ``name`` for a new or stored collection. The settings' profile options (model ids, Gemini key)
    belong to the settings' own profile; a collection with another profile gets that profile's defaults (plus
    the Gemini key, which is a setting of its own)."""
    if name == settings.profile:
        return profile_from_settings(settings)
    return profile_from_settings(settings.model_copy(update={"profile": name, "profile_options": {}}))


def create_app(
    settings: Settings,
    *,
    keys: KeyStore | None = None,
    no_auth: bool = False,
    profile_factory: Callable[[str], EmbeddingProfile] | None = None,
) -> FastAPI:
    """Build the API for these settings. ``keys`` defaults to ``settings.api_keys_file``; with ``no_auth``
    every request acts as the default tenant with write rights on every collection (local use only).

    >>> app = create_app(load_settings(), no_auth=True)  # doctest: +SKIP
    """
    if keys is None and settings.api_keys_file is not None:
        keys = KeyStore.load(settings.api_keys_file)
    if keys is None and not no_auth:
        raise ConfigError("no API keys: set api_keys_file (LOUPE_API_KEYS_FILE) or run with --no-auth (loopback only)")

    state_holder: dict[str, ServerState] = {}
    if profile_factory is None:
        profile_factory = functools.partial(_settings_profile, settings)

    def run_job(job: Job, progress: ProgressFn) -> IngestReport:
        st = state_holder["s"]
        lp = st.loupe(job.tenant, job.collection, create_profile_name=st.settings.profile)
        pipeline = ingest_runner(
            lp.settings,
            lp.index(create=True),
            lp.profile,
            allowed_roots=[*st.settings.api_allowed_roots, st.tenant_dir(job.tenant) / "uploads"],
        )
        return pipeline.run(job.paths, on_file=progress)

    state = ServerState(
        settings=settings,
        keys=keys,
        jobs=JobManager(settings.data_dir / "jobs", run_job),
        loupes={},
        profiles={},
        lock=threading.Lock(),
        profile_factory=profile_factory,
        no_auth=no_auth,
    )
    state_holder["s"] = state

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        state.jobs.recover()
        yield
        state.jobs.shutdown()
        for key in list(state.loupes):
            state.forget(*key)

    app = FastAPI(
        title="Loupe",
        version="0.1.0",
        description="Multimodal search and cited answers over your files.",
        lifespan=lifespan,
        responses={401: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}},
    )
    app.state.loupe = state
    app.add_middleware(Timeout, seconds=settings.api_request_timeout_s)
    app.add_middleware(BodyLimit, limit=int(settings.api_max_upload_mb * (1 << 20)))

    @app.exception_handler(LoupeError)
    async def loupe_error(request: Request, exc: LoupeError) -> JSONResponse:
        status = 409 if isinstance(exc, ProfileMismatchError) else 400
        return JSONResponse({"detail": state.scrub(str(exc))}, status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        return JSONResponse({"detail": "internal error; see the server log"}, status_code=500)

    def readable(acc: Access, collection: str) -> None:
        if not valid_name(collection) or not acc.can_read(collection):
            raise HTTPException(404, f"collection {collection!r} not found")

    def writable(acc: Access, collection: str) -> None:
        readable(acc, collection)
        if not acc.can_write(collection):
            raise HTTPException(403, f"this key may only read collection {collection!r}")

    # -- hits ------------------------------------------------------------------------------------------------
    def source_name(acc: Access, uri: str) -> str:
        uploads = state.tenant_dir(acc.tenant) / "uploads"
        p = Path(uri)
        if p.is_relative_to(uploads):
            return "upload:" + str(p.relative_to(uploads))
        return uri

    def source_uri(acc: Access, name: str) -> str:
        if name.startswith("upload:"):
            return str(state.tenant_dir(acc.tenant) / "uploads" / name[len("upload:") :])
        return name

    def hit_out(acc: Access, collection: str, hit: Hit) -> HitOut:
        seg = hit.segment
        loc = seg.locator
        media = None
        if seg.media is not None:
            url = f"/v1/collections/{collection}/media/{seg.id}"
            media = MediaOut(kind=seg.media.kind, url=url, start_s=seg.media.start_s, end_s=seg.media.end_s)
        return HitOut(
            rank=hit.rank,
            score=float(hit.score),
            segment_id=seg.id,
            source=source_name(acc, seg.source.uri),
            title=seg.source.title,
            modality=seg.modality,
            page=loc.page if isinstance(loc, PageLoc) else None,
            bbox=list(loc.bbox) if isinstance(loc, PageLoc) and loc.bbox else None,
            start_s=loc.start_s if isinstance(loc, TimeLoc) else None,
            end_s=loc.end_s if isinstance(loc, TimeLoc) else None,
            text=seg.text,
            media=media,
        )

    def filters_of(acc: Access, f: FiltersIn | None, modalities: list[str] | None = None) -> Filters | None:
        if f is None and not modalities:
            return None
        f = f or FiltersIn()
        return Filters(
            modalities=tuple(modalities or f.modalities),
            sources=tuple(source_uri(acc, s) for s in f.sources),
            page_range=f.page_range,
            time_range=f.time_range,
            modified_range=f.modified_range,
        )

    # -- routes ----------------------------------------------------------------------------------------------
    @app.get("/health", tags=["server"])
    def health() -> dict[str, str]:
        """Liveness: the server answers (no key needed)."""
        return {"status": "ok"}

    @app.get("/v1/collections", tags=["collections"])
    def list_collections(acc: Auth) -> list[CollectionInfo]:
        """Collections this key may use: those named in its rights, and existing ones a ``*`` right covers."""
        cfg = index_config(state.tenant_settings(acc.tenant, state.settings.collection))
        existing = state.public_names(acc.tenant, Index.list_collections(cfg))
        names = {n for n in acc.collections if n != "*"} | (existing if "*" in acc.collections else set())
        out = []
        for n in sorted(names):
            right = acc.right(n)
            if right is not None:
                out.append(CollectionInfo(name=n, right=right, exists=n in existing))
        return out

    @app.post("/v1/collections", status_code=201, tags=["collections"], responses={403: {"model": Problem}})
    def create_collection(body: CollectionCreate, acc: Auth) -> CollectionInfo:
        """Create a collection with an embedding profile (201; 409 if it exists with another profile)."""
        writable(acc, body.name)
        profile = body.profile or state.settings.profile
        if profile not in PROFILES:
            raise HTTPException(422, f"unknown embedding profile {profile!r}; valid: {', '.join(sorted(PROFILES))}")
        lp = state.loupe(acc.tenant, body.name, create_profile_name=profile)
        if lp.profile.name != profile:
            raise HTTPException(409, f"collection {body.name!r} exists with profile {lp.profile.name!r}")
        return CollectionInfo(name=body.name, right="write", exists=True)

    @app.get("/v1/collections/{collection}", tags=["collections"])
    def collection_stats(collection: str, acc: Auth) -> Stats:
        """Points, sources and modalities of this tenant in the collection."""
        readable(acc, collection)
        s = state.loupe(acc.tenant, collection).stats()
        return Stats(
            collection=collection,
            points=s["points"],
            sources=s["sources"],
            per_modality=s["per_modality"],
            profile=s["profile"]["name"],
        )

    @app.delete("/v1/collections/{collection}", tags=["collections"], responses={403: {"model": Problem}})
    def drop_collection(collection: str, acc: Auth) -> Deleted:
        """Delete the tenant's collection, its media and its uploads."""
        writable(acc, collection)
        lp = state.loupe(acc.tenant, collection)
        if state.jobs.active(acc.tenant, collection):
            raise HTTPException(409, f"an ingest job is running on collection {collection!r}; try again when done")
        n = lp.stats()["points"]
        lp.index().drop()
        state.forget(acc.tenant, collection)
        shutil.rmtree(state.tenant_dir(acc.tenant) / "uploads" / collection, ignore_errors=True)
        (state.tenant_dir(acc.tenant) / "manifests" / f"{collection}.jsonl").unlink(missing_ok=True)
        return Deleted(deleted=n)

    @app.post(
        "/v1/collections/{collection}/uploads", status_code=202, tags=["ingest"], responses={413: {"model": Problem}}
    )
    def upload(collection: str, acc: Auth, files: Annotated[list[UploadFile], File()]) -> JobOut:
        """Upload files (multipart) and ingest them as a background job; poll ``/v1/jobs/{id}``."""
        writable(acc, collection)
        if not files or len(files) > 1000:
            raise HTTPException(422, "send between 1 and 1000 files")
        batch = state.tenant_dir(acc.tenant) / "uploads" / collection / uuid.uuid4().hex[:12]
        names: dict[str, str] = {}
        try:
            for f in files:
                dest = batch / _safe_filename(f.filename)
                if str(dest) in names:
                    dest = dest.with_name(f"{uuid.uuid4().hex[:6]}-{dest.name}")
                _save_upload(f, dest, SUPPORTED_EXTS)
                names[str(dest)] = "upload:" + str(dest.relative_to(batch.parent.parent))
        except HTTPException:
            shutil.rmtree(batch, ignore_errors=True)
            raise
        job = state.jobs.submit(acc.tenant, collection, sorted(names), names)
        return JobOut(**job.public())

    @app.post(
        "/v1/collections/{collection}/ingest", status_code=202, tags=["ingest"], responses={403: {"model": Problem}}
    )
    def ingest_paths(collection: str, body: IngestPaths, acc: Auth) -> JobOut:
        """Ingest server-side files or folders (inside the allowed roots) as a background job."""
        writable(acc, collection)
        roots = [r.resolve() for r in state.settings.api_allowed_roots]
        paths = []
        for raw in body.paths:
            if "\x00" in raw:
                raise HTTPException(422, "a path contains a NUL byte")
            p = Path(raw)
            try:
                real = p.resolve() if p.is_absolute() else None
            except (OSError, RuntimeError):
                real = None
            if real is None or not any(real == r or real.is_relative_to(r) for r in roots):
                raise HTTPException(403, f"{raw!r} is not an absolute path inside the server's allowed folders")
            paths.append(str(p))
        job = state.jobs.submit(acc.tenant, collection, paths, {p: p for p in paths})
        return JobOut(**job.public())

    @app.get("/v1/jobs/{job_id}", tags=["ingest"])
    def get_job(job_id: str, acc: Auth) -> JobOut:
        """An ingest job's state, progress and (when done) its summary and failed files."""
        job = state.jobs.get(job_id, acc.tenant)
        if job is None:
            raise HTTPException(404, f"job {job_id!r} not found")
        return JobOut(**job.public())

    @app.post("/v1/collections/{collection}/search", tags=["search"])
    def search_text(collection: str, body: SearchRequest, acc: Auth) -> SearchResponse:
        """Search with text (dense + BM25 fused), optionally filtered."""
        readable(acc, collection)
        lp = state.loupe(acc.tenant, collection)
        hits = lp.search(body.text, k=body.k, filters=filters_of(acc, body.filters))
        return SearchResponse(hits=[hit_out(acc, collection, h) for h in hits])

    @app.post("/v1/collections/{collection}/search/upload", tags=["search"], responses={415: {"model": Problem}})
    def search_upload(
        collection: str,
        acc: Auth,
        text: Annotated[str | None, Form(max_length=4000)] = None,
        k: Annotated[int, Form(ge=1, le=100)] = 10,
        modality: Annotated[list[str] | None, Form()] = None,
        image: Annotated[UploadFile | None, File()] = None,
        audio: Annotated[UploadFile | None, File()] = None,
    ) -> SearchResponse:
        """Search with an image and/or a recording, optionally with text (a composite query)."""
        readable(acc, collection)
        if not ((text and text.strip()) or image or audio):
            raise HTTPException(422, "give text, an image or an audio recording")
        lp = state.loupe(acc.tenant, collection)
        with tempfile.TemporaryDirectory(prefix="loupe-query-") as tmp:
            img, aud = _query_media(Path(tmp), image, audio)
            hits = lp.search(text or None, image=img, audio=aud, k=k, filters=filters_of(acc, None, modality))
        return SearchResponse(hits=[hit_out(acc, collection, h) for h in hits])

    @app.post(
        "/v1/collections/{collection}/ask",
        tags=["ask"],
        responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}},
    )
    def ask(collection: str, body: AskRequest, acc: Auth) -> Response:
        """Answer with [n] citations. ``stream=true``: events ``hits``, ``token`` (text pieces), ``done``."""
        readable(acc, collection)
        lp = state.loupe(acc.tenant, collection)
        history = [Turn(t.role, t.content) for t in body.history]
        stream = lp.ask_stream(body.question, history=history, k=body.k, filters=filters_of(acc, body.filters))
        return answer_response(acc, collection, stream, body.stream)

    @app.post(
        "/v1/collections/{collection}/ask/upload",
        tags=["ask"],
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"},
            415: {"model": Problem},
        },
    )
    def ask_upload(
        collection: str,
        acc: Auth,
        question: Annotated[str, Form(min_length=1, max_length=4000)],
        k: Annotated[int, Form(ge=1, le=50)] = 5,
        stream: Annotated[bool, Form()] = False,
        image: Annotated[UploadFile | None, File()] = None,
        audio: Annotated[UploadFile | None, File()] = None,
    ) -> Response:
        """Ask with an image and/or a recording added to the retrieval query (e.g. "what is this part?")."""
        readable(acc, collection)
        lp = state.loupe(acc.tenant, collection)
        with tempfile.TemporaryDirectory(prefix="loupe-query-") as tmp:
            img, aud = _query_media(Path(tmp), image, audio)
            # Retrieval (and so every use of the files) happens inside ask_stream, before it returns.
            answer = lp.ask_stream(question, k=k, image=img, audio=aud)
        return answer_response(acc, collection, answer, stream)

    def answer_response(acc: Access, collection: str, stream: Any, want_stream: bool) -> Response:
        hits_json = [hit_out(acc, collection, h).model_dump() for h in stream.hits]

        def final() -> dict[str, Any]:
            a = stream.answer
            return AskResponse(
                answer=a.text,
                mode=a.mode,
                label=state.scrub(a.label),
                flags=list(a.flags),
                citations=[CitationOut(n=c.n, hit=hit_out(acc, collection, c.hit)) for c in a.citations],
            ).model_dump()

        generated = getattr(stream, "llm", None) is not None and bool(stream.hits)
        wait_s = state.settings.api_request_timeout_s / 2
        busy = "the answer generator is busy with other questions; try again shortly"
        if not want_stream:
            if generated and not state.generating.acquire(timeout=wait_s):
                raise HTTPException(503, busy, headers={"Retry-After": "10"})
            try:
                for _ in stream:
                    pass
            finally:
                if generated:
                    state.generating.release()
            return JSONResponse(final())

        def events() -> Iterator[str]:
            yield _sse("hits", hits_json)
            # Taken inside the stream, so a client that never reads the body never holds the generator.
            if generated and not state.generating.acquire(timeout=wait_s):
                yield _sse("error", {"detail": busy})
                return
            try:
                for piece in stream:
                    yield _sse("token", {"text": piece})
                yield _sse("done", final())
            except LoupeError as e:
                yield _sse("error", {"detail": state.scrub(str(e))})
            except Exception as e:  # the stream has started: report in-band, never a traceback
                log.error("ask stream failed: %s", type(e).__name__)
                yield _sse("error", {"detail": "internal error; see the server log"})
            finally:
                if generated:
                    state.generating.release()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/collections/{collection}/sources", tags=["ingest"])
    def list_sources(collection: str, acc: Auth) -> list[SourceOut]:
        """The tenant's sources in the collection (names as hits give them), with point counts."""
        readable(acc, collection)
        counts = state.loupe(acc.tenant, collection).sources()
        return [SourceOut(source=source_name(acc, uri), points=n) for uri, n in sorted(counts.items())]

    @app.delete("/v1/collections/{collection}/sources", tags=["ingest"], responses={403: {"model": Problem}})
    def delete_source(
        collection: str, acc: Auth, source: Annotated[str, Query(min_length=1, max_length=4096)]
    ) -> Deleted:
        """Delete one source (as hits name it) and its media from the collection."""
        writable(acc, collection)
        lp = state.loupe(acc.tenant, collection)
        uri = source_uri(acc, source)
        n = lp.delete_source(uri) if Path(uri).is_absolute() else 0
        if n == 0:
            raise HTTPException(404, f"source {source!r} not found in collection {collection!r}")
        if uri.startswith(str(state.tenant_dir(acc.tenant) / "uploads")):
            Path(uri).unlink(missing_ok=True)
        return Deleted(deleted=n)

    @app.get(
        "/v1/collections/{collection}/media/{segment_id}",
        tags=["media"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}, "application/octet-stream": {}}, "description": "the file"}},
    )
    def media(
        collection: str,
        segment_id: Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")],
        acc: Auth,
        thumb: bool = False,
    ) -> Response:
        """A hit's media: page image, image, frame, or the clip's file (``X-Loupe-Start``/``-End`` give the range).

        The file comes from the stored hit (never from a client path) and must lie in the tenant's folder or
        the allowed roots."""
        readable(acc, collection)
        lp = state.loupe(acc.tenant, collection)
        found = next(iter(lp.index().iter_points(FieldFilter(must={"segment_id": segment_id}))), None)
        m = found.payload.get("media") if found is not None else None
        if not m or not m.get("path"):
            raise HTTPException(404, "no media for this hit")
        path = Path(m["path"])
        places = [state.tenant_dir(acc.tenant).resolve(), *(r.resolve() for r in state.settings.api_allowed_roots)]
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise HTTPException(404, "the media file is gone; re-ingest the source") from None
        if acc.tenant == DEFAULT_TENANT:
            # The default tenant's data folder holds the other tenants' folders: never serve from those.
            places = [p for p in places if p != state.tenant_dir(DEFAULT_TENANT).resolve()]
            places.append(state.tenant_dir(DEFAULT_TENANT).resolve() / "media")
            places.append(state.tenant_dir(DEFAULT_TENANT).resolve() / "uploads")
        if not any(real.is_relative_to(p) for p in places) or not real.is_file():
            raise HTTPException(404, "no media for this hit")
        headers = {}
        if m.get("start_s") is not None:
            headers["X-Loupe-Start"] = str(m["start_s"])
            headers["X-Loupe-End"] = str(m.get("end_s"))
        if thumb and m.get("kind") == "image":
            return Response(_thumbnail(real), media_type="image/jpeg", headers=headers)
        return FileResponse(real, headers=headers, filename=real.name)

    return app


def _query_media(tmp: Path, image: UploadFile | None, audio: UploadFile | None) -> tuple[str | None, str | None]:
    """Query image/recording uploads saved (and sniffed) into ``tmp``."""
    img = aud = None
    if image is not None:
        img = str(_save_upload(image, tmp / ("q-" + _safe_filename(image.filename)), IMAGE_EXTS))
    if audio is not None:
        aud = str(_save_upload(audio, tmp / ("a-" + _safe_filename(audio.filename)), AUDIO_EXTS | VIDEO_EXTS))
    return img, aud


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _safe_filename(name: str | None) -> str:
    """A basename with only safe characters (no folders, no '..', no control characters)."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _SAFE_NAME.sub("_", base).strip(" .")
    return base[-120:] or "upload"


def _save_upload(f: UploadFile, dest: Path, allowed: set[str]) -> Path:
    """Copy an upload to ``dest`` and check it: a supported extension, non-empty, magic bytes that agree."""
    ext = dest.suffix.lower()
    if ext not in allowed:
        raise HTTPException(415, f"{dest.name}: unsupported file type {ext or '(none)'}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as out:
        while block := f.file.read(_CHUNK):
            out.write(block)
    if dest.stat().st_size == 0:
        dest.unlink()
        raise HTTPException(415, f"{dest.name}: the file is empty")
    try:
        check_content_matches(dest)
    except LoupeError as e:
        dest.unlink(missing_ok=True)
        reason = getattr(e, "reason", str(e))
        raise HTTPException(415, f"{dest.name}: {reason}") from None
    return dest


def _thumbnail(path: Path) -> bytes:
    """A small JPEG of an image (PIL's decompression-bomb limit applies)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.thumbnail((THUMB_PX, THUMB_PX))
            buf = io.BytesIO()
            im.convert("RGB").save(buf, "JPEG", quality=80)
    except Exception as e:
        raise HTTPException(415, f"cannot make a thumbnail ({type(e).__name__})") from None
    return buf.getvalue()
