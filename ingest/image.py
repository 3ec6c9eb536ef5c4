"""Images: validated, described by what is known without a model (file name, EXIF description, size).

The embedder issue adds the label bridge and OCR; until then an image enters the text space through its
caption, and the segment says so in ``meta.caption_from``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from loupe.errors import IngestError
from loupe.ingest.chunking import clean_text
from loupe.ingest.options import IngestOptions
from loupe.types import MediaRef, Segment, SourceRef, segment_id

# PIL's own default guard (~89 Mpx) is for untrusted input; keep it and say so when it fires.
_EXIF_DESCRIPTION = 0x010E


def iter_image(path: Path, source: SourceRef, opts: IngestOptions) -> Iterator[Segment]:
    """Yield one ``image`` segment for a readable image file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            width, height = im.size
            fmt = im.format or ""
            desc = str(im.getexif().get(_EXIF_DESCRIPTION, "") or "").strip()
    except Image.DecompressionBombError as e:
        raise IngestError(str(path), f"refused: image is too large to decode safely ({e})") from e
    except Exception as e:
        raise IngestError(str(path), f"cannot read image: {e}") from e
    caption = clean_text(source.title if not desc else f"{source.title}. {desc}")
    yield Segment(
        id=segment_id(source, "image", None),
        source=source,
        modality="image",
        locator=None,
        text=caption,
        media=MediaRef(path=source.uri, kind="image"),
        meta={"width": width, "height": height, "format": fmt, "caption_from": "exif+filename" if desc else "filename"},
    )
