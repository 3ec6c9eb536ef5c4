"""PDF ingest: layout pieces (headers, tables, figures), OCR of scans, page images, and hostile PDFs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image

from loupe.app.preview import draw_box, page_preview
from loupe.errors import IngestError
from loupe.ingest import IngestOptions, prepare
from loupe.ingest.ocr import OcrLine
from loupe.ingest.pdf import iter_pdf
from loupe.types import Hit, SourceRef

A4 = (595, 842)


def src(path: Path) -> SourceRef:
    return prepare(path, IngestOptions()).source


def run(path: Path, opts: IngestOptions | None = None, ocr: object = None) -> tuple[list, dict]:  # type: ignore[type-arg]
    report: dict = {}  # type: ignore[type-arg]
    opts = opts or IngestOptions()
    segs = list(iter_pdf(path, src(path), opts, report, ocr=ocr))  # type: ignore[arg-type]
    return segs, report


def new_doc(n: int, body: str = "Body text about topic {i}. " * 10, header: bool = True) -> pymupdf.Document:
    doc = pymupdf.open()
    for i in range(n):
        page = doc.new_page(width=A4[0], height=A4[1])
        if header:
            page.insert_text((72, 30), f"ACME Port Authority - Quarterly Report - page {i + 1}", fontsize=8)
        page.insert_textbox(pymupdf.Rect(72, 100, 520, 700), body.format(i=i), fontsize=11)
    return doc


def test_running_headers_are_not_indexed(tmp_path: Path) -> None:
    doc = new_doc(4)
    doc.save(tmp_path / "h.pdf")
    segs, report = run(tmp_path / "h.pdf")
    assert report["headers_removed"] == 4 and report["pages"] == 4
    assert segs and all("ACME Port Authority" not in (s.text or "") for s in segs)
    assert {s.locator.page for s in segs} == {1, 2, 3, 4}


def test_table_becomes_a_region_with_its_box(tmp_path: Path) -> None:
    doc = new_doc(1, body="Fleet overview follows in the table below.", header=False)
    page = doc[0]
    rows = [["Crane", "Lift (t)", "Year"], ["STS-01", "65", "2011"], ["STS-07", "80", "2019"], ["STS-09", "90", "2024"]]
    x0, y0, cw, rh = 72, 300, 120, 24
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            page.insert_text((x0 + c * cw + 4, y0 + r * rh + 16), cell, fontsize=10)
    for r in range(len(rows) + 1):
        page.draw_line((x0, y0 + r * rh), (x0 + 3 * cw, y0 + r * rh))
    for c in range(4):
        page.draw_line((x0 + c * cw, y0), (x0 + c * cw, y0 + len(rows) * rh))
    doc.save(tmp_path / "t.pdf")
    segs, report = run(tmp_path / "t.pdf")
    tables = [s for s in segs if s.modality == "region" and s.meta.get("region") == "table"]
    assert report["tables"] == 1 and len(tables) == 1
    t = tables[0]
    assert "STS-07 | 80 | 2019" in (t.text or "") and (t.text or "").startswith("Crane | Lift (t) | Year")
    bx = t.locator.bbox
    assert bx is not None and abs(bx[0] - 72) < 3 and abs(bx[1] - 300) < 3 and abs(bx[3] - 396) < 3
    # Cell text is indexed once, with the table, not again as running text.
    assert all("STS-07" not in (s.text or "") for s in segs if s.modality == "text")


def test_long_table_splits_by_rows_with_header_repeated(tmp_path: Path) -> None:
    from loupe.ingest.pdf import _table_parts

    lines = ["Name | Value"] + [f"item {i} | {i * 3}" for i in range(200)]
    parts = _table_parts(lines, 300)
    assert len(parts) > 5 and all(p.startswith("Name | Value\n") for p in parts)
    assert sum(p.count("\n") for p in parts) == 200  # every body row exactly once


def test_figure_caption_region(tmp_path: Path) -> None:
    doc = new_doc(1, body="Introductory text.", header=False)
    page = doc[0]
    img = Image.new("RGB", (200, 120), "navy")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    page.insert_image(pymupdf.Rect(100, 300, 400, 480), stream=buf.getvalue())
    page.insert_text((100, 500), "Figure 2: Map of the eastern breakwater and the tern colony", fontsize=10)
    doc.save(tmp_path / "f.pdf")
    segs, report = run(tmp_path / "f.pdf")
    figs = [s for s in segs if s.meta.get("region") == "figure"]
    assert report["figures"] == 1 and len(figs) == 1
    assert "tern colony" in (figs[0].text or "")
    bx = figs[0].locator.bbox
    assert bx is not None and bx[1] <= 301 and bx[3] >= 500  # the box spans figure and caption


def test_page_images_and_preview_box(tmp_path: Path) -> None:
    doc = new_doc(2)
    doc.save(tmp_path / "p.pdf")
    media = tmp_path / "media"
    segs, _ = run(tmp_path / "p.pdf", IngestOptions(media_dir=media))
    assert segs[0].media is not None and Path(segs[0].media.path).exists()
    assert len(list(media.rglob("page-*.jpg"))) == 2 and len(list(media.rglob("thumb-*.jpg"))) == 2
    pv = page_preview(Hit(segs[0], 1.0, 1))
    assert pv is not None and pv.page == 1 and pv.box_px is not None
    with Image.open(pv.image_path) as im:
        w, h = im.size
    # 100 dpi: 595 pt → 826 px; the text box starts at x=72 pt → ~100 px.
    assert abs(w - 826) <= 2 and abs(pv.box_px[0] - 100) <= 3
    drawn = draw_box(pv)
    assert drawn.size == (w, h)


class FakeOcr:
    """Returns fixed lines in image pixels at the OCR dpi (150 by default)."""

    name = "fake-ocr"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> list[OcrLine]:
        self.calls += 1
        z = 150 / 72
        return [
            OcrLine("Scanned memo about the harbour dredging", 0.97, (72 * z, 100 * z, 400 * z, 112 * z)),
            OcrLine("noise ~~", 0.31, (72 * z, 130 * z, 120 * z, 140 * z)),
        ]


def scanned_copy(src_pdf: Path, out: Path, dpi: int = 100) -> Path:
    """Rasterise every page and rebuild an image-only PDF (no text layer)."""
    doc = pymupdf.open(src_pdf)
    scan = pymupdf.open()
    for page in doc:
        pix = page.get_pixmap(dpi=dpi)
        p = scan.new_page(width=page.rect.width, height=page.rect.height)
        p.insert_image(p.rect, stream=pix.tobytes("png"))
    scan.save(out)
    return out


def test_scanned_pages_are_ocred_with_boxes_and_confidence(tmp_path: Path) -> None:
    new_doc(2).save(tmp_path / "orig.pdf")
    scan = scanned_copy(tmp_path / "orig.pdf", tmp_path / "scan.pdf")
    ocr = FakeOcr()
    segs, report = run(scan, ocr=ocr)
    assert ocr.calls == 2 and report["pages_ocr"] == [1, 2]
    texts = [s.text for s in segs if s.modality == "text"]
    assert texts == ["Scanned memo about the harbour dredging"] * 2  # the 0.31 line is dropped
    s = segs[0]
    assert s.meta["ocr"] is True and s.meta["ocr_confidence"] == 0.97
    assert s.locator.bbox == pytest.approx((72, 100, 400, 112), abs=0.01)
    # A page with a text layer is not OCRed in auto mode.
    ocr2 = FakeOcr()
    run(tmp_path / "orig.pdf", ocr=ocr2)
    assert ocr2.calls == 0
    ocr3 = FakeOcr()
    run(tmp_path / "orig.pdf", IngestOptions(ocr="off"), ocr=ocr3)
    _, rep = run(scan, IngestOptions(ocr="off"), ocr=ocr3)
    assert ocr3.calls == 0 and rep["pages_without_text"] == [1, 2]


@pytest.mark.model
def test_real_ocr_reads_a_scanned_page(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page(width=A4[0], height=A4[1])
    page.insert_textbox(
        pymupdf.Rect(72, 100, 520, 300), "The lighthouse keeper logged 143 steps to the lamp room.", fontsize=16
    )
    doc.save(tmp_path / "o.pdf")
    scan = scanned_copy(tmp_path / "o.pdf", tmp_path / "s.pdf", dpi=150)
    segs, report = run(scan)
    assert report["pages_ocr"] == [1]
    text = " ".join(s.text or "" for s in segs).lower()
    assert "lighthouse" in text and "143" in text and segs[0].meta["ocr_confidence"] > 0.8


def test_encrypted_pdf_needs_its_password(tmp_path: Path) -> None:
    doc = new_doc(1)
    doc.save(tmp_path / "e.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, owner_pw="own", user_pw="secret")
    with pytest.raises(IngestError, match="encrypted; pass its password"):
        run(tmp_path / "e.pdf")
    segs, _ = run(tmp_path / "e.pdf", IngestOptions(pdf_password="secret"))
    assert segs and "Body text" in (segs[0].text or "")


def test_zero_page_pdf(tmp_path: Path) -> None:
    p = tmp_path / "zero.pdf"
    body = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    p.write_bytes(body + b"trailer<</Root 1 0 R>>\n%%EOF\n")
    with pytest.raises(IngestError, match="no pages"):
        run(p)


def test_truncated_pdf_keeps_what_parses(tmp_path: Path) -> None:
    new_doc(6, header=False).save(tmp_path / "full.pdf", garbage=0, deflate=False)
    data = (tmp_path / "full.pdf").read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        segs, report = run(cut)
    except IngestError as e:  # MuPDF may refuse the file outright; then the reason says so
        assert "PDF" in str(e)
        return
    assert 0 < len({s.locator.page for s in segs}) <= 6 or report["pages_failed"]


def test_giant_page_render_is_capped(tmp_path: Path) -> None:
    doc = pymupdf.open()
    page = doc.new_page(width=14400, height=14400)  # PDF's max user unit page (200 in); 20,000 pt is clamped
    page.insert_text((100, 200), "A very large drawing sheet", fontsize=48)
    doc.save(tmp_path / "big.pdf")
    media = tmp_path / "m"
    segs, _ = run(tmp_path / "big.pdf", IngestOptions(media_dir=media, max_render_px=1200))
    with Image.open(next(media.rglob("page-*.jpg"))) as im:
        assert max(im.size) <= 1200
    assert "large drawing sheet" in (segs[0].text or "")


def test_javascript_and_attachments_are_ignored_not_run(tmp_path: Path) -> None:
    doc = new_doc(1, header=False)
    doc.embfile_add("payload.txt", b"attached secret", filename="payload.txt")
    cat = doc.pdf_catalog()
    js = doc.get_new_xref()
    doc.update_object(js, "<</S/JavaScript/JS(app.alert('hi');)>>")
    doc.xref_set_key(cat, "OpenAction", f"{js} 0 R")
    doc.save(tmp_path / "js.pdf")
    segs, _ = run(tmp_path / "js.pdf")
    text = " ".join(s.text or "" for s in segs)
    assert "Body text about topic 0" in text and "attached secret" not in text


def test_two_thousand_pages_stream(tmp_path: Path) -> None:
    doc = pymupdf.open()
    for i in range(2000):
        doc.new_page(width=300, height=300).insert_text((20, 100), f"page marker {i + 1}", fontsize=9)
    doc.save(tmp_path / "long.pdf")
    it = iter_pdf(tmp_path / "long.pdf", src(tmp_path / "long.pdf"), IngestOptions(header_footer_band=0.0))
    first = next(it)  # a generator: the first page arrives before the rest is read
    assert first.locator.page == 1
    assert sum(1 for _ in it) == 1999


def test_docx_zip_bomb_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", b"<w>" + b"A" * (300 * 1024 * 1024) + b"</w>")
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(IngestError, match="refused"):
        prepare(bomb, IngestOptions())


def test_table_cell_and_figure_caption_are_found_by_search(tmp_path: Path, data_dir: Path) -> None:
    """Acceptance: a table's cell text finds the table's page and box; a caption finds its figure region."""
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe

    doc = new_doc(3, header=False)
    page = doc[1]
    rows = [["Berth", "Depth (m)", "Operator"], ["B-12", "14.5", "Kestrel Lines"], ["B-14", "11.0", "Fjord Cargo"]]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            page.insert_text((76 + c * 150, 316 + r * 24), cell, fontsize=10)
    for r in range(len(rows) + 1):
        page.draw_line((72, 300 + r * 24), (522, 300 + r * 24))
    for c in range(4):
        page.draw_line((72 + c * 150, 300), (72 + c * 150, 372))
    buf = io.BytesIO()
    Image.new("RGB", (160, 90), "darkgreen").save(buf, format="PNG")
    doc[2].insert_image(pymupdf.Rect(100, 420, 420, 600), stream=buf.getvalue())
    doc[2].insert_text((100, 620), "Figure 4: Nesting sites of the little tern on Skerry Rocks", fontsize=10)
    folder = tmp_path / "docs"
    folder.mkdir()
    doc.save(folder / "berths.pdf")
    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        assert not lp.ingest([folder]).has_failures
        table_hit = lp.search("Kestrel Lines", k=3)[0]
        fig_hit = lp.search("little tern nesting sites Skerry Rocks", k=3)[0]
    assert table_hit.segment.meta["region"] == "table" and table_hit.locator_json == 2
    assert table_hit.segment.locator.bbox == pytest.approx((72, 300, 522, 372), abs=2)
    assert fig_hit.segment.meta["region"] == "figure" and fig_hit.locator_json == 3
    assert fig_hit.segment.locator.bbox[1] == pytest.approx(420, abs=2)
