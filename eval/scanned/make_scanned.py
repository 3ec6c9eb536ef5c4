"""Build the scanned-copy check of the documents issue: rasterise dev-set PDFs and rebuild image-only PDFs.

Writes, next to this file:
- ``original/corpus/pdf/*.pdf``: copies of the chosen dev-set PDFs (text layer);
- ``scanned/corpus/pdf/*.pdf``: the same pages rasterised at 150 dpi (grey, JPEG) with no text layer;
- ``original/queries.jsonl`` and ``scanned/queries.jsonl``: the dev-set text->pdf_page queries on those files.
Then ``loupe eval`` on each folder compares page R@1 with OCR against the text layer.

    python eval/scanned/make_scanned.py
    loupe eval --queries eval/scanned/original/queries.jsonl --corpus eval/scanned/original/corpus
    loupe eval --queries eval/scanned/scanned/queries.jsonl --corpus eval/scanned/scanned/corpus
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pymupdf

HERE = Path(__file__).resolve().parent
DEVSET = HERE.parent / "devset"
# Small PDFs of the dev set (56 pages, 29 queries): OCR costs seconds per page on 2 cores.
CHOSEN = ["latex-usrguide.pdf", "latex-grfguide.pdf", "ltnews35.pdf", "lppl-1.3c.pdf", "octave-refcard-a4.pdf"]
SCAN_DPI = 150


def rasterise(src: Path, dst: Path, dpi: int = SCAN_DPI) -> None:
    """Every page as a greyscale JPEG image filling an otherwise empty page of the same size."""
    doc = pymupdf.open(src)
    out = pymupdf.open()
    for page in doc:
        pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
        new = out.new_page(width=page.rect.width, height=page.rect.height)
        new.insert_image(new.rect, stream=pix.tobytes("jpg", jpg_quality=85))
    dst.parent.mkdir(parents=True, exist_ok=True)
    out.save(dst, garbage=3, deflate=True)


def main() -> None:
    """Write both corpora and both query files."""
    queries = [json.loads(line) for line in (DEVSET / "queries.jsonl").read_text().splitlines() if line.strip()]
    wanted = {f"corpus/pdf/{name}" for name in CHOSEN}
    subset = []
    for q in queries:
        if q["modality"] == "text->pdf_page" and q["target_file"] in wanted:
            q = dict(q, also_relevant=[a for a in q.get("also_relevant") or [] if a["file"] in wanted])
            subset.append(q)
    for kind in ("original", "scanned"):
        folder = HERE / kind
        shutil.rmtree(folder / "corpus", ignore_errors=True)
        for name in CHOSEN:
            src, dst = DEVSET / "corpus" / "pdf" / name, folder / "corpus" / "pdf" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if kind == "original":
                shutil.copyfile(src, dst)
            else:
                rasterise(src, dst)
        (folder / "queries.jsonl").write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in subset))
    print(f"{len(subset)} queries over {len(CHOSEN)} PDFs -> {HERE}/original and {HERE}/scanned")


if __name__ == "__main__":
    main()
