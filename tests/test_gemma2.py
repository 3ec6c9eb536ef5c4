"""EmbeddingGemma 2 (embedder/gemma2.py) and the ``native-gemma2`` profile on a tiny random-weight model with every
tower, loaded from a local folder through the real ``from_pretrained`` path (the ``tiny_gemma2`` fixture)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")

from loupe.embedder.base import AudioInput, EmbedInput, ImageInput, TextInput, VideoInput, l2_normalize
from loupe.embedder.gemma2 import (
    DOCUMENT_PROMPT,
    QUERY_PROMPT,
    EmbeddingGemma2Embedder,
    frame_indices,
)
from loupe.embedder.profiles import Query, create_profile
from loupe.errors import ConfigError, EmbedError


@pytest.fixture(scope="module")
def gemma(tiny_gemma2: Path) -> EmbeddingGemma2Embedder:
    """One loaded instance for the module (weights load once)."""
    return EmbeddingGemma2Embedder(str(tiny_gemma2), batch_size=4)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Three pictures of different sizes and contents (noise, so the vision tower sees different pixels)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("gemma2-pictures")
    rng = np.random.default_rng(3)
    out = []
    for i, size in enumerate([(64, 48), (40, 40), (30, 60)]):
        p = root / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _unit(x: np.ndarray) -> None:
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_every_modality_has_the_full_size_and_unit_norm(gemma: EmbeddingGemma2Embedder, pictures: list[str]) -> None:
    items: list[EmbedInput] = [
        TextInput("a dog"),
        ImageInput(pictures[0]),
        AudioInput(_tone(1.5), 16_000),
        AudioInput(_tone(0.8, 900.0), 16_000, speech=True),
        VideoInput(tuple(pictures)),
    ]
    out = gemma.embed(items)
    assert out.shape == (5, 768) and gemma.dim == 768
    _unit(out)
    # Different modalities give different vectors (the towers and placeholders are really used).
    sims = out @ out.T
    assert np.all(sims[np.triu_indices(5, 1)] < 0.9999)
    # Each row equals the item embedded alone: padding in a batch does not leak into the mean.
    for i in (0, 2, 4):
        np.testing.assert_allclose(gemma.embed([items[i]])[0], out[i], atol=1e-5)


def test_audio_at_another_rate_is_resampled(gemma: EmbeddingGemma2Embedder) -> None:
    wave16 = _tone(1.0)
    t = np.arange(48_000) / 48_000
    wave48 = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    a, b = gemma.embed([AudioInput(wave16, 16_000), AudioInput(wave48, 48_000)])
    assert float(a @ b) > 0.99  # the same tone at 48 kHz lands where the 16 kHz one does


def test_matryoshka_cut_is_the_first_k_dims_renormalised(tiny_gemma2: Path, pictures: list[str]) -> None:
    full = EmbeddingGemma2Embedder(str(tiny_gemma2))
    items: list[EmbedInput] = [TextInput("the sound of rain"), ImageInput(pictures[1]), AudioInput(_tone(1.0), 16_000)]
    want = full.embed(items)
    for k in (512, 256, 128):
        cut = EmbeddingGemma2Embedder(str(tiny_gemma2), dim=k)
        got = cut.embed(items)
        assert got.shape == (3, k) and cut.dim == k
        np.testing.assert_allclose(got, l2_normalize(want[:, :k]), atol=1e-5)
        assert f"matryoshka {k}" in cut.model_ids["unified"]
    # 768 is the full size: the same space and the same id as no cut at all.
    assert EmbeddingGemma2Embedder(str(tiny_gemma2), dim=768).model_ids == full.model_ids
    with pytest.raises(ConfigError, match="768, 512, 256, 128"):
        EmbeddingGemma2Embedder(str(tiny_gemma2), dim=300)


def test_an_interleaved_input_differs_from_its_parts_and_is_deterministic(
    gemma: EmbeddingGemma2Embedder, pictures: list[str]
) -> None:
    clip = _tone(1.0, 600.0)
    joint_img, img, txt, joint_clip, bare_clip = gemma.embed(
        [
            ImageInput(pictures[2], text="a dog"),
            ImageInput(pictures[2]),
            TextInput("a dog"),
            AudioInput(clip, 16_000, text="a dog"),
            AudioInput(clip, 16_000),
        ]
    )
    for part in (img, txt):
        assert float(joint_img @ part) < 0.999
    for part in (bare_clip, txt):
        assert float(joint_clip @ part) < 0.999
    # One sequence, not a mix: the joint vector is not the normalised mean of the parts' vectors.
    assert float(joint_img @ l2_normalize((img + txt)[None])[0]) < 0.999
    again = gemma.embed([AudioInput(clip, 16_000, text="a dog"), ImageInput(pictures[2], text="a dog")])
    np.testing.assert_allclose(again, np.stack([joint_clip, joint_img]), atol=1e-6)


def test_query_and_document_prompts(gemma: EmbeddingGemma2Embedder, tiny_gemma2: Path, tmp_path: Path) -> None:
    # The tiny folder carries SearchQuery/Document prompts as EmbeddingGemma 2 names them.
    assert gemma.prompts() == (QUERY_PROMPT, DOCUMENT_PROMPT) and gemma.prompt_source == "checkpoint"
    q, d = gemma.embed([TextInput("dog")], role="query"), gemma.embed([TextInput("dog")], role="passage")
    assert float(q[0] @ d[0]) < 0.9999
    # Without the file, EmbeddingGemma's convention applies (the same strings here).
    bare = tmp_path / "bare"
    shutil.copytree(tiny_gemma2, bare)
    (bare / "config_sentence_transformers.json").unlink()
    plain = EmbeddingGemma2Embedder(str(bare))
    assert plain.prompts() == (QUERY_PROMPT, DOCUMENT_PROMPT) and plain.prompt_source == "convention"
    # A checkpoint's own prompts win (sentence-transformers' generic names too); they are part of the model id.
    own = tmp_path / "own"
    shutil.copytree(tiny_gemma2, own)
    prompts = {"query": "find: ", "document": "doc: ", "STS": "sts: "}
    (own / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    mine = EmbeddingGemma2Embedder(str(own))
    assert mine.prompts() == ("find: ", "doc: ")
    ids = mine.model_ids["unified"]
    assert ids != EmbeddingGemma2Embedder(str(own), query_prompt="other: ").model_ids["unified"]


def test_video_windows_keep_at_most_32_frames_uniformly(
    gemma: EmbeddingGemma2Embedder, pictures: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert frame_indices(5, 32) == [0, 1, 2, 3, 4]
    picked = frame_indices(40, 32)
    assert len(picked) == 32 and picked[0] == 0 and picked[-1] == 39
    model, _ = gemma._ensure()
    seen: list[list[int]] = []
    real = model.get_video_features

    def spy(*a: Any, **k: Any) -> Any:
        seen.append(list(a[2].tolist()))
        return real(*a, **k)

    monkeypatch.setattr(model, "get_video_features", spy)
    long = VideoInput(tuple(pictures[i % 3] for i in range(40)), text="dog")
    vec = gemma.embed([long, VideoInput(tuple(pictures[:2]))])
    _unit(vec)
    assert seen == [[32, 2]]


def test_a_spoken_query_and_a_speech_clip_use_the_audio_tower_not_whisper(
    tiny_gemma2: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The native-gemma2 profile has no speech encoder: a recording goes through EmbeddingGemma 2's own audio tower
    (its forward runs once per clip) and the Whisper-based encoder is never built."""
    from loupe.embedder import speech
    from loupe.embedder.gemma2 import EmbeddingGemma2Embedder as Backend
    from loupe.types import MediaRef, Segment, SourceRef, TimeLoc
    from tests.media_fixtures import write_wav

    def no_whisper(*a: object, **k: object) -> None:
        raise AssertionError("the Whisper speech encoder was constructed")

    monkeypatch.setattr(speech.SpeechEncoder, "__init__", no_whisper)
    profile = create_profile("native-gemma2", model=str(tiny_gemma2))
    backend = profile.unified
    assert isinstance(backend, Backend)
    model, _ = backend._ensure()
    calls: list[int] = []
    model.audio_tower.register_forward_hook(lambda m, a, o: calls.append(int(a[0].shape[0])))
    recording = AudioInput(_tone(1.2, 300.0), 16_000, speech=True)
    vectors = profile.embed_query(Query(audio=recording))
    assert [(v.part, v.using) for v in vectors] == [("audio", "unified")]
    wav = write_wav(tmp_path / "said.wav", _tone(1.2, 300.0))
    src = SourceRef(str(wav), "2" * 64, "audio/wav", "said", 1, 0.0)
    seg = Segment("s1", src, "speech_clip", TimeLoc(0.0, 1.2), None, MediaRef(str(wav), "audio"))
    out = profile.embed_segments([seg])
    assert out[0] is not None and set(out[0]) == {"unified"}
    assert calls == [1, 1]
    # The same sound as query and as stored clip: the query prompt differs, the space is the same.
    assert float(vectors[0].vector @ out[0]["unified"]) > 0.5


def test_a_text_and_image_query_adds_one_joint_vector(tiny_gemma2: Path, pictures: list[str]) -> None:
    profile = create_profile("native-gemma2", model=str(tiny_gemma2))
    vecs = profile.embed_query(Query(text="a dog", image=pictures[0]))
    assert [v.part for v in vecs] == ["joint", "text", "image"]
    assert all(v.using == "unified" for v in vecs)
    want = profile.unified.embed([ImageInput(pictures[0], "a dog")], role="query")[0]
    np.testing.assert_allclose(vecs[0].vector, want, atol=1e-6)
    # The other profiles keep their parts apart (no joint vector).
    fake = create_profile("fake")
    assert "joint" not in [v.part for v in fake.embed_query(Query(text="a dog", image=pictures[0]))]


def test_profile_options_and_loading_errors(tiny_gemma2: Path, tmp_path: Path) -> None:
    profile = create_profile("native-gemma2", model=str(tiny_gemma2), dim=256)
    assert profile.name == "native-gemma2" and profile.extra == {}
    assert profile.info.dims == {"unified": 256} and "matryoshka 256" in profile.info.model_ids["unified"]
    with pytest.raises(ConfigError, match="unknown profile option"):
        create_profile("native-gemma2", model=str(tiny_gemma2), image_text_model="x")
    with pytest.raises(ConfigError, match="needs model"):
        create_profile("native-gemma2", model="")
    # An id that is neither a folder nor in the local cache fails with how to fetch it; nothing is downloaded.
    missing = EmbeddingGemma2Embedder("nobody/embeddinggemma-2-missing")
    with pytest.raises(EmbedError, match="hf download nobody/embeddinggemma-2-missing"):
        missing.embed([TextInput("x")])
    # A folder that mixes checkpoints (tokenizer ids that are not the model's placeholders) is refused.
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_gemma2, mixed)
    cfg = json.loads((mixed / "config.json").read_text())
    cfg["image_token_id"] = cfg["audio_token_id"]
    (mixed / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EmbedError, match="mixes files"):
        EmbeddingGemma2Embedder(str(mixed)).embed([TextInput("x")])
    # A sentence-transformers layout with Dense layers after pooling would give other vectors: refused.
    dense = tmp_path / "dense"
    shutil.copytree(tiny_gemma2, dense)
    modules = [{"idx": 0, "type": "sentence_transformers.models.Transformer"}]
    modules.append({"idx": 1, "type": "sentence_transformers.models.Dense"})
    (dense / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(EmbedError, match="Dense"):
        EmbeddingGemma2Embedder(str(dense)).embed([TextInput("x")])


def test_profile_mismatch_is_refused(tiny_gemma2: Path, tmp_path: Path) -> None:
    from loupe.errors import ProfileMismatchError
    from loupe.index.store import Index, IndexConfig

    cfg = IndexConfig(data_dir=tmp_path, collection="g2", engine="edge")
    full = create_profile("native-gemma2", model=str(tiny_gemma2))
    Index.open(cfg, full.info).close()
    with pytest.raises(ProfileMismatchError, match="native-gemma2"):
        Index.open(cfg, create_profile("native-gemma2", model=str(tiny_gemma2), dim=128).info)
    with pytest.raises(ProfileMismatchError):
        Index.open(cfg, create_profile("fake").info)
    Index.open(cfg, full.info).close()


def test_cli_ingest_and_search_put_every_modality_in_unified(
    tiny_gemma2: Path, pictures: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``loupe ingest --profile native-gemma2`` with profile_options naming the tiny folder: text, an image, a sound,
    speech and a video all land in ``unified`` (the collection has no other dense vector) and search finds them."""
    from loupe.app.cli import main
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe
    from tests.media_fixtures import espeak, have_espeak, have_ffmpeg, make_scene_video, tone, write_wav

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seals.md").write_text("# Seals\n\nGrey seals rest on the sandbank near the breakwater.\n")
    shutil.copy(pictures[0], corpus / "noise.png")
    write_wav(corpus / "tone.wav", tone(2.0))
    if have_espeak():
        write_wav(corpus / "said.wav", espeak("the ferry leaves at nine"))
    if have_ffmpeg():
        make_scene_video(corpus / "scenes.mp4", 3, size=(96, 64))
    config = tmp_path / "loupe.yaml"
    opts = {"model": str(tiny_gemma2), "batch_size": 4}
    config.write_text(json.dumps({"profile_options": opts}))  # JSON is YAML
    common = ["--data-dir", str(tmp_path / "data"), "--profile", "native-gemma2", "--config", str(config)]
    assert main(["ingest", str(corpus), *common, "-q"]) == 0
    capsys.readouterr()
    assert main(["search", "grey seals", *common, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and any(h["file"].endswith("seals.md") for h in hits)

    settings = load_settings(data_dir=tmp_path / "data", profile="native-gemma2", profile_options=opts)
    with Loupe(settings) as lp:
        stats = lp.stats()
        assert stats["profile"]["name"] == "native-gemma2" and stats["profile"]["dims"] == {"unified": 768}
        mods = set(stats["per_modality"])
        assert {"text", "image"} <= mods and mods & {"audio_clip", "speech_clip"}
        if have_ffmpeg():
            assert "video_window" in mods
        # Every point is reachable by a unified-vector search (a point without the vector is not returned).
        index = lp.index()
        n = index.count()
        probe = lp.profile.unified.embed([TextInput("anything")], role="query")[0]
        found = index.search([("unified", probe, 1.0)], None, limit=n + 10)
        assert len(found) == n
        # Search by picture reaches the stored picture with the score of its two vectors (the query side embedded
        # as a query, the stored side as a document). Which point ranks first is a property of trained weights,
        # not of random ones, so the test checks the road and the arithmetic, not the order.
        picture = str(corpus / "noise.png")
        by_image = lp.search(image=picture, k=n)
        own = [h for h in by_image if h.segment.source.uri.endswith("noise.png")]
        assert len(own) == 1
        q = lp.profile.unified.embed([ImageInput(picture)], role="query")[0]
        stored = lp.profile.segment_input(own[0].segment)
        assert isinstance(stored, ImageInput) and stored.path == picture
        d = lp.profile.unified.embed([stored], role="passage")[0]
        assert own[0].score == pytest.approx(float(q @ d), abs=1e-4)
        assert lp.search(audio=str(corpus / "tone.wav"))
    # The same collection with another profile is refused (exit code 4).
    assert main(["search", "seals", "--data-dir", str(tmp_path / "data"), "--profile", "fake"]) == 4


def test_the_sample_corpus_ingests_with_the_tiny_model(
    tiny_gemma2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acceptance: ``loupe ingest sample/ --profile native-gemma2`` (profile_options naming a local folder) ingests
    every file of the shipped sample corpus, PDFs, office files, pictures, the video and the recording included,
    and every point it stores is found through ``unified``, the collection's only dense vector."""
    from loupe.app.cli import main
    from loupe.app.config import load_settings
    from loupe.app.service import Loupe

    sample = Path(__file__).resolve().parent.parent / "sample"
    config = tmp_path / "loupe.yaml"
    opts = {"model": str(tiny_gemma2), "batch_size": 8}
    config.write_text(json.dumps({"profile_options": opts}))
    report = tmp_path / "report.json"
    common = ["--data-dir", str(tmp_path / "data"), "--profile", "native-gemma2", "--config", str(config)]
    assert main(["ingest", str(sample), *common, "-q", "--report", str(report)]) == 0
    capsys.readouterr()
    summary = json.loads(report.read_text())
    files = [f for f in summary["files"] if f["status"] != "skipped"]
    assert files and all(f["status"] == "ok" for f in files), [f for f in files if f["status"] != "ok"]
    settings = load_settings(data_dir=tmp_path / "data", profile="native-gemma2", profile_options=opts)
    with Loupe(settings) as lp:
        stats = lp.stats()
        assert stats["profile"]["dims"] == {"unified": 768}
        assert {"text", "image", "video_window"} <= set(stats["per_modality"])
        index = lp.index()
        n = index.count()
        probe = lp.profile.unified.embed([TextInput("harbour")], role="query")[0]
        assert len(index.search([("unified", probe, 1.0)], None, limit=n + 10)) == n
