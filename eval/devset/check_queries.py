"""Validate the dev set: every line parses with Loupe's own loader, every target and also-relevant place exists
(PDF pages in range), each modality names known kinds and fits its target file; print the counts per modality.

    python eval/devset/check_queries.py [queries.jsonl]
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from loupe.errors import ConfigError  # noqa: E402  (the repository root goes on sys.path first)
from loupe.lab.evaluation.retrieval import check_places, load_queries  # noqa: E402

QUERY_KINDS = {"text", "speech", "image", "audio"}
TARGET_KINDS = {"pdf_page", "image", "video_moment", "audio", "text"}
KIND_BY_SUFFIX = {".pdf": "pdf_page", ".png": "image", ".jpg": "image", ".jpeg": "image", ".mp4": "video_moment"}
KIND_BY_SUFFIX |= dict.fromkeys((".ogg", ".opus", ".wav", ".mp3", ".flac", ".m4a"), "audio")


def check(path: Path) -> tuple[list[str], Counter[str]]:
    """Problems found and the number of queries per modality."""
    try:
        queries = load_queries(path)
    except ConfigError as e:
        return [str(e)], Counter()
    problems = check_places(queries, path.parent)
    for q in queries:
        query_kind, _, target_kind = q.modality.partition("->")
        if query_kind not in QUERY_KINDS or target_kind not in TARGET_KINDS:
            problems.append(f"query {q.id!r}: bad modality {q.modality!r}")
        expected = KIND_BY_SUFFIX.get(Path(q.target.file).suffix.lower(), "text")
        if target_kind and expected != target_kind:
            problems.append(f"query {q.id!r}: modality says {target_kind} but {q.target.file} looks like {expected}")
    return problems, Counter(q.modality for q in queries)


def main(argv: Sequence[str] | None = None) -> int:
    """Print problems and counts; exit 1 when there is any problem."""
    args = list(sys.argv[1:] if argv is None else argv)
    problems, counts = check(Path(args[0]) if args else HERE / "queries.jsonl")
    for p in problems:
        print(p)
    for modality, n in sorted(counts.items()):
        print(f"{modality:18} {n}")
    print(f"{'total':18} {sum(counts.values())}  ({'FAILED' if problems else 'ok'})")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
