"""Text, Markdown, HTML and Office files through ``unstructured`` (no ``[pdf]`` extra).

unstructured 0.27 loads spaCy's ``en_core_web_sm`` on first use and downloads it when missing, which fails
offline (../shared/stack-notes.md). We hand it a blank English pipeline with a rule-based sentencizer: the
partitioners only need sentence and word boundaries, and this needs no download.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loupe.errors import IngestError
from loupe.ingest.chunking import Block, chunk_blocks, make_splitter
from loupe.ingest.options import IngestOptions
from loupe.types import PageLoc, Segment, SourceRef, segment_id


@functools.cache
def use_offline_nlp() -> None:
    """Replace unstructured's spaCy loader with a blank pipeline (idempotent)."""
    import spacy
    import unstructured.nlp.tokenize as tok

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    tok._get_nlp = lambda: nlp  # type: ignore[assignment]  # looked up at call time


def _partitioner(ext: str) -> Callable[..., list[Any]]:
    if ext in {".md", ".markdown"}:
        from unstructured.partition.md import partition_md

        return partition_md
    if ext in {".html", ".htm", ".xhtml"}:
        from unstructured.partition.html import partition_html

        return partition_html
    if ext == ".docx":
        from unstructured.partition.docx import partition_docx

        return partition_docx
    if ext == ".pptx":
        from unstructured.partition.pptx import partition_pptx

        return partition_pptx
    if ext == ".xlsx":
        from unstructured.partition.xlsx import partition_xlsx

        return partition_xlsx
    if ext == ".odt":  # converted through pandoc (the pypandoc-binary wheel ships it)
        from unstructured.partition.odt import partition_odt

        return partition_odt
    if ext == ".rtf":
        from unstructured.partition.rtf import partition_rtf

        return partition_rtf
    if ext == ".eml":
        from unstructured.partition.email import partition_email

        return partition_email
    from unstructured.partition.text import partition_text

    return partition_text


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8: Latin-1 maps every byte, so nothing is lost; mostly-undecodable files were refused earlier.
        return data.decode("latin-1")


def iter_office(path: Path, source: SourceRef, opts: IngestOptions) -> Iterator[Segment]:
    """Partition the file, group elements by page (slide, sheet) where the format has pages, and chunk."""
    use_offline_nlp()
    ext = path.suffix.lower()
    part_fn = _partitioner(ext)
    try:
        if part_fn.__name__ in {"partition_text", "partition_md", "partition_html"}:
            elements = part_fn(text=_read_text(path))
        else:
            elements = part_fn(filename=str(path))
    except IngestError:
        raise
    except Exception as e:  # unstructured raises many types for damaged files
        raise IngestError(str(path), f"cannot parse {ext or 'file'}: {type(e).__name__}: {e}") from e

    pages: dict[int | None, list[Block]] = {}
    for el in elements:
        text = str(getattr(el, "text", "") or "").strip()
        if not text:
            continue
        page = getattr(getattr(el, "metadata", None), "page_number", None)
        pages.setdefault(page if isinstance(page, int) else None, []).append(Block(text))
    splitter = make_splitter(opts.chunk_chars, opts.chunk_overlap)
    for page, blocks in pages.items():
        loc = PageLoc(page) if page is not None else None
        chunks = chunk_blocks(blocks, splitter)
        for part, ch in enumerate(chunks):
            yield Segment(
                id=segment_id(source, "text", loc, part),
                source=source,
                modality="text",
                locator=loc,
                text=ch.text,
                meta={"chunk": part},
            )
