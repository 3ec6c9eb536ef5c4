"""Loupe as a llama-index retriever, so any llama-index query or chat engine can search a Loupe collection.

>>> from llama_index.core.query_engine import RetrieverQueryEngine  # doctest: +SKIP
>>> engine = RetrieverQueryEngine.from_args(LoupeRetriever(Loupe(load_settings())), llm=my_llm)  # doctest: +SKIP
>>> print(engine.query("How deep is the north channel?"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from loupe.app.retrieve import Filters
from loupe.app.service import Loupe
from loupe.types import Hit, PageLoc, TimeLoc


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """Flat metadata a llama-index node carries: where the text is, so answers can cite it."""
    seg = hit.segment
    meta: dict[str, Any] = {"file": seg.source.uri, "title": seg.source.title, "modality": seg.modality}
    if isinstance(seg.locator, PageLoc):
        meta["page"] = seg.locator.page
        if seg.locator.bbox:
            meta["bbox"] = list(seg.locator.bbox)
    elif isinstance(seg.locator, TimeLoc):
        meta["start_s"], meta["end_s"] = seg.locator.start_s, seg.locator.end_s
    return meta


class LoupeRetriever(BaseRetriever):
    """A llama-index ``BaseRetriever`` over Loupe's hybrid multimodal search (text, or text+image through
    ``QueryBundle(query_str, image_path=...)``). Node metadata says where each hit is (file, page/box, times).

    With a Loupe generator it makes a llama-index chat engine (condense-plus-context):

    >>> engine = CondensePlusContextChatEngine.from_defaults(LoupeRetriever(lp), llm=lp.llm)  # doctest: +SKIP
    """

    def __init__(self, loupe: Loupe, *, k: int = 5, filters: Filters | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._loupe = loupe
        self._k = k
        self._filters = filters

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # A bundle's image_path makes a composite text+image query (each part embedded, fused with RRF).
        image = query_bundle.image_path or None
        hits = self._loupe.search(query_bundle.query_str or None, image=image, k=self._k, filters=self._filters)
        return [
            NodeWithScore(
                node=TextNode(id_=h.segment.id, text=h.segment.text or "", metadata=hit_metadata(h)), score=h.score
            )
            for h in hits
        ]
