#!/usr/bin/env python3
"""Sanity-check ``queries.jsonl`` against the corpus built by ``fetch_corpus.py``.

Checks that every line parses (also through ``app.evaluate.load_queries`` when the app is importable), ids are
unique, every target and also-relevant file exists, PDF locators are 1-based physical pages within the page count,
non-paged targets have a null locator, and the modality matches the target's kind. Prints counts per modality.

    python eval/devset/check_queries.py [queries.jsonl]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUERY_KINDS = {"text", "speech", "image"}
TARGET_KINDS = {"pdf_page", "image", "video_moment", "audio", "text"}
KIND_BY_SUFFIX = {".pdf": "pdf_page", ".png": "image", ".jpg": "image", ".jpeg": "image"}


def _page_count(path: Path, cache: dict[Path, int]) -> int:
    if path not in cache:
        import pymupdf

        with pymupdf.open(path) as doc:
            cache[path] = doc.page_count
    return cache[path]


def _check_place(base: Path, file: Any, locator: Any, where: str, pages: dict[Path, int]) -> list[str]:
    if not isinstance(file, str) or not file:
        return [f"{where}: file must be a non-empty string"]
    path = base / file
    if not path.is_file():
        return [f"{where}: {file} does not exist"]
    if path.suffix.lower() == ".pdf":
        if not isinstance(locator, int) or isinstance(locator, bool):
            return [f"{where}: PDF locator must be a 1-based page number, got {locator!r}"]
        n = _page_count(path, pages)
        if not 1 <= locator <= n:
            return [f"{where}: page {locator} outside 1..{n} of {file}"]
    elif locator is not None and not isinstance(locator, list):
        return [f"{where}: non-paged file {file} needs a null locator, got {locator!r}"]
    return []


def check(path: Path) -> tuple[list[str], Counter[str]]:
    """Problems found in the queries file, and the number of queries per modality."""
    base = path.parent
    problems: list[str] = []
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    pages: dict[Path, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            q = json.loads(line)
        except ValueError as e:
            problems.append(f"{where}: not JSON ({e})")
            continue
        qid = q.get("id")
        if not isinstance(qid, str) or not qid:
            problems.append(f"{where}: missing id")
        elif qid in seen:
            problems.append(f"{where}: duplicate id {qid}")
        else:
            seen.add(qid)
        where = f"{where} ({qid})"
        modality = str(q.get("modality", ""))
        query_kind, _, target_kind = modality.partition("->")
        if query_kind not in QUERY_KINDS or target_kind not in TARGET_KINDS:
            problems.append(f"{where}: bad modality {modality!r}")
        if not (q.get("query_text") or q.get("query_audio") or q.get("query_image")):
            problems.append(f"{where}: no query_text, query_audio or query_image")
        target = q.get("target_file")
        problems += _check_place(base, target, q.get("target_locator"), where, pages)
        if isinstance(target, str):
            expected = KIND_BY_SUFFIX.get(Path(target).suffix.lower(), "text")
            if target_kind and expected != target_kind:
                problems.append(f"{where}: modality says {target_kind} but {target} looks like {expected}")
        for i, also in enumerate(q.get("also_relevant") or []):
            problems += _check_place(base, also.get("file"), also.get("locator"), f"{where} also[{i}]", pages)
        counts[modality] += 1
    return problems, counts


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else HERE / "queries.jsonl"
    problems, counts = check(path)
    try:
        sys.path.insert(0, str(HERE.parent.parent))
        from app.evaluate import load_queries
    except ImportError:
        print("(app.evaluate not importable; skipped the loader check)")
    else:
        try:
            load_queries(path)
        except Exception as e:  # the loader raises ConfigError; report whatever it says
            problems.append(f"app.evaluate.load_queries: {e}")
    for p in problems:
        print(p)
    for modality, n in sorted(counts.items()):
        print(f"{modality:18} {n}")
    print(f"{'total':18} {sum(counts.values())}  ({'FAILED' if problems else 'ok'})")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
