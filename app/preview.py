"""What a hit looks like: the page image with the hit's box drawn, for the UI and the API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loupe.types import Hit, PageLoc

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class PagePreview:
    """A page image and the hit's box in that image's pixels (None when the hit has no box)."""

    image_path: str
    box_px: tuple[int, int, int, int] | None
    page: int


def page_preview(hit: Hit) -> PagePreview | None:
    """The stored page image of a page/region hit and its box scaled to the image; None for other hits.

    >>> pv = page_preview(hit)  # doctest: +SKIP
    >>> draw_box(pv).save("hit.png")  # doctest: +SKIP
    """
    seg = hit.segment
    if not isinstance(seg.locator, PageLoc) or seg.media is None or seg.media.kind != "image":
        return None
    if not Path(seg.media.path).exists():
        return None
    box = seg.locator.bbox
    size = seg.meta.get("page_size")
    if box is None or not size:
        return PagePreview(seg.media.path, None, seg.locator.page)
    from PIL import Image

    with Image.open(seg.media.path) as im:
        w, h = im.size
    sx, sy = w / float(size[0]), h / float(size[1])
    px = (int(box[0] * sx), int(box[1] * sy), int(box[2] * sx + 0.5), int(box[3] * sy + 0.5))
    return PagePreview(seg.media.path, px, seg.locator.page)


def draw_box(preview: PagePreview, color: tuple[int, int, int] = (255, 170, 0), width: int = 3) -> Image.Image:
    """The page image (PIL) with the box outlined and lightly shaded."""
    from PIL import Image, ImageDraw

    im: Image.Image = Image.open(preview.image_path).convert("RGB")
    if preview.box_px is not None:
        overlay = Image.new("RGBA", im.size, (0, 0, 0, 0))
        d = ImageDraw.Draw(overlay)
        d.rectangle(preview.box_px, fill=(*color, 48), outline=(*color, 255), width=width)
        im = Image.alpha_composite(im.convert("RGBA"), overlay).convert("RGB")
    return im
