"""PDFs through PyMuPDF: per page, text blocks with boxes in reading order, chunked, with page numbers.

Full layout (regions, tables, OCR of scans, page images) comes with the documents issue; pages with no
text layer are counted and reported, not silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import IngestError
from app.types import PageLoc, Segment, SourceRef, segment_id
from ingest.chunking import Block, chunk_blocks, make_splitter
from ingest.options import IngestOptions


def _open(path: Path, opts: IngestOptions) -> Any:
    import pymupdf

    try:
        doc = pymupdf.open(str(path), filetype="pdf")
    except Exception as e:  # pymupdf raises FileDataError / RuntimeError for damaged files
        raise IngestError(str(path), f"cannot open PDF: {e}") from e
    if doc.needs_pass and not (opts.pdf_password and doc.authenticate(opts.pdf_password)):
        doc.close()
        raise IngestError(
            str(path), "the PDF is encrypted; pass its password (pdf_password in the config file) to ingest it"
        )
    if doc.page_count == 0:
        doc.close()
        raise IngestError(str(path), "the PDF has no pages (it may be truncated)")
    return doc


def iter_pdf(
    path: Path, source: SourceRef, opts: IngestOptions, report: dict[str, Any] | None = None
) -> Iterator[Segment]:
    """Yield one ``text`` segment per chunk of each page, located by page number and box.

    ``report`` (optional) receives counts: pages, pages_without_text, pages_failed (page numbers).
    """
    doc = _open(path, opts)
    splitter = make_splitter(opts.chunk_chars, opts.chunk_overlap)
    failed: list[int] = []
    empty: list[int] = []
    total = doc.page_count
    n_pages = min(total, opts.max_pdf_pages)
    try:
        for pno in range(n_pages):
            try:
                page = doc.load_page(pno)
                # sort=True gives reading order (top-left to bottom-right); block type 0 is text.
                raw = page.get_text("blocks", sort=True)
            except Exception:  # a damaged page: keep the rest of the document
                failed.append(pno + 1)
                continue
            blocks = [Block(str(b[4]), (float(b[0]), float(b[1]), float(b[2]), float(b[3]))) for b in raw if b[6] == 0]
            chunks = chunk_blocks(blocks, splitter)
            if not chunks:
                empty.append(pno + 1)
                continue
            for part, ch in enumerate(chunks):
                loc = PageLoc(pno + 1, ch.bbox)
                yield Segment(
                    id=segment_id(source, "text", loc, part),
                    source=source,
                    modality="text",
                    locator=loc,
                    text=ch.text,
                    meta={"chunk": part, "page_chunks": len(chunks)},
                )
    finally:
        doc.close()
    if report is not None:
        report.update(
            pages=n_pages,
            pages_without_text=empty,
            pages_failed=failed,
            pages_over_limit=total - n_pages,
        )
