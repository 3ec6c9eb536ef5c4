"""The egemma2 runtime (embedder/gemma2_rust.py) against the transformers backend on the same tiny random folder:
congruent vectors (cosine >= 0.999 in float32) for every modality, interleaved inputs, both prompts and a
Matryoshka cut. Skipped where the egemma2 package (its binary) is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("egemma2")

from loupe.embedder.base import AudioInput, EmbedInput, ImageInput, TextInput, VideoInput
from loupe.embedder.gemma2 import EmbeddingGemma2Embedder
from loupe.embedder.gemma2_rust import Egemma2Embedder
from loupe.embedder.profiles import create_profile


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[EmbedInput]:
    from PIL import Image

    root = tmp_path_factory.mktemp("egemma2-inputs")
    rng = np.random.default_rng(5)
    pics = []
    for i, (w, h) in enumerate([(64, 48), (40, 40), (30, 60)]):
        p = root / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        pics.append(str(p))
    t = np.arange(int(16_000 * 1.5)) / 16_000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return [
        TextInput("a photo of dog"),
        ImageInput(pics[0]),
        ImageInput(pics[1], text="the cat"),
        AudioInput(tone, 16_000),
        AudioInput(tone[:9_000], 16_000, speech=True, text="speech"),
        VideoInput((pics[0], pics[0], pics[0])),
        VideoInput((pics[2], pics[2]), text="rain"),
    ]


@pytest.mark.parametrize("dim", [None, 256])
@pytest.mark.parametrize("role", ["passage", "query"])
def test_egemma2_matches_transformers(tiny_gemma2: Path, inputs: list[EmbedInput], dim: int | None, role: str) -> None:
    rust = Egemma2Embedder(str(tiny_gemma2), dim=dim, device="cpu", batch_size=3)
    try:
        got = rust.embed(inputs, role=role)  # type: ignore[arg-type]
    finally:
        rust.close()
    want = EmbeddingGemma2Embedder(str(tiny_gemma2), dim=dim, device="cpu").embed(inputs, role=role)  # type: ignore[arg-type]
    assert got.shape == want.shape == (len(inputs), dim or 768)
    cos = np.sum(got * want, axis=1)
    assert np.all(cos >= 0.999), cos.round(5).tolist()
    assert rust.model_ids == EmbeddingGemma2Embedder(str(tiny_gemma2), dim=dim).model_ids


def test_the_profile_picks_the_runtime(tiny_gemma2: Path) -> None:
    profile = create_profile("native-gemma2", model=str(tiny_gemma2), runtime="egemma2", device="cpu")
    assert isinstance(profile.unified, Egemma2Embedder)
    same = create_profile("native-gemma2", model=str(tiny_gemma2))
    assert profile.info == same.info  # one space, so one identity: a collection opens with either runtime
