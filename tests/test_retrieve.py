"""Retrieval: fusion of several query parts, moments and boxes for the top hits, and the composite-query
acceptance test (text+image finds the item matching both better than either part alone).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loupe.app.config import load_settings
from loupe.app.retrieve import dense_stages, refine_hits, search
from loupe.app.service import Loupe
from loupe.embedder.profiles import EmbeddingProfile, Query, QueryVector
from loupe.index.engines import FieldFilter
from loupe.types import Hit, MediaRef, PageLoc, Segment, SourceRef, TimeLoc

SRC = SourceRef("/m/talk.mp4", "a" * 64, "video/mp4", "talk", 1, 1.0)


def test_rrf_keeps_one_stage_per_part_and_sum_merges_parts_per_named_vector() -> None:
    vecs = [
        QueryVector("text", "unified", np.array([1.0, 0.0], dtype=np.float32)),
        QueryVector("image", "unified", np.array([0.0, 2.0], dtype=np.float32)),
        QueryVector("image", "visual", np.array([3.0, 4.0], dtype=np.float32)),
    ]
    rrf = dense_stages(vecs, {"image": 0.5})
    assert [(n, w) for n, _, w in rrf] == [("unified", 1.0), ("unified", 0.5), ("visual", 0.5)]
    summed = dense_stages(vecs, {"text": 3.0, "image": 1.0}, "sum")
    assert [n for n, _, _ in summed] == ["unified", "visual"]
    unified = summed[0][1]
    # Weighted sum of the normalised parts, normalised: text counts three times the image.
    assert np.allclose(unified, np.array([3.0, 1.0]) / np.sqrt(10.0), atol=1e-6)
    assert np.isclose(np.linalg.norm(summed[1][1]), 1.0)


class StubIndex:
    """Answers filtered searches from a fixed list of segments; records the filters."""

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = list(segments)
        self.filters: list[FieldFilter | None] = []

    def search(
        self, dense: Any, text: Any, *, flt: FieldFilter | None = None, **kw: Any
    ) -> list[tuple[Segment, float]]:
        self.filters.append(flt)
        assert flt is not None
        out = []
        for seg in self.segments:
            if seg.modality not in flt.must["modality"]:
                continue
            (lo, hi) = next(iter(flt.ranges.values()))
            value = seg.locator.start_s if isinstance(seg.locator, TimeLoc) else seg.locator.page  # type: ignore[union-attr]
            if lo is not None and hi is not None and lo <= value <= hi:
                out.append((seg, 1.0))
        return out


def test_video_window_resolves_to_its_best_frame_and_page_to_a_box() -> None:
    window = Segment("w", SRC, "video_window", TimeLoc(10.0, 20.0), "harbour crane", None, {})
    frame = Segment("f", SRC, "video_frame", TimeLoc(14.0, 15.0), None, MediaRef("/media/f14.jpg", "image", 14.0, 15.0))
    pdf = SourceRef("/d/r.pptx", "b" * 64, "application/pdf", "r", 1, 1.0)
    page = Segment("p", pdf, "page", PageLoc(3), "slide text")
    block = Segment("b", pdf, "text", PageLoc(3, (10.0, 20.0, 200.0, 60.0)), "slide text")
    other_file = Segment("o", SRC, "video_frame", TimeLoc(30.0, 31.0), None)
    idx = StubIndex([frame, block, other_file])
    dense = [("unified", np.ones(4, dtype=np.float32), 1.0)]
    hits = [Hit(window, 0.9, 1), Hit(page, 0.8, 2), Hit(other_file, 0.1, 3)]
    out = refine_hits(idx, dense, hits)  # type: ignore[arg-type]
    assert out[0].segment.locator == TimeLoc(14.0, 15.0) and out[0].segment.text == "harbour crane"
    assert out[0].segment.media == frame.media and out[0].segment.meta["refined_from"] == [10.0, 20.0]
    assert out[1].segment.locator == PageLoc(3, (10.0, 20.0, 200.0, 60.0)) and out[1].score == 0.8
    assert out[2] is hits[2]  # a frame is already a moment
    flt = idx.filters[0]
    assert flt is not None and flt.must == {"source.uri": [SRC.uri], "modality": ["video_frame"]}
    # Nothing to refine with: hits come back unchanged.
    assert refine_hits(StubIndex([]), dense, hits[:1])[0] is hits[0]  # type: ignore[arg-type]
    assert refine_hits(idx, dense, hits, top=0) == hits  # type: ignore[arg-type]


def test_search_with_both_fusions_over_the_fake_profile(corpus: Path, data_dir: Path) -> None:
    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        lp.ingest([corpus])
        for fusion in ("rrf", "sum"):
            hits = search(lp.index(), lp.profile, Query(text="six ship-to-shore cranes"), k=3, fusion=fusion)
            assert hits and hits[0].segment.source.uri.endswith("report.pdf")


# -- acceptance 1: composite queries --------------------------------------------------------------------------------
TOPICS = ["ferry timetable", "crane maintenance", "tide warning"]


def pattern_image(kind: int, seed: int, size: int = 224) -> Any:
    """A picture of one of three textures (stripes, dots, checkerboard) in random colours and offsets."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    bg = tuple(rng.randrange(150, 256) for _ in range(3))
    fg = tuple(rng.randrange(0, 100) for _ in range(3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    step, off = rng.randrange(18, 30), rng.randrange(0, 10)
    for a in range(-size, 2 * size, step):
        if kind == 0:
            d.line([(a + off, 0), (a + off - size, size)], fill=fg, width=step // 3)
        elif kind == 1:
            for b in range(off, size, step):
                d.ellipse([a + off, b, a + off + step // 2, b + step // 2], fill=fg)
        else:
            for b in range(0, size, step):
                if ((a // step) + (b // step)) % 2 and 0 <= a < size:
                    d.rectangle([a, b, a + step, b + step], fill=fg)
    return im


def offline_profile_without_speech() -> EmbeddingProfile:
    """The offline profile's text+image backends (the speech route plays no part in text+image queries)."""
    from loupe.embedder.bridge import offline_backends

    unified, extra = offline_backends()
    return EmbeddingProfile("offline", unified, extra=dict(extra))


@pytest.mark.model
def test_text_plus_image_finds_the_item_matching_both(tmp_path: Path) -> None:
    """9 images = 3 textures x 3 topics (the topic only in the file name). A query names a topic and shows a
    new picture of a texture: only one item matches both. R@1 of the composite beats each part alone."""
    items = tmp_path / "items"
    items.mkdir()
    for kind in range(3):
        for t, topic in enumerate(TOPICS):
            pattern_image(kind, seed=100 * kind + t).save(items / f"{topic.replace(' ', '-')}-{7 * kind + 3 * t}.png")
    queries = []
    for kind in range(3):
        q_img = tmp_path / f"query-{kind}.png"
        pattern_image(kind, seed=999 + kind).save(q_img)
        queries += [
            (topic, str(q_img), f"{topic.replace(' ', '-')}-{7 * kind + 3 * t}") for t, topic in enumerate(TOPICS)
        ]

    settings = load_settings(None, data_dir=str(tmp_path / "kb"))
    results: dict[str, float] = {}
    with Loupe(settings, profile=offline_profile_without_speech()) as lp:
        lp.ingest([items])
        idx = lp.index()

        def r_at_1(make: Any, fusion: str = "rrf") -> float:
            hits_ok = 0
            for text, image, want in queries:
                hits = search(idx, lp.profile, make(text, image), k=3, fusion=fusion)  # type: ignore[arg-type]
                hits_ok += bool(hits) and Path(hits[0].segment.source.uri).stem == want
            return hits_ok / len(queries)

        results["text"] = r_at_1(lambda t, i: Query(text=t))
        results["image"] = r_at_1(lambda t, i: Query(image=i))
        results["text+image rrf"] = r_at_1(lambda t, i: Query(text=t, image=i))
        results["text+image sum"] = r_at_1(lambda t, i: Query(text=t, image=i), "sum")
    print("composite R@1:", results)
    best_single = max(results["text"], results["image"])
    assert results["text+image rrf"] > best_single
    assert max(results["text+image rrf"], results["text+image sum"]) >= 0.8


def test_a_reranker_reorders_the_grouped_hits(corpus: Path, data_dir: Path) -> None:
    seen: list[list[str]] = []

    class Reverse:
        def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
            seen.append([h.segment.id for h in hits])
            return list(reversed(hits))

    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        lp.ingest([corpus])
        hits = search(lp.index(), lp.profile, Query(text="cranes ferry tickets channel"), k=4, reranker=Reverse())
    assert len(hits) > 1 and [h.segment.id for h in hits] == seen[0][::-1]
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
