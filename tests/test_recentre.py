"""Re-centring the offline space's non-text roads (embedder/recentre.py, issue 21): pure numpy, a fake inner
embedder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loupe.embedder.base import AudioInput, ImageInput, TextInput, VideoInput, l2_normalize
from loupe.embedder.fake import FakeEmbedder
from loupe.embedder.recentre import RecentredEmbedder, Recentring, road_of
from loupe.errors import ConfigError

D = 16


def _stats(rng: np.random.Generator) -> dict[str, dict[str, object]]:
    text = l2_normalize(rng.standard_normal(D))[0] * 0.8
    image = l2_normalize(rng.standard_normal(D))[0] * 0.95
    return {
        "text": {"mean": text.tolist(), "rms": 0.6},
        "image": {"mean": image.tolist(), "rms": 0.2},
        "text_query": {"mean": (-text).tolist(), "rms": 0.5},
        "speech_query": {"mean": image.tolist(), "rms": 0.25},
    }


def test_roads_by_input_and_role() -> None:
    assert road_of(TextInput("x"), "query") is None
    assert road_of(ImageInput("a.jpg", "caption"), "passage") == "image"
    assert road_of(VideoInput(("a.jpg",)), "passage") == "window"
    a = np.zeros(16000, np.float32)
    assert road_of(AudioInput(a, 16000), "passage") == "sound"
    assert road_of(AudioInput(a, 16000, speech=True), "passage") == "speech"
    assert road_of(AudioInput(a, 16000, speech=True), "query") == "speech_query"


def test_a_road_is_moved_to_the_text_level_and_text_is_untouched() -> None:
    rng = np.random.default_rng(0)
    stats = _stats(rng)
    r = Recentring.from_json(stats)
    mu_img = np.asarray(stats["image"]["mean"])
    pictures = l2_normalize(mu_img + 0.2 * rng.standard_normal((200, D)) / np.sqrt(D))
    moved = r.apply("image", pictures)
    assert np.allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)
    text_dir = l2_normalize(np.asarray(stats["text"]["mean"]))[0]
    # Before: the pictures share the image mean's direction; after: the text passages' mean direction.
    assert float(moved.mean(axis=0) @ text_dir) > 0.6 > float(pictures.mean(axis=0) @ text_dir)
    # The pictures' own differences now count: their spread around their mean grows.
    assert moved.std(axis=0).sum() > 2 * pictures.std(axis=0).sum()
    assert r.apply(None, pictures) is pictures and r.apply("sound", pictures) is pictures  # unfitted road
    assert Recentring.from_json(stats, {"image": None}).apply("image", pictures) is pictures  # a road left off


def test_spoken_queries_move_to_the_typed_queries_mean() -> None:
    rng = np.random.default_rng(1)
    stats = _stats(rng)
    r = Recentring.from_json(stats)
    q = l2_normalize(np.asarray(stats["speech_query"]["mean"]) + 0.01)[0]
    moved = r.apply("speech_query", q[None])[0]
    typed = l2_normalize(np.asarray(stats["text_query"]["mean"]))[0]
    assert float(moved @ typed) > 0.9


def test_the_embedder_moves_only_its_roads_and_names_the_statistics_in_its_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    stats = _stats(rng) | {"source": "unit test"}
    inner = FakeEmbedder(dim=D)
    e = RecentredEmbedder(inner, Recentring.from_json(stats))
    pic = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(pic)
    items = [TextInput("harbour"), ImageInput(str(pic))]
    got, raw = e.embed(items), inner.embed(items)
    assert np.array_equal(got[0], raw[0])  # text is the reference
    assert not np.allclose(got[1], raw[1])
    assert np.allclose(got[1], Recentring.from_json(stats).apply("image", raw[1:2])[0])
    assert e.model_ids["unified"] != inner.model_ids["unified"]
    assert e.model_ids["unified"].startswith(inner.model_ids["unified"])
    other = RecentredEmbedder(inner, Recentring.from_json(stats, {"image": 2.0}))
    assert other.model_ids["unified"] != e.model_ids["unified"]  # a different alpha is a different space
    assert e.dim == D and e.kinds == inner.kinds


def test_a_broken_statistics_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "recentre.json"
    bad.write_text(json.dumps({"image": {"mean": [0.0], "rms": 1.0}}))
    with pytest.raises(ConfigError, match="text passages"):
        Recentring.load(bad)
    with pytest.raises(ConfigError, match=r"recentre-missing\.json"):
        Recentring.load(tmp_path / "recentre-missing.json")


@pytest.mark.model
def test_the_offline_profile_recentres_only_when_asked_and_the_shipped_file_fits_its_space() -> None:
    from loupe.embedder.profiles import create_profile

    plain = create_profile("offline")
    moved = create_profile("offline", recentre=True)
    assert not isinstance(plain.unified, RecentredEmbedder)
    # The shipped statistics were fitted on this very space (else the profile warns and leaves it as it is).
    assert isinstance(moved.unified, RecentredEmbedder)
    assert moved.unified.model_ids["unified"].startswith(plain.unified.model_ids["unified"] + "; re-centred")
    assert moved.info.model_ids["unified"] != plain.info.model_ids["unified"]  # old collections are refused


@pytest.mark.model
def test_recentre_alphas_pick_the_roads_that_move() -> None:
    from loupe.embedder.profiles import create_profile

    speech_only = create_profile("offline", recentre=True, recentre_alphas={"speech": 1.0, "speech_query": 2.0})
    assert isinstance(speech_only.unified, RecentredEmbedder)
    assert speech_only.unified.recentring.alphas == {"speech": 1.0, "speech_query": 2.0}
    assert "re-centred [speech 1, speech_query 2]" in speech_only.info.model_ids["unified"]
    every = create_profile("offline", recentre=True)
    assert every.info.model_ids["unified"] != speech_only.info.model_ids["unified"]
    with pytest.raises(ConfigError, match="unknown roads"):
        create_profile("offline", recentre=True, recentre_alphas={"pictures": 1.0})


def test_deflation_takes_the_speech_direction_out_of_spoken_queries() -> None:
    from loupe.embedder.recentre import SpokenQueryDeflation

    rng = np.random.default_rng(3)
    d = l2_normalize(rng.standard_normal(D))[0]
    q = l2_normalize(rng.standard_normal((4, D)) + 2.0 * d)
    full = SpokenQueryDeflation(d, 1.0, "x").apply(q)
    assert np.allclose(full @ d, 0.0, atol=1e-6) and np.allclose(np.linalg.norm(full, axis=1), 1.0)
    half = SpokenQueryDeflation(d, 0.5, "x").apply(q)
    # half the component is left, relative to the rest of the vector
    rest = q - (q @ d)[:, None] * d
    assert np.allclose((half @ d) / np.linalg.norm(half - (half @ d)[:, None] * d, axis=1),
                       0.5 * (q @ d) / np.linalg.norm(rest, axis=1), atol=1e-5)  # fmt: skip


def test_deflation_needs_statistics_of_the_same_space(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from loupe.embedder.recentre import spoken_query_deflation

    rng = np.random.default_rng(4)
    stats = {"text": {"mean": rng.standard_normal(D).tolist()}, "speech": {"mean": rng.standard_normal(D).tolist()}}
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({**stats, "model_id": "space A"}))
    got = spoken_query_deflation("space A", 1.0, path)
    assert got is not None and got.beta == 1.0 and np.isclose(np.linalg.norm(got.direction), 1.0)
    want = np.asarray(stats["speech"]["mean"]) - np.asarray(stats["text"]["mean"])
    assert np.allclose(got.direction, want / np.linalg.norm(want), atol=1e-6)
    assert spoken_query_deflation("space A", 0.0, path) is None  # off
    assert spoken_query_deflation("space B", 1.0, path) is None and "another space" in caplog.text
    assert spoken_query_deflation("space A", 1.0, tmp_path / "missing.json") is None


class _Speech:
    """A stand-in speech encoder: a fixed vector per role."""

    dim = D
    kinds = frozenset({"audio"})

    def __init__(self, vec: np.ndarray) -> None:
        self.vec = vec
        self.model_ids = {"unified": "stub speech"}

    def embed(self, items: list[AudioInput], *, role: str = "passage") -> np.ndarray:
        return np.repeat(self.vec[None], len(items), axis=0)


def test_only_spoken_queries_are_deflated_and_the_model_id_stays() -> None:
    from loupe.embedder.recentre import SpokenQueryDeflation
    from loupe.embedder.speech import SpeechRoutedEmbedder

    rng = np.random.default_rng(5)
    d = l2_normalize(rng.standard_normal(D))[0]
    vec = l2_normalize(rng.standard_normal(D) + d)[0]
    plain = SpeechRoutedEmbedder(FakeEmbedder(dim=D), _Speech(vec))  # type: ignore[arg-type]
    deflated = SpeechRoutedEmbedder(FakeEmbedder(dim=D), _Speech(vec), SpokenQueryDeflation(d, 1.0, "abc"))  # type: ignore[arg-type]
    said = AudioInput(np.zeros(16000, np.float32), 16000, speech=True)
    sound = AudioInput(np.zeros(16000, np.float32), 16000)
    assert np.allclose(deflated.embed([said], role="query") @ d, 0.0, atol=1e-6)
    assert np.allclose(deflated.embed([said], role="passage"), plain.embed([said], role="passage"))  # clips as before
    for item in (sound, TextInput("a memo")):
        assert np.allclose(deflated.embed([item], role="query"), plain.embed([item], role="query"))
    assert deflated.model_ids == plain.model_ids  # stored vectors are unchanged: no re-ingest
    assert plain.query_side == "" and "beta=1" in deflated.query_side


@pytest.mark.model
def test_the_offline_profile_deflates_spoken_queries_by_default() -> None:
    from loupe.embedder.profiles import create_profile

    on, off = create_profile("offline"), create_profile("offline", spoken_query_deflation=0.0)
    assert on.unified.query_deflation is not None and off.unified.query_deflation is None  # type: ignore[attr-defined]
    assert on.info.model_ids == off.info.model_ids
