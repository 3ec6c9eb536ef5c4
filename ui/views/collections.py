"""Collections page: what the collection holds (per modality), which profile and models made it, and the admin
actions: delete a source, rebuild, release the index so a command-line ingest can open it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from loupe.ui.common import MODALITY_LABELS, changed, kindly, md_escape, open_collection, sources
from loupe.ui.ingest_ui import run_ingest, show_report


def render() -> None:
    """Build the page."""
    opened = open_collection("Collections")
    if opened is None:
        return
    lp, info = opened
    others = [c for c in lp.collections() if c != lp.collection]
    st.subheader(f"`{lp.collection}`")
    st.caption(md_escape(str(info.get("location", lp.settings.data_dir))))
    a, b = st.columns(2)
    a.metric("Points", info["points"])
    b.metric("Sources", info["sources"])
    st.dataframe(
        [{"kind": MODALITY_LABELS.get(m, m), "modality": m, "points": n} for m, n in info["per_modality"].items()],
        hide_index=True,
    )
    profile = info["profile"]
    st.markdown(f"**Embedding profile** `{profile.get('name', '?')}`")
    st.dataframe(
        [
            {"vector": name, "model": model, "dimensions": profile.get("dims", {}).get(name)}
            for name, model in sorted(profile.get("model_ids", {}).items())
        ],
        hide_index=True,
    )
    if others:
        st.caption("Other collections here: " + ", ".join(f"`{c}`" for c in others))

    st.subheader("Sources")
    counts = sources(lp)
    st.dataframe(
        [{"file": Path(u).name, "points": n, "path": u} for u, n in sorted(counts.items())],
        hide_index=True,
        width="stretch",
    )
    victim = st.selectbox("Delete a source", sorted(counts), index=None, format_func=str, key="victim")
    if victim is not None:
        sure = st.checkbox(f"Yes, delete {md_escape(Path(victim).name)} and its previews", key="sure_delete")
        if st.button("Delete source", disabled=not sure, type="primary", key="delete"):
            with kindly("Deleting the source"):
                n = lp.delete_source(victim)
                changed()
                st.success(f"Deleted {md_escape(Path(victim).name)} ({n} points).")

    st.subheader("Maintenance")
    with st.expander("Rebuild the collection"):
        st.write(
            "Deletes the collection and ingests every source again with the current settings (for example after "
            "changing chunk sizes). Files that no longer exist are reported and dropped."
        )
        sure = st.checkbox("Yes, rebuild", key="sure_rebuild")
        if st.button("Rebuild", disabled=not sure, key="rebuild"):
            report = run_ingest(lp, [], rebuild=True)
            if report is not None:
                show_report(report)
    with st.expander("Let a command-line ingest open this collection"):
        st.write(
            "The built-in index can be open in one process at a time, and this UI keeps it open. Release it, "
            "run `loupe ingest …` in a terminal, then come back: the next search opens it again. (Or ingest from "
            "the **Ingest** page, or run a Qdrant server and set `LOUPE_QDRANT_URL` so both can share it.)"
        )
        if st.button("Release the index", key="release"):
            lp.close()
            st.success("Released. The next search or page visit opens the collection again.")


render()
