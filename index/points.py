"""Pure conversions between :class:`~app.types.Segment` and Qdrant points (no client, no engine)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from loupe.types import Locator, MediaRef, PageLoc, Segment, SourceRef, TimeLoc

# Fixed namespace: point ids must stay the same across machines and releases, or re-ingest would duplicate.
POINT_NAMESPACE = uuid.UUID("6f1c2a52-5b8e-4c41-9d7a-2f0e4b7c9a11")

# Payload fields with an index (filtered on by retrieval and by ingest bookkeeping).
KEYWORD_FIELDS = ("modality", "source.uri", "source.sha256", "collection", "tenant")
FLOAT_FIELDS = ("locator.start_s", "source.mtime")
INTEGER_FIELDS = ("locator.page",)


def point_id(segment_id: str) -> str:
    """uuid5 of the segment id: Qdrant accepts only unsigned ints and UUIDs as point ids."""
    return str(uuid.uuid5(POINT_NAMESPACE, segment_id))


def _locator_payload(loc: Locator | None) -> dict[str, Any] | None:
    if isinstance(loc, PageLoc):
        return {"page": loc.page, "bbox": list(loc.bbox) if loc.bbox else None}
    if isinstance(loc, TimeLoc):
        return {"start_s": loc.start_s, "end_s": loc.end_s}
    return None


def _media_payload(m: MediaRef) -> dict[str, Any]:
    return {"path": m.path, "kind": m.kind, "start_s": m.start_s, "end_s": m.end_s}


def segment_payload(
    seg: Segment,
    *,
    collection: str,
    tenant: str,
    profile: str,
    model_ids: Mapping[str, str],
    source_segments: int,
) -> dict[str, Any]:
    """The payload stored with a segment's point: the segment's fields, flat where filtered, plus provenance.

    ``source_segments`` is how many segments this version of the source has; ingest compares it with the
    stored count to tell a complete file from one interrupted half way.
    """
    src = seg.source
    return {
        "segment_id": seg.id,
        "modality": seg.modality,
        "source": {
            "uri": src.uri,
            "sha256": src.sha256,
            "mime": src.mime,
            "title": src.title,
            "size": src.size,
            "mtime": src.mtime,
            "segments": source_segments,
        },
        "locator": _locator_payload(seg.locator),
        "text": seg.text,
        "media": None if seg.media is None else _media_payload(seg.media),
        "meta": dict(seg.meta),
        "collection": collection,
        "tenant": tenant,
        "embedding_profile": profile,
        "models": dict(model_ids),
    }


def payload_segment(payload: Mapping[str, Any]) -> Segment:
    """Rebuild the segment stored in a point's payload."""
    s = payload["source"]
    source = SourceRef(
        uri=s["uri"], sha256=s["sha256"], mime=s["mime"], title=s["title"], size=int(s["size"]), mtime=float(s["mtime"])
    )
    loc_p = payload.get("locator")
    locator: Locator | None = None
    if loc_p and loc_p.get("page") is not None:
        bbox = loc_p.get("bbox")
        box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])) if bbox else None
        locator = PageLoc(int(loc_p["page"]), box)
    elif loc_p and loc_p.get("start_s") is not None:
        locator = TimeLoc(float(loc_p["start_s"]), float(loc_p["end_s"]))
    m = payload.get("media")
    media = None if not m else MediaRef(m["path"], m["kind"], m.get("start_s"), m.get("end_s"))
    return Segment(
        id=payload["segment_id"],
        source=source,
        modality=payload["modality"],
        locator=locator,
        text=payload.get("text"),
        media=media,
        meta=payload.get("meta") or {},
    )
