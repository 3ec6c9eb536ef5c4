"""Make the dev set's image queries (image->image, image->pdf_page, image->video_moment) from its own corpus.

Each query picture is a *different* rendering of a corpus item than the one ingested, as an analyst's would be:
    - image->image: the corpus picture cropped to its central 80 %, shrunk to 70 % and saved as JPEG (quality 70);
    - image->pdf_page: the top 60 % of a PDF page rendered at 90 dpi (a photo-like crop of the page);
    - image->video_moment: a frame grabbed by ffmpeg at 480 px wide in the middle of a scene (frames are ingested
      at 224 px).
Writes eval/devset/query-images/*.jpg and prints the JSONL lines (appended to queries.jsonl by --append).

    python eval/devset/make_image_queries.py --append
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import pymupdf
from PIL import Image

HERE = Path(__file__).resolve().parent
OUT = HERE / "query-images"

IMAGES = [
    "desktop-base-spacefun-earth.png",
    "desktop-base-softwaves-grub.png",
    "maxima-draw_tube.png",
    "maxima-worldmap_make_poly_continent.png",
    "octave-polar.png",
    "octave-voronoi.png",
]
# (pdf, 1-based page)
PAGES = [("latex-grfguide.pdf", 1), ("ltnews35.pdf", 1), ("octave-refcard-a4.pdf", 1), ("natbib.pdf", 2)]
# (video, second, scene start, scene end) from media-manifest.json
FRAMES = [
    ("harbour-tour.mp4", 50, 44, 58),
    ("harbour-tour.mp4", 76, 70, 84),
    ("pancake-recipe.mp4", 33, 28, 38),
    ("solar-lecture.mp4", 28, 22, 34),
    ("solar-lecture.mp4", 64, 58, 70),
]


def query(qid: str, image: str, target: str, locator: object, modality: str) -> dict[str, object]:
    """One JSONL entry in the dev set's format."""
    return {
        "id": qid,
        "query_text": None,
        "query_audio": None,
        "query_image": image,
        "target_file": target,
        "target_locator": locator,
        "modality": modality,
        "also_relevant": [],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--append", action="store_true", help="append the queries to queries.jsonl (once)")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    out: list[dict[str, object]] = []
    for i, name in enumerate(IMAGES, 1):
        with Image.open(HERE / "corpus" / "images" / name) as im:
            rgb = im.convert("RGB")
            w, h = rgb.size
            crop = rgb.crop((w // 10, h // 10, w - w // 10, h - h // 10))
            crop = crop.resize(
                (max(1, int(crop.width * 0.7)), max(1, int(crop.height * 0.7))), Image.Resampling.LANCZOS
            )
            dst = OUT / f"img-{i:02d}.jpg"
            crop.save(dst, quality=70)
        out.append(
            query(f"imgq-img-{i:02d}", f"query-images/{dst.name}", f"corpus/images/{name}", None, "image->image")
        )
    for i, (pdf, page) in enumerate(PAGES, 1):
        doc = pymupdf.open(HERE / "corpus" / "pdf" / pdf)
        p = doc[page - 1]
        r = p.rect
        pix = p.get_pixmap(dpi=90, clip=pymupdf.Rect(r.x0, r.y0, r.x1, r.y0 + 0.6 * r.height))
        dst = OUT / f"page-{i:02d}.jpg"
        Image.frombytes("RGB", (pix.width, pix.height), pix.samples).save(dst, quality=80)
        doc.close()
        out.append(
            query(f"imgq-page-{i:02d}", f"query-images/{dst.name}", f"corpus/pdf/{pdf}", page, "image->pdf_page")
        )
    for i, (video, t, a, b) in enumerate(FRAMES, 1):
        dst = OUT / f"frame-{i:02d}.jpg"
        src = HERE / "corpus" / "video" / video
        cmd = ["ffmpeg", "-v", "error", "-y", "-ss", str(t), "-i", str(src), "-frames:v", "1"]
        subprocess.run([*cmd, "-vf", "scale=480:-2", "-q:v", "4", str(dst)], check=True)
        out.append(
            query(
                f"imgq-frame-{i:02d}",
                f"query-images/{dst.name}",
                f"corpus/video/{video}",
                [a, b],
                "image->video_moment",
            )
        )
    lines = [json.dumps(q) for q in out]
    if args.append:
        path = HERE / "queries.jsonl"
        have = path.read_text()
        if "imgq-" not in have:
            path.write_text(have.rstrip("\n") + "\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
