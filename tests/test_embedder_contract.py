"""One contract every embedder backend passes (conventions §7): each backend's test class subclasses
:class:`EmbedderContract` and provides the backend and a few inputs of each kind it takes.

Checked: ``dim`` matches the output; vectors are float32 and L2-normalised; rows come back in input order
whatever the batching; an empty batch gives ``(0, dim)``; kinds the backend does not take are refused with an
EmbedError naming the input type; ``model_ids`` is non-empty and stable (same config → same ids).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from loupe.embedder.base import (
    AudioInput,
    Embedder,
    EmbedInput,
    ImageInput,
    InputKind,
    TextInput,
    VideoInput,
    input_kind,
)
from loupe.errors import EmbedError

DATA = Path(__file__).parent / "data" / "bridge"


@pytest.fixture(scope="session")
def contract_media(tmp_path_factory: pytest.TempPathFactory) -> dict[InputKind, list[EmbedInput]]:
    """Two or three inputs of every kind: generated pictures, frame windows, tones and noise, texts."""
    from PIL import Image

    root = tmp_path_factory.mktemp("contract-media")
    pics = []
    for i, colour in enumerate([(220, 40, 40), (40, 200, 60), (30, 30, 210)]):
        p = root / f"pic{i}.png"
        Image.new("RGB", (48 + 8 * i, 40), colour).save(p)
        pics.append(str(p))
    t = np.arange(16_000 * 2) / 16_000
    return {
        "text": [TextInput("a dog barking"), TextInput("the quarterly revenue table"), TextInput("rain")],
        "image": [ImageInput(pics[0]), ImageInput(pics[1], text="green card"), ImageInput(pics[2])],
        "video": [VideoInput(tuple(pics)), VideoInput((pics[1], pics[0]))],
        "audio": [
            AudioInput((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000),
            AudioInput(np.random.default_rng(1).normal(0, 0.1, 12_000).astype(np.float32), 16_000),
        ],
    }


class EmbedderContract:
    """Subclass and provide the ``embedder`` fixture (and ``build`` for a second instance of the same config)."""

    @pytest.fixture
    def embedder(self) -> Embedder:
        raise NotImplementedError

    @pytest.fixture
    def build(self) -> Callable[[], Embedder]:
        """A factory for a fresh instance with the same configuration (for id stability)."""
        raise NotImplementedError

    def _mixed(self, emb: Embedder, media: dict[InputKind, list[EmbedInput]]) -> list[EmbedInput]:
        items: list[EmbedInput] = []
        every: tuple[InputKind, ...] = ("text", "image", "video", "audio")
        for kind in every:
            if kind in emb.kinds:
                items.extend(media[kind][:2])
        # interleave kinds so that grouping by kind must restore the order
        return items[::2] + items[1::2]

    def test_dim_dtype_and_norm(self, embedder: Embedder, contract_media: dict[InputKind, list[EmbedInput]]) -> None:
        items = self._mixed(embedder, contract_media)
        out = embedder.embed(items)
        assert isinstance(embedder.dim, int) and embedder.dim > 0
        assert out.shape == (len(items), embedder.dim)
        assert out.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)

    def test_order_restoration(self, embedder: Embedder, contract_media: dict[InputKind, list[EmbedInput]]) -> None:
        items = self._mixed(embedder, contract_media)
        out = embedder.embed(items)
        rev = embedder.embed(items[::-1])
        np.testing.assert_allclose(rev[::-1], out, atol=1e-4)
        first = embedder.embed(items[:1])
        np.testing.assert_allclose(first[0], out[0], atol=1e-4)

    def test_empty_batch(self, embedder: Embedder) -> None:
        out = embedder.embed([])
        assert out.shape == (0, embedder.dim) and out.dtype == np.float32

    def test_refuses_kinds_it_does_not_take(
        self, embedder: Embedder, contract_media: dict[InputKind, list[EmbedInput]]
    ) -> None:
        every: tuple[InputKind, ...] = ("text", "image", "video", "audio")
        missing = [k for k in every if k not in embedder.kinds]
        if not missing:
            pytest.skip("this backend takes every kind")
        for kind in missing:
            item = contract_media[kind][0]
            with pytest.raises(EmbedError, match=type(item).__name__):
                embedder.embed([item])

    def test_model_ids_non_empty_and_stable(self, embedder: Embedder, build: Callable[[], Embedder]) -> None:
        ids = embedder.model_ids
        assert ids and all(isinstance(v, str) and v for v in ids.values())
        assert embedder.model_ids == ids == build().model_ids

    def test_kinds_are_known(self, embedder: Embedder, contract_media: dict[InputKind, list[EmbedInput]]) -> None:
        assert embedder.kinds and embedder.kinds <= {"text", "image", "video", "audio"}
        for kind in embedder.kinds:
            assert input_kind(contract_media[kind][0]) == kind


# --- backends ------------------------------------------------------------------------------------------------


class TestFakeContract(EmbedderContract):
    @pytest.fixture
    def build(self) -> Callable[[], Embedder]:
        from loupe.embedder.fake import FakeEmbedder

        return lambda: FakeEmbedder(dim=32)

    @pytest.fixture
    def embedder(self, build: Callable[[], Embedder]) -> Embedder:
        return build()


@pytest.mark.model
class TestE5Contract(EmbedderContract):
    @pytest.fixture
    def build(self) -> Callable[[], Embedder]:
        from loupe.embedder.e5 import E5Embedder

        return lambda: E5Embedder()

    @pytest.fixture
    def embedder(self, build: Callable[[], Embedder]) -> Embedder:
        return build()


@pytest.fixture(scope="class")
def class_backend(request: pytest.FixtureRequest) -> Embedder:
    """One backend per test class (weights load once), made by the class's ``make`` classmethod."""
    folders = request.getfixturevalue("tiny_folders") if getattr(request.cls, "needs_tiny", False) else {}
    backend: Embedder = request.cls.make(folders)
    return backend


@pytest.mark.model
class TestBridgeContract(EmbedderContract):
    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        from loupe.embedder.bridge import offline_backends

        return offline_backends()[0]

    @pytest.fixture
    def build(self) -> Callable[[], Embedder]:
        return lambda: self.make({})

    @pytest.fixture
    def embedder(self, class_backend: Embedder) -> Embedder:
        return class_backend


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("transformers")
    from tests import tiny_models

    return tiny_models.build_all(tmp_path_factory.mktemp("contract-tiny"))


class _NativeContract(EmbedderContract):
    """Native backends on tiny random-weight models (one instance per class: weights load once)."""

    needs_tiny = True

    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        raise NotImplementedError

    @pytest.fixture
    def build(self, tiny_folders: dict[str, Path]) -> Callable[[], Embedder]:
        return lambda: self.make(tiny_folders)

    @pytest.fixture
    def embedder(self, class_backend: Embedder) -> Embedder:
        return class_backend


class TestSiglipContract(_NativeContract):
    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        from loupe.embedder.native import ImageTextEmbedder

        return ImageTextEmbedder(str(folders["siglip"]), batch_size=2)


class TestClipContract(_NativeContract):
    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        from loupe.embedder.native import ImageTextEmbedder

        return ImageTextEmbedder(str(folders["clip"]), batch_size=2)


class TestClapContract(_NativeContract):
    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        from loupe.embedder.native import AudioTextEmbedder

        return AudioTextEmbedder(str(folders["clap"]), batch_size=2)


class TestQwen3VLContract(_NativeContract):
    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        from loupe.embedder.native import Qwen3VLEmbedder

        return Qwen3VLEmbedder(str(folders["qwen3vl"]), batch_size=2, dim=16)


class TestNativeUnifiedContract(_NativeContract):
    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        from loupe.embedder.native import native_backends

        unified, _ = native_backends(
            str(folders["siglip"]), str(folders["clap"]), audio_labels=["dog", "rain"], cache_dir=str(folders["clap"])
        )
        return unified


class TestNativeUnifiedNoAudioContract(_NativeContract):
    @classmethod
    def make(cls, folders: dict[str, Path]) -> Embedder:
        from loupe.embedder.native import native_backends

        unified, _ = native_backends(str(folders["clip"]), None)
        return unified


class TestGeminiFakeContract(EmbedderContract):
    @pytest.fixture
    def server_url(self) -> Iterator[str]:
        from tests.gemini_fake import fake_gemini

        with fake_gemini() as state:
            yield state.url

    @pytest.fixture
    def build(self, server_url: str) -> Callable[[], Embedder]:
        from loupe.embedder.gemini import GeminiEmbedder
        from tests.gemini_fake import KEY

        return lambda: GeminiEmbedder(KEY, base_url=server_url, dim=128, batch_size=2)

    @pytest.fixture
    def embedder(self, build: Callable[[], Embedder]) -> Embedder:
        return build()


class TestEmbeddingGemma2Contract(EmbedderContract):
    """EmbeddingGemma 2 on a tiny random-weight model with every tower (one instance: weights load once)."""

    @pytest.fixture
    def build(self, tiny_gemma2: Path) -> Callable[[], Embedder]:
        from loupe.embedder.gemma2 import EmbeddingGemma2Embedder

        return lambda: EmbeddingGemma2Embedder(str(tiny_gemma2), batch_size=2)

    @pytest.fixture(scope="class")
    @classmethod
    def shared(cls, tiny_gemma2: Path) -> Embedder:
        from loupe.embedder.gemma2 import EmbeddingGemma2Embedder

        return EmbeddingGemma2Embedder(str(tiny_gemma2), batch_size=2)

    @pytest.fixture
    def embedder(self, shared: Embedder) -> Embedder:
        return shared


class TestEgemma2Contract(EmbedderContract):
    """The egemma2 runtime on the same tiny folder (skipped where the egemma2 package is not installed)."""

    @pytest.fixture
    def build(self, tiny_gemma2: Path) -> Callable[[], Embedder]:
        pytest.importorskip("egemma2")
        from loupe.embedder.gemma2_rust import Egemma2Embedder

        return lambda: Egemma2Embedder(str(tiny_gemma2), device="cpu", batch_size=2)

    @pytest.fixture(scope="class")
    @classmethod
    def shared(cls, tiny_gemma2: Path) -> Iterator[Embedder]:
        pytest.importorskip("egemma2")
        from loupe.embedder.gemma2_rust import Egemma2Embedder

        emb = Egemma2Embedder(str(tiny_gemma2), device="cpu", batch_size=2)
        yield emb
        emb.close()

    @pytest.fixture
    def embedder(self, shared: Embedder) -> Embedder:
        return shared
