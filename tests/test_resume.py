"""Crash-safe, resumable ingest: ``kill -9`` at random moments, then re-run; the result equals a clean ingest
(same point ids, same count: nothing lost, nothing duplicated). Also the manifest and the embedded lock."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from loupe import ingest
from loupe.app.config import load_settings
from loupe.app.pipeline import Manifest, ManifestEntry
from loupe.app.service import Loupe, index_config
from loupe.embedder.profiles import create_profile
from loupe.errors import StoreError
from loupe.index.store import Index

ROOT = Path(__file__).resolve().parent.parent
WORDS = "harbour tide pier channel dredge beacon ferry cargo crane quay lock buoy anchor hull keel mast".split()


def make_corpus(folder: Path, n: int) -> Path:
    """``n`` text files of one to four chunks each (deterministic)."""
    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        paras = [" ".join(rng.choice(WORDS) for _ in range(180)) + f" file{i} part{j}." for j in range(1 + i % 4)]
        (folder / f"doc{i:03d}.txt").write_text("\n\n".join(paras))
    return folder


def point_ids(data_dir: Path) -> list[str]:
    """Every point id in the default collection (a list: duplicates would show)."""
    idx = Index.open(index_config(load_settings(data_dir=data_dir, profile="fake")), create_profile("fake").info)
    try:
        return [f.id for f in idx.iter_points()]
    finally:
        idx.close()


def _cmd(corpus: Path, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "loupe.app.cli",
        "ingest",
        str(corpus),
        "--profile",
        "fake",
        "--data-dir",
        str(data_dir),
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "UNSTRUCTURED_DISABLE_NOTICE": "1"}


def _manifest_lines(data_dir: Path) -> int:
    m = data_dir / "manifests" / "default.jsonl"
    return m.read_bytes().count(b"\n") if m.exists() else 0


def kill_and_resume(corpus: Path, data_dir: Path, kills: int, seed: int) -> dict[str, Any]:
    """Start the CLI ingest, ``kill -9`` it after a random number of manifest records plus a random delay, ``kills``
    times; then run it to the end. Returns figures for the notes."""
    rng = random.Random(seed)
    killed_at: list[int] = []
    for _ in range(kills):
        before = _manifest_lines(data_dir)
        proc = subprocess.Popen(
            _cmd(corpus, data_dir), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        target = before + rng.randint(1, 3)
        deadline = time.monotonic() + 120
        first = None  # when this run wrote its first record
        while proc.poll() is None and (seen := _manifest_lines(data_dir)) < target and time.monotonic() < deadline:
            if first is None and seen > before:
                first = time.monotonic()
            time.sleep(0.002)
        # Anywhere: mid-embed, mid-upsert, mid-manifest write. The delay spans ~2 records at this machine's pace
        # (a fixed 0.3 s let a fast machine finish ~15 files per run, and the corpus before 10 kills landed).
        per_record = (time.monotonic() - first) / max(1, target - before - 1) if first is not None else 0.05
        time.sleep(rng.uniform(0.0, min(0.3, 2 * max(per_record, 0.005))))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at.append(_manifest_lines(data_dir))
        proc.wait()
    final = subprocess.run(_cmd(corpus, data_dir), env=_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    report = json.loads((data_dir / "reports" / "ingest-default-latest.json").read_text())
    return {"kills": len(killed_at), "manifest_lines_at_kill": killed_at, "final": report["summary"]}


def _check_equal_to_clean(tmp_path: Path, kills: int, n_files: int, seed: int) -> dict[str, Any]:
    corpus = make_corpus(tmp_path / "corpus", n_files)
    with Loupe(load_settings(data_dir=tmp_path / "clean", profile="fake")) as lp:
        clean_report = lp.ingest([corpus])
    assert clean_report.summary()["ok"] == n_files
    clean = point_ids(tmp_path / "clean")
    figures = kill_and_resume(corpus, tmp_path / "crashy", kills, seed)
    resumed = point_ids(tmp_path / "crashy")
    lost = set(clean) - set(resumed)
    extra = set(resumed) - set(clean)
    duplicates = len(resumed) - len(set(resumed))
    figures |= {"clean_points": len(clean), "resumed_points": len(resumed), "lost": len(lost), "extra": len(extra)}
    print("kill/resume:", json.dumps(figures))
    assert (len(lost), len(extra), duplicates) == (0, 0, 0), figures
    assert figures["final"]["failed"] == 0 and figures["final"]["files"] == n_files
    return figures


def test_kill_9_and_resume_equals_clean_ingest(tmp_path: Path) -> None:
    figures = _check_equal_to_clean(tmp_path, kills=3, n_files=16, seed=1)
    assert figures["kills"] >= 1  # at least one kill landed mid-ingest (else the test proved nothing)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_twenty_times(tmp_path: Path) -> None:
    figures = _check_equal_to_clean(tmp_path, kills=20, n_files=120, seed=2)
    assert figures["kills"] >= 10


def test_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    """The embedded engine's lock is an flock: the kernel drops it when the holder dies, even by SIGKILL."""
    data = tmp_path / "data"
    code = (
        "import sys, time\n"
        "from app.config import load_settings\nfrom app.service import Loupe\n"
        f"lp = Loupe(load_settings(data_dir={str(data)!r}, profile='fake'))\n"
        "lp.index(create=True)\nprint('ready', flush=True)\ntime.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="open in another Loupe process"):
            Loupe(load_settings(data_dir=data, profile="fake")).index()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with Loupe(load_settings(data_dir=data, profile="fake")) as lp:
        assert lp.stats()["points"] == 0


def test_manifest_ignores_torn_lines_and_compacts(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    m = Manifest(path)
    for i in range(300):
        m.record(ManifestEntry("/a.txt", "started" if i % 2 else "stored", "ab", 1, 2, 3))
    with path.open("a") as f:
        f.write('{"uri": "/b.txt", "state": "sto')  # the process died mid-write
    again = Manifest(path)
    assert again.get("/a.txt") == ManifestEntry("/a.txt", "started", "ab", 1, 2, 3)
    assert again.get("/b.txt") is None
    assert path.read_text().count("\n") == 1  # compacted: one line per file
    again.forget("/a.txt")
    assert Manifest(path).get("/a.txt") is None


def test_stored_files_are_not_rehashed_and_incomplete_ones_are_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = make_corpus(tmp_path / "corpus", 4)
    settings = load_settings(data_dir=tmp_path / "data", profile="fake")
    with Loupe(settings) as lp:
        assert lp.ingest([corpus]).summary()["ok"] == 4
    hashed: list[str] = []
    real = ingest.sha256_file
    monkeypatch.setattr(ingest, "sha256_file", lambda p: hashed.append(str(p)) or real(p))
    with Loupe(settings) as lp:
        assert lp.ingest([corpus]).summary()["unchanged"] == 4
        assert hashed == []
        # Lose one stored point behind the manifest's back (as an engine losing unflushed writes would).
        idx = lp.index()
        victim = next(iter(idx.iter_points()))
        uri = victim.payload["source"]["uri"]
        from loupe.index.engines import FieldFilter

        idx.engine.delete(FieldFilter(must={"segment_id": victim.payload["segment_id"]}))
        report = lp.ingest([corpus])
    assert report.summary()["ok"] == 1 and report.summary()["unchanged"] == 3
    assert hashed == [uri]
    assert sorted(point_ids(tmp_path / "data")) == sorted(set(point_ids(tmp_path / "data")))
