"""Ingest page: upload files, or pick a folder under the allowed server roots; progress while it runs; the report
(ok / unchanged / failed with reasons / skipped) at the end.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from loupe.app.pipeline import walk
from loupe.ui.common import INGEST_TYPES, kindly, loupe, md_escape
from loupe.ui.ingest_ui import allowed_folder, run_ingest, save_uploads, show_report


def render() -> None:
    """Build the page."""
    st.title("Ingest")
    lp = loupe()
    st.caption(
        f"Files go into collection `{lp.collection}`. Unchanged files are skipped; changed files are replaced; "
        "a file that cannot be read is reported and the rest carry on."
    )
    upload, folder = st.tabs(["Upload files", "Folder on the server"])
    with upload:
        files = st.file_uploader(
            "Documents, images, video or audio", type=INGEST_TYPES, accept_multiple_files=True, key="uploads"
        )
        if st.button("Ingest the uploaded files", disabled=not files, type="primary", key="ingest_uploads"):
            with kindly("Saving the uploads"):
                paths = save_uploads(lp, list(files or []))
                st.session_state["ingest_report"] = run_ingest(lp, paths)
    with folder:
        roots = list(lp.settings.api_allowed_roots)
        if not roots:
            st.info(
                "No server folder is open to the UI. Set `LOUPE_API_ALLOWED_ROOTS` to one or more folders "
                "(separated by `:`) and restart `loupe ui` to ingest from them here."
            )
        else:
            root = st.selectbox("Allowed folder", roots, format_func=str, key="root")
            sub = st.text_input("Subfolder (optional)", key="subfolder", placeholder="e.g. reports/2025")
            target = allowed_folder(roots, Path(root), sub)
            if target is None:
                st.error("That folder does not exist or lies outside the allowed folders.")
            else:
                n = sum(1 for _ in walk([target]))
                st.caption(f"{md_escape(str(target))}: {n} files")
                if st.button("Ingest this folder", type="primary", disabled=n == 0, key="ingest_folder"):
                    st.session_state["ingest_report"] = run_ingest(lp, [target])
    report = st.session_state.get("ingest_report")
    if report is not None:
        st.subheader("Last ingest")
        show_report(report)


render()
