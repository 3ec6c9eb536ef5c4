"""Core data model: what ingest produces, the index stores and retrieval returns (design.md §2)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Modality = Literal["text", "page", "region", "image", "video_window", "video_frame", "audio_clip", "speech_clip"]
MODALITIES: tuple[Modality, ...] = (
    "text",
    "page",
    "region",
    "image",
    "video_window",
    "video_frame",
    "audio_clip",
    "speech_clip",
)


@dataclass(frozen=True)
class SourceRef:
    """The file a segment came from. ``uri`` is the absolute path as given at ingest."""

    uri: str
    sha256: str
    mime: str
    title: str
    size: int
    mtime: float


@dataclass(frozen=True)
class PageLoc:
    """A place in a paged document: 1-based physical page, optional box in PDF points (x0, y0, x1, y1)."""

    page: int
    bbox: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class TimeLoc:
    """A time range in seconds within an audio or video source."""

    start_s: float
    end_s: float


Locator = PageLoc | TimeLoc


@dataclass(frozen=True)
class MediaRef:
    """What to show for a hit: a file in the media store (page image, frame, clip) plus offsets."""

    path: str
    kind: Literal["image", "video", "audio"]
    start_s: float | None = None
    end_s: float | None = None


def locator_key(locator: Locator | None) -> str:
    """A canonical string for a locator, used in segment ids (stable across runs and platforms)."""
    if locator is None:
        return "-"
    if isinstance(locator, PageLoc):
        box = "-" if locator.bbox is None else ",".join(f"{v:.2f}" for v in locator.bbox)
        return f"page:{locator.page}:{box}"
    return f"time:{locator.start_s:.3f}:{locator.end_s:.3f}"


def segment_id(source: SourceRef, modality: str, locator: Locator | None, part: int = 0) -> str:
    """sha256 over (source bytes hash, modality, locator, part, uri): the same file in gives the same ids out.

    ``part`` tells apart several segments that share a locator (e.g. chunks of one text file). The uri is in
    the key too (a deviation from design.md §2, which hashes bytes only): two identical copies at different
    paths would otherwise share points, so ingesting the second would silently take over the first and
    deleting one copy would delete both.
    """
    key = json.dumps([source.sha256, modality, locator_key(locator), part, source.uri])
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Segment:
    """One retrievable unit: a text chunk, a page, a region, an image, a video window, an audio clip."""

    id: str
    source: SourceRef
    modality: Modality
    locator: Locator | None
    text: str | None
    media: MediaRef | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A retrieved segment with its fused score and 1-based rank."""

    segment: Segment
    score: float
    rank: int = 0
    scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def locator_json(self) -> int | list[float] | None:
        """The locator as the CLI/API/eval JSON writes it: a page int, [start_s, end_s], or null."""
        loc = self.segment.locator
        if isinstance(loc, PageLoc):
            return loc.page
        if isinstance(loc, TimeLoc):
            return [loc.start_s, loc.end_s]
        return None
