"""``loupe`` command line: ingest, search, ask, collections, delete, ui.

Settings are built here once (config file → ``LOUPE_*`` env → flags) and passed down. Errors Loupe raises on
purpose are printed as one line without a traceback; exit codes: 0 ok, 3 ingest completed with failures,
4 the collection was built with another embedding profile (re-ingest it, or use another collection), 2 usage or
configuration error, 1 any other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from loupe.app.config import Settings, load_settings
from loupe.app.retrieve import Filters
from loupe.app.service import Loupe
from loupe.errors import ConfigError, LoupeError, ProfileMismatchError
from loupe.types import Hit, PageLoc

EXIT_FAILURES = 3
# Its own code, so that scripts can tell "rebuild this collection" from other failures (`make demo` does).
EXIT_PROFILE_MISMATCH = 4


def add_common_options(p: argparse.ArgumentParser) -> None:
    """The options every collection command takes (data dir, collection, config file, profile)."""
    p.add_argument("--data-dir", help="where indexes, media and reports live (env LOUPE_DATA_DIR)")
    p.add_argument("--collection", "-c", help="collection (knowledge base) name (env LOUPE_COLLECTION)")
    p.add_argument("--config", help="YAML settings file (env LOUPE_CONFIG)")
    p.add_argument(
        "--profile",
        help="embedding profile: offline (default), native (GPU models), native-gemma2 (EmbeddingGemma 2), "
        "gemini (API key) or fake (tests)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="loupe", description="Multimodal search and cited answers over your files.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest files and folders into a collection")
    add_common_options(p)
    p.add_argument("paths", nargs="+", help="files or folders")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--prune", action="store_true", help="delete sources under PATHS whose files no longer exist")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="extract and embed on a Ray cluster (pip install -e '.[ray]'): no ADDRESS starts a local Ray; "
        "'auto', HOST:6379 or ray://HOST:10001 joins a cluster (env LOUPE_RAY_ADDRESS; docs/distributed.md)",
    )
    p.add_argument("--ray-workers", type=int, help="Ray actors to start (default: one per CPU, or per GPU)")

    p = sub.add_parser("search", help="search a collection")
    add_common_options(p)
    p.add_argument("text", nargs="?", default=None, help="query text")
    p.add_argument("--image", help="query image file")
    p.add_argument("--audio", help="query audio file (spoken query)")
    p.add_argument("--k", type=int, default=10, help="number of hits (default 10)")
    p.add_argument("--modality", action="append", default=[], help="only this modality (repeatable)")
    p.add_argument("--source", action="append", default=[], help="only this source file (repeatable)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")

    p = sub.add_parser("ask", help="ask a question; the answer cites its sources [n]")
    add_common_options(p)
    p.add_argument("question")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--image", help="add an image to the retrieval query")
    p.add_argument("--generator", help="extractive | local | openai | gemini | vlm (env LOUPE_GENERATOR)")
    p.add_argument("--generator-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1")
    p.add_argument("--generator-model", help="model name, .gguf file or VLM folder")

    p = sub.add_parser("collections", help="list collections and their contents")
    add_common_options(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("delete", help="delete a source (its points) from a collection")
    add_common_options(p)
    p.add_argument("source", help="the file path as it was ingested")

    p = sub.add_parser("serve", help="start the REST API (OpenAPI schema at /openapi.json, docs at /docs)")
    add_common_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-auth", action="store_true", help="no API keys: one local user (loopback hosts only)")

    p = sub.add_parser("apikey", help="make a new API key and print the entry for the keys file")
    p.add_argument("--tenant", required=True, help="the tenant the key acts for")
    p.add_argument("--collection", action="append", default=[], help="NAME:read or NAME:write ('*' for all)")
    p.add_argument("--name", help="a label for the key (shown in logs, never the key)")

    p = sub.add_parser("ui", help="start the Streamlit UI")
    add_common_options(p)
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1")
    for name, handler in _plugin_commands(sub).items():
        _PLUGIN_HANDLERS[name] = handler
    return parser


Handler = Callable[[argparse.Namespace], int]
# Commands registered by other distributions' or rooms' entry points (loupe eval, bench, train live in loupe.lab,
# which sits above app/: the product never imports it; it registers itself in pyproject.toml).
_PLUGIN_HANDLERS: dict[str, Handler] = {}
PLUGIN_GROUP = "loupe.commands"


def _plugin_commands(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Let each ``loupe.commands`` entry point add its subcommands; returns their handlers by name.

    An entry point names a function ``register(sub) -> {command: handler}``. One that fails to load is reported
    and skipped, so a broken optional install never takes the product's own commands down with it.
    """
    handlers: dict[str, Handler] = {}
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            register = ep.load()
            handlers.update(register(sub))
        except Exception as e:  # a plugin's import error must not break `loupe ingest`
            print(f"loupe: command {ep.name!r} unavailable ({ep.value}: {e})", file=sys.stderr)
    return handlers


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings object for a command: the config file and env, overridden by the common options."""
    return load_settings(
        args.config,
        data_dir=args.data_dir,
        collection=args.collection,
        profile=args.profile,
    )


def hit_json(hit: Hit) -> dict[str, Any]:
    """The documented hit shape: file, modality, locator (page int | [start, end] | null), score, text."""
    seg = hit.segment
    return {
        "file": seg.source.uri,
        "modality": seg.modality,
        "locator": hit.locator_json,
        "score": round(float(hit.score), 6),
        "text": seg.text,
        "bbox": list(seg.locator.bbox) if isinstance(seg.locator, PageLoc) and seg.locator.bbox else None,
        "rank": hit.rank,
    }


def _where(hit: Hit) -> str:
    loc = hit.locator_json
    if isinstance(loc, int):
        return f"page {loc}"
    if isinstance(loc, list):
        return f"{loc[0]:.1f}-{loc[1]:.1f} s"
    return ""


def _snippet(text: str | None, width: int = 160) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= width else t[: width - 1] + "…"


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.ray or args.ray_workers:
        settings = settings.model_copy(
            update={
                "ray_address": args.ray or settings.ray_address or "local",
                "ray_workers": args.ray_workers or settings.ray_workers,
            }
        )
    with Loupe(settings) as lp:
        report = lp.ingest(args.paths, prune=args.prune, show_progress=not args.quiet and sys.stderr.isatty())
    report_path = args.report or (lp.settings.data_dir / "reports" / f"ingest-{lp.collection}-latest.json")
    report.write(report_path)
    s = report.summary()
    for f in report.files:
        if f.status == "failed":
            print(f"FAILED  {f.path}: {f.reason}", file=sys.stderr)
    print(
        f"{s['files']} files: {s['ok']} ok, {s['unchanged']} unchanged, {s['failed']} failed, {s['skipped']} skipped; "
        f"{s['segments']} segments in {s['seconds']:.1f} s -> collection {s['collection']!r}; report: {report_path}"
    )
    return EXIT_FAILURES if report.has_failures else 0


def cmd_search(args: argparse.Namespace) -> int:
    if not (args.text or args.image or args.audio):
        raise ConfigError('give a query: loupe search "text" [--image FILE] [--audio FILE]')
    filters = Filters(modalities=tuple(args.modality), sources=tuple(str(Path(s).absolute()) for s in args.source))
    with Loupe(settings_from_args(args)) as lp:
        hits = lp.search(args.text, image=args.image, audio=args.audio, k=args.k, filters=filters)
    if args.json:
        print(json.dumps([hit_json(h) for h in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no hits")
    for h in hits:
        print(f"{h.rank:>2}. {h.score:.4f}  {h.segment.source.uri}  {_where(h)}  [{h.segment.modality}]")
        print(f"    {_snippet(h.segment.text)}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    settings = load_settings(
        args.config,
        data_dir=args.data_dir,
        collection=args.collection,
        profile=args.profile,
        generator=args.generator,
        generator_url=args.generator_url,
        generator_model=args.generator_model,
    )
    with Loupe(settings) as lp:
        stream = lp.ask_stream(args.question, k=args.k, image=args.image)
        if args.json:
            answer = stream.answer
            out = {
                "answer": answer.text,
                "mode": answer.mode,
                "label": answer.label,
                "flags": list(answer.flags),
                "model": answer.model,
                "question": stream.standalone_question,
                "ttft_s": round(stream.ttft_s, 3) if stream.ttft_s is not None else None,
                "citations": [{"n": c.n, **hit_json(c.hit)} for c in answer.citations],
            }
            print(json.dumps(out, ensure_ascii=False, indent=2))
            return 0
        for piece in stream:  # token by token as the generator writes
            print(piece, end="", flush=True)
        print()
        answer = stream.answer
    if stream.replaced:
        print("\n--- checked answer ---")
        print(answer.text)
    print()
    print(answer.label)
    if answer.citations:
        print()
        for c in answer.citations:
            print(f"[{c.n}] {c.hit.segment.source.uri} {_where(c.hit)}")
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    out = []
    for name in Loupe(settings).collections():
        with Loupe(settings.model_copy(update={"collection": name})) as lp:
            try:
                out.append(lp.stats())
            except LoupeError as e:
                out.append({"collection": name, "error": str(e)})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if not out:
        print(f"no collections in {settings.data_dir}")
    for s in out:
        if "error" in s:
            print(f"{s['collection']}: {s['error']}")
            continue
        mods = ", ".join(f"{k} {v}" for k, v in s["per_modality"].items())
        name, profile = s["collection"], s["profile"]["name"]
        print(f"{name}: {s['points']} points from {s['sources']} sources ({mods}); profile {profile}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with Loupe(settings_from_args(args)) as lp:
        n = lp.delete_source(args.source)
    print(f"deleted {n} points of {Path(args.source).absolute()}")
    return 0 if n else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from loupe.app.api import create_app

    if args.no_auth and args.host not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError("--no-auth serves only on a loopback host (127.0.0.1); use API keys for other hosts")
    settings = settings_from_args(args)
    app = create_app(settings, no_auth=args.no_auth)
    print(f"Loupe API on http://{args.host}:{args.port}/docs  (data {settings.data_dir})")
    # Idle keep-alive connections are closed after 5 s so slow or stalled clients cannot hold sockets open.
    uvicorn.run(app, host=args.host, port=args.port, timeout_keep_alive=5, log_level="info")
    return 0


def cmd_apikey(args: argparse.Namespace) -> int:
    from loupe.app.tenants import hash_key, new_key, valid_name

    if not valid_name(args.tenant):
        raise ConfigError("--tenant uses letters, digits, '-' and '_' (1-64 characters)")
    rights = {}
    for spec in args.collection or ["*:read"]:
        name, _, right = spec.partition(":")
        if right not in ("read", "write") or not (name == "*" or valid_name(name)):
            raise ConfigError(f"--collection {spec!r}: give NAME:read or NAME:write")
        rights[name] = right
    key = new_key()
    entry = {"name": args.name or f"{args.tenant}-key", "sha256": hash_key(key), "tenant": args.tenant}
    print(f"API key (shown once; store it now): {key}", file=sys.stderr)
    print("# add under 'keys:' in the keys file")
    print("- " + json.dumps({**entry, "collections": rights}))
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    env = dict(os.environ)
    env["LOUPE_DATA_DIR"] = str(settings.data_dir)
    env["LOUPE_COLLECTION"] = settings.collection
    env["LOUPE_PROFILE"] = settings.profile
    app_file = Path(__file__).resolve().parent.parent / "ui" / "streamlit_app.py"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_file),
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # No "Deploy" button and developer menu: this is an app for analysts, not a Streamlit project.
        "--client.toolbarMode",
        "minimal",
    ]
    print(f"Loupe UI on http://{args.host}:{args.port}  (collection {settings.collection!r}, data {settings.data_dir})")
    sys.stdout.flush()
    # Become the Streamlit server rather than wait on it: stopping `loupe ui` then stops the server too.
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


COMMANDS = {
    "ingest": cmd_ingest,
    "search": cmd_search,
    "ask": cmd_ask,
    "collections": cmd_collections,
    "delete": cmd_delete,
    "ui": cmd_ui,
    "serve": cmd_serve,
    "apikey": cmd_apikey,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loupe`` command."""
    # unstructured prints an advertisement on import unless told not to.
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    # OpenMP threads that spin while waiting stalled single query embeds (~30 ms → ~1.6 s) on a busy 2-core
    # machine; passive waiting kept batch throughput (measured in `loupe bench query`). Read at OpenMP start.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    args = build_parser().parse_args(argv)
    try:
        handler = COMMANDS.get(args.command) or _PLUGIN_HANDLERS[args.command]
        return handler(args)
    except ConfigError as e:
        print(f"loupe: {e}", file=sys.stderr)
        return 2
    except ProfileMismatchError as e:
        print(f"loupe: {e}", file=sys.stderr)
        return EXIT_PROFILE_MISMATCH
    except LoupeError as e:
        print(f"loupe: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("loupe: interrupted; rerun the same command to resume (finished files are kept)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
