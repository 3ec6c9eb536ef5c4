"""Ingest helpers shared by the Ingest and Collections pages: saving uploads, checking server folders, running
an ingest with progress, and showing the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import streamlit as st

from loupe.app.pipeline import IngestReport
from loupe.app.service import Loupe
from loupe.ui.common import changed, kindly, md_escape


def upload_folder(lp: Loupe) -> Path:
    """Where uploaded files are kept (they stay: previews and "Open source" read them later)."""
    return lp.settings.data_dir / "uploads" / lp.collection


def save_uploads(lp: Loupe, files: list[Any]) -> list[Path]:
    """Write uploaded files into the collection's upload folder; returns their paths."""
    folder = upload_folder(lp)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        # Only the name's last part: an upload cannot write outside the folder.
        path = folder / Path(f.name).name
        path.write_bytes(f.getvalue())
        out.append(path)
    return out


def allowed_folder(roots: list[Path], root: Path, sub: str) -> Path | None:
    """``root/sub`` resolved, or None when it leaves the allowed roots (``..``, symlinks) or is not a folder."""
    target = (root / sub.strip().lstrip("/")).resolve()
    if not any(target.is_relative_to(r.resolve()) for r in roots) or not target.is_dir():
        return None
    return target


def run_ingest(lp: Loupe, paths: list[Path], *, rebuild: bool = False) -> IngestReport | None:
    """Ingest (or rebuild) with an overall progress bar and a line per file: reading now, or read."""
    bar = st.progress(0.0, text="Starting…")
    lines: list[str] = []
    log = st.empty()
    t0 = time.perf_counter()

    def on_file(i: int, n: int, path: str) -> None:
        # The pipeline reports each file as it starts; the one before has then been read (its embedding may be
        # batched with the next files, so "read", not "done").
        bar.progress(i / max(n, 1), text=f"File {i + 1} of {n}: {Path(path).name}")
        if lines:
            lines[-1] = lines[-1].replace(":material/hourglass_top:", ":material/check:")
        lines.append(f":material/hourglass_top: {md_escape(Path(path).name)}")
        log.markdown("  \n".join(lines[-8:]))

    report: IngestReport | None = None
    with kindly("The ingest"), st.spinner("Reading, embedding and indexing… (the first run loads the models)"):
        report = lp.rebuild(on_file=on_file) if rebuild else lp.ingest(paths, on_file=on_file)
    changed()
    if report is None:
        bar.empty()
        return None
    bar.progress(1.0, text=f"Done in {time.perf_counter() - t0:.1f} s")
    log.empty()
    return report


def show_report(report: IngestReport) -> None:
    """The summary as metrics, then every file with its status and reason."""
    s = report.summary()
    cols = st.columns(5)
    for col, (label, key) in zip(
        cols,
        [
            ("Ingested", "ok"),
            ("Unchanged", "unchanged"),
            ("Failed", "failed"),
            ("Skipped", "skipped"),
            ("Segments", "segments"),
        ],
        strict=True,
    ):
        col.metric(label, s[key])
    if report.has_failures:
        st.warning("Some files could not be read; the reasons are below. The other files were ingested.")
    elif s["ok"] or s["unchanged"]:
        st.success(f"Collection `{report.collection}` is up to date ({s['seconds']:.1f} s).")
    rows = [
        {
            "file": f.path,
            "status": f.status,
            "segments": f.segments,
            "reason": f.reason or "",
        }
        for f in report.files
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
