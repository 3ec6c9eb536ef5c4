"""The ``loupe`` command: documented JSON shapes and exit codes, in-process and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loupe.app.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ingest_search_ask_delete(
    corpus: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--data-dir", str(data_dir), "--profile", "fake", "--collection", "kb"]
    report = tmp_path / "report.json"
    code, out, _ = run(capsys, "ingest", str(corpus), *common, "--report", str(report), "-q")
    assert code == 0 and "5 ok" in out
    r = json.loads(report.read_text())
    assert set(r) >= {"files", "summary"} and len(r["files"]) == 5
    assert all(set(f) >= {"path", "status", "reason", "segments"} for f in r["files"])

    code, out, _ = run(capsys, "search", "dredging of the north channel silt", *common, "--json", "--k", "3")
    hits = json.loads(out)
    assert code == 0 and hits[0]["file"] == str(corpus / "report.pdf") and hits[0]["locator"] == 2
    assert set(hits[0]) >= {"file", "modality", "locator", "score", "text"}

    code, out, _ = run(capsys, "ask", "Where are ferry tickets sold?", *common, "--json")
    ans = json.loads(out)
    assert code == 0 and ans["mode"] == "extractive" and "[1]" in ans["answer"]
    assert ans["citations"][0]["file"] == str(corpus / "faq.html")

    code, out, _ = run(capsys, "collections", *common, "--json")
    assert code == 0 and json.loads(out)[0]["points"] >= 5

    code, out, _ = run(capsys, "delete", str(corpus / "faq.html"), *common)
    assert code == 0 and "deleted 1 points" in out
    code, out, _ = run(capsys, "search", "ferry tickets kiosk pier", *common, "--json")
    assert all(h["file"] != str(corpus / "faq.html") for h in json.loads(out))


def test_cli_exit_codes(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "ok.md").write_text("# Fine\n\nA perfectly good file about tides.")
    (folder / "empty.txt").write_bytes(b"")
    common = ["--data-dir", str(data_dir), "--profile", "fake"]
    code, _, err = run(capsys, "ingest", str(folder), *common, "-q")
    assert code == 3 and "empty.txt" in err and "0 bytes" in err
    code, _, err = run(capsys, "search", "x", *common, "--collection", "bad name")
    assert code == 2 and "collection" in err
    code, out, _ = run(capsys, "search", "tides", *common, "--collection", "nothing-here", "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = run(capsys, "search", "tides", "--data-dir", str(data_dir), "--profile", "offline")
    assert code == 4 and "ProfileMismatch" not in err and "built with embedding profile 'fake'" in err


def test_cli_subprocess_entry_point(corpus: Path, data_dir: Path) -> None:
    """The installed console script works from a shell, with env configuration."""
    env = {**os.environ, "LOUPE_DATA_DIR": str(data_dir), "LOUPE_PROFILE": "fake"}
    exe = Path(sys.executable).parent / "loupe"
    p = subprocess.run(
        [str(exe), "ingest", str(corpus / "notes.md")], env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    p = subprocess.run(
        [str(exe), "search", "grey seals", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0 and json.loads(p.stdout)[0]["file"] == str(corpus / "notes.md")
