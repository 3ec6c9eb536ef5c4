"""The media store: page images, thumbnails (and later frames and clips) keyed by source content hash,
beside the index so hits can be shown without re-decoding the source."""

from __future__ import annotations

import shutil
from pathlib import Path

from loupe.index.engines import FieldFilter
from loupe.index.store import Index
from loupe.ingest.options import media_folder


def drop_unused_media(index: Index, media_dir: Path, sha256s: set[str]) -> list[str]:
    """Delete the media of content hashes no point refers to any more (copies at other paths keep theirs)."""
    dropped = []
    for sha in sorted(sha256s):
        folder = media_folder(media_dir, sha)
        if folder.exists() and index.count(FieldFilter(must={"source.sha256": sha})) == 0:
            shutil.rmtree(folder, ignore_errors=True)
            dropped.append(sha)
    return dropped
