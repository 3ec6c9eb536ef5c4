"""What every Loupe page shares: the cached facade, kind error handling, safe Markdown and the hit cards.

The UI is a thin layer over :class:`app.service.Loupe` (conventions point 11). Settings are read once per run
from ``LOUPE_*`` by :func:`app.config.load_settings`; the facade is cached with ``st.cache_resource`` because it
holds the embedded index open and only one process may open a collection. Every error reaches the user as a
message that says what to do, never as a traceback.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from loupe.app.config import Settings, load_settings
from loupe.app.preview import draw_box, page_preview
from loupe.app.service import Loupe
from loupe.errors import LoupeError
from loupe.ingest.source import AUDIO_EXTS, IMAGE_EXTS, SUPPORTED_EXTS
from loupe.types import Hit, PageLoc, TimeLoc

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

log = logging.getLogger("loupe.ui")

# A snippet fills about ten lines of a result card in a three-column grid.
SNIPPET_CHARS = 320
# Widest a page preview is drawn (a readable column; wider only blurs the page image's pixels).
PREVIEW_PX = 560
# Streamlit reads a whole file into memory to serve a download; above this size the card shows the path only.
MAX_DOWNLOAD_MB = 200
# What each modality is called on screen.
MODALITY_LABELS = {
    "text": "Text",
    "page": "Pages",
    "region": "Tables and figures",
    "image": "Images",
    "video_window": "Video",
    "video_frame": "Video frames",
    "audio_clip": "Sounds",
    "speech_clip": "Speech",
}
IMAGE_TYPES = sorted(e.lstrip(".") for e in IMAGE_EXTS)
AUDIO_TYPES = sorted(e.lstrip(".") for e in AUDIO_EXTS)
INGEST_TYPES = sorted(e.lstrip(".") for e in SUPPORTED_EXTS)
BRIDGE_NOTE = (
    "Offline profile: pictures, video frames and sounds are matched through the names of what two small "
    "classifiers recognise (1,000 ImageNet objects and animals, 521 AudioSet sounds) and through any text they "
    "show; charts, diagrams, faces and scenes are outside that vocabulary. A spoken question goes through a small "
    "speech encoder: expect it to be less precise than typing the same words."
)

# Inline markup (emphasis, code, links, HTML, LaTeX, tables, Streamlit's :color[...] and :emoji:) anywhere; block
# markup (headings, quotes, lists, setext rules) only where a line starts, so file names stay readable.
_MD_INLINE = re.compile(r"([\\`*_\[\]<>~$|:])")
_MD_LINE_START = re.compile(r"^(\s*|\s*\d+)((?<=\d)[.)]|(?<!\d)[#>+\-=])", re.MULTILINE)
_WORD = re.compile(r"\w+", re.UNICODE)
_CITE = re.compile(r"\\\[(\d+)\\\]")
# Words not worth emphasising in a snippet (English function words; a short list is enough for highlighting).
_STOP = frozenset(
    "a an and are as at be by did do does for from had has have how in is it its of on or that the this to was "
    "were what when where which who why will with".split()
)


# -- text ------------------------------------------------------------------------------------------------------
def md_escape(text: str) -> str:
    """Backslash-escape the characters Markdown (and Streamlit's extensions) would interpret.

    >>> md_escape("*not bold* <b>")
    '\\\\*not bold\\\\* \\\\<b\\\\>'
    """
    text = _MD_INLINE.sub(r"\\\1", text)
    return _MD_LINE_START.sub(r"\1\\\2", text)


def emphasise(text: str, query: str | None) -> str:
    """Document text as safe Markdown with the query's words in bold (case-insensitive, whole words)."""
    words = sorted(
        {w for w in _WORD.findall((query or "").lower()) if len(w) > 1 and w not in _STOP}, key=len, reverse=True
    )
    if not words:
        return md_escape(text)
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    parts = pattern.split(text)
    # re.split with one group alternates: plain, match, plain, match, ...
    return "".join(f"**{md_escape(p)}**" if i % 2 else md_escape(p) for i, p in enumerate(parts))


def cited_markdown(text: str) -> str:
    """An answer as safe Markdown: the document text escaped, its [n] citation marks in bold."""
    return _CITE.sub(r"**[\1]**", md_escape(text)).replace("\n", "  \n")


def snippet(text: str | None, width: int = SNIPPET_CHARS) -> str:
    """Whitespace collapsed to single spaces, cut at ``width`` characters."""
    t = " ".join((text or "").split())
    return t if len(t) <= width else t[: width - 1] + "…"


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a time in a recording."""
    s = int(seconds)
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def where(hit: Hit) -> str:
    """The hit's place: "page N", "0:12–0:17", or "" for a whole file."""
    loc = hit.segment.locator
    if isinstance(loc, PageLoc):
        return f"page {loc.page}"
    if isinstance(loc, TimeLoc):
        return f"{clock(loc.start_s)}–{clock(loc.end_s)}"
    return ""


# -- the facade ----------------------------------------------------------------------------------------------
def settings_key(settings: Settings) -> str:
    """What identifies one index: location, collection, profile, engine."""
    return f"{settings.data_dir}|{settings.collection}|{settings.profile}|{settings.engine}|{settings.qdrant_url}"


@st.cache_resource(show_spinner=False, on_release=lambda lp: lp.close())
def get_loupe(key: str, _settings: Settings) -> Loupe:
    """One facade per (location, collection, profile) for the whole server; closed when the cache drops it."""
    return Loupe(_settings)


COLLECTION_CHOICE = "collection_choice"


def loupe() -> Loupe:
    """The cached facade for the settings in the environment (and the collection picked in the sidebar, if any);
    on a configuration error, a message and stop.
    """
    try:
        settings = load_settings(collection=st.session_state.get(COLLECTION_CHOICE) or None)
    except LoupeError as e:
        st.error(f"Loupe's settings are not valid: {e}")
        st.stop()
    return get_loupe(settings_key(settings), settings)


def collection_picker(lp: Loupe) -> None:
    """The sidebar's collection selector: the collections at this location, or a new name to ingest into."""
    names = sorted({*lp.collections(), lp.collection})
    st.selectbox(
        "Collection",
        names,
        index=names.index(lp.collection),
        key=COLLECTION_CHOICE,
        accept_new_options=True,
        help="Type a new name to start a collection, then add files on the Ingest page.",
    )


@st.cache_data(ttl=60, show_spinner=False)
def _stats(key: str, _lp: Loupe) -> dict[str, Any] | None:
    if _lp.collection not in _lp.collections():
        return None
    return _lp.stats()


@st.cache_data(ttl=60, show_spinner=False)
def _sources(key: str, _lp: Loupe) -> dict[str, int]:
    return _lp.sources() if _lp.collection in _lp.collections() else {}


def stats(lp: Loupe) -> dict[str, Any] | None:
    """The collection's stats (cached a minute; None when it does not exist). Errors become a message + stop."""
    try:
        return _stats(settings_key(lp.settings), lp)
    except LoupeError as e:
        locked_message(e)
        st.stop()


def sources(lp: Loupe) -> dict[str, int]:
    """Every source in the collection with its point count (cached a minute)."""
    return _sources(settings_key(lp.settings), lp)


def changed() -> None:
    """Forget cached stats and source lists after an ingest, a delete or a rebuild."""
    _stats.clear()
    _sources.clear()


def locked_message(e: LoupeError) -> None:
    """An error opening the collection; when another process holds it, say how to share it."""
    st.error(str(e))
    if "another Loupe process" in str(e):
        st.info(
            "The built-in index lets one process open a collection at a time. Ingest from this UI's **Ingest** "
            "page instead of the command line, or stop the other process and press *Try again*. To share one "
            "collection between several programs, run a Qdrant server and set `LOUPE_QDRANT_URL`."
        )
    if st.button("Try again", key="retry_open"):
        changed()
        st.rerun()


def empty_state(lp: Loupe) -> None:
    """What an empty collection says: where to put files in."""
    st.info(
        f"Collection `{lp.collection}` is empty: nothing has been ingested yet. Add files on the **Ingest** page, "
        f"or run `loupe ingest PATH --collection {lp.collection}` while this UI is stopped."
    )
    st.page_link("views/ingest.py", label="Go to Ingest", icon=":material/upload:")


def open_collection(title: str) -> tuple[Loupe, dict[str, Any]] | None:
    """A page's title, the facade and the collection's stats; None (after the empty-state message) when the
    collection holds nothing yet.
    """
    st.title(title)
    lp = loupe()
    info = stats(lp)
    if not info or not info["points"]:
        empty_state(lp)
        return None
    return lp, info


@contextlib.contextmanager
def kindly(action: str) -> Iterator[None]:
    """Run a user action; a LoupeError becomes its message, anything else a short note (details in the log).

    Streamlit's own control flow (``st.stop``, ``st.rerun``) derives from BaseException and passes through.
    """
    try:
        yield
    except LoupeError as e:
        st.error(f"{action} did not work: {e}")
    except Exception as e:
        log.exception("%s failed", action)
        st.error(
            f"{action} failed unexpectedly ({type(e).__name__}: {snippet(str(e), 300)}). "
            "The details are in the server's log; please report them."
        )


@contextlib.contextmanager
def upload_to_temp(uploaded: Any) -> Iterator[str]:
    """An uploaded file (Streamlit ``UploadedFile``) as a temporary file path, removed afterwards."""
    suffix = Path(uploaded.name).suffix.lower() or ".bin"
    fd, name = tempfile.mkstemp(prefix="loupe-query-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(uploaded.getvalue())
        yield name
    finally:
        Path(name).unlink(missing_ok=True)


def readable_image(uploaded: Any) -> bool:
    """True when an uploaded file decodes as a picture (checked before it becomes a query)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(uploaded.getvalue())) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # PIL's decoders raise all of these
        return False
    return True


# -- hit cards -----------------------------------------------------------------------------------------------
def _open_source(uri: str, key: str) -> None:
    p = Path(uri)
    try:
        size = p.stat().st_size
    except OSError:
        st.caption("The source file is no longer at this path.")
        return
    if size > MAX_DOWNLOAD_MB * 1024 * 1024:
        return
    st.download_button(
        "Open source",
        data=p.read_bytes,  # a callable: read only when clicked
        file_name=p.name,
        key=key,
        icon=":material/open_in_new:",
    )


def crop_around(image: PILImage, box: tuple[int, int, int, int], margin: float = 0.08) -> PILImage:
    """The full-width band of a page around a box: the box plus ``margin`` of the page height above and below,
    at least as tall as a third of the page width (so a one-line hit still shows its neighbourhood).
    """
    w, h = image.size
    pad = int(margin * h)
    top, bottom = max(0, box[1] - pad), min(h, box[3] + pad)
    short = int(w / 3) - (bottom - top)
    if short > 0:
        top, bottom = max(0, top - short // 2), min(h, bottom + short - short // 2)
    return image.crop((0, top, w, bottom))


def show_preview(hit: Hit) -> None:
    """The hit's preview: page band with the box, video at the moment, audio player or image (text: nothing)."""
    seg = hit.segment
    media = seg.media
    loc = seg.locator
    page = page_preview(hit)
    if page is not None:
        full = draw_box(page)
        if page.box_px is None:
            st.image(full, caption=f"page {page.page}")
        else:
            crop = crop_around(full, page.box_px)
            crop.thumbnail((PREVIEW_PX, PREVIEW_PX * 4))  # in place; st.image then fits it to narrow columns
            st.image(crop, caption=f"page {page.page}, the matching passage")
            with st.popover("Whole page", icon=":material/description:"):
                st.image(full, caption=f"page {page.page}")
    elif isinstance(loc, TimeLoc) and seg.source.mime.startswith("video") and Path(seg.source.uri).is_file():
        thumb = seg.meta.get("thumbnail") or (media.path if media is not None and media.kind == "image" else None)
        if thumb and Path(str(thumb)).is_file():
            st.image(str(thumb), width=160, caption=f"frame at {clock(loc.start_s)}")
        st.video(seg.source.uri, start_time=float(loc.start_s))
    elif media is not None and media.kind == "audio" and Path(media.path).is_file():
        st.audio(media.path)  # the stored clip is exactly the hit's time range
    elif media is not None and media.kind == "image" and Path(media.path).is_file():
        st.image(media.path)
    elif seg.modality == "image" and Path(seg.source.uri).is_file():
        st.image(seg.source.uri)


def hit_card(hit: Hit, query: str | None, key: str, *, wide: bool = False) -> None:
    """One result: rank, file, place, kind, score, preview, snippet, path and an "Open source" button.

    ``wide`` puts the preview beside the text (for full-width places such as citations) instead of above it.
    """
    seg = hit.segment
    with st.container(border=True):
        head = [f"**{hit.rank}.** {md_escape(Path(seg.source.uri).name)}"]
        place = where(hit)
        if place:
            head.append(place)
        head += [f"`{MODALITY_LABELS.get(seg.modality, seg.modality)}`", f"score {hit.score:.4f}"]
        st.markdown(" · ".join(head))
        left, right = st.columns([2, 3]) if wide else (st.container(), st.container())
        with left:
            show_preview(hit)
        with right:
            if seg.text:
                st.markdown(emphasise(snippet(seg.text), query))
            st.caption(md_escape(seg.source.uri))
            _open_source(seg.source.uri, key=f"open-{key}")


def hit_grid(hits: list[Hit], query: str | None, key: str, columns: int = 2) -> None:
    """Hits as a grid of cards, ``columns`` per row, in rank order."""
    for row in range(0, len(hits), columns):
        cols = st.columns(columns)
        for col, hit in zip(cols, hits[row : row + columns], strict=False):
            with col:
                hit_card(hit, query, key=f"{key}-{hit.rank}")
