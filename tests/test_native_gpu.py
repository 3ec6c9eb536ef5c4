"""The native profile's GPU path (bf16/fp16 weights, pinned inputs, torch.compile, batching) on tiny models.

Skipped where no CUDA GPU is visible (CI and the 2-core build machines have none); run on a GPU machine with
``pytest -m gpu tests/test_native_gpu.py -s``. Each test compares the GPU vectors with the same model's float32
CPU vectors: a random 1-layer model has no meaning, but the plumbing (dtype casts of every floating input, the
processor outputs on the right device, output back to float32 numpy, row order, padding) must not change where
a vector points beyond half precision's rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from loupe.embedder.base import AudioInput, EmbedInput, ImageInput, TextInput, VideoInput  # noqa: E402
from loupe.embedder.native import (  # noqa: E402
    AudioTextEmbedder,
    ImageTextEmbedder,
    Qwen3VLEmbedder,
    native_backends,
    pick_device,
    pick_dtype,
)
from tests import tiny_models  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

# Cosine between a half-precision GPU vector and the float32 CPU vector of the same input. bf16 keeps 8 bits of
# mantissa (relative rounding 2^-9 per operation); a 1-layer model stays far above this bound.
HALF_COSINE = 0.995


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_models.build_all(tmp_path_factory.mktemp("tiny-gpu"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("gpu-pictures")
    out = []
    for i, size in enumerate([(40, 30), (64, 64), (20, 50), (33, 33), (90, 60)]):
        p = root / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        out.append(str(p))
    return out


def _clips() -> list[AudioInput]:
    t = np.arange(16_000 * 3) / 16_000
    rng = np.random.default_rng(0)
    return [
        AudioInput((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000),
        AudioInput(rng.normal(0, 0.1, 8_000).astype(np.float32), 16_000),
        AudioInput((0.2 * np.sin(2 * np.pi * 1000 * t[:24_000])).astype(np.float32), 16_000),
        AudioInput(rng.normal(0, 0.05, 16_000 * 5).astype(np.float32), 16_000),
    ]


def _texts(n: int) -> list[EmbedInput]:
    words = tiny_models.WORDS
    return [TextInput(" ".join(words[(i * 7 + j) % len(words)] for j in range(1 + i % 9))) for i in range(n)]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1), dtype=np.float64)


def _check_like_cpu(gpu: np.ndarray, cpu: np.ndarray, what: str) -> None:
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape
    np.testing.assert_allclose(np.linalg.norm(gpu, axis=1), 1.0, atol=1e-5)
    cos = _cosines(gpu, cpu)
    print(f"{what}: cosine to float32 CPU min {cos.min():.5f} median {np.median(cos):.5f}")
    assert cos.min() > HALF_COSINE, f"{what}: {cos.min():.4f}"


def _items(pictures: list[str]) -> list[EmbedInput]:
    return [
        *_texts(6),
        *(ImageInput(p) for p in pictures),
        VideoInput(tuple(pictures[:3])),
        ImageInput(pictures[1], text="a photo of dog"),
    ]


def test_auto_picks_cuda_and_half_precision() -> None:
    assert pick_device("auto") == "cuda"
    dtype = pick_dtype("cuda")
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@pytest.mark.parametrize("arch", ["siglip", "clip"])
@pytest.mark.parametrize("dtype", ["auto", "float16"])
def test_image_text_on_gpu_matches_cpu(tiny: dict[str, Path], pictures: list[str], arch: str, dtype: str) -> None:
    items = _items(pictures)
    cpu = ImageTextEmbedder(str(tiny[arch]), device="cpu").embed(items)
    gpu_emb = ImageTextEmbedder(str(tiny[arch]), batch_size=3, dtype=dtype)
    gpu = gpu_emb.embed(items)
    param = next(gpu_emb._model.parameters())
    assert param.device.type == "cuda" and param.dtype == pick_dtype("cuda", dtype)
    _check_like_cpu(gpu, cpu, f"{arch} {param.dtype}")


def test_batching_on_gpu_is_invisible(tiny: dict[str, Path]) -> None:
    """Length-sorted batches of 16 with padding give the rows each text gets alone, in input order."""
    items = _texts(40)
    emb = ImageTextEmbedder(str(tiny["clip"]), batch_size=16)
    batched = emb.embed(items)
    alone = np.stack([emb.embed([it])[0] for it in items])
    cos = _cosines(batched, alone)
    print(f"clip bf16, batch 16 vs one at a time: min cosine {cos.min():.5f}")
    assert cos.min() > 0.999
    np.testing.assert_allclose(emb.embed(items[::-1])[::-1], batched, atol=2e-2)


def test_clap_on_gpu_matches_cpu(tiny: dict[str, Path]) -> None:
    items: list[EmbedInput] = [*_clips(), TextInput("rain"), TextInput("music speech")]
    cpu = AudioTextEmbedder(str(tiny["clap"]), device="cpu").embed(items)
    gpu = AudioTextEmbedder(str(tiny["clap"]), batch_size=2).embed(items)
    _check_like_cpu(gpu, cpu, "clap")


def test_qwen3_vl_on_gpu_matches_cpu(tiny: dict[str, Path], pictures: list[str]) -> None:
    items = _items(pictures)
    cpu = Qwen3VLEmbedder(str(tiny["qwen3vl"]), device="cpu").embed(items)
    emb = Qwen3VLEmbedder(str(tiny["qwen3vl"]), batch_size=4)
    _check_like_cpu(emb.embed(items), cpu, "qwen3-vl")
    short = Qwen3VLEmbedder(str(tiny["qwen3vl"]), dim=8).embed(items[:4])
    assert short.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)


def test_compile_on_gpu_matches_eager(tiny: dict[str, Path], pictures: list[str]) -> None:
    """``compile=True`` runs the towers through torch.compile (inductor) and changes no vector."""
    items = _items(pictures)
    eager = ImageTextEmbedder(str(tiny["siglip"])).embed(items)
    compiled_emb = ImageTextEmbedder(str(tiny["siglip"]), compile=True)
    compiled = compiled_emb.embed(items)
    again = compiled_emb.embed(items)  # second call: compiled graphs reused
    cos = _cosines(compiled, eager)
    print(f"siglip compiled vs eager: min cosine {cos.min():.5f}")
    assert cos.min() > 0.999
    np.testing.assert_allclose(again, compiled, atol=1e-6)


def test_native_profile_on_gpu_with_audio_bridge(tiny: dict[str, Path], pictures: list[str], tmp_path: Path) -> None:
    labels = ["dog", "rain", "music", "speech"]
    items: list[EmbedInput] = [_clips()[0], TextInput("dog"), ImageInput(pictures[0]), _clips()[3]]
    # Separate label caches: the GPU backend embeds the label prompts itself.
    cpu, _ = native_backends(
        str(tiny["siglip"]), str(tiny["clap"]), device="cpu", audio_labels=labels, cache_dir=str(tmp_path / "cpu")
    )
    gpu, extra = native_backends(
        str(tiny["siglip"]), str(tiny["clap"]), audio_labels=labels, cache_dir=str(tmp_path / "gpu")
    )
    _check_like_cpu(gpu.embed(items), cpu.embed(items), "native unified (siglip + clap bridge)")
    assert extra["audio"].embed([TextInput("rain")], role="query").shape == (1, 24)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_embeddinggemma2_on_gpu_matches_cpu(tiny_gemma2: Path, pictures: list[str], dtype: str) -> None:
    """EmbeddingGemma 2 on the GPU (every tower: text, images, audio, video, an interleaved input) against the
    same folder's float32 CPU vectors."""
    from loupe.embedder.gemma2 import EmbeddingGemma2Embedder

    items: list[EmbedInput] = [*_items(pictures), *_clips()[:2], ImageInput(pictures[1], text="a dog")]
    items.append(AudioInput(_clips()[0].samples, 16_000, text="rain"))
    gpu = EmbeddingGemma2Embedder(str(tiny_gemma2), device="cuda", dtype=dtype, batch_size=4)
    cpu = EmbeddingGemma2Embedder(str(tiny_gemma2), device="cpu", batch_size=4)
    _check_like_cpu(gpu.embed(items), cpu.embed(items), f"embeddinggemma2 {dtype}")
