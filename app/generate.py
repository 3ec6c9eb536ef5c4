"""Answers with citations. This first version is extractive: the best sentences of the top hits, each
cited as [n]. Generators through llama-index come with the RAG issue; the extractive answer stays as the
fallback whenever no generator is reachable, and is labelled as such.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from app.types import Hit

_WORD = re.compile(r"\w+", re.UNICODE)
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")
# Words that carry no evidence of relevance; a short list is enough for sentence picking.
_STOP = frozenset(
    (
        "a an and are as at be by for from has have how in is it its of on or that the this to was were what when "
        "where which who why will with does do did can"
    ).split()
)


@dataclass(frozen=True)
class Citation:
    """[n] in the answer → the hit it points to."""

    n: int
    hit: Hit


@dataclass(frozen=True)
class Answer:
    """An answer, its citations, and how it was made."""

    text: str
    citations: list[Citation] = field(default_factory=list)
    mode: Literal["extractive", "generated"] = "extractive"
    label: str = ""


def _terms(text: str) -> set[str]:
    return {w for w in (t.lower() for t in _WORD.findall(text)) if w not in _STOP and len(w) > 1}


def extractive_answer(question: str, hits: Sequence[Hit], *, max_passages: int = 3, max_chars: int = 400) -> Answer:
    """Pick, from each of the top hits, the sentences sharing most terms with the question; cite them [n].

    >>> extractive_answer("what?", []).text
    'No passage in the collection matches the question.'
    """
    if not hits:
        return Answer("No passage in the collection matches the question.", [], "extractive", _LABEL)
    q = _terms(question)
    lines: list[str] = []
    cites: list[Citation] = []
    for n, hit in enumerate(hits[:max_passages], start=1):
        text = (hit.segment.text or "").strip()
        if not text:
            continue
        sents = [s.strip() for s in _SENT.split(text) if s.strip()]
        ranked = sorted(range(len(sents)), key=lambda i: (-len(q & _terms(sents[i])), i))
        chosen: list[int] = []
        size = 0
        for i in ranked:
            if size + len(sents[i]) > max_chars and chosen:
                break
            chosen.append(i)
            size += len(sents[i])
        passage = " ".join(sents[i] for i in sorted(chosen))
        if len(passage) > max_chars:
            passage = passage[: max_chars - 1].rstrip() + "…"
        lines.append(f"{passage} [{n}]")
        cites.append(Citation(n, hit))
    return Answer("\n\n".join(lines), cites, "extractive", _LABEL)


_LABEL = "Extractive answer: the best-matching passages, quoted with citations (no generator is configured)."
