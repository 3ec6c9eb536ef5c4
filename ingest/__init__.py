"""Ingest: file in, segments out. Pure: no model and no Qdrant imports (conventions §2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loupe.errors import IngestError
from loupe.ingest.options import IngestOptions
from loupe.ingest.source import (
    AUDIO_EXTS,
    HTML_EXTS,
    IMAGE_EXTS,
    OFFICE_EXTS,
    PDF_EXTS,
    SUPPORTED_EXTS,
    TEXT_EXTS,
    VIDEO_EXTS,
    check_content_matches,
    check_regular_file,
    is_mpeg_ts,
    sha256_file,
    source_ref,
)
from loupe.types import Segment, SourceRef

__all__ = ["SUPPORTED_EXTS", "IngestOptions", "PreparedFile", "is_supported", "prepare", "segments"]


def is_supported(path: Path) -> bool:
    """Whether Loupe has an ingest module for this file's extension (a ``.ts`` file only if it is MPEG-TS)."""
    ext = path.suffix.lower()
    if ext == ".ts":
        return is_mpeg_ts(path)
    return ext in SUPPORTED_EXTS


@dataclass(frozen=True)
class PreparedFile:
    """A file that passed the checks, with its hash; :func:`segments` reads it."""

    path: Path
    source: SourceRef


def prepare(path: Path, opts: IngestOptions) -> PreparedFile:
    """Check a file (regular, non-empty, within limits, content matches extension) and hash it."""
    st = check_regular_file(path, opts.max_file_mb)
    check_content_matches(path)
    return PreparedFile(path, source_ref(path, st, sha256_file(path)))


def segments(prepared: PreparedFile, opts: IngestOptions, report: dict[str, Any] | None = None) -> Iterator[Segment]:
    """Segments of a prepared file, by extension. Raises IngestError naming the file when it cannot be read."""
    path, source = prepared.path, prepared.source
    ext = path.suffix.lower()
    if ext in PDF_EXTS:
        from loupe.ingest.pdf import iter_pdf

        return iter_pdf(path, source, opts, report)
    if ext in TEXT_EXTS | HTML_EXTS | OFFICE_EXTS:
        from loupe.ingest.office import iter_office

        return iter_office(path, source, opts)
    if ext in IMAGE_EXTS:
        from loupe.ingest.image import iter_image

        return iter_image(path, source, opts)
    if ext in VIDEO_EXTS:
        from loupe.ingest.video import iter_video

        return iter_video(path, source, opts, report)
    if ext in AUDIO_EXTS:
        from loupe.ingest.audio import iter_audio

        return iter_audio(path, source, opts, report)
    raise IngestError(str(path), f"unsupported file type {ext or '(none)'}")
