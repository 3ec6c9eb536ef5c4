"""``loupe bench native``: the native profile's embedding throughput on this machine's GPU (or CPU).

Base-sized models of the default architectures with random weights (embedder/random_models.py: SigLIP base
patch16-224's and CLAP HTSAT's shapes; nothing is downloaded) run through the product's own backends
(:class:`embedder.native.ImageTextEmbedder`, :class:`embedder.native.AudioTextEmbedder`), so a measurement
includes what a user's ingest pays: image decoding and the processor on the CPU, pinned copies, the model in the
chosen dtype, and the vectors back as float32. Per variant (float32 eager, the profile's half precision eager,
half precision with ``torch.compile``; half precision with the CPU preparation on one thread, to show what the
preparation threads buy) and batch size: items per second (median of ``repeats`` after one
untimed warm-up pass, which also compiles), and the GPU memory peak. The CPU-side ceiling is measured apart:
the processor alone on the same inputs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Result = dict[str, Any]
# (dtype, compile, image preparation threads; 0 = the backend's default: up to 8 on a GPU, 1 on a CPU)
VARIANTS = (("float32", False, 0), ("auto", False, 0), ("auto", True, 0), ("auto", False, 1))


def make_inputs(folder: Path, n_images: int, n_texts: int, n_clips: int, clip_s: float = 10.0) -> Result:
    """Photo-sized JPEGs (640x480 noise over a gradient: realistic decode cost), ~20-word texts, and
    ``clip_s``-second 16 kHz clips (tones in noise)."""
    from PIL import Image

    from loupe.embedder.base import AudioInput, ImageInput, TextInput
    from loupe.embedder.random_models import WORDS

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 200, 640, dtype=np.float32)[None, :, None]
    images = []
    for i in range(n_images):
        pixels = np.clip(ramp + rng.normal(0, 40, (480, 640, 3)), 0, 255).astype(np.uint8)
        path = folder / f"photo{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        images.append(ImageInput(str(path)))
    texts = [TextInput(" ".join(rng.choice(WORDS, 20))) for _ in range(n_texts)]
    t = np.arange(int(16_000 * clip_s)) / 16_000
    clips = [
        AudioInput(
            (0.2 * np.sin(2 * np.pi * (200 + 40 * i) * t) + rng.normal(0, 0.05, t.size)).astype(np.float32), 16_000
        )
        for i in range(n_clips)
    ]
    return {"images": images, "texts": texts, "clips": clips}


def _gpu_peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak_mb(device: str) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def time_embed(emb: Any, items: Sequence[Any], batch_sizes: Sequence[int], repeats: int) -> list[Result]:
    """Items per second per batch size: one untimed pass (loads, compiles, warms caches), then ``repeats``."""
    rows = []
    for b in batch_sizes:
        emb.batch_size = b
        emb.embed(items)
        _gpu_peak_reset(emb.device)
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            emb.embed(items)
            secs.append(time.perf_counter() - t0)
        rates = [len(items) / s for s in secs]
        rows.append(
            {
                "batch_size": b,
                "items_per_s": round(statistics.median(rates), 1),
                "items_per_s_all": [round(r, 1) for r in rates],
                "gpu_peak_mb": _gpu_peak_mb(emb.device),
            }
        )
    return rows


def processor_ceiling(emb: Any, items: Sequence[Any], kind: str, repeats: int) -> Result:
    """Items per second of the CPU-side preparation alone (decoding + the processor), on one thread and on the
    backend's preparation threads: the ceiling of ingest on a GPU (clips are measured on threads too, to show
    why the product prepares them on one)."""
    from loupe.embedder.native import _load_image

    _, processor = emb._ensure()

    def prepare(part: list[Any]) -> Any:
        if kind == "images":
            return processor(images=[_load_image(it.path) for it in part], return_tensors="pt")
        wins = [w for it in part for w in emb.windows(it)]
        fe = processor.feature_extractor
        return fe(wins, sampling_rate=fe.sampling_rate, return_tensors="pt", truncation="rand_trunc")

    saved = emb.prep_workers
    out: Result = {}
    for workers in (1, 0):
        emb.prep_workers = workers
        secs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            emb._prepared(list(items), prepare)
            secs.append(time.perf_counter() - t0)
        n = emb._workers()
        out[f"{n} thread" + ("s" if n > 1 else "")] = round(len(items) / statistics.median(secs), 1)
    emb.prep_workers = saved
    return out


def bench_native(
    workdir: Path,
    *,
    device: str = "auto",
    batch_sizes: Sequence[int] = (1, 16, 64),
    n_items: int = 128,
    n_clips: int = 16,
    repeats: int = 3,
    compile: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Throughput of the base-sized random-weight SigLIP (images, texts) and CLAP (10-s clips) per dtype,
    compile setting and batch size."""
    import torch

    from loupe.embedder.native import (
        AudioTextEmbedder,
        ImageTextEmbedder,
        default_prep_workers,
        pick_device,
        pick_dtype,
    )
    from loupe.embedder.random_models import clap_htsat, siglip_base

    say = on_progress or (lambda _m: None)
    dev = pick_device(device)
    say(f"building base-sized random models in {workdir}")
    siglip, clap = siglip_base(workdir / "siglip-base"), clap_htsat(workdir / "clap-htsat")
    data = make_inputs(workdir / "inputs", n_items, n_items, n_clips)
    default_workers = default_prep_workers(dev)
    seen: set[tuple[str, int]] = set()  # on a CPU "auto" is float32 with one thread: measured once
    rows: list[Result] = []
    ceilings: Result = {}
    for dtype, comp, workers in VARIANTS:
        if comp and not compile:
            continue
        name = f"{pick_dtype(dev, dtype)}".replace("torch.", "") + (" + compile" if comp else "")
        threads = workers or default_workers
        if (name, threads) in seen:
            continue
        seen.add((name, threads))
        # Only images are prepared on threads (embedder.native); the one-thread variant is for them alone.
        runs: list[tuple[Path, Any, str]] = [(siglip, ImageTextEmbedder, "images")]
        if not workers:
            runs += [(siglip, ImageTextEmbedder, "texts"), (clap, AudioTextEmbedder, "clips")]
        for model, cls, kind in runs:
            say(f"{model.name} {kind}: {name}, {threads if kind == 'images' else 1} preparation threads")
            emb = cls(str(model), device=dev, dtype=dtype, compile=comp, prep_workers=workers)
            items = data[kind]
            t0 = time.perf_counter()
            emb.embed(items[:1])
            first_s = time.perf_counter() - t0
            for row in time_embed(emb, items, batch_sizes, repeats):
                rows.append({"model": model.name, "input": kind, "variant": name,
                             "prep_threads": threads if kind == "images" else 1, "first_call_s": round(first_s, 2),
                             **row})  # fmt: skip
            if kind != "texts" and kind not in ceilings:
                ceilings[kind] = processor_ceiling(emb, items, kind, repeats)
            del emb
            if dev.startswith("cuda"):
                torch.cuda.empty_cache()
    return {
        "device": dev,
        "gpu": torch.cuda.get_device_name(0) if dev.startswith("cuda") else None,
        "torch": torch.__version__,
        "models": {
            "siglip-base": "SigLIP base patch16-224 shapes, random weights (~203 M parameters)",
            "clap-htsat": "CLAP HTSAT-unfused shapes, random weights, 10-s windows at 48 kHz",
        },
        "inputs": {"images": "640x480 JPEG", "texts": "20 words (SigLIP pads to 64 tokens)", "clips": "10 s, 16 kHz"},
        "n": {"images": n_items, "texts": n_items, "clips": n_clips},
        "cpu_preparation_items_per_s": ceilings,
        "rows": rows,
        "note": "random weights: the cost per item is the real architecture's, the vectors mean nothing",
    }


def format_native(body: Result) -> str:
    """A plain-text table of the rows."""
    lines = [f"device {body['device']} ({body.get('gpu') or 'cpu'}), torch {body['torch']}"]
    lines.append(
        f"{'model':12s} {'input':7s} {'variant':20s} {'prep':>4s} {'batch':>5s} {'items/s':>9s} {'GPU MB':>8s}"
    )
    for r in body["rows"]:
        mb = "" if r["gpu_peak_mb"] is None else f"{r['gpu_peak_mb']:.0f}"
        head = f"{r['model']:12s} {r['input']:7s} {r['variant']:20s} {r['prep_threads']:4d}"
        lines.append(f"{head} {r['batch_size']:5d} {r['items_per_s']:9.1f} {mb:>8s}")
    for kind, rates in body["cpu_preparation_items_per_s"].items():
        lines.append(f"CPU preparation alone ({kind}), items/s: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))
    return "\n".join(lines)


# --- EmbeddingGemma 2 (the native-gemma2 profile) -----------------------------------------------------------

GEMMA2_KINDS = ("texts", "images", "clips", "windows")
GEMMA2_RUNTIMES = ("transformers", "egemma2")


def gemma2_inputs(folder: Path, n_texts: int, n_media: int, *, clip_s: float = 10.0, window_frames: int = 8) -> Result:
    """The native bench's photos, texts and clips, plus video windows of ``window_frames`` photo-sized frames."""
    data = make_inputs(folder, max(n_media, 1), n_texts, n_media, clip_s)
    from loupe.embedder.base import VideoInput

    photos = [im.path for im in data["images"]]
    data["images"] = data["images"][:n_media]
    data["windows"] = [
        VideoInput(tuple(photos[(i + j) % len(photos)] for j in range(window_frames))) for i in range(n_media)
    ]
    return data


def _gemma2_backend(runtime: str, folder: Path, device: str) -> Any:
    if runtime == "egemma2":
        from loupe.embedder.gemma2_rust import Egemma2Embedder

        return Egemma2Embedder(str(folder), device=device)
    from loupe.embedder.gemma2 import EmbeddingGemma2Embedder

    return EmbeddingGemma2Embedder(str(folder), device=device)


def bench_gemma2(
    workdir: Path,
    *,
    device: str = "auto",
    batch_sizes: Sequence[int] = (1, 16),
    n_texts: int = 32,
    n_media: int = 8,
    clip_s: float = 10.0,
    window_frames: int = 8,
    repeats: int = 3,
    runtimes: Sequence[str] = ("transformers",),
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Throughput of a base-sized random-weight EmbeddingGemma 2 (embedder/random_models.py) per input kind, runtime
    and batch size: texts/s, images/s, clips/s (and audio seconds per second), video windows/s. One untimed call
    of one item first (loading; its time is ``first_call_s``), then ``repeats`` timed passes over the inputs."""
    from loupe.embedder.gemma2_rust import have_egemma2
    from loupe.embedder.native import pick_device, pick_dtype
    from loupe.embedder.random_models import embeddinggemma2_base

    say = on_progress or (lambda _m: None)
    dev = pick_device(device)
    say(f"building a base-sized random EmbeddingGemma 2 in {workdir}")
    folder = embeddinggemma2_base(workdir / "embeddinggemma2-base")
    data = gemma2_inputs(workdir / "gemma2-inputs", n_texts, n_media, clip_s=clip_s, window_frames=window_frames)
    measured = [r for r in runtimes if r != "egemma2" or have_egemma2()]
    rows: list[Result] = []
    for runtime in measured:
        for kind in GEMMA2_KINDS:
            items = data[kind]
            if not items:
                continue
            say(f"embeddinggemma2 {kind} ({len(items)}) on {runtime}")
            emb = _gemma2_backend(runtime, folder, dev)
            t0 = time.perf_counter()
            emb.embed(items[:1])
            first_s = time.perf_counter() - t0
            for b in batch_sizes:
                emb.batch_size = b
                secs = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    emb.embed(items)
                    secs.append(time.perf_counter() - t0)
                rate = len(items) / statistics.median(secs)
                row: Result = {"model": "embeddinggemma2-base", "runtime": runtime, "input": kind,
                               "variant": str(pick_dtype(dev)).replace("torch.", ""), "batch_size": b,
                               "n": len(items), "first_call_s": round(first_s, 2), "items_per_s": round(rate, 3),
                               "items_per_s_all": [round(len(items) / s, 3) for s in secs]}  # fmt: skip
                if kind == "clips":
                    row["audio_s_per_s"] = round(rate * clip_s, 2)
                if kind == "windows":
                    row["frames_per_s"] = round(rate * window_frames, 2)
                rows.append(row)
            if hasattr(emb, "close"):
                emb.close()
            del emb
    ratios: list[Result] = []
    if len(measured) == 2:
        by = {(r["runtime"], r["input"], r["batch_size"]): r["items_per_s"] for r in rows}
        for (rt, kind, b), rate in by.items():
            other = by.get(("transformers", kind, b))
            if rt == "egemma2" and other:
                ratios.append({"input": kind, "batch_size": b, "egemma2_over_transformers": round(rate / other, 2)})
    import torch

    return {
        "device": dev,
        "torch": torch.__version__,
        "model": "EmbeddingGemma 2 shapes (transformers' default configs: text 24 x 512 -> 768-d, Gemma 4 vision "
        "16 x 768 at 280 soft tokens per image and 70 per video frame, Gemma 4 audio 12 x 1024), random weights, "
        "word-level vocabulary",
        "inputs": {
            "texts": "20 words + the document prompt",
            "images": "640x480 JPEG",
            "clips": f"{clip_s:g} s, 16 kHz",
            "windows": f"{window_frames} frames of 640x480 JPEG",
        },
        "n": {"texts": n_texts, "media": n_media},
        "runtimes": measured,
        "runtimes_missing": [r for r in runtimes if r not in measured],
        "rows": rows,
        "ratios": ratios,
    }


def format_gemma2(body: Result) -> str:
    """A plain-text table of the EmbeddingGemma 2 rows."""
    lines = [f"{'runtime':12s} {'input':8s} {'batch':>5s} {'items/s':>9s} {'extra':>20s}"]
    for r in body["rows"]:
        extra = ""
        if "audio_s_per_s" in r:
            extra = f"{r['audio_s_per_s']:.2f} audio-s/s"
        elif "frames_per_s" in r:
            extra = f"{r['frames_per_s']:.2f} frames/s"
        lines.append(f"{r['runtime']:12s} {r['input']:8s} {r['batch_size']:5d} {r['items_per_s']:9.3f} {extra:>20s}")
    for r in body["ratios"]:
        lines.append(f"egemma2 / transformers, {r['input']} batch {r['batch_size']}: {r['egemma2_over_transformers']}x")
    return "\n".join(lines)
