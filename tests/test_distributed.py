"""``loupe ingest --ray``: a local Ray cluster started here (loopback, 2 CPUs) against a local ingest of the same
files: the same point ids, payloads and report; a bad file fails alone; the profile is checked before any worker
runs; a killed worker and a killed driver lose and duplicate nothing. Skipped where Ray is not installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loupe.app.config import Settings, load_settings
from loupe.app.distributed import RAY_INSTALL_HINT, RayIngest, RayOptions, require_ray
from loupe.app.pipeline import IngestReport
from loupe.app.service import Loupe, ingest_options
from loupe.embedder.profiles import create_profile
from loupe.errors import ConfigError, ProfileMismatchError
from tests.test_resume import _env, _manifest_lines, make_corpus, point_ids

ROOT = Path(__file__).resolve().parent.parent
# Timings inside a file's details (video OCR seconds) are the only report fields that may differ between runs.
TIMING_DETAILS = {"ocr_s"}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A Ray instance for this module on loopback (2 CPUs, small object store); its GCS address for drivers."""
    ray = pytest.importorskip("ray")
    ctx = ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield str(ctx.address_info["gcs_address"])
    finally:
        ray.shutdown()


def _settings(data_dir: Path, **kw: Any) -> Settings:
    return load_settings(data_dir=data_dir, profile="fake", **kw)


def _ray_ingest(data_dir: Path, paths: list[Path], **opts: Any) -> tuple[IngestReport, RayIngest]:
    settings = _settings(data_dir)
    with Loupe(settings) as lp:
        runner = RayIngest(lp.index(create=True), lp.profile, ingest_options(settings), RayOptions(**opts))
        return runner.run(paths), runner


def _local_ingest(data_dir: Path, paths: list[Path]) -> IngestReport:
    with Loupe(_settings(data_dir)) as lp:
        return lp.ingest(paths)


def _points(data_dir: Path) -> dict[str, Any]:
    """Point id -> payload, with the data dir written as D (the media store lives under it)."""
    with Loupe(_settings(data_dir)) as lp:
        return {f.id: json.loads(json.dumps(f.payload).replace(str(data_dir), "D")) for f in lp.index().iter_points()}


def _report_files(report: IngestReport) -> list[dict[str, Any]]:
    files = report.to_json()["files"]
    for f in files:
        for k in TIMING_DETAILS:
            f["details"].pop(k, None)
    return files


def test_without_ray_the_flag_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[ray\]'"):
        require_ray()
    from loupe.app.cli import main

    make_corpus(tmp_path / "c", 1)
    code = main(["ingest", str(tmp_path / "c"), "--profile", "fake", "--data-dir", str(tmp_path / "d"), "--ray"])
    assert code == 2
    assert not (tmp_path / "d" / "manifests").exists()  # refused before anything was read or written
    assert "ray==2.60.0" in RAY_INSTALL_HINT


def test_sample_congruent_with_local_ingest(ray_cluster: str, tmp_path: Path) -> None:
    """Acceptance 1: `loupe ingest sample/ --ray` gives the points and report of `loupe ingest sample/`."""
    sample = ROOT / "sample"
    local = _local_ingest(tmp_path / "local", [sample])
    remote, runner = _ray_ingest(tmp_path / "ray", [sample], workers=2, files_per_task=3)
    assert local.summary()["ok"] >= 10 and local.summary()["failed"] == 0
    assert _report_files(remote) == _report_files(local)
    assert {k: v for k, v in remote.summary().items() if k != "seconds"} == {
        k: v for k, v in local.summary().items() if k != "seconds"
    }
    a, b = _points(tmp_path / "local"), _points(tmp_path / "ray")
    assert sorted(b) == sorted(a) and b == a
    assert len(runner.worker_pids) == 2 and os.getpid() not in runner.worker_pids  # the work ran in the actors
    # Re-running is a no-op in both: every file unchanged, without a worker.
    again, runner2 = _ray_ingest(tmp_path / "ray", [sample], workers=2)
    assert again.summary()["unchanged"] == local.summary()["ok"] and runner2.workers_started == 0


def test_bad_file_fails_alone_with_the_local_reason(ray_cluster: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", 5)
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
    (corpus / "empty.txt").write_text("")
    (corpus / "blank.md").write_text("   \n\n  ")
    (corpus / "notes.xyz").write_text("not a kind Loupe reads")
    local = _local_ingest(tmp_path / "local", [corpus])
    remote, _ = _ray_ingest(tmp_path / "ray", [corpus], workers=2, files_per_task=4)
    assert _report_files(remote) == _report_files(local)
    s = remote.summary()
    assert s["ok"] == 5 and s["failed"] >= 2 and s["skipped"] == 1
    assert _points(tmp_path / "ray") == _points(tmp_path / "local")


def test_profile_is_checked_before_any_worker_runs(ray_cluster: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", 3)
    _local_ingest(tmp_path / "data", [corpus])
    before = point_ids(tmp_path / "data")
    other = create_profile("fake", dim=32)
    more = make_corpus(tmp_path / "more", 6)
    with (
        Loupe(_settings(tmp_path / "data", ray_address="local"), profile=other) as lp,
        pytest.raises(ProfileMismatchError),
    ):
        lp.ingest([more])
    assert point_ids(tmp_path / "data") == before


def _fake32() -> Any:
    return create_profile("fake", dim=32)


def test_a_worker_building_another_profile_writes_nothing(ray_cluster: str, tmp_path: Path) -> None:
    """A node with other models installed: its actor refuses to embed, so no vector of another space is stored."""
    corpus = make_corpus(tmp_path / "corpus", 3)
    settings = _settings(tmp_path / "data")
    with Loupe(settings) as lp:
        opts = RayOptions(workers=1)
        report = RayIngest(lp.index(create=True), lp.profile, ingest_options(settings), opts, _fake32).run([corpus])
        assert lp.index().count() == 0
    assert report.summary()["failed"] == 3
    assert all("install the same Loupe" in (f.reason or "") for f in report.files)


def _kill_a_worker_during(data_dir: Path, corpus: Path, after_files: int) -> tuple[IngestReport, RayIngest, int]:
    settings = _settings(data_dir)
    killed: list[int] = []
    with Loupe(settings) as lp:
        runner = RayIngest(
            lp.index(create=True), lp.profile, ingest_options(settings), RayOptions(workers=2, files_per_task=2)
        )

        def on_file(i: int, n: int, path: str) -> None:
            if i >= after_files and not killed and runner.worker_pids:
                pid = min(runner.worker_pids)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        report = runner.run([corpus], on_file=on_file)
    assert killed, "the kill never happened: the test proved nothing"
    return report, runner, killed[0]


def _assert_same_as_clean(tmp_path: Path, corpus: Path, data_dir: Path, n: int) -> None:
    _local_ingest(tmp_path / "clean", [corpus])
    clean, got = point_ids(tmp_path / "clean"), point_ids(data_dir)
    lost, extra, dups = set(clean) - set(got), set(got) - set(clean), len(got) - len(set(got))
    assert (len(lost), len(extra), dups) == (0, 0, 0)
    assert len(clean) > n  # several points per file


def test_killed_worker_is_retried(ray_cluster: str, tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path / "corpus", 16)
    report, runner, pid = _kill_a_worker_during(tmp_path / "ray", corpus, after_files=2)
    assert report.summary()["ok"] == 16 and report.summary()["failed"] == 0
    assert len(runner.worker_pids - {pid}) >= 2  # the killed actor came back as a new process
    _assert_same_as_clean(tmp_path, corpus, tmp_path / "ray", 16)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killed_worker_during_100_files(ray_cluster: str, tmp_path: Path) -> None:
    """Acceptance 2, worker side: kill -9 an actor a third of the way through; every file is stored once."""
    corpus = make_corpus(tmp_path / "corpus", 100)
    report, runner, pid = _kill_a_worker_during(tmp_path / "ray", corpus, after_files=30)
    assert report.summary()["ok"] == 100 and report.summary()["failed"] == 0
    assert len(runner.worker_pids - {pid}) >= 2
    _assert_same_as_clean(tmp_path, corpus, tmp_path / "ray", 100)


def _driver(corpus: Path, data_dir: Path, address: str) -> list[str]:
    cli = [sys.executable, "-m", "loupe.app.cli", "ingest", str(corpus), "--profile", "fake"]
    return [*cli, "--data-dir", str(data_dir), "--ray", address, "--ray-workers", "2", "-q"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_killed_driver_during_100_files_resumes(ray_cluster: str, tmp_path: Path) -> None:
    """Acceptance 2, driver side: kill -9 the CLI driver twice mid-run (its actors die with it), then re-run."""
    corpus = make_corpus(tmp_path / "corpus", 100)
    data = tmp_path / "ray"
    kills = []
    for target in (25, 90):  # manifest records: a quarter through, then most of the way
        proc = subprocess.Popen(_driver(corpus, data, ray_cluster), env=_env(), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while proc.poll() is None and _manifest_lines(data) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills.append(_manifest_lines(data))
        proc.wait()
    assert kills, "the driver finished before it could be killed"
    final = subprocess.run(_driver(corpus, data, ray_cluster), env=_env(), capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads((data / "reports" / "ingest-default-latest.json").read_text())["summary"]
    assert summary["failed"] == 0 and summary["ok"] + summary["unchanged"] == 100
    assert summary["unchanged"] > 0  # the re-run kept what the killed drivers had stored
    _assert_same_as_clean(tmp_path, corpus, data, 100)


@pytest.mark.server
@pytest.mark.skipif(not os.environ.get("LOUPE_QDRANT_URL"), reason="needs a Qdrant server (LOUPE_QDRANT_URL)")
def test_workers_upsert_to_a_server_directly(ray_cluster: str, tmp_path: Path) -> None:
    """With a server, the actors write the points; the driver only books them. Not run here (no server)."""
    corpus = make_corpus(tmp_path / "corpus", 12)
    local = _local_ingest(tmp_path / "local", [corpus])
    collection = f"ray_{os.getpid()}"
    settings = _settings(tmp_path / "ray", qdrant_url=os.environ["LOUPE_QDRANT_URL"], collection=collection)
    with Loupe(settings) as lp:
        runner = RayIngest(lp.index(create=True), lp.profile, ingest_options(settings), RayOptions(workers=2))
        assert runner.workers_write
        try:
            remote = runner.run([corpus])
            assert _report_files(remote) == _report_files(local)
            got = sorted(f.id for f in lp.index().iter_points())
            assert got == sorted(point_ids(tmp_path / "local"))
        finally:
            lp.index().drop()


def test_settings_key_picks_the_runner_for_cli_and_api(tmp_path: Path) -> None:
    """`ray_address` (LOUPE_RAY_ADDRESS) is what the CLI flag sets and what the API's job runner reads."""
    pytest.importorskip("ray")
    from loupe.app.pipeline import IngestPipeline
    from loupe.app.service import ingest_runner

    with Loupe(_settings(tmp_path / "d")) as lp:
        idx = lp.index(create=True)
        assert isinstance(ingest_runner(lp.settings, idx, lp.profile), IngestPipeline)
        ray_settings = _settings(tmp_path / "d", ray_address="auto", ray_workers=3)
        runner = ingest_runner(ray_settings, idx, lp.profile, allowed_roots=[tmp_path])
        assert isinstance(runner, RayIngest)
        assert (runner.ray_options.address, runner.ray_options.workers) == ("auto", 3)
        assert runner.allowed_roots == [tmp_path.resolve()]
        assert runner.profile_factory().info == lp.profile.info  # workers build the collection's profile


def test_a_worker_writes_its_points_itself_where_it_may(tmp_path: Path) -> None:
    """The server-mode path of the actor body, run in-process (no Ray) against qdrant-client's local mode, which
    stands in for the server: the points a worker upserts itself are those of a local ingest."""
    from loupe import ingest
    from loupe.app.distributed import FileTask, IngestWorker
    from loupe.app.service import index_config
    from loupe.index.store import Index

    corpus = make_corpus(tmp_path / "corpus", 4)
    _local_ingest(tmp_path / "local", [corpus])
    settings = _settings(tmp_path / "w", engine="local")
    profile = create_profile("fake")
    cfg = index_config(settings)
    Index.open(cfg, profile.info, create=True).close()  # the driver's part: create and check the collection
    opts = ingest_options(settings)
    tasks = [FileTask(i, ingest.prepare(p, opts)) for i, p in enumerate(sorted(corpus.iterdir()))]
    worker = IngestWorker(lambda: profile, opts, {"text": 2}, server_index=cfg, expected=profile.info)
    results = worker.process(tasks)
    assert worker._index is not None
    worker._index.close()
    assert [r.status for r in results] == ["ok"] * 4 and all(not r.vectors for r in results)  # nothing sent back
    idx = Index.open(cfg, profile.info, create=False)
    try:
        got = {f.id: f.payload["segment_id"] for f in idx.iter_points()}
    finally:
        idx.close()
    assert sorted(got) == sorted(point_ids(tmp_path / "local"))
    assert sum(r.points for r in results) == len(got)
