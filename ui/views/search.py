"""Search page: words, an image, a voice recording (or an uploaded recording), with modality and source filters;
the hits as a grid of previews.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import streamlit as st

from loupe.app.retrieve import Filters
from loupe.ui.common import (
    AUDIO_TYPES,
    BRIDGE_NOTE,
    IMAGE_TYPES,
    MODALITY_LABELS,
    hit_grid,
    kindly,
    md_escape,
    open_collection,
    readable_image,
    sources,
    upload_to_temp,
)


def render() -> None:
    """Build the page."""
    opened = open_collection("Search")
    if opened is None:
        return
    lp, info = opened
    query = st.text_input(
        "Search",
        key="query",
        placeholder="words, a phrase or a question — in any of about 100 languages",
        label_visibility="collapsed",
    )
    left, middle, right = st.columns(3)
    image = left.file_uploader("Search by image", type=IMAGE_TYPES, key="image")
    voice = middle.audio_input("Search by voice", key="voice")
    voice_file = right.file_uploader("…or upload a recording", type=AUDIO_TYPES, key="voice_file")
    if lp.settings.profile == "offline":
        st.caption(BRIDGE_NOTE)
    recording = voice if voice is not None else voice_file

    present = list(info["per_modality"])
    all_sources = sources(lp)
    f1, f2, f3 = st.columns([2, 3, 1])
    modalities = f1.multiselect(
        "Only these kinds",
        present,
        key="modalities",
        format_func=lambda m: MODALITY_LABELS.get(m, m),
        placeholder="all kinds",
    )
    picked = f2.multiselect(
        "Only these files",
        sorted(all_sources),
        key="sources",
        format_func=lambda u: Path(u).name,
        placeholder="all files",
    )
    k = f3.number_input("Results", min_value=1, max_value=50, value=10, key="k")

    if not query.strip() and image is None and recording is None:
        st.caption("Type words, upload a picture or record a question to search.")
        return
    if image is not None and not readable_image(image):
        st.error(f"{md_escape(image.name)} is not a picture Loupe can read. Upload a {', '.join(IMAGE_TYPES)} file.")
        return
    with kindly("The search"):
        with contextlib.ExitStack() as stack:
            image_path = stack.enter_context(upload_to_temp(image)) if image is not None else None
            audio_path = stack.enter_context(upload_to_temp(recording)) if recording is not None else None
            with st.spinner("Searching… (the first search after a start loads the models)"):
                hits = lp.search(
                    query or None,
                    image=image_path,
                    audio=audio_path,
                    k=int(k),
                    filters=Filters(modalities=tuple(modalities), sources=tuple(picked)),
                )
        parts = [p for p, on in (("words", query.strip()), ("image", image), ("recording", recording)) if on]
        if not hits:
            st.info(
                f"No matches for your {' + '.join(parts)}. Try other words, fewer filters, or check on the "
                "**Collections** page that the files you expect are there."
            )
            return
        label = f"“{md_escape(query.strip())}”" if query.strip() else " + ".join(parts)
        st.caption(f"{len(hits)} result{'s' if len(hits) != 1 else ''} for {label}")
        if image is not None:
            st.image(image.getvalue(), width=96, caption="your picture")
        hit_grid(hits, query, key="search", columns=3)


render()
