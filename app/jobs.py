"""Background ingest jobs for the API: one worker, progress while running, the report when done.

Each job is recorded as a JSON file (``<jobs_dir>/<id>.json``, written atomically at every state change), so
after the server is killed the unfinished jobs are found again and re-run by :meth:`JobManager.recover`;
the pipeline's manifest makes the re-run finish the work without duplicates.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from loupe.app.pipeline import IngestReport, ProgressFn

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed"]
# How many failed files a job's status lists (the full report is in the job file).
MAX_LISTED_FAILURES = 1000


@dataclass
class Job:
    """An ingest job as the API shows it. ``paths`` are server-side and never returned to clients."""

    id: str
    tenant: str
    collection: str
    paths: list[str]
    # Server path → the name the client knows (an upload's original filename, or the path it asked for).
    names: dict[str, str] = field(default_factory=dict)
    state: JobState = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    files_done: int = 0
    files_total: int = 0
    current: str | None = None
    summary: dict[str, Any] | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None

    def name_of(self, path: str) -> str:
        """What the client calls a server path (uploads show their filename, never the upload folder)."""
        if path in self.names:
            return self.names[path]
        for server, shown in self.names.items():
            if path.startswith(server.rstrip("/") + "/"):
                return shown.rstrip("/") + path[len(server.rstrip("/")) :]
        return Path(path).name

    def public(self) -> dict[str, Any]:
        """The job as the API returns it."""
        return {
            "id": self.id,
            "collection": self.collection,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "progress": {"files_done": self.files_done, "files_total": self.files_total, "current": self.current},
            "summary": self.summary,
            "failures": self.failures,
            "error": self.error,
        }


Runner = Callable[[Job, ProgressFn], IngestReport]


class JobManager:
    """Runs ingest jobs one at a time (ingest is CPU bound; two at once only share the same cores)."""

    def __init__(self, jobs_dir: Path, runner: Runner) -> None:
        self.jobs_dir = jobs_dir
        self.runner = runner
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loupe-ingest")

    def submit(self, tenant: str, collection: str, paths: list[str], names: Mapping[str, str]) -> Job:
        """Queue a job; returns at once."""
        job = Job(uuid.uuid4().hex, tenant, collection, list(paths), dict(names))
        with self._lock:
            self._jobs[job.id] = job
        self._save(job)
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str, tenant: str) -> Job | None:
        """A job of this tenant (another tenant's job id is answered as unknown)."""
        with self._lock:
            job = self._jobs.get(job_id)
        return job if job is not None and job.tenant == tenant else None

    def active(self, tenant: str, collection: str) -> bool:
        """Whether a job of this tenant is queued or running on the collection."""
        with self._lock:
            return any(
                j.tenant == tenant and j.collection == collection and j.state in ("queued", "running")
                for j in self._jobs.values()
            )

    def recover(self) -> list[Job]:
        """Re-queue the jobs a previous server left queued or running (killed mid-way)."""
        again = []
        for f in sorted(self.jobs_dir.glob("*.json")) if self.jobs_dir.exists() else []:
            try:
                job = Job(**json.loads(f.read_text()))
            except (OSError, ValueError, TypeError):
                continue
            with self._lock:
                self._jobs[job.id] = job
            if job.state in ("queued", "running"):
                job.state = "queued"
                self._pool.submit(self._run, job)
                again.append(job)
        return again

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(j.state in ("queued", "running") for j in self._jobs.values())
            if not busy:
                return True
            time.sleep(0.05)
        return False

    def shutdown(self) -> None:
        """Stop taking jobs; a running one finishes (or is re-run by :meth:`recover` after a restart)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _save(self, job: Job) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        path = self.jobs_dir / f"{job.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(job)))
        tmp.replace(path)

    def _run(self, job: Job) -> None:
        job.state, job.started = "running", time.time()
        self._save(job)

        def progress(i: int, n: int, path: str) -> None:
            job.files_done, job.files_total, job.current = i, n, job.name_of(path)

        error: str | None = None
        try:
            report = self.runner(job, progress)
        except Exception as e:  # a job failing as a whole (collection unopenable…) is reported, not raised
            log.warning("ingest job %s failed: %s", job.id, type(e).__name__)
            error = _public_error(e)
        # The final state is published and written under the lock: whoever sees "done" or "failed" (wait_idle, an
        # API poll) must find it on disk too, or a restart right then would re-run a finished job.
        with self._lock:
            if error is not None:
                job.state, job.error = "failed", error
            else:
                job.state = "done"
                job.files_done = job.files_total = len(report.files)
                summary = report.summary()
                summary.pop("collection", None)
                job.summary = summary
                job.failures = [
                    {"file": job.name_of(f.path), "status": f.status, "reason": (f.reason or "").replace(f.path, "")}
                    for f in report.files
                    if f.status in ("failed", "skipped")
                ][:MAX_LISTED_FAILURES]
            job.current, job.finished = None, time.time()
            self._save(job)


def _public_error(e: Exception) -> str:
    from loupe.errors import LoupeError

    if isinstance(e, LoupeError):
        return str(e)
    return f"internal error ({type(e).__name__}); see the server log"
