"""Looking at a file before reading it: regular file?, size, type sniffing, content hash, SourceRef."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import zipfile
from pathlib import Path

import filetype

from loupe.errors import IngestError
from loupe.types import SourceRef

TEXT_EXTS = {".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".log"}
HTML_EXTS = {".html", ".htm", ".xhtml"}
OFFICE_EXTS = {".docx", ".pptx", ".xlsx", ".eml", ".odt", ".rtf"}
PDF_EXTS = {".pdf"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
# Containers that usually hold video (ingest/video.py; a file without a video stream is read as audio).
# ".ts" is also TypeScript source: such a file counts as video only when its bytes are an MPEG transport stream.
VIDEO_EXTS = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".wmv", ".flv"}
VIDEO_EXTS |= {".3gp", ".ogv"}
AUDIO_EXTS = {".wav", ".mp3", ".ogg", ".oga", ".flac", ".m4a", ".aac", ".opus", ".wma", ".aif", ".aiff", ".mka", ".amr"}
MEDIA_EXTS = VIDEO_EXTS | AUDIO_EXTS
SUPPORTED_EXTS = TEXT_EXTS | HTML_EXTS | OFFICE_EXTS | PDF_EXTS | IMAGE_EXTS | MEDIA_EXTS

# Extensions whose bytes are a zip container (docx/pptx/xlsx): filetype reports them as zip or as the format.
_ZIP_FORMATS = {"zip", "docx", "pptx", "xlsx", "odt"}


def check_regular_file(path: Path, max_mb: float) -> os.stat_result:
    """Refuse anything that is not a readable, non-empty regular file below the size limit.

    Runs before any open(): opening a named pipe would block the whole ingest.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise IngestError(str(path), f"cannot read file: {e.strerror or e}") from e
    if stat.S_ISFIFO(st.st_mode):
        raise IngestError(str(path), "is a named pipe (FIFO), not a regular file; not read")
    if not stat.S_ISREG(st.st_mode):
        raise IngestError(str(path), "is not a regular file (device, socket or similar); not read")
    if st.st_size == 0:
        raise IngestError(str(path), "is empty (0 bytes)")
    if st.st_size > max_mb * 1024 * 1024:
        raise IngestError(
            str(path), f"is {st.st_size / 1e6:.0f} MB, above the {max_mb:.0f} MB limit (raise max_file_mb to ingest it)"
        )
    return st


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Streaming sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sniff(path: Path) -> str | None:
    """The format the bytes say (``pdf``, ``png``, ``zip`` …), or None for text-like or unknown content."""
    kind = filetype.guess(str(path))
    return None if kind is None else str(kind.extension)


def check_content_matches(path: Path) -> None:
    """Raise when the bytes contradict the extension (a PNG named .txt, a binary file named .pdf …)."""
    ext = path.suffix.lower()
    sniffed = sniff(path)
    if ext in TEXT_EXTS | HTML_EXTS:
        if sniffed is not None:
            raise IngestError(str(path), f"the extension says text but the content is a {sniffed} file; rename it")
        with path.open("rb") as f:
            head = f.read(8192)
        if b"\x00" in head:
            raise IngestError(str(path), "the extension says text but the content is binary (NUL bytes)")
    elif ext in PDF_EXTS:
        with path.open("rb") as f:
            head = f.read(1024)
        if b"%PDF-" not in head:
            raise IngestError(str(path), "is not a PDF (no %PDF- header); the file is corrupt or misnamed")
    elif ext in {".docx", ".pptx", ".xlsx", ".odt"}:
        if sniffed not in _ZIP_FORMATS:
            raise IngestError(str(path), f"is not an office document (content: {sniffed or 'unknown'})")
        check_zip_bomb(path)
    elif ext == ".rtf":
        with path.open("rb") as f:
            if not f.read(16).lstrip().startswith(b"{\\rtf"):
                raise IngestError(str(path), "is not an RTF document (no {\\rtf header)")
    elif ext in IMAGE_EXTS and (sniffed is None or filetype.guess_mime(str(path)) is None):
        raise IngestError(str(path), "is not a readable image (unknown content)")
    elif ext in MEDIA_EXTS:
        check_media_content(path, ext, sniffed)


def is_mpeg_ts(path: Path) -> bool:
    """Whether a regular file starts like an MPEG transport stream (0x47 sync bytes 188 bytes apart).

    Tells a ``.ts`` recording from a TypeScript source file; never opens anything but a regular file.
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            return False
        with path.open("rb") as f:
            head = f.read(189)
    except OSError:
        return False
    return len(head) == 189 and head[0] == 0x47 and head[188] == 0x47


def check_media_content(path: Path, ext: str, sniffed: str | None) -> None:
    """Refuse a file named as audio/video whose bytes are text or another known format.

    Unknown binary content is left to ffmpeg (raw AAC, MPEG-TS and others have no magic filetype knows);
    text never reaches it (a playlist or concat list named .mp4 would make ffmpeg open other files).
    """
    kind = "video" if ext in VIDEO_EXTS else "audio"
    if sniffed is not None:
        mime = filetype.guess_mime(str(path)) or ""
        if not mime.startswith(("video/", "audio/")):
            raise IngestError(str(path), f"the extension says {kind} but the content is a {sniffed} file; rename it")
        return
    with path.open("rb") as f:
        head = f.read(4096)
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 4:  # a multi-byte character cut at the end of the sample is still text
                return
        raise IngestError(str(path), f"the extension says {kind} but the content is text, not a {kind} file")


# Real Office files inflate 2-20x and stay far below these; a zip bomb inflates 1000x or more.
MAX_UNZIPPED_BYTES = 256 * 1024 * 1024
MAX_ZIP_RATIO = 100.0


def check_zip_bomb(path: Path) -> None:
    """Refuse a zip container whose entries would inflate beyond sane bounds, before any parser opens it."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise IngestError(str(path), f"is a damaged zip container: {e}") from e
    total = sum(i.file_size for i in infos)
    packed = max(1, sum(i.compress_size for i in infos))
    if total > MAX_UNZIPPED_BYTES or (total > 16 * 1024 * 1024 and total / packed > MAX_ZIP_RATIO):
        raise IngestError(
            str(path),
            f"refused: it would unpack to {total / 1e6:.0f} MB from {packed / 1e6:.1f} MB (a zip bomb?)",
        )


def source_ref(path: Path, st: os.stat_result, sha256: str) -> SourceRef:
    """Describe a source file. ``uri`` is the absolute path as given (symlinks are not resolved)."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    title = path.stem.replace("_", " ").replace("-", " ").strip() or path.name
    return SourceRef(
        uri=str(path.absolute()), sha256=sha256, mime=mime, title=title, size=st.st_size, mtime=st.st_mtime
    )
