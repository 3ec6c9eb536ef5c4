"""Native profile backends on tiny random-weight models, loaded through the real path (a local model folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")

from loupe.app.config import load_settings
from loupe.embedder.base import AudioInput, EmbedInput, ImageInput, TextInput, VideoInput
from loupe.embedder.native import (
    AudioTextEmbedder,
    ImageTextEmbedder,
    NativeEmbedder,
    Qwen3VLEmbedder,
    model_identity,
    native_backends,
    pick_device,
    pick_dtype,
    subsample_frames,
)
from loupe.embedder.profiles import Query, create_profile, profile_from_settings
from loupe.errors import ConfigError, EmbedError, UnknownNameError
from tests import tiny_models


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One folder per architecture, built once per session."""
    return tiny_models.build_all(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Four small images of different sizes and colours (one with transparency)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("pictures")
    out = []
    for i, (size, colour) in enumerate(
        [((40, 30), (200, 30, 30)), ((64, 64), (30, 200, 30)), ((20, 50), (30, 30, 200)), ((33, 33), (0, 0, 0, 0))]
    ):
        mode = "RGBA" if len(colour) == 4 else "RGB"
        p = root / f"p{i}.png"
        Image.new(mode, size, colour).save(p)
        out.append(str(p))
    return out


def _clips() -> list[AudioInput]:
    t = np.arange(16_000 * 3) / 16_000
    return [
        AudioInput((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000),
        AudioInput(np.random.default_rng(0).normal(0, 0.1, 8_000).astype(np.float32), 16_000),
        AudioInput((0.2 * np.sin(2 * np.pi * 1000 * t[:24_000])).astype(np.float32), 16_000, speech=True),
    ]


def _unit(x: np.ndarray) -> None:
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("arch,dim", [("siglip", 32), ("clip", 24)])
def test_image_text_shapes_and_order(tiny: dict[str, Path], pictures: list[str], arch: str, dim: int) -> None:
    emb = ImageTextEmbedder(str(tiny[arch]), batch_size=2)
    items: list[EmbedInput] = [TextInput("a photo of a dog"), ImageInput(pictures[0]), TextInput("cat")]
    items += [ImageInput(pictures[1])]
    items += [VideoInput(tuple(pictures[:3])), ImageInput(pictures[3])]
    out = emb.embed(items)
    assert out.shape == (6, dim) and emb.dim == dim
    _unit(out)
    # Order restoration: a reversed batch gives the same rows reversed (batching and sorting are invisible).
    rev = emb.embed(items[::-1])
    np.testing.assert_allclose(rev[::-1], out, atol=1e-5)
    # Each row equals the item embedded alone (no padding leaks between rows of a batch).
    np.testing.assert_allclose(emb.embed([items[2]])[0], out[2], atol=1e-5)
    # Different inputs give different vectors.
    assert float(out[1] @ out[3]) < 0.9999


def test_video_is_the_mean_of_its_frames(tiny: dict[str, Path], pictures: list[str]) -> None:
    emb = ImageTextEmbedder(str(tiny["siglip"]))
    frames = emb.embed([ImageInput(p) for p in pictures[:3]])
    window = emb.embed([VideoInput(tuple(pictures[:3]))])[0]
    expected = frames.mean(axis=0)
    np.testing.assert_allclose(window, expected / np.linalg.norm(expected), atol=1e-5)


def test_subsample_frames_keeps_ends() -> None:
    frames = [f"f{i}" for i in range(100)]
    picked = subsample_frames(frames, 32)
    assert len(picked) == 32 and picked[0] == "f0" and picked[-1] == "f99"
    assert subsample_frames(frames[:5], 32) == frames[:5]


def test_clap_text_and_audio(tiny: dict[str, Path]) -> None:
    emb = AudioTextEmbedder(str(tiny["clap"]), batch_size=2)
    clips = _clips()
    out = emb.embed([clips[0], TextInput("rain"), clips[1], clips[2]])
    assert out.shape == (4, 24)
    _unit(out)
    np.testing.assert_allclose(emb.embed([clips[2], clips[1]]), out[[3, 2]], atol=1e-5)
    # A 3-s clip at 16 kHz becomes 48 kHz samples in 2-s windows (the tiny processor's length): two windows.
    wins = emb.windows(clips[0])
    assert [w.size for w in wins] == [96_000, 48_000]
    with pytest.raises(EmbedError, match="cannot embed ImageInput"):
        emb.embed([ImageInput("x.png")])


def test_qwen3_vl_one_space(tiny: dict[str, Path], pictures: list[str]) -> None:
    emb = Qwen3VLEmbedder(str(tiny["qwen3vl"]), batch_size=2)
    items: list[EmbedInput] = [
        TextInput("a photo of a dog"),
        ImageInput(pictures[0], text="hammer"),
        VideoInput(tuple(pictures[:2])),
        TextInput("cat"),
        ImageInput(pictures[2]),
    ]
    out = emb.embed(items)
    assert out.shape == (5, 32)
    _unit(out)
    np.testing.assert_allclose(emb.embed(items[::-1])[::-1], out, atol=1e-4)
    np.testing.assert_allclose(emb.embed([items[3]])[0], out[3], atol=1e-4)
    # Queries use the query instruction: with a different one, the same text lands elsewhere.
    asym = Qwen3VLEmbedder(str(tiny["qwen3vl"]), query_instruction="retrieve the input")
    q, p = asym.embed([items[0]], role="query")[0], asym.embed([items[0]], role="passage")[0]
    assert float(q @ p) < 0.9999
    assert asym.model_ids != emb.model_ids


def test_qwen3_vl_matryoshka(tiny: dict[str, Path]) -> None:
    full = Qwen3VLEmbedder(str(tiny["qwen3vl"]))
    short = Qwen3VLEmbedder(str(tiny["qwen3vl"]), dim=8)
    items = [TextInput("dog"), TextInput("a photo of cat")]
    a, b = full.embed(items), short.embed(items)
    assert short.dim == 8 and b.shape == (2, 8)
    _unit(b)
    np.testing.assert_allclose(b, a[:, :8] / np.linalg.norm(a[:, :8], axis=1, keepdims=True), atol=1e-5)
    assert "matryoshka 8" in short.model_ids["unified"]
    with pytest.raises(ConfigError, match="exceeds"):
        Qwen3VLEmbedder(str(tiny["qwen3vl"]), dim=64).embed(items)


def test_matryoshka_refused_where_not_trained(tiny: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="Matryoshka"):
        ImageTextEmbedder(str(tiny["siglip"]), dim=16)


def test_native_profile_bridges_audio_and_routes_vectors(
    tiny: dict[str, Path], pictures: list[str], tmp_path: Path
) -> None:
    labels = ["dog", "rain", "music", "speech"]
    unified, extra = native_backends(
        str(tiny["siglip"]), str(tiny["clap"]), audio_labels=labels, batch_size=4, cache_dir=str(tmp_path)
    )
    assert unified.kinds == {"text", "image", "video", "audio"}
    clips = _clips()
    out = unified.embed([clips[0], TextInput("dog"), ImageInput(pictures[0]), clips[1]])
    assert out.shape == (4, 32)
    _unit(out)
    # An audio clip's vector is a mix of the space's embeddings of the templated labels: it lies in their span.
    label_vecs, _ = unified._label_vectors()
    coef, *_ = np.linalg.lstsq(label_vecs.T, out[0], rcond=None)
    np.testing.assert_allclose(label_vecs.T @ coef, out[0], atol=1e-4)
    # The audio named vector takes text for queries but not as passages.
    assert extra["audio"].passage_kinds == {"audio"} and "text" in extra["audio"].kinds
    from loupe.embedder.profiles import EmbeddingProfile

    profile = EmbeddingProfile("native", unified, extra=dict(extra))
    info = profile.info
    assert set(info.dims) == {"unified", "audio"} and info.dims["audio"] == 24
    assert str(tiny["siglip"].name) in info.model_ids["unified"] and "clap" in info.model_ids["audio"]
    qv = profile.embed_query(Query(text="rain"))
    assert [(v.part, v.using) for v in qv] == [("text", "unified"), ("text", "audio")]


def test_native_without_audio_refuses_audio(tiny: dict[str, Path]) -> None:
    unified, extra = native_backends(str(tiny["clip"]), None)
    assert extra == {} and "audio" not in unified.kinds
    with pytest.raises(EmbedError, match="audio_text_model"):
        unified.embed(_clips()[:1])
    assert isinstance(unified, NativeEmbedder)


def test_native_one_space_model(tiny: dict[str, Path]) -> None:
    unified, _ = native_backends(None, None, str(tiny["qwen3vl"]), dim=16, video_input=False)
    assert unified.dim == 16 and "qwen3vl" in unified.model_ids["unified"]
    assert isinstance(unified.space, Qwen3VLEmbedder) and unified.space.video_input is False
    with pytest.raises(UnknownNameError, match="valid: qwen3-vl-embedding"):
        native_backends(None, None, str(tiny["qwen3vl"]), one_space_backend="omni")


def test_hub_id_fails_fast_offline() -> None:
    emb = ImageTextEmbedder("someone/no-such-model-in-cache")  # construction reads nothing
    with pytest.raises(EmbedError, match="hf download someone/no-such-model-in-cache"):
        emb.embed([TextInput("x")])


def test_model_identity_is_stable_and_content_keyed(tiny: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    a = model_identity(str(tiny["clip"]))
    assert a.startswith("local:clip@") and a == model_identity(str(tiny["clip"]))
    moved = shutil.copytree(tiny["clip"], tmp_path / "clip")
    assert model_identity(str(moved)) == a  # moving the folder keeps the id
    (moved / "config.json").write_text((moved / "config.json").read_text().replace("24", "25"))
    assert model_identity(str(moved)) != a
    assert model_identity("google/siglip2-base-patch16-224") == "google/siglip2-base-patch16-224"


def test_save_load_round_trip(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Weights saved again and reloaded give the same vectors (the folder is the whole model)."""
    from transformers import AutoModel, AutoProcessor

    src = ImageTextEmbedder(str(tiny["siglip"]))
    model, proc = AutoModel.from_pretrained(tiny["siglip"]), AutoProcessor.from_pretrained(tiny["siglip"])
    model.save_pretrained(tmp_path / "copy")
    proc.save_pretrained(tmp_path / "copy")
    items = [TextInput("a dog"), TextInput("the sound of rain")]
    np.testing.assert_allclose(ImageTextEmbedder(str(tmp_path / "copy")).embed(items), src.embed(items), atol=1e-6)


def test_device_and_dtype_selection() -> None:
    import torch

    assert pick_device("auto") in ("cpu", "cuda", "mps")
    assert pick_device("cpu") == "cpu"
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cpu", "bfloat16") == torch.bfloat16
    assert pick_dtype("mps") == torch.float16
    with pytest.raises(ConfigError, match="valid: auto, cpu"):
        pick_device("tpu")
    with pytest.raises(ConfigError, match="valid: auto"):
        pick_dtype("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            pick_device("cuda")


def test_cpu_device_runs_in_float32(tiny: dict[str, Path]) -> None:
    emb = ImageTextEmbedder(str(tiny["clip"]), device="cpu")
    emb.embed([TextInput("dog")])
    assert emb.device == "cpu"
    assert next(emb._model.parameters()).dtype.is_floating_point


def test_profile_from_settings(tiny: dict[str, Path], tmp_path: Path) -> None:
    opts = {"image_text_model": str(tiny["clip"]), "audio_text_model": None}
    s = load_settings(data_dir=tmp_path, profile="native", profile_options=opts)
    prof = profile_from_settings(s)
    assert prof.name == "native" and prof.info.dims == {"unified": 24}
    s2 = load_settings(data_dir=tmp_path, profile="native", profile_options={"no_such_option": 1})
    with pytest.raises(ConfigError, match="no_such_option"):
        profile_from_settings(s2)
    with pytest.raises(UnknownNameError, match="native"):
        create_profile("nativ")


def test_profile_options_from_env_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOUPE_PROFILE_OPTIONS", '{"image_text_model": "x/y", "dim": null}')
    assert load_settings(data_dir=tmp_path).profile_options == {"image_text_model": "x/y", "dim": None}
    monkeypatch.setenv("LOUPE_PROFILE_OPTIONS", "{not json")
    with pytest.raises(ConfigError, match="JSON"):
        load_settings(data_dir=tmp_path)


def test_siglip2_text_is_lowercased(tiny: dict[str, Path], tmp_path: Path) -> None:
    """SigLIP 2 was trained on lowercased text; SigLIP (v1) embeds text as given."""
    import shutil

    v2 = ImageTextEmbedder(str(shutil.copytree(tiny["siglip"], tmp_path / "siglip2-tiny")))
    a, b = v2.embed([TextInput("DOG"), TextInput("dog")])
    np.testing.assert_allclose(a, b, atol=1e-6)
    v1 = ImageTextEmbedder(str(tiny["siglip"]))
    c, d = v1.embed([TextInput("DOG"), TextInput("dog")])
    assert float(c @ d) < 0.9999


def test_compile_targets_the_towers(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """``compile=True`` compiles the towers get_*_features run through (not ``forward``, which they bypass)."""
    import torch

    from loupe.embedder.native import compile_towers

    compiled: list[str] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    emb = ImageTextEmbedder(str(tiny["clip"]), compile=True)
    emb.embed([TextInput("dog")])
    towers = [type(emb._model.text_model).__name__, type(emb._model.vision_model).__name__]
    assert compiled == towers and all("CLIP" in t for t in towers)
    compiled.clear()
    assert compile_towers(torch.nn.Linear(2, 2)) == ["model"] and compiled == ["Linear"]


def test_collection_refuses_another_native_model_or_size(tiny: dict[str, Path], tmp_path: Path) -> None:
    """A collection built with one native model opens only with that model and size (ProfileMismatchError)."""
    from loupe.errors import ProfileMismatchError
    from loupe.index.store import Index, IndexConfig

    cfg = IndexConfig(data_dir=tmp_path, collection="native", engine="edge")
    siglip = create_profile("native", image_text_model=str(tiny["siglip"]), audio_text_model=str(tiny["clap"]))
    Index.open(cfg, siglip.info).close()
    clip = create_profile("native", image_text_model=str(tiny["clip"]), audio_text_model=str(tiny["clap"]))
    with pytest.raises(ProfileMismatchError, match="native"):
        Index.open(cfg, clip.info)
    qwen = create_profile("native", one_space_model=str(tiny["qwen3vl"]), audio_text_model=None, dim=16)
    qwen_full = create_profile("native", one_space_model=str(tiny["qwen3vl"]), audio_text_model=None)
    cfg2 = IndexConfig(data_dir=tmp_path, collection="qwen", engine="edge")
    Index.open(cfg2, qwen.info).close()
    with pytest.raises(ProfileMismatchError):
        Index.open(cfg2, qwen_full.info)
    Index.open(cfg, siglip.info).close()  # the right profile still opens


def test_end_to_end_ingest_and_search_with_the_native_profile(
    tiny: dict[str, Path], pictures: list[str], tmp_path: Path
) -> None:
    """Loupe with the native profile (tiny models) ingests text, an image and a sound, fills ``audio`` only for
    the sound, and answers text, image and audio queries from the one collection."""
    import shutil

    from loupe.app.service import Loupe
    from tests.media_fixtures import tone, write_wav

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seals.md").write_text("# Seals\n\nGrey seals rest on the sandbank near the breakwater.\n")
    shutil.copy(pictures[1], corpus / "green.png")
    write_wav(corpus / "tone.wav", tone(3.0))
    opts = {
        "image_text_model": str(tiny["siglip"]),
        "audio_text_model": str(tiny["clap"]),
        "audio_labels": ["rain"],
        "cache_dir": str(tmp_path / "cache"),
    }
    settings = load_settings(data_dir=tmp_path / "data", profile="native", profile_options=opts)
    with Loupe(settings) as lp:
        report = lp.ingest([corpus])
        assert not report.has_failures
        stats = lp.stats()
        assert stats["profile"]["name"] == "native" and set(stats["profile"]["dims"]) == {"unified", "audio"}
        mods = set(stats["per_modality"])
        assert {"image"} <= mods and mods & {"audio_clip", "speech_clip"}
        assert lp.search("grey seals")
        assert lp.search(image=str(corpus / "green.png"))[0].segment.source.uri.endswith("green.png")
        assert lp.search(audio=str(corpus / "tone.wav"))


def test_pages_enter_as_page_images_only_for_document_capable_spaces(
    tiny: dict[str, Path], pictures: list[str]
) -> None:
    from loupe.types import MediaRef, PageLoc, Segment, SourceRef

    src = SourceRef("/docs/a.pdf", "1" * 64, "application/pdf", "a", 1, 0.0)
    page = Segment("p1", src, "page", PageLoc(1), "page one text", MediaRef(pictures[0], "image"))
    qwen = create_profile("native", one_space_model=str(tiny["qwen3vl"]), audio_text_model=None)
    assert qwen.segment_input(page) == ImageInput(pictures[0], "page one text")
    siglip = create_profile("native", image_text_model=str(tiny["siglip"]), audio_text_model=None)
    assert siglip.segment_input(page) == TextInput("page one text")  # CLIP-like text towers read 64-77 tokens
    vecs = qwen.embed_segments([page])
    assert vecs[0] is not None and vecs[0]["unified"].shape == (32,)


def test_patchify_video_matches_the_image_processor_layout(tiny: dict[str, Path]) -> None:
    """Two identical frames patchify exactly as the Qwen image processor lays out one image (it repeats an
    image over the temporal patch), so the video path feeds the vision tower the layout it was trained on."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from loupe.embedder.native import patchify_video

    proc = AutoImageProcessor.from_pretrained(tiny["qwen3vl"])
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))  # multiples of 16: no resize
    want = proc(images=[img], return_tensors="np")
    arr = (np.asarray(img, dtype=np.float32) / 255.0 - np.asarray(proc.image_mean)) / np.asarray(proc.image_std)
    frame = arr.transpose(2, 0, 1)[None]
    got, grid = patchify_video(np.concatenate([frame, frame]), 8, 2, 2)
    assert list(grid) == want["image_grid_thw"][0].tolist() == [1, 4, 6]
    np.testing.assert_allclose(got, want["pixel_values"], atol=1e-5)
    # An odd frame count repeats the last frame; three frames make two temporal patches.
    three, grid3 = patchify_video(np.concatenate([frame, frame, frame]), 8, 2, 2)
    assert grid3 == (2, 4, 6) and three.shape == (2 * 4 * 6, 3 * 2 * 8 * 8)


def test_qwen3_vl_video_input(tiny: dict[str, Path], pictures: list[str]) -> None:
    window = VideoInput(tuple(pictures[:3]), text="dog")
    temporal = Qwen3VLEmbedder(str(tiny["qwen3vl"]))
    as_images = Qwen3VLEmbedder(str(tiny["qwen3vl"]), video_input=False)
    a, b = temporal.embed([window])[0], as_images.embed([window])[0]
    np.testing.assert_allclose(np.linalg.norm(a), 1.0, atol=1e-5)
    assert float(a @ b) < 0.9999  # the temporal video input is a different input from frames-as-images
    # Budget: 3 frames of 40x30 within 3 * 16 * 16 pixels → one 16-px block per frame side.
    small = Qwen3VLEmbedder(str(tiny["qwen3vl"]), video_max_pixels=3 * 16 * 16)
    small.embed([TextInput("x")])
    from loupe.embedder.native import _load_image

    _, grid = small.video_patches([_load_image(p) for p in pictures[:3]], small._processor[1])
    assert grid == (2, 2, 2)


def test_label_embeddings_are_cached_across_instances(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = native_backends(str(tiny["siglip"]), str(tiny["clap"]), audio_labels=["rain"], cache_dir=str(tmp_path))
    want = first.embed(_clips()[:1])
    assert len(list(tmp_path.glob("native-labels-*.npz"))) == 1
    second, _ = native_backends(str(tiny["siglip"]), str(tiny["clap"]), audio_labels=["rain"], cache_dir=str(tmp_path))

    def no_text(*a: object, **k: object) -> np.ndarray:
        raise AssertionError("label prompts embedded again instead of read from the cache")

    monkeypatch.setattr(second.space, "embed", no_text)
    np.testing.assert_allclose(second.embed(_clips()[:1]), want, atol=1e-6)
    # Other labels (or models) make another cache entry.
    third, _ = native_backends(str(tiny["siglip"]), str(tiny["clap"]), audio_labels=["dog"], cache_dir=str(tmp_path))
    third.embed(_clips()[:1])
    assert len(list(tmp_path.glob("native-labels-*.npz"))) == 2


def test_threaded_preparation_keeps_every_vector(tiny: dict[str, Path], pictures: list[str]) -> None:
    """Images prepared on several threads (the GPU default) give the serial path's vectors, in order."""
    frames = [ImageInput(p) for p in pictures * 2]
    serial = ImageTextEmbedder(str(tiny["siglip"]), prep_workers=1, batch_size=8)
    threaded = ImageTextEmbedder(str(tiny["siglip"]), prep_workers=3, batch_size=8)
    np.testing.assert_allclose(threaded.embed(frames), serial.embed(frames), atol=1e-6)
    assert threaded._workers() == 3 and ImageTextEmbedder(str(tiny["clip"]), device="cpu")._workers() == 1
    from loupe.embedder.native import default_prep_workers

    assert default_prep_workers("cpu") == 1 and 1 <= default_prep_workers("cuda:0") <= 8
    # A profile option: it reaches the image-text backend.
    unified, _ = native_backends(str(tiny["siglip"]), None, prep_workers=3)
    assert isinstance(unified.space, ImageTextEmbedder) and unified.space.prep_workers == 3
