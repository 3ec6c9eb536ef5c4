"""Ingest on a Ray cluster: the driver lists, hashes and books; Ray actors extract and embed (``loupe ingest --ray``).

The guarantees are those of the local pipeline (app/pipeline.py), kept by the same pieces:

- The driver alone walks the paths, hashes each file (``ingest.prepare``), decides what is unchanged (manifest +
  the index's point counts), writes the manifest and the report. Workers never touch either.
- The collection is opened (and its embedding profile checked, or the collection created) by the driver before
  any task is submitted, so no worker writes into a collection built with another profile.
- Workers are Ray actors holding the embedding profile, loaded once per actor process (a GPU actor where the
  cluster has GPUs). Each task is a small batch of files: the actor extracts their segments and embeds them
  together in per-modality batches, so small files still fill the embedder's batches.
- Where the points go: with a Qdrant server (``qdrant_url``) every actor opens the collection itself and upserts
  its files' points directly, in batches; the driver receives only counts. Without one (embedded Edge engine or
  qdrant-client local mode allow one process per collection folder) the actors return the vectors and the driver
  upserts them through the same ``Index.upsert``. Either way the points are byte-for-byte those of a local
  ingest: same segment ids, same ``uuid5`` point ids, same payload builder.
- A killed worker: the actor is restarted by Ray (``max_restarts``) and its in-flight tasks are retried
  (``max_task_retries``); extraction and embedding are pure and upserts of content-derived ids are idempotent,
  so a retry never duplicates. A batch whose worker keeps dying is split into single files so only the file
  that kills the process fails, with that reason.
- A killed driver: the manifest is fsynced per record as in local ingest; the rerun skips what is stored
  and complete in the index and redoes the rest (0 lost, 0 duplicate points; tests/test_distributed.py).

Files must be readable at the same path on every node (a shared mount), and so must the media store: workers
write page images and thumbnails into it exactly as the local pipeline does (docs/distributed.md).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from loupe import ingest
from loupe.app.media import drop_unused_media
from loupe.app.pipeline import (
    FileReport,
    IngestReport,
    Manifest,
    ManifestEntry,
    ProgressFn,
    failure_reason,
    guarded,
    manifest_path,
    open_file,
    walk,
)
from loupe.embedder.profiles import EmbeddingProfile, ProfileInfo
from loupe.errors import ConfigError
from loupe.index.store import Index, IndexConfig
from loupe.types import Segment

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = "Ray is not installed: pip install -e '.[ray]' (or pip install 'ray==2.60.0') on every node"
# Points per upsert request, as the local pipeline writes them (app/pipeline.py _store).
UPSERT_BATCH = 256
# Segments per embedder call by modality. Text: e5 on 2 cores reads ~360 tokens/s from batches of 8 or more and
# gains nothing past 32 (README, ingest figures); images/frames and audio clips carry decoded pixels/samples per
# input, so smaller batches bound a worker's memory (a 224x224 frame is 150 kB, a 5 s clip 320 kB as float32).
DEFAULT_BATCH_SIZES: Mapping[str, int] = {
    "text": 64,
    "page": 32,
    "region": 32,
    "image": 16,
    "video_frame": 16,
    "video_window": 4,
    "audio_clip": 16,
    "speech_clip": 16,
}
NO_CONTENT = "no text or content to index was found"
_T = TypeVar("_T")


def require_ray() -> Any:
    """Import Ray, or fail with the install hint (Ray is the optional extra ``ray``)."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(RAY_INSTALL_HINT) from e
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How the driver uses the cluster.

    ``address``: ``"local"`` starts a Ray instance for this ingest (stopped at the end); anything else is given
    to ``ray.init(address=...)``: ``"auto"`` (a cluster started with ``ray start`` on this node), ``HOST:6379``
    (its GCS), ``ray://HOST:10001`` (Ray Client). When Ray is already initialised in this process it is used as is.
    """

    address: str = "local"
    # Actors to start; None: one per ``cpus_per_worker`` CPUs of the cluster, or one per GPU where it has GPUs.
    workers: int | None = None
    cpus_per_worker: float = 1.0
    # None: 1 when the cluster has GPUs (each actor then owns one), else 0.
    gpus_per_worker: float | None = None
    # Files per task: a task per file costs ~1-3 ms of scheduling, small next to extraction; 8 files give the
    # embedder full text batches from small documents (the local pipeline batches across files for the same reason).
    files_per_task: int = 8
    # Tasks queued per actor: one running, one waiting, so an actor never idles on the driver's round trip.
    inflight_per_worker: int = 2
    # Ray retries a task whose actor died, on the restarted actor; -1 restarts actors without limit (a poison
    # file is bounded by max_task_retries instead, then isolated in a task of its own).
    max_restarts: int = -1
    max_task_retries: int = 2
    batch_sizes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_BATCH_SIZES))


# -- what travels between driver and workers ---------------------------------------------------------------------
@dataclass(frozen=True)
class FileTask:
    """One file for a worker: its position in the report and the driver's hash of it."""

    key: int
    prepared: ingest.PreparedFile


@dataclass
class FileResult:
    """A worker's answer for one file. ``vectors`` is filled only when the driver does the upserts."""

    key: int
    status: str  # "ok" | "failed"
    reason: str | None = None
    segments: list[Segment] = field(default_factory=list)
    vectors: list[dict[str, Any]] = field(default_factory=list)
    points: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    pid: int = 0
    node: str = ""


def embed_by_modality(
    profile: EmbeddingProfile, segs: Sequence[Segment], batch_sizes: Mapping[str, int]
) -> list[dict[str, Any] | None]:
    """Vectors for ``segs`` in their order, embedded in batches of one modality each (sizes per modality)."""
    out: list[dict[str, Any] | None] = [None] * len(segs)
    by_mod: dict[str, list[int]] = {}
    for i, s in enumerate(segs):
        by_mod.setdefault(s.modality, []).append(i)
    for mod, idx in by_mod.items():
        step = max(1, int(batch_sizes.get(mod, 32)))
        for start in range(0, len(idx), step):
            part = idx[start : start + step]
            for i, v in zip(part, profile.embed_segments([segs[i] for i in part]), strict=True):
                out[i] = v
    return out


class IngestWorker:
    """The actor body: extract and embed batches of files; upsert them too when a Qdrant server is given.

    Plain class (Ray wraps it with ``ray.remote`` in the driver), so it also runs in-process in tests.
    """

    def __init__(
        self,
        profile_factory: Callable[[], EmbeddingProfile],
        options: ingest.IngestOptions,
        batch_sizes: Mapping[str, int],
        server_index: IndexConfig | None = None,
        expected: ProfileInfo | None = None,
    ) -> None:
        self._factory = profile_factory
        # The driver's profile (the collection's, checked at open): a worker whose own build differs (another
        # model version installed on that node) must not write vectors of another space.
        self.expected = expected
        self._profile: EmbeddingProfile | None = None
        self.options = options
        self.batch_sizes = dict(batch_sizes)
        self.server_index = server_index
        self._index: Index | None = None
        self.node = os.uname().nodename

    @property
    def profile(self) -> EmbeddingProfile:
        """Built on first use: once per actor process (weights load on first embed, conventions §4)."""
        if self._profile is None:
            built = self._factory()
            if self.expected is not None and built.info != self.expected:
                raise ConfigError(
                    f"worker on {self.node} built profile {built.info.describe()}, but the collection uses "
                    f"{self.expected.describe()}: install the same Loupe and models on every node"
                )
            self._profile = built
        return self._profile

    def pid(self) -> int:
        """This actor's process id (tests kill it)."""
        return os.getpid()

    def process(self, tasks: Sequence[FileTask]) -> list[FileResult]:
        """Extract, embed (and with a server, store) each file; a bad file fails alone with its reason."""
        extracted: list[tuple[FileTask, list[Segment], dict[str, Any]]] = []
        results: list[FileResult] = []
        for t in tasks:
            details: dict[str, Any] = {}
            try:
                segs = list(ingest.segments(t.prepared, self.options, details))
            except Exception as e:
                results.append(self._failed(t, failure_reason(t.prepared.path, e)))
                continue
            extracted.append((t, segs, details))
        all_segs = [s for _, segs, _ in extracted for s in segs]
        try:
            vectors = embed_by_modality(self.profile, all_segs, self.batch_sizes)
        except Exception:
            # Find the culprit: embed file by file so one bad file does not fail its neighbours.
            for t, segs, details in extracted:
                try:
                    vecs = embed_by_modality(self.profile, segs, self.batch_sizes)
                except Exception as e:
                    results.append(self._failed(t, failure_reason(t.prepared.path, e), details))
                    continue
                results.append(self._finish(t, segs, vecs, details))
            return results
        at = 0
        for t, segs, details in extracted:
            results.append(self._finish(t, segs, vectors[at : at + len(segs)], details))
            at += len(segs)
        return results

    def _failed(self, t: FileTask, reason: str, details: dict[str, Any] | None = None) -> FileResult:
        return FileResult(t.key, "failed", reason, details=details or {}, pid=os.getpid(), node=self.node)

    def _finish(
        self, t: FileTask, segs: list[Segment], vecs: list[dict[str, Any] | None], details: dict[str, Any]
    ) -> FileResult:
        keep = [(s, v) for s, v in zip(segs, vecs, strict=True) if v is not None]
        if not keep:
            reason = NO_CONTENT
            if details.get("pages_without_text"):
                reason += " (pages have no text layer; OCR of scans comes with the documents issue)"
            return self._failed(t, reason, details)
        res = FileResult(t.key, "ok", points=len(keep), details=details, pid=os.getpid(), node=self.node)
        if self.server_index is None:
            res.segments = [s for s, _ in keep]
            res.vectors = [v for _, v in keep]
            return res
        try:
            index = self._server()
            for start in range(0, len(keep), UPSERT_BATCH):
                batch = keep[start : start + UPSERT_BATCH]
                index.upsert([s for s, _ in batch], [v for _, v in batch], source_segments=len(keep))
        except Exception as e:
            return self._failed(t, failure_reason(t.prepared.path, e), details)
        return res

    def _server(self) -> Index:
        if self._index is None:
            assert self.server_index is not None
            # create=False: the driver created the collection and checked its profile before submitting anything.
            self._index = Index.open(self.server_index, self.profile.info, create=False, pieces=self.profile.pieces)
        return self._index


# -- the driver ---------------------------------------------------------------------------------------------------
@dataclass
class _Booked:
    """A file the driver hashed and sent out."""

    path: Path
    prepared: ingest.PreparedFile
    old_sha256s: set[str]
    size: int
    mtime_ns: int


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:  # vanished after reading: never skip it by stat later
        return -1, -1
    return st.st_size, st.st_mtime_ns


class RayIngest:
    """Ingest files into one collection on a Ray cluster; same ``run`` contract as ``IngestPipeline``.

    >>> RayIngest(index, profile, options, RayOptions("auto"), partial(profile_from_settings, s)).run(["docs/"])
    ... # doctest: +SKIP
    """

    def __init__(
        self,
        index: Index,
        profile: EmbeddingProfile,
        options: ingest.IngestOptions,
        ray_options: RayOptions,
        profile_factory: Callable[[], EmbeddingProfile] | None = None,
        *,
        allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
    ) -> None:
        self.index = index
        self.profile = profile
        self.options = options
        self.ray_options = ray_options
        # What each worker calls to build its own profile; by default the driver's profile object is shipped
        # (cheap while its weights are not loaded; pass a factory for profiles that hold loaded models).
        self.profile_factory = profile_factory or _Same(profile)
        self.manifest = Manifest(manifest_path(index))
        self.allowed_roots = None if allowed_roots is None else [Path(r).resolve() for r in allowed_roots]
        # Filled while running, for tests and the bench: every worker pid seen, and how many tasks were resent.
        self.worker_pids: set[int] = set()
        self.split_batches = 0
        self.workers_started = 0

    # The embedded engines are one process per folder: only a server can take writes from the workers.
    @property
    def workers_write(self) -> bool:
        """True when workers upsert to the Qdrant server themselves."""
        return bool(self.index.cfg.qdrant_url)

    def run(
        self, paths: Iterable[str | os.PathLike[str]], *, prune: bool = False, on_file: ProgressFn | None = None
    ) -> IngestReport:
        """Ingest every file under ``paths``; with ``prune``, delete sources under them that no longer exist.

        ``on_file(i, n, path)`` is called as each file is finished (i counts finished files).
        """
        t0 = time.perf_counter()
        roots = [Path(p).absolute() for p in paths]
        report = IngestReport(self.index.cfg.collection)
        for r in roots:
            if not r.exists() and not r.is_symlink():
                report.files.append(FileReport(str(r), "failed", "no such file or folder"))
        files = list(walk(r for r in roots if r.exists()))
        results: list[FileReport | None] = [None] * len(files)
        booked: dict[int, _Booked] = {}
        done = 0
        for i, path in enumerate(files):
            got = self._guard(path, partial(self._book, path))
            if isinstance(got, FileReport):
                results[i] = got
                done += 1
                if on_file is not None:
                    on_file(done, len(files), str(path))
            else:
                booked[i] = got
        if booked:

            def finished(key: int, rep: FileReport) -> None:
                nonlocal done
                results[key] = rep
                done += 1
                if on_file is not None:
                    on_file(done, len(files), rep.path)

            self._dispatch(booked, finished)
        report.files.extend(r for r in results if r is not None)
        if prune:
            self._prune(roots, report)
        report.seconds = time.perf_counter() - t0
        return report

    # -- driver-side steps ----------------------------------------------------------------------------------------
    def _guard(self, path: Path, fn: Callable[[], _T]) -> _T | FileReport:
        """Run one file's driver-side step; an error becomes that file's failed report, never the run's end."""
        return guarded(self.manifest, path, fn)

    def _book(self, path: Path) -> FileReport | _Booked:
        """Gate and hash one file; a report when there is nothing to send (unchanged, skipped, refused)."""
        opened = open_file(
            path, index=self.index, manifest=self.manifest, options=self.options, allowed_roots=self.allowed_roots
        )
        if isinstance(opened, FileReport):
            return opened
        size, mtime_ns = _stat(path)
        return _Booked(path, opened.prepared, opened.old_sha256s, size, mtime_ns)

    def _store(self, b: _Booked, res: FileResult) -> FileReport:
        """Book a worker's result: (upsert here when workers do not write), drop the older version, mark stored."""
        if res.status != "ok":
            self.manifest.record(ManifestEntry(str(b.path.absolute()), "failed", reason=res.reason))
            return FileReport(str(b.path), "failed", res.reason, details=res.details)
        src = b.prepared.source
        n = res.points
        if not self.workers_write:
            self.manifest.record(ManifestEntry(src.uri, "started", src.sha256, b.size, b.mtime_ns, n))
            for start in range(0, n, UPSERT_BATCH):
                self.index.upsert(
                    res.segments[start : start + UPSERT_BATCH],
                    res.vectors[start : start + UPSERT_BATCH],
                    source_segments=n,
                )
        # New version stored completely: now drop older versions of the same file, and their media.
        self.index.delete_source(src.uri, keep_sha256=src.sha256)
        if self.options.media_dir is not None and b.old_sha256s:
            drop_unused_media(self.index, self.options.media_dir, b.old_sha256s)
        self.manifest.record(ManifestEntry(src.uri, "stored", src.sha256, b.size, b.mtime_ns, n))
        return FileReport(str(b.path), "ok", segments=n, details=res.details)

    def _prune(self, roots: list[Path], report: IngestReport) -> None:
        for root in roots:
            for uri in sorted(self.index.sources(under=str(root))):
                if not Path(uri).exists():
                    shas = {st.sha256 for st in self.index.source_states(uri)}
                    self.index.delete_source(uri)
                    self.manifest.forget(uri)
                    if self.options.media_dir is not None:
                        drop_unused_media(self.index, self.options.media_dir, shas)
                    report.deleted_sources.append(uri)

    # -- the cluster ----------------------------------------------------------------------------------------------
    def _dispatch(self, booked: dict[int, _Booked], finished: Callable[[int, FileReport], None]) -> None:
        ray = require_ray()
        started_here = False
        if not ray.is_initialized():
            address = None if self.ray_options.address == "local" else self.ray_options.address
            # A Ray started here needs no dashboard; a cluster joined keeps whatever its head was started with.
            extra = {"include_dashboard": False} if address is None else {}
            ray.init(address=address, log_to_driver=False, **extra)
            started_here = True
        try:
            self._run_actors(ray, booked, finished)
        finally:
            if started_here:
                ray.shutdown()

    def _actor_shape(self, ray: Any) -> tuple[int, float, float]:
        o = self.ray_options
        res = ray.cluster_resources()
        gpus = float(res.get("GPU", 0.0))
        per_gpu = o.gpus_per_worker if o.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
        if o.workers is not None:
            n = o.workers
        elif per_gpu > 0:
            n = int(gpus // per_gpu)
        else:
            n = int(float(res.get("CPU", 1.0)) // max(o.cpus_per_worker, 0.01))
        return max(1, n), o.cpus_per_worker, per_gpu

    def _run_actors(self, ray: Any, booked: dict[int, _Booked], finished: Callable[[int, FileReport], None]) -> None:
        o = self.ray_options
        n, cpus, gpus = self._actor_shape(ray)
        remote_cls = ray.remote(IngestWorker).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=o.max_restarts, max_task_retries=o.max_task_retries
        )
        server = self.index.cfg if self.workers_write else None
        args = (self.profile_factory, self.options, o.batch_sizes, server, self.profile.info)
        keys = sorted(booked)
        queue: deque[list[int]] = deque(keys[i : i + o.files_per_task] for i in range(0, len(keys), o.files_per_task))
        n = min(n, len(queue))  # an actor with nothing to do would still load the models
        actors = [remote_cls.remote(*args) for _ in range(n)]
        self.workers_started = n
        inflight: dict[Any, tuple[int, list[int]]] = {}  # ref -> (actor slot, keys)
        load = [0] * n

        def submit() -> None:
            while queue:
                slot = min(range(n), key=lambda a: load[a])
                if load[slot] >= o.inflight_per_worker:
                    return
                ks = queue.popleft()
                if self.workers_write:
                    for k in ks:  # workers write: the manifest must say "started" before they do
                        b = booked[k]
                        src = b.prepared.source
                        self.manifest.record(ManifestEntry(src.uri, "started", src.sha256, b.size, b.mtime_ns, 0))
                tasks = [FileTask(k, booked[k].prepared) for k in ks]
                inflight[actors[slot].process.remote(tasks)] = (slot, ks)
                load[slot] += 1

        try:
            submit()
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                ref = ready[0]
                slot, ks = inflight.pop(ref)
                load[slot] -= 1
                try:
                    got: list[FileResult] = ray.get(ref)
                except ray.exceptions.RayError as e:
                    if len(ks) > 1:
                        # The worker died on this batch more often than Ray retries: isolate each file, so only
                        # the one that kills the process fails.
                        self.split_batches += 1
                        queue.extendleft([k] for k in reversed(ks))
                    else:
                        b = booked[ks[0]]
                        reason = (
                            f"the worker process died while reading this file ({o.max_task_retries + 1} tries: "
                            f"{type(e).__name__}); re-run to try again"
                        )
                        finished(ks[0], self._store(b, FileResult(ks[0], "failed", reason)))
                    submit()
                    continue
                for res in got:
                    self.worker_pids.add(res.pid)
                    b = booked[res.key]
                    finished(res.key, self._guard(b.path, partial(self._store, b, res)))
                submit()
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)


class _Same:
    """A picklable factory returning the profile it was given (the driver's, shipped to the workers)."""

    def __init__(self, profile: EmbeddingProfile) -> None:
        self.profile = profile

    def __call__(self) -> EmbeddingProfile:
        return self.profile
