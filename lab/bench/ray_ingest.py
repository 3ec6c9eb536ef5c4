"""``loupe bench ingest --ray``: local ingest beside Ray ingest with 1 and 2 workers on the same files.

Each run is a fresh child process with a fresh data dir; the configurations are interleaved within each repeat
so that shared-machine load hits them alike (compare the ratios, not the absolute seconds). CPU time is the
child's own plus every process below it (:class:`TreeCPU`): with Ray that is the GCS, the raylet, the dashboard
agent, the actors and the idle workers Ray keeps, i.e. the whole price of the cluster on this machine, counted
from the start of the ingest (``ray.init`` is timed separately, its CPU not counted).
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loupe.lab.bench.common import Result, format_table, med, run_child, summarize


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class TreeCPU:
    """CPU seconds of this process and every process below it, sampled every ``every_s``.

    Ray's actors are grandchildren (under the raylet) that die unreaped when the cluster is torn down, so their
    time never reaches this process's ``RUSAGE_CHILDREN``: each descendant's last sample (its own time plus that
    of children it reaped) is added instead. Misses at most ``every_s`` per process. Direct children that this
    process reaped (ffmpeg in local ingest) are counted once, through ``RUSAGE_CHILDREN``.
    """

    def __init__(self, every_s: float = 0.25) -> None:
        import psutil  # comes with pymupdf and unstructured

        self._psutil = psutil
        self.every_s = every_s
        self.me = psutil.Process()
        self.last: dict[int, float] = {}
        self.direct: set[int] = set()
        self.base: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.start_s = _cpu_s()

    def _sample(self) -> None:
        try:
            kids = self.me.children(recursive=True)
            self.direct |= {k.pid for k in self.me.children()}
        except self._psutil.Error:
            return
        for k in kids:
            try:
                t = k.cpu_times()
            except self._psutil.Error:
                continue
            self.last[k.pid] = t.user + t.system + t.children_user + t.children_system

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> TreeCPU:
        self._sample()
        self.base = dict(self.last)  # Ray's processes already ran during ray.init: count from here on
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def total_s(self) -> float:
        """CPU seconds since start: this process and its reaped children, plus every other descendant seen."""
        alive = {p.pid for p in self.me.children(recursive=True)}
        # A direct child that is gone was reaped here: RUSAGE_CHILDREN holds its time already.
        others = sum(
            v - self.base.get(pid, 0.0) for pid, v in self.last.items() if pid in alive or pid not in self.direct
        )
        return _cpu_s() - self.start_s + others


def child_ray_ingest(p: Result) -> Result:
    """Ingest ``p["corpus"]`` into ``p["data_dir"]``: in-process when ``p["workers"]`` is 0, else on a Ray instance
    started here with that many actors (one CPU each)."""
    t_start = time.perf_counter()
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe

    workers = int(p["workers"])
    settings = load_settings(data_dir=p["data_dir"], profile=p["profile"], ray_address=None)
    ray_init_s = 0.0
    if workers:
        import ray

        t = time.perf_counter()
        # As many CPUs as actors: Ray then prestarts no extra idle workers beyond the ones the actors use.
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        ray_init_s = time.perf_counter() - t
        settings = settings.model_copy(update={"ray_address": "local", "ray_workers": workers})
    with TreeCPU() as tree:
        t0 = time.perf_counter()
        with Loupe(settings) as lp:
            report = lp.ingest([p["corpus"]])
        ingest_s = time.perf_counter() - t0
    cpu_s = tree.total_s()  # before shutdown: Ray's processes are still there to be counted
    if workers:
        import ray

        ray.shutdown()
    s = report.summary()
    return {
        "workers": workers,
        "files": s["files"],
        "ok": s["ok"],
        "failed": s["failed"],
        "segments": s["segments"],
        "ingest_s": ingest_s,
        "ray_init_s": ray_init_s,
        "cpu_s": cpu_s,
        "child_s": time.perf_counter() - t_start,
    }


def bench_ray_ingest(
    corpus: Path,
    *,
    workers: Sequence[int],
    repeats: int,
    profile: str,
    workdir: Path,
    child_timeout_s: float = 3600.0,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Local (workers 0) and Ray ingest of ``corpus`` for each worker count, ``repeats`` interleaved rounds."""
    configs = [0, *[w for w in workers if w > 0]]
    runs: dict[int, list[Result]] = {w: [] for w in configs}
    for r in range(repeats):
        for w in configs:
            if on_progress:
                on_progress(f"repeat {r + 1}/{repeats}: {'local' if not w else f'ray, {w} worker(s)'}")
            data = workdir / f"ray-{w}-{r}"
            res = run_child(
                "ray-ingest",
                {"corpus": str(corpus), "workers": w, "profile": profile, "data_dir": str(data)},
                workdir,
                timeout_s=child_timeout_s,
            )
            runs[w].append(res)
    rows = []
    local_s = med(summarize([x.get("ingest_s") for x in runs[0]]))
    local_cpu = med(summarize([x.get("cpu_s") for x in runs[0]]))
    for w in configs:
        got = runs[w]
        ingest_s = summarize([x.get("ingest_s") for x in got])
        cpu_s = summarize([x.get("cpu_s") for x in got])
        files = got[0].get("files") or 0
        m_s, m_cpu = med(ingest_s), med(cpu_s)
        rows.append(
            {
                "mode": "local" if not w else f"ray x{w}",
                "workers": w,
                "files": files,
                "segments": got[0].get("segments"),
                "failed": got[0].get("failed"),
                "ingest_s": ingest_s,
                "ray_init_s": summarize([x.get("ray_init_s") for x in got]),
                "cpu_s": cpu_s,
                "files_per_s": (files / m_s) if m_s else None,
                "speedup_vs_local": (local_s / m_s) if (local_s and m_s) else None,
                # Local CPU seconds over this mode's: 1.0 = no overhead; 0.5 = the same work costs twice the CPU.
                "cpu_efficiency_vs_local": (local_cpu / m_cpu) if (local_cpu and m_cpu) else None,
                "errors": [x["error"] for x in got if "error" in x],
            }
        )
    return {"corpus": str(corpus), "profile": profile, "repeats": repeats, "rows": rows}


def format_ray_ingest(body: dict[str, Any]) -> str:
    """The table printed after the run."""

    def f2(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    cols = [("mode", "mode", "{}"), ("files", "files", "{}"), ("s", "ingest s", "{:.1f}")]
    cols += [("fps", "files/s", "{}"), ("x", "speed-up", "{}"), ("cpu", "CPU s", "{:.1f}"), ("eff", "CPU eff.", "{}")]
    table = [
        {
            "mode": r["mode"],
            "files": r["files"],
            "s": med(r["ingest_s"]),
            "fps": f2(r["files_per_s"]),
            "x": f2(r["speedup_vs_local"]),
            "cpu": med(r["cpu_s"]),
            "eff": f2(r["cpu_efficiency_vs_local"]),
        }
        for r in body["rows"]
    ]
    return format_table(table, cols)
