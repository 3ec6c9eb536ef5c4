"""Pure units: ids, payload round-trips, chunking, settings, errors, extractive answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loupe.app.config import load_settings
from loupe.app.generate import extractive_answer
from loupe.app.retrieve import group_hits
from loupe.embedder.base import l2_normalize, length_sorted_batches
from loupe.embedder.profiles import create_profile
from loupe.errors import ConfigError, LoupeError, ProfileMismatchError, StoreError, UnknownNameError
from loupe.index.points import payload_segment, point_id, segment_payload
from loupe.ingest.chunking import Block, chunk_blocks, make_splitter
from loupe.types import Hit, MediaRef, PageLoc, Segment, SourceRef, TimeLoc, segment_id

SRC = SourceRef("/x/a.pdf", "ab" * 32, "application/pdf", "a", 10, 1.0)


def seg(page: int | None, text: str = "t", uri: str = "/x/a.pdf", part: int = 0) -> Segment:
    src = SourceRef(uri, "ab" * 32, "application/pdf", "a", 10, 1.0)
    loc = PageLoc(page, (1.0, 2.0, 3.0, 4.0)) if page else None
    return Segment(segment_id(src, "text", loc, part), src, "text", loc, text)


def test_segment_ids_are_stable_and_distinct() -> None:
    a = segment_id(SRC, "text", PageLoc(1), 0)
    assert a == segment_id(SRC, "text", PageLoc(1), 0)
    copy = SourceRef("/y/copy.pdf", SRC.sha256, SRC.mime, SRC.title, SRC.size, SRC.mtime)
    others = [segment_id(SRC, "text", PageLoc(2), 0), segment_id(SRC, "page", PageLoc(1), 0)]
    others += [segment_id(SRC, "text", PageLoc(1), 1), segment_id(copy, "text", PageLoc(1), 0)]
    assert len({a, *others}) == 5
    assert segment_id(SRC, "text", TimeLoc(1.0, 2.0)) != segment_id(SRC, "text", TimeLoc(1.0, 2.5))
    # uuid5 point ids are deterministic and valid UUID strings
    assert point_id(a) == point_id(a) and len(point_id(a)) == 36


@pytest.mark.parametrize("loc", [PageLoc(3, (0.0, 1.0, 2.0, 3.0)), PageLoc(1), TimeLoc(1.5, 9.0), None])
def test_payload_round_trip(loc: PageLoc | TimeLoc | None) -> None:
    s = Segment(segment_id(SRC, "text", loc), SRC, "text", loc, "hello", None, {"chunk": 1})
    p = segment_payload(s, collection="c", tenant="t", profile="fake", model_ids={"unified": "m"}, source_segments=4)
    assert p["embedding_profile"] == "fake" and p["models"] == {"unified": "m"} and p["source"]["segments"] == 4
    assert payload_segment(p) == s


def test_chunk_boxes_are_union_of_source_blocks() -> None:
    blocks = [
        Block("alpha " * 30, (0, 0, 10, 10)),
        Block("beta " * 30, (0, 20, 10, 30)),
        Block("gamma", (5, 40, 9, 50)),
    ]
    chunks = chunk_blocks(blocks, make_splitter(200, 0))
    assert len(chunks) >= 2
    assert chunks[0].bbox == (0, 0, 10, 10)
    last = chunks[-1]
    assert "gamma" in last.text and last.bbox is not None and last.bbox[3] == 50
    assert chunk_blocks([Block("   ")], make_splitter(200, 0)) == []


def test_normalize_and_batches() -> None:
    x = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(x[0], [0.6, 0.8]) and np.all(x[1] == 0)
    items = ["a", "ccc", "bb", "dddd"]
    batches = list(length_sorted_batches(items, 3, key=len))
    assert batches == [[3, 1, 2], [0]]


def test_settings_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "loupe.yaml"
    cfg.write_text("collection: fromfile\nchunk_chars: 500\n")
    monkeypatch.setenv("LOUPE_CHUNK_CHARS", "700")
    s = load_settings(cfg, data_dir=str(tmp_path))
    assert s.collection == "fromfile" and s.chunk_chars == 700 and s.data_dir == tmp_path
    with pytest.raises(ConfigError, match="collection"):
        load_settings(None, collection="bad name!")
    cfg.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(cfg)


def test_error_hierarchy_and_registry() -> None:
    assert issubclass(ProfileMismatchError, StoreError) and issubclass(StoreError, LoupeError)
    with pytest.raises(UnknownNameError, match="valid: fake, gemini, native, native-gemma2, offline"):
        create_profile("nope")
    with pytest.raises(ValueError):
        create_profile("nope")


def test_grouping_keeps_best_per_place_and_caps_sources() -> None:
    found = [(seg(1, part=0), 0.9), (seg(1, part=1), 0.8), (seg(2), 0.7), (seg(3), 0.6), (seg(4), 0.5)]
    found.append((seg(1, uri="/x/b.pdf"), 0.4))
    hits = group_hits(found, k=10, per_source=3)
    assert [(h.segment.source.uri, h.locator_json) for h in hits] == [
        ("/x/a.pdf", 1),
        ("/x/a.pdf", 2),
        ("/x/a.pdf", 3),
        ("/x/b.pdf", 1),
    ]
    assert [h.rank for h in hits] == [1, 2, 3, 4]


def test_extractive_answer_cites_best_sentences() -> None:
    hits = [
        Hit(seg(2, "Cranes are red. The north channel was dredged in May. Gulls nest on roofs."), 0.9, 1),
        Hit(seg(3, "Budgets rose."), 0.5, 2),
    ]
    ans = extractive_answer("When was the north channel dredged?", hits, max_chars=40)
    assert ans.mode == "extractive" and "Extractive" in ans.label
    first = ans.text.split("\n\n")[0]
    assert "north channel was dredged" in first and first.endswith("[1]") and "Gulls" not in first
    assert [c.n for c in ans.citations] == [1, 2]
    assert extractive_answer("x", []).citations == []


def test_grouping_never_mixes_two_versions_of_a_file() -> None:
    old_src = SourceRef("/x/a.pdf", "1" * 64, "application/pdf", "a", 10, 1.0)
    new_src = SourceRef("/x/a.pdf", "2" * 64, "application/pdf", "a", 10, 2.0)
    found = [
        (Segment("o1", old_src, "text", PageLoc(1), "old"), 0.9),
        (Segment("n2", new_src, "text", PageLoc(2), "new"), 0.8),
        (Segment("o3", old_src, "text", PageLoc(3), "old"), 0.7),
    ]
    assert [h.segment.id for h in group_hits(found, k=10, per_source=3)] == ["n2"]


def test_grouping_keeps_one_of_the_frames_that_show_the_same_picture() -> None:
    """A still scene's frames tie exactly (ingest/video.py embeds them from one file): one of them is enough,
    so a window of the same video still finds a place among the source's three."""
    src = SourceRef("/x/v.mp4", "3" * 64, "video/mp4", "v", 10, 1.0)

    def frame(t: int, picture: int) -> Segment:
        meta = {} if t == picture else {"picture": f"/m/frame-{picture}.jpg"}
        return Segment(
            f"f{t}", src, "video_frame", TimeLoc(t, t + 1), None, MediaRef(f"/m/frame-{t}.jpg", "image"), meta
        )

    window = Segment("w", src, "video_window", TimeLoc(34, 41), None, None, {})
    found = [(frame(37, 34), 0.9), (frame(36, 34), 0.9), (frame(34, 34), 0.9), (window, 0.8), (frame(50, 50), 0.7)]
    assert [h.segment.id for h in group_hits(found, k=10, per_source=3)] == ["f37", "w", "f50"]


def test_network_guard_blocks_outside_connections() -> None:
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="network access blocked"):
            s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed; the guard must refuse before trying
    finally:
        s.close()
    with pytest.raises(RuntimeError, match="DNS lookup blocked"):
        socket.getaddrinfo("example.org", 443)
