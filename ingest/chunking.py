"""Splitting text into chunks that fit the embedder (langchain-text-splitters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langchain_text_splitters import RecursiveCharacterTextSplitter


@dataclass(frozen=True)
class Block:
    """A piece of text with an optional box (PDF points), e.g. one PyMuPDF text block."""

    text: str
    bbox: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Chunk:
    """A chunk of text and the union of the boxes of the blocks it came from."""

    text: str
    bbox: tuple[float, float, float, float] | None


def clean_text(text: str) -> str:
    """Text safe to store and index: lone UTF-16 surrogates (from broken PDF fonts) and NULs replaced."""
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd")


def make_splitter(chunk_chars: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    """A recursive splitter preferring paragraph, then line, then sentence, then word boundaries."""
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_chars,
        chunk_overlap=min(chunk_overlap, chunk_chars // 2),
        separators=["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""],
        keep_separator="end",
        add_start_index=True,
        strip_whitespace=True,
    )


def _union(boxes: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float, float] | None:
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def chunk_blocks(blocks: Sequence[Block], splitter: RecursiveCharacterTextSplitter) -> list[Chunk]:
    """Join blocks (blank line between), split, and give each chunk the union box of the blocks it overlaps.

    >>> chunk_blocks([Block("a b c", (0, 0, 1, 1))], make_splitter(100, 0))[0].bbox
    (0, 0, 1, 1)
    """
    spans: list[tuple[int, int, tuple[float, float, float, float] | None]] = []
    parts: list[str] = []
    pos = 0
    for b in blocks:
        t = clean_text(b.text.strip())
        if not t:
            continue
        if parts:
            parts.append("\n\n")
            pos += 2
        spans.append((pos, pos + len(t), b.bbox))
        parts.append(t)
        pos += len(t)
    text = "".join(parts)
    if not text:
        return []
    out: list[Chunk] = []
    for doc in splitter.create_documents([text]):
        start = int(doc.metadata.get("start_index", -1))
        if start < 0:  # the splitter could not locate the chunk; fall back to searching for it
            start = max(text.find(doc.page_content), 0)
        end = start + len(doc.page_content)
        boxes = [bb for s, e, bb in spans if bb is not None and s < end and e > start]
        out.append(Chunk(doc.page_content, _union(boxes)))
    return out
