"""Loupe's Streamlit page: search a collection and ask questions with cited answers.

A thin layer over :class:`app.service.Loupe` (conventions point 11): settings come from ``LOUPE_*`` through
:func:`app.config.load_settings` once per run, the facade is cached with ``st.cache_resource`` (it holds the
embedded index open, and only one process may open a collection), and every :class:`LoupeError` is shown
as a message, never a traceback. Start it with ``loupe ui``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from app.config import Settings, load_settings
from app.errors import LoupeError
from app.generate import Answer
from app.preview import draw_box, page_preview
from app.retrieve import Filters
from app.service import Loupe
from app.types import Hit, PageLoc, TimeLoc

# unstructured prints an advertisement on import unless told not to (entry point: env may be set here).
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # see app/cli.py: avoids stalls on a busy CPU

EMPTY = "Nothing ingested yet — run `loupe ingest PATH`"
SNIPPET_CHARS = 500
# Inline markup (emphasis, code, links, HTML, LaTeX, tables, Streamlit's :color[...] and :emoji:) anywhere; block
# markup (headings, quotes, lists, setext rules) only where a line starts, so file names stay readable.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>~$|:])")
_MD_LINE_START = re.compile(r"^(\s*|\s*\d+)((?<=\d)[.)]|(?<!\d)[#>+\-=])", re.MULTILINE)
_WORD = re.compile(r"\w+", re.UNICODE)


def md_escape(text: str) -> str:
    """Backslash-escape the characters Markdown (and Streamlit's extensions) would interpret."""
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_LINE_START.sub(r"\1\\\2", text)


def emphasise(text: str, query: str) -> str:
    """Document text as safe Markdown with the query's words in bold (case-insensitive, whole words)."""
    words = sorted({w for w in _WORD.findall(query.lower()) if len(w) > 1}, key=len, reverse=True)
    if not words:
        return md_escape(text)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    parts = pattern.split(text)
    # re.split with one group alternates: plain, match, plain, match, ...
    return "".join(f"**{md_escape(p)}**" if i % 2 else md_escape(p) for i, p in enumerate(parts))


def snippet(text: str | None, width: int = SNIPPET_CHARS) -> str:
    """Whitespace collapsed to single spaces, cut at ``width`` characters."""
    t = " ".join((text or "").split())
    return t if len(t) <= width else t[: width - 1] + "…"


def where(hit: Hit) -> str:
    """The hit's place: "page N", "start–end s", or "" for a whole file."""
    loc = hit.segment.locator
    if isinstance(loc, PageLoc):
        return f"page {loc.page}"
    if isinstance(loc, TimeLoc):
        return f"{loc.start_s:.1f}–{loc.end_s:.1f} s"
    return ""


@st.cache_resource(show_spinner=False, on_release=lambda lp: lp.close())
def get_loupe(key: str, _settings: Settings) -> Loupe:
    """One facade per (location, collection, profile) for the whole server; closed when the cache drops it."""
    return Loupe(_settings)


def sidebar(lp: Loupe, stats: dict[str, Any] | None) -> list[str]:
    """Collection name, its stats and the modality filter; returns the modalities picked ([] = all)."""
    with st.sidebar:
        st.header(f"Collection `{lp.collection}`")
        st.caption(md_escape(str(lp.settings.data_dir)))
        if stats is None:
            st.write("Empty: nothing ingested yet.")
            return []
        st.metric("Points", stats["points"])
        st.metric("Sources", stats["sources"])
        st.markdown("\n".join(f"- {m}: {n}" for m, n in stats["per_modality"].items()))
        profile = stats["profile"]
        models = ", ".join(f"{k} = `{v}`" for k, v in sorted(profile.get("model_ids", {}).items()))
        st.markdown(f"**Profile** `{profile.get('name', '?')}`  \n{models}")
        return st.multiselect("Modalities", list(stats["per_modality"]), key="modalities", placeholder="all")


def show_hit(hit: Hit, query: str) -> None:
    """One result card: rank, file, place, modality, score, snippet (and the image for image hits)."""
    seg = hit.segment
    with st.container(border=True):
        place = where(hit)
        head = [f"**{hit.rank}.** {md_escape(Path(seg.source.uri).name)}"]
        if place:
            head.append(place)
        head += [f"`{seg.modality}`", f"score {hit.score:.4f}"]
        st.markdown(" · ".join(head))
        st.caption(md_escape(seg.source.uri))
        preview = page_preview(hit)
        if preview is not None:
            # Page hits: the page image with the hit's box, beside the snippet.
            left, right = st.columns([2, 3])
            left.image(draw_box(preview), caption=f"page {preview.page}")
            if seg.text:
                right.markdown(emphasise(snippet(seg.text), query))
            return
        if seg.modality == "image" and seg.media is not None and Path(seg.media.path).is_file():
            st.image(seg.media.path)
        if seg.text:
            st.markdown(emphasise(snippet(seg.text), query))


def search_tab(lp: Loupe, filters: Filters) -> None:
    """The search box, the k slider and the result cards."""
    query = st.text_input("Search", key="query", placeholder="words, a phrase or a question")
    k = st.slider("Results", min_value=1, max_value=50, value=10, key="k")
    if not query.strip():
        return
    try:
        hits = lp.search(query, k=k, filters=filters)
    except LoupeError as e:
        st.error(str(e))
        return
    if not hits:
        st.info("No matches")
    for hit in hits:
        show_hit(hit, query)


def show_answer(answer: Answer) -> None:
    """The answer's label, its text and the numbered citations."""
    if answer.label:
        st.info(answer.label)
    st.markdown(md_escape(answer.text).replace("\n", "  \n"))
    for c in answer.citations:
        place = where(c.hit)
        name = md_escape(Path(c.hit.segment.source.uri).name)
        st.markdown(f"**[{c.n}]** {name}{' — ' + place if place else ''}")
        st.caption(md_escape(c.hit.segment.source.uri))


def ask_tab(lp: Loupe, filters: Filters) -> None:
    """A question box; the answer cites the passages it was drawn from."""
    question = st.text_input("Question", key="question", placeholder="ask something the files can answer")
    if not question.strip():
        return
    try:
        answer, _hits = lp.ask(question, filters=filters)
    except LoupeError as e:
        st.error(str(e))
        return
    show_answer(answer)


def main() -> None:
    """Build the page."""
    st.set_page_config(page_title="Loupe", layout="wide")
    st.title("Loupe")
    try:
        settings = load_settings()
        key = f"{settings.data_dir}|{settings.collection}|{settings.profile}|{settings.engine}|{settings.qdrant_url}"
        lp = get_loupe(key, settings)
        stats = lp.stats() if lp.collection in lp.collections() else None
    except LoupeError as e:
        st.error(str(e))
        return
    modalities: Sequence[str] = sidebar(lp, stats)
    if stats is None or not stats["points"]:
        st.info(EMPTY)
        return
    filters = Filters(modalities=tuple(modalities))
    search, ask = st.tabs(["Search", "Ask"])
    with search:
        search_tab(lp, filters)
    with ask:
        ask_tab(lp, filters)


main()
