"""The ingest orchestrator: walk files → segments → embedding batches → upsert, with a report.

Re-ingesting an unchanged file is a no-op (same sha256, all its points present). A changed file's new
points are written before the old version's are deleted, so a search never finds the file missing. An
interrupted file (fewer points than its segment count) is redone on the next run.

Crash safety: a manifest (append-only JSON lines beside the index, fsynced per record) logs each file's
state — ``started`` before its points are written, ``stored`` once they all are, ``failed`` with the reason.
After a ``kill -9`` at any moment, re-running the same ingest redoes only what is not ``stored``: point ids
are content derived, so re-written points replace themselves (no duplicates), and a stored file is checked
against the index's point count before it is skipped (nothing lost even if the engine dropped unflushed
writes). A file recorded as stored with the same size and mtime is not re-hashed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from tqdm import tqdm

from loupe import ingest
from loupe.app.media import drop_unused_media
from loupe.embedder.profiles import EmbeddingProfile
from loupe.errors import IngestError, LoupeError
from loupe.index.store import Index
from loupe.threads import prefetch
from loupe.types import Segment

_T = TypeVar("_T")

log = logging.getLogger(__name__)
EMBED_SLICE = 256
# A long file's segments are embedded while it is still being split, in slices of this many: small enough that
# a 5-minute video (~340 segments) overlaps decoding with embedding, large enough for full classifier batches.
STREAM_SLICE = 64
# The first slice is smaller: the embedder (and its model loading) starts once the splitter has produced this many
# segments instead of waiting for a full slice. Cold 5-minute bench video: 15.79 -> 15.05 s median (3 runs each).
FIRST_SLICE = 16
# Segments the splitting thread may hold ahead of the embedder (the bounded queue between them): memory stays
# flat however long the file; a segment holds paths and text, never pixels.
PREFETCH = 128

Status = Literal["ok", "unchanged", "failed", "skipped"]


@dataclass
class FileReport:
    """One line of the ingest report."""

    path: str
    status: Status
    reason: str | None = None
    segments: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestReport:
    """Every file walked, with a summary; written as JSON by ``loupe ingest --report``."""

    collection: str
    files: list[FileReport] = field(default_factory=list)
    deleted_sources: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def has_failures(self) -> bool:
        """True when any file failed (the CLI then exits with code 3)."""
        return any(f.status == "failed" for f in self.files)

    def summary(self) -> dict[str, Any]:
        """Counts per status, segments written and time taken."""
        counts = {s: sum(1 for f in self.files if f.status == s) for s in ("ok", "unchanged", "failed", "skipped")}
        return {
            **counts,
            "files": len(self.files),
            "segments": sum(f.segments for f in self.files if f.status == "ok"),
            "deleted_sources": len(self.deleted_sources),
            "seconds": round(self.seconds, 3),
            "collection": self.collection,
        }

    def to_json(self) -> dict[str, Any]:
        """The report as the documented JSON object: ``{"files": [...], "summary": {...}}``."""
        return {
            "files": [asdict(f) for f in self.files],
            "summary": self.summary(),
            "deleted_sources": self.deleted_sources,
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON report (atomically: a reader never sees half a report)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(p)


def walk(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Every file under the given paths, sorted, each once. Symlinked folders are not followed (no loops)."""
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw).absolute()
        if p.is_dir():
            for root, dirs, files in os.walk(p, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    fp = Path(root) / name
                    if str(fp) not in seen:
                        seen.add(str(fp))
                        yield fp
        elif str(p) not in seen:
            seen.add(str(p))
            yield p


ProgressFn = Callable[[int, int, str], None]

ManifestState = Literal["started", "stored", "failed"]
# Rewrite the append-only manifest once it holds this many more records than files (keeps reads fast).
_COMPACT_FACTOR = 4


@dataclass(frozen=True)
class ManifestEntry:
    """The last recorded state of one source file."""

    uri: str
    state: ManifestState
    sha256: str = ""
    size: int = 0
    mtime_ns: int = 0
    points: int = 0
    reason: str | None = None


class Manifest:
    """Per-collection ingest log: one JSON line per state change, fsynced, so it survives ``kill -9``.

    A torn last line (the process died mid-write) is ignored when reading.

    >>> m = Manifest(Path("/tmp/kb/manifests/default.jsonl"))  # doctest: +SKIP
    >>> m.record(ManifestEntry("/docs/a.pdf", "stored", sha, size, mtime_ns, 12))  # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, ManifestEntry] = {}
        lines = 0
        if path.exists():
            with path.open("r", encoding="utf-8", errors="replace") as f:
                for line in f:
                    lines += 1
                    try:
                        e = ManifestEntry(**json.loads(line))
                    except (ValueError, TypeError):
                        continue  # a torn or foreign line: the file's state is re-derived from the index
                    self.entries[e.uri] = e
        if lines > _COMPACT_FACTOR * max(len(self.entries), 64):
            self._compact()

    def _compact(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for e in self.entries.values():
                f.write(json.dumps(asdict(e)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def get(self, uri: str) -> ManifestEntry | None:
        """The last state recorded for a file."""
        return self.entries.get(uri)

    def record(self, entry: ManifestEntry) -> None:
        """Append a state change and fsync it (a few ms per file; embedding a file takes far longer)."""
        self.entries[entry.uri] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(entry)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def forget(self, uri: str) -> None:
        """Drop a file's record (its source was deleted)."""
        if self.entries.pop(uri, None) is not None:
            self._compact()


def manifest_path(index: Index) -> Path:
    """Where a collection's manifest lives: ``<data_dir>/manifests/<collection>.jsonl``."""
    return index.cfg.data_dir / "manifests" / f"{index.cfg.collection}.jsonl"


def within_roots(path: Path, roots: Iterable[Path]) -> bool:
    """Whether ``path``, symlinks resolved, lies inside one of ``roots`` (the API's allowed folders)."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: it leads nowhere, so not inside any root
        return False
    return any(real == r or real.is_relative_to(r) for r in roots)


def failure_reason(path: Path, e: BaseException) -> str:
    """The report's reason for a file whose step raised; unexpected errors are logged with their traceback.

    MemoryError and RecursionError come from hostile input (a zip bomb, nesting thousands deep): the file fails,
    the others go on.
    """
    if isinstance(e, IngestError):
        return e.reason
    if isinstance(e, LoupeError):
        return str(e)
    if isinstance(e, MemoryError | RecursionError):
        return f"{type(e).__name__} while reading the file"
    log.error("unexpected error while ingesting %s", path, exc_info=e)
    return f"unexpected error ({type(e).__name__}: {e}); please report it"


def unchanged_by_manifest(manifest: Manifest, index: Index, path: Path) -> FileReport | None:
    """'unchanged' without re-hashing when the manifest says this exact file (size, mtime) was stored and the
    index still holds all its points; None when the file must be read (the local and the Ray runner share it)."""
    entry = manifest.get(str(path.absolute()))
    if entry is None or entry.state != "stored":
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
        return None
    states = index.source_states(entry.uri)
    if len(states) == 1 and states[0].sha256 == entry.sha256 and states[0].complete:
        return FileReport(str(path), "unchanged", segments=states[0].points)
    return None


def guarded(manifest: Manifest, path: Path, fn: Callable[[], _T]) -> _T | FileReport:
    """Run one file's step; any error becomes that file's failed report (recorded in the manifest), never the
    batch's end. The local and the Ray runner share it."""
    got: _T | FileReport
    try:
        got = fn()
    except Exception as e:  # a parser bug or hostile input must not end the batch (failure_reason says why)
        got = FileReport(str(path), "failed", failure_reason(path, e))
    if isinstance(got, FileReport) and got.status == "failed":
        manifest.record(ManifestEntry(str(path.absolute()), "failed", reason=got.reason))
    return got


@dataclass
class OpenedFile:
    """A file that passed the gate: hashed and prepared, with the digests of its older stored versions."""

    prepared: ingest.PreparedFile
    old_sha256s: set[str]


def open_file(
    path: Path,
    *,
    index: Index,
    manifest: Manifest,
    options: ingest.IngestOptions,
    allowed_roots: list[Path] | None,
) -> FileReport | OpenedFile:
    """The one gate before a file is split: its type, the allowed folders, the manifest's resume check, then
    hashing; a report when there is nothing to do (skipped, refused, unchanged). Both runners call it."""
    if not ingest.is_supported(path) and not path.is_symlink():
        return FileReport(str(path), "skipped", f"unsupported file type {path.suffix or '(none)'}")
    if allowed_roots is not None and not within_roots(path, allowed_roots):
        return FileReport(str(path), "failed", "resolves to a place outside the allowed folders; not read")
    resumed = unchanged_by_manifest(manifest, index, path)
    if resumed is not None:
        return resumed
    prepared = ingest.prepare(path, options)
    states = index.source_states(prepared.source.uri)
    if len(states) == 1 and states[0].sha256 == prepared.source.sha256 and states[0].complete:
        return FileReport(str(path), "unchanged", segments=states[0].points)
    return OpenedFile(prepared, {st.sha256 for st in states} - {prepared.source.sha256})


class IngestRunner(Protocol):
    """What runs an ingest: :class:`IngestPipeline` here, ``RayIngest`` on a cluster (app/distributed.py)."""

    def run(
        self, paths: Iterable[str | os.PathLike[str]], *, prune: bool = False, on_file: ProgressFn | None = None
    ) -> IngestReport:
        """Ingest every file under ``paths``; the report and manifest are the same whichever runner does it."""
        ...


class IngestPipeline:
    """Ingest files into one collection with one embedding profile."""

    def __init__(
        self,
        index: Index,
        profile: EmbeddingProfile,
        options: ingest.IngestOptions,
        *,
        batch_size: int = 32,
        show_progress: bool = False,
        allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
    ) -> None:
        self.index = index
        self.profile = profile
        self.options = options
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.manifest = Manifest(manifest_path(index))
        # When set (the API ingesting by path), a file whose real path (symlinks resolved) leaves these folders
        # is refused: a link inside an allowed folder must not expose /etc/passwd.
        self.allowed_roots = None if allowed_roots is None else [Path(r).resolve() for r in allowed_roots]

    def run(
        self, paths: Iterable[str | os.PathLike[str]], *, prune: bool = False, on_file: ProgressFn | None = None
    ) -> IngestReport:
        """Ingest every file under ``paths``; with ``prune``, delete sources under them that no longer exist.

        ``on_file(i, n, path)`` is called before each file (for UIs with their own progress bar).
        """
        t0 = time.perf_counter()
        roots = [Path(p).absolute() for p in paths]
        report = IngestReport(self.index.cfg.collection)
        for r in roots:
            if not r.exists() and not r.is_symlink():
                report.files.append(FileReport(str(r), "failed", "no such file or folder"))
        files = list(walk(r for r in roots if r.exists()))
        results: list[FileReport | None] = [None] * len(files)
        pending: list[tuple[int, _Pending]] = []
        bar = tqdm(files, desc="ingest", unit="file", disable=not self.show_progress)
        for i, path in enumerate(bar):
            if on_file is not None:
                on_file(i, len(files), str(path))
            bar.set_postfix_str(path.name[-40:])
            got = self._guard(path, partial(self._extract, path))
            if isinstance(got, FileReport):
                results[i] = got
                continue
            pending.append((i, got))
            # Embed several small files together: e5 on 2 cores reads ~130 tokens/s one text at a time but
            # ~360 tokens/s in batches of 8 or more (measured; see README), so batching across files pays.
            if sum(len(p.segments) for _, p in pending) >= self.batch_size:
                self._flush(pending, results)
                pending = []
        self._flush(pending, results)
        bar.close()
        report.files.extend(r for r in results if r is not None)
        if prune:
            for root in roots:
                for uri in sorted(self.index.sources(under=str(root))):
                    if not Path(uri).exists():
                        shas = {st.sha256 for st in self.index.source_states(uri)}
                        self.index.delete_source(uri)
                        self.manifest.forget(uri)
                        self._drop_media(shas)
                        report.deleted_sources.append(uri)
        report.seconds = time.perf_counter() - t0
        return report

    def _guard(self, path: Path, fn: Callable[[], _T]) -> _T | FileReport:
        return guarded(self.manifest, path, fn)

    def _extract(self, path: Path) -> FileReport | _Pending:
        """Gate, hash and split one file; a report when there is nothing to embed (unchanged, skipped)."""
        opened = open_file(
            path, index=self.index, manifest=self.manifest, options=self.options, allowed_roots=self.allowed_roots
        )
        if isinstance(opened, FileReport):
            return opened
        details: dict[str, Any] = {}
        pending = _Pending(path, opened.prepared, [], details, opened.old_sha256s)
        # Splitting (ffmpeg decode, OCR, page parsing) runs in a thread while this one embeds what it has
        # produced: both sides spend their time in native code that releases the GIL, so two cores work at
        # once. Nothing is stored until the whole file is split and embedded, as before: resume is unchanged.
        for seg in prefetch(ingest.segments(opened.prepared, self.options, details), PREFETCH, "loupe-split"):
            pending.segments.append(seg)
            if len(pending.segments) - len(pending.vectors) >= (STREAM_SLICE if pending.vectors else FIRST_SLICE):
                pending.vectors.extend(self._embed(pending.segments[len(pending.vectors) :]))
        return pending

    def _flush(self, pending: list[tuple[int, _Pending]], results: list[FileReport | None]) -> None:
        """Embed the pending files' segments together, then store each file and drop its older version."""
        if not pending:
            return
        all_segs = [s for _, p in pending for s in p.unembedded()]
        try:
            vectors = self._embed(all_segs)
        except Exception:
            # Find the culprit: embed file by file so one bad file does not fail its neighbours.
            for i, p in pending:
                results[i] = self._guard(p.path, partial(self._embed_and_store, p))
            return
        at = 0
        for i, p in pending:
            n = len(p.segments) - len(p.vectors)
            vecs = p.vectors + vectors[at : at + n]
            at += n
            results[i] = self._guard(p.path, partial(self._store, p, vecs))

    def _drop_media(self, sha256s: set[str]) -> None:
        if self.options.media_dir is not None and sha256s:
            drop_unused_media(self.index, self.options.media_dir, sha256s)

    def _embed(self, segs: list[Segment]) -> list[dict[str, Any] | None]:
        # Bounded slices: a 2-hour video has ~9,000 segments; inputs (decoded frames, clip samples) are built
        # per slice, so memory stays flat however long the file.
        out: list[dict[str, Any] | None] = []
        for start in range(0, len(segs), EMBED_SLICE):
            out.extend(self.profile.embed_segments(segs[start : start + EMBED_SLICE]))
        return out

    def _embed_and_store(self, p: _Pending) -> FileReport:
        return self._store(p, p.vectors + self._embed(p.unembedded()))

    def _store(self, p: _Pending, vectors: list[dict[str, Any] | None]) -> FileReport:
        keep = [(s, v) for s, v in zip(p.segments, vectors, strict=True) if v is not None]
        if not keep:
            reason = "no text or content to index was found"
            if p.details.get("pages_without_text"):
                reason += " (pages have no text layer; OCR of scans comes with the documents issue)"
            return FileReport(str(p.path), "failed", reason, details=p.details)
        src = p.prepared.source
        try:
            st = p.path.stat()
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:  # vanished after reading: store what was read, but never skip it by stat later
            size, mtime_ns = -1, -1
        self.manifest.record(ManifestEntry(src.uri, "started", src.sha256, size, mtime_ns, len(keep)))
        for start in range(0, len(keep), 256):
            batch = keep[start : start + 256]
            self.index.upsert([s for s, _ in batch], [v for _, v in batch], source_segments=len(keep))
        # New version stored completely: now drop older versions of the same file, and their media.
        self.index.delete_source(src.uri, keep_sha256=src.sha256)
        self._drop_media(p.old_sha256s)
        self.manifest.record(ManifestEntry(src.uri, "stored", src.sha256, size, mtime_ns, len(keep)))
        return FileReport(str(p.path), "ok", segments=len(keep), details=p.details)


@dataclass
class _Pending:
    """A file split into segments, waiting for its embeddings."""

    path: Path
    prepared: ingest.PreparedFile
    segments: list[Segment]
    details: dict[str, Any]
    old_sha256s: set[str]
    # Vectors of the first len(vectors) segments, embedded while the file was still being split.
    vectors: list[dict[str, Any] | None] = field(default_factory=list)

    def unembedded(self) -> list[Segment]:
        """The segments still waiting for their vectors."""
        return self.segments[len(self.vectors) :]
