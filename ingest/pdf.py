"""PDFs through PyMuPDF: per page text blocks with boxes in reading order, tables, figure captions, OCR
where there is no text layer, and a rendered page image in the media store.

Segments per page:
- ``text``: chunks of the page's running text, each with the union box of its blocks (OCR lines on scans);
- ``region``: one per table (rows as ``a | b | c`` lines; long tables split by rows, header repeated) and
  one per figure that has a caption (the caption text, boxed around figure and caption).
Running headers and footers (the same text in the top/bottom band of most pages) are not indexed.
Every segment of a page points at the page image, so a hit can be shown with its box highlighted.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from loupe.errors import IngestError
from loupe.ingest.chunking import Block, chunk_blocks, clean_text, make_splitter
from loupe.ingest.ocr import OcrEngine, default_ocr
from loupe.ingest.options import IngestOptions, media_folder
from loupe.types import MediaRef, PageLoc, Segment, SourceRef, segment_id

Box = tuple[float, float, float, float]
_CAPTION = re.compile(r"^\s*(fig(ure)?|table|tab|chart|plate|illustration|abbildung|tabelle)\.?\s*[\dIVXivx]+", re.I)
_DIGITS = re.compile(r"\d+")


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


def _norm(text: str) -> str:
    return _DIGITS.sub("#", " ".join(text.lower().split()))


def _band_blocks(page: Any, band: float) -> list[tuple[str, Box]]:
    h = float(page.rect.height)
    out = []
    for b in page.get_text("blocks", sort=True):
        if b[6] != 0:
            continue
        box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
        if box[3] <= h * band or box[1] >= h * (1 - band):
            out.append((str(b[4]), box))
    return out


def running_headers(doc: Any, n_pages: int, band: float) -> set[str]:
    """Normalised texts (digits as #) found in the top/bottom band of at least half the pages (≥ 2 pages)."""
    if n_pages < 2 or band <= 0:
        return set()
    counts: Counter[str] = Counter()
    for pno in range(n_pages):
        try:
            texts = {_norm(t) for t, _ in _band_blocks(doc.load_page(pno), band)}
        except Exception:  # a damaged page is reported by the main pass
            continue
        counts.update(t for t in texts if t)
    need = max(2, math.ceil(0.5 * n_pages))
    return {t for t, c in counts.items() if c >= need}


def _table_lines(table: Any, words: list[tuple[float, float, float, float, str]]) -> list[str]:
    """One ``a | b | c`` line per row, cell text rebuilt from the words whose centre lies in the cell.

    PyMuPDF's own ``Table.extract`` treats hyphens in cells as line-break hyphenation ("STS-07" came out as
    "STS 07 -"), so the words are gathered from the page instead.
    """
    lines = []
    for row in table.rows:
        cells = []
        for cell in row.cells:
            if cell is None:
                cells.append("")
                continue
            x0, y0, x1, y1 = cell
            inside = [w for w in words if x0 <= (w[0] + w[2]) / 2 <= x1 and y0 <= (w[1] + w[3]) / 2 <= y1]
            inside.sort(key=lambda w: (round(w[1]), w[0]))
            cells.append(" ".join(w[4] for w in inside))
        if any(cells):
            lines.append(" | ".join(cells))
    return lines


def _table_parts(lines: list[str], max_chars: int) -> list[str]:
    """Split a table's lines into parts that fit a chunk, repeating the header line in each part."""
    if not lines:
        return []
    whole = "\n".join(lines)
    if len(whole) <= max_chars or len(lines) < 3:
        return [whole]
    header, body = lines[0], lines[1:]
    parts, cur = [], [header]
    for line in body:
        if len(cur) > 1 and sum(len(x) + 1 for x in cur) + len(line) > max_chars:
            parts.append("\n".join(cur))
            cur = [header]
        cur.append(line)
    parts.append("\n".join(cur))
    return parts


def _box(v: Any) -> Box:
    return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))


def _inside(inner: Box, outer: Box, slack: float = 2.0) -> bool:
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


def _union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _render(page: Any, dpi: int, max_px: int) -> Any:
    w, h = float(page.rect.width), float(page.rect.height)
    zoom = min(dpi / 72.0, max_px / max(w, h, 1.0))
    import pymupdf

    return page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False), zoom


def _ocr_blocks(page: Any, opts: IngestOptions, ocr: OcrEngine) -> list[tuple[Block, float]]:
    pix, zoom = _render(page, opts.ocr_dpi, opts.max_render_px * 2)
    img = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.h, pix.w, pix.n)[:, :, :3]
    out = []
    for line in ocr(np.ascontiguousarray(img)):
        if line.score < opts.ocr_min_score or not line.text.strip():
            continue
        x0, y0, x1, y1 = (v / zoom for v in line.box)
        out.append((Block(clean_text(line.text), (x0, y0, x1, y1)), line.score))
    return out


def _save_page_image(page: Any, pno: int, source: SourceRef, opts: IngestOptions) -> MediaRef | None:
    if opts.media_dir is None:
        return None
    folder = media_folder(opts.media_dir, source.sha256)
    image = folder / f"page-{pno + 1:05d}.jpg"
    thumb = folder / f"thumb-{pno + 1:05d}.jpg"
    if not image.exists():
        folder.mkdir(parents=True, exist_ok=True)
        pix, _ = _render(page, opts.render_dpi, opts.max_render_px)
        tmp = image.with_suffix(".tmp")
        tmp.write_bytes(pix.tobytes("jpg", jpg_quality=80))
        tmp.replace(image)
        small, _ = _render(page, 30, 256)
        thumb.write_bytes(small.tobytes("jpg", jpg_quality=75))
    return MediaRef(path=str(image), kind="image")


def iter_pdf(
    path: Path,
    source: SourceRef,
    opts: IngestOptions,
    report: dict[str, Any] | None = None,
    ocr: OcrEngine | None = None,
) -> Iterator[Segment]:
    """Yield text and region segments page by page (the document is never held as a whole).

    ``report`` (optional) receives counts: pages, pages_ocr, pages_without_text, pages_failed, tables,
    figures, headers_removed.
    """
    doc = _open(path, opts)
    splitter = make_splitter(opts.chunk_chars, opts.chunk_overlap)
    total = doc.page_count
    n_pages = min(total, opts.max_pdf_pages)
    stats: dict[str, Any] = {
        "pages": n_pages,
        "pages_over_limit": total - n_pages,
        "pages_ocr": [],
        "pages_without_text": [],
        "pages_failed": [],
        "tables": 0,
        "figures": 0,
        "headers_removed": 0,
    }
    try:
        headers = running_headers(doc, n_pages, opts.header_footer_band)
        for pno in range(n_pages):
            try:
                page = doc.load_page(pno)
                yield from _page_segments(page, pno, source, opts, splitter, headers, stats, ocr)
            except IngestError:
                raise
            except Exception:  # a damaged page: keep the rest of the document
                stats["pages_failed"].append(pno + 1)
    finally:
        doc.close()
        if report is not None:
            report.update(stats)


def _page_segments(
    page: Any,
    pno: int,
    source: SourceRef,
    opts: IngestOptions,
    splitter: Any,
    headers: set[str],
    stats: dict[str, Any],
    ocr: OcrEngine | None,
) -> Iterator[Segment]:
    media = _save_page_image(page, pno, source, opts)
    page_meta = {"page_size": [float(page.rect.width), float(page.rect.height)]}
    h = float(page.rect.height)
    band = opts.header_footer_band

    blocks: list[Block] = []
    for b in page.get_text("blocks", sort=True):
        if b[6] != 0 or not str(b[4]).strip():
            continue
        box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
        in_band = box[3] <= h * band or box[1] >= h * (1 - band)
        if in_band and _norm(str(b[4])) in headers:
            stats["headers_removed"] += 1
            continue
        blocks.append(Block(clean_text(str(b[4])), box))

    regions: list[tuple[str, Box, dict[str, Any]]] = []
    # Tables: only where the page draws lines (ruled tables); text inside a table is indexed with the table.
    if opts.tables and blocks and page.get_cdrawings():
        words = [
            (float(w[0]), float(w[1]), float(w[2]), float(w[3]), clean_text(str(w[4]))) for w in page.get_text("words")
        ]
        for t_i, table in enumerate(page.find_tables().tables):
            tbox = _box(table.bbox)
            lines = _table_lines(table, words)
            if len(lines) < 2:
                continue
            stats["tables"] += 1
            for part_i, table_text in enumerate(_table_parts(lines, opts.chunk_chars)):
                regions.append((table_text, tbox, {"region": "table", "table": t_i, "table_part": part_i}))
            blocks = [bl for bl in blocks if bl.bbox is None or not _inside(bl.bbox, tbox)]

    # Figures: image areas with a caption next to them ("Figure 3 …", "Table 2 …").
    images = page.get_image_info()
    for f_i, info in enumerate(images):
        fbox = _box(info["bbox"])
        if (fbox[2] - fbox[0]) * (fbox[3] - fbox[1]) < 2500:  # icons and bullets
            continue
        caption = _nearest_caption(blocks, fbox)
        if caption is not None and caption.bbox is not None:
            stats["figures"] += 1
            regions.append((caption.text.strip(), _union(fbox, caption.bbox), {"region": "figure", "figure": f_i}))

    ocr_scores: list[float] = []
    text_chars = sum(len(b.text.strip()) for b in blocks)
    scanned = text_chars < opts.ocr_min_chars and bool(images)
    if opts.ocr == "on" or (opts.ocr == "auto" and scanned):
        got = _ocr_blocks(page, opts, ocr or default_ocr())
        stats["pages_ocr"].append(pno + 1)
        if got:
            ocr_blocks = [b for b, _ in got]
            ocr_scores = [s for _, s in got]
            blocks = ocr_blocks if opts.ocr == "on" or text_chars < opts.ocr_min_chars else blocks
    chunks = chunk_blocks(blocks, splitter)
    if not chunks and not regions:
        stats["pages_without_text"].append(pno + 1)
        return
    for part, ch in enumerate(chunks):
        loc = PageLoc(pno + 1, ch.bbox)
        meta: dict[str, Any] = {**page_meta, "chunk": part, "page_chunks": len(chunks)}
        if ocr_scores:
            meta["ocr"] = True
            meta["ocr_confidence"] = round(float(np.mean(ocr_scores)), 4)
        yield Segment(segment_id(source, "text", loc, part), source, "text", loc, ch.text, media, meta)
    for r_i, (text, box, extra) in enumerate(regions):
        loc = PageLoc(pno + 1, box)
        yield Segment(
            segment_id(source, "region", loc, r_i), source, "region", loc, text, media, {**page_meta, **extra}
        )


def _nearest_caption(blocks: list[Block], fbox: Box, gap: float = 40.0) -> Block | None:
    best: tuple[float, Block] | None = None
    for b in blocks:
        if b.bbox is None or not _CAPTION.match(b.text):
            continue
        below = b.bbox[1] - fbox[3]
        above = fbox[1] - b.bbox[3]
        dist = below if below >= -2 else above
        overlap_x = min(b.bbox[2], fbox[2]) - max(b.bbox[0], fbox[0])
        if -2 <= dist <= gap and overlap_x > 0 and (best is None or dist < best[0]):
            best = (dist, b)
    return None if best is None else best[1]
