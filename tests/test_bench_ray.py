"""``loupe bench ingest --ray``: the CPU accounting that its efficiency figures rest on, and one tiny run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loupe.lab.bench.ray_ingest import TreeCPU, bench_ray_ingest, format_ray_ingest
from tests.test_resume import make_corpus

# A grandchild that burns CPU and reports how much it used; its parent (bash) reaps it and lives on a little, as
# Ray's raylet does with its workers.
BURN = "import time\nx = 0\nwhile time.process_time() < 0.6:\n    x += 1\nprint(time.process_time())\n"


def test_tree_cpu_counts_grandchildren(tmp_path: Path) -> None:
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    out = tmp_path / "used.txt"
    with TreeCPU(every_s=0.05) as tree:
        subprocess.run(["bash", "-c", f"{sys.executable} {script} > {out}; sleep 0.5"], check=True)
    used = float(out.read_text())
    # The grandchild's own CPU is inside the total once: not lost (Ray's actors were), not counted twice.
    assert used * 0.9 <= tree.total_s() <= used + 1.0


@pytest.mark.timeout(600)
def test_bench_ray_ingest_rows(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    corpus = make_corpus(tmp_path / "corpus", 3)
    body = bench_ray_ingest(corpus, workers=[1], repeats=1, profile="fake", workdir=tmp_path / "work")
    local, ray1 = body["rows"]
    assert (local["mode"], ray1["mode"]) == ("local", "ray x1")
    assert local["errors"] == [] and ray1["errors"] == []
    assert local["files"] == ray1["files"] == 3 and local["segments"] == ray1["segments"] and ray1["failed"] == 0
    assert ray1["cpu_efficiency_vs_local"] is not None and ray1["ray_init_s"]["median"] > 0
    assert "ray x1" in format_ray_ingest(body)
