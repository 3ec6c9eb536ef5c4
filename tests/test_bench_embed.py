"""``loupe bench embed``'s per-modality and int8 parts (fake profile: no weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loupe.lab.bench import embed as bench
from loupe.lab.bench import int8


def test_yamnet_flops_count_layers() -> None:
    # One stride-2 3x3 conv from 1 to 32 channels on 96x64 → 48x32 outputs x 9 x 32 MACs; no classifier.
    only_stem = bench.YAMNET_LAYERS[:1]
    original = bench.YAMNET_LAYERS
    try:
        bench.YAMNET_LAYERS = only_stem
        stem = bench.yamnet_flops_per_patch(classes=0)
    finally:
        bench.YAMNET_LAYERS = original
    assert stem["macs"] == 48 * 32 * 9 * 32 and stem["total"] == 2 * stem["macs"]
    full = bench.yamnet_flops_per_patch()
    # The classifier adds 1024 x 521 MACs on top of the body.
    assert full["macs"] - bench.yamnet_flops_per_patch(classes=0)["macs"] == 1024 * 521


def test_modalities_on_the_fake_profile() -> None:
    media = bench.bench_modalities("fake", repeats=1, n_images=2, n_windows=1, window_frames=3, n_clips=2, clip_s=1.0)
    assert set(media) >= {"image", "video_window", "audio", "embed_seconds_per_media_minute"}
    assert media["image"]["items_per_s"]["median"] > 0
    assert media["image"]["model_flops_per_item"] is None  # the fake has no image model to count
    assert media["audio"]["model_flops_per_patch"] is None  # YAMNet figures only for the offline profile
    per_min = media["embed_seconds_per_media_minute"]
    assert per_min["video_s"] > 0 and per_min["audio_s"] > 0
    lines = bench.format_modalities(media)
    assert any(line.startswith("images:") for line in lines) and any("per minute" in line for line in lines)


@pytest.fixture
def tiny_devset(tmp_path: Path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seals.md").write_text("# Seals\n\nGrey seals rest on the sandbank near the breakwater.\n")
    (corpus / "cranes.md").write_text("# Cranes\n\nSix ship-to-shore cranes unload containers at the quay.\n")
    # Enough points for the optimizer to convert the segment (indexing threshold 1 KB of vectors).
    for i in range(8):
        (corpus / f"filler{i}.md").write_text(f"# Note {i}\n\nUnrelated filler paragraph number {i} about weather.\n")
    queries = tmp_path / "queries.jsonl"
    rows = [
        {"id": "q1", "query_text": "grey seals sandbank", "target_file": "corpus/seals.md", "modality": "text->text"},
        {
            "id": "q2",
            "query_text": "container cranes quay",
            "target_file": "corpus/cranes.md",
            "modality": "text->text",
        },
    ]
    queries.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return queries, corpus


def test_int8_recall_compares_variants_on_one_ingest(tiny_devset: tuple[Path, Path], tmp_path: Path) -> None:
    queries, corpus = tiny_devset
    data = tmp_path / "data"
    report = int8.bench_int8_recall(queries, corpus, data, profile="fake", k=5)
    assert set(report["variants"]) == {"float (quantization ignored)", "int8 + rescore", "int8 only"}
    assert report["int8_copy"]["points"] >= 10 and report["int8_copy"]["quantized_vectors_on_disk"]
    for variant in report["variants"].values():
        assert variant["overall"]["n"] == 2 and variant["overall"]["R@1"] == 1.0
    assert not (data / "collections" / f"{report['collection']}-int8").exists()  # the copy is removed
    # A second run reuses the ingest (nothing re-embedded).
    again = int8.bench_int8_recall(queries, corpus, data, profile="fake", k=5)
    assert again["ingest"]["unchanged"] == 10
    assert "int8 + rescore" in int8.format_int8(report)
