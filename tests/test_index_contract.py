"""IndexContract: the same behaviour from every engine available here (Edge, qdrant-client local and memory,
and a Qdrant server when LOUPE_QDRANT_URL is set). Congruence: all engines rank the same way."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from loupe.embedder.base import TextInput
from loupe.embedder.fake import FakeEmbedder
from loupe.embedder.profiles import ProfileInfo
from loupe.errors import ProfileMismatchError, StoreError
from loupe.index.engines import FieldFilter, Sparse
from loupe.index.store import Index, IndexConfig, _make_engine
from loupe.types import PageLoc, Segment, SourceRef, segment_id

DIM = 32
PROFILE = ProfileInfo("fake", {"unified": "fake-hash-32"}, {"unified": DIM})
TEXTS = {
    "/c/a.pdf": ["red cranes lift containers", "the north channel was dredged"],
    "/c/b.md": ["grey seals rest on the sandbank"],
    "/c/c.txt": ["ferry tickets at the kiosk", "lighthouse repairs approved", "budget for the pier"],
}


def _engines() -> list[str]:
    out = ["edge", "local", "memory"]
    if os.environ.get("LOUPE_QDRANT_URL"):
        out.append("server")
    return out


def make_cfg(kind: str, tmp_path: Path, collection: str = "t") -> IndexConfig:
    if kind == "server":
        return IndexConfig(tmp_path, f"{collection}_{os.getpid()}", qdrant_url=os.environ["LOUPE_QDRANT_URL"])
    return IndexConfig(tmp_path, collection, engine=kind)  # type: ignore[arg-type]


def segments(uri: str, sha: str = "1" * 64) -> list[Segment]:
    src = SourceRef(uri, sha, "text/plain", Path(uri).stem, 1, 0.0)
    out = []
    for i, t in enumerate(TEXTS[uri]):
        loc = PageLoc(i + 1)
        out.append(Segment(segment_id(src, "text", loc), src, "text", loc, t))
    return out


def fill(idx: Index, emb: FakeEmbedder) -> None:
    for uri in TEXTS:
        segs = segments(uri)
        vecs = emb.embed([TextInput(s.text or "") for s in segs])
        idx.upsert(segs, [{"unified": v} for v in vecs], source_segments=len(segs))


class WordIds:
    """A stand-in for embedder.pieces.WordPieces: one id per distinct word, weight = count."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def document(self, text: str) -> tuple[list[int], list[float]]:
        counts: dict[int, float] = {}
        for word in text.split():
            i = self.ids.setdefault(word, len(self.ids) + 1)
            counts[i] = counts.get(i, 0.0) + 1.0
        return sorted(counts), [counts[i] for i in sorted(counts)]

    def query(self, *words: str) -> Sparse:
        return Sparse([self.ids[w] for w in words], [1.0] * len(words))


@pytest.fixture(params=_engines())
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Index:
    cfg = make_cfg(request.param, tmp_path)
    idx = Index.open(cfg, PROFILE, pieces=WordIds())
    request.addfinalizer(idx.drop if request.param == "server" else idx.close)
    return idx


class TestIndexContract:
    emb = FakeEmbedder(DIM)

    def test_upsert_count_and_idempotent(self, index: Index) -> None:
        fill(index, self.emb)
        assert index.count() == 6
        fill(index, self.emb)  # content-derived ids: a replay adds nothing
        assert index.count() == 6
        assert index.sources() == {"/c/a.pdf": 2, "/c/b.md": 1, "/c/c.txt": 3}
        st = index.stats()
        assert st["points"] == 6 and st["sources"] == 3 and st["per_modality"] == {"text": 6}

    def test_dense_bm25_and_hybrid(self, index: Index) -> None:
        fill(index, self.emb)
        q = self.emb.embed([TextInput("seals sandbank")], role="query")[0]
        dense = index.search([("unified", q, 1.0)], None, limit=3)
        assert dense[0][0].source.uri == "/c/b.md"
        sparse = index.search([], "dredged channel", limit=3)
        assert sparse[0][0].text == "the north channel was dredged"
        hybrid = index.search([("unified", q, 1.0)], "seals", limit=3)
        assert hybrid[0][0].source.uri == "/c/b.md"
        assert hybrid[0][0].locator == PageLoc(1)

    def test_word_piece_stage(self, index: Index) -> None:
        fill(index, self.emb)
        assert isinstance(index.pieces, WordIds)
        found = index.search([], None, pieces=index.pieces.query("lighthouse", "repairs"), limit=3)
        assert found[0][0].text == "lighthouse repairs approved"
        q = self.emb.embed([TextInput("seals sandbank")], role="query")[0]
        both = index.search([("unified", q, 1.0)], None, pieces=index.pieces.query("grey", "seals"), limit=3)
        assert both[0][0].source.uri == "/c/b.md"
        # the stage is fused like BM25: weighting it away leaves the dense ranking
        dense = index.search([("unified", q, 1.0)], None, limit=3)
        off = index.search([("unified", q, 1.0)], None, pieces=index.pieces.query("ferry"), pieces_weight=0.0, limit=3)
        assert [s.id for s, _ in off] == [s.id for s, _ in dense]

    def test_filters(self, index: Index) -> None:
        fill(index, self.emb)
        q = self.emb.embed([TextInput("seals sandbank")], role="query")[0]
        only_c = index.search([("unified", q, 1.0)], None, flt=FieldFilter(must={"source.uri": "/c/c.txt"}), limit=10)
        assert {s.source.uri for s, _ in only_c} == {"/c/c.txt"}
        pages = index.search([("unified", q, 1.0)], None, flt=FieldFilter(ranges={"locator.page": (2, 3)}), limit=10)
        assert pages and all(s.locator.page >= 2 for s, _ in pages)  # type: ignore[union-attr]
        assert index.count(FieldFilter(must={"source.uri": ["/c/a.pdf", "/c/b.md"]})) == 3

    def test_replace_and_delete_source(self, index: Index) -> None:
        fill(index, self.emb)
        new = segments("/c/a.pdf", sha="2" * 64)
        index.upsert(new, [{"unified": v} for v in self.emb.embed([TextInput(s.text or "") for s in new])], 2)
        assert {s.sha256 for s in index.source_states("/c/a.pdf")} == {"1" * 64, "2" * 64}
        assert index.delete_source("/c/a.pdf", keep_sha256="2" * 64) == 2
        states = index.source_states("/c/a.pdf")
        assert len(states) == 1 and states[0].sha256 == "2" * 64 and states[0].complete
        assert index.delete_source("/c/a.pdf") == 2
        assert index.count() == 4 and "/c/a.pdf" not in index.sources()

    def test_wrong_dimension_refused(self, index: Index) -> None:
        seg = segments("/c/b.md")
        with pytest.raises(StoreError, match="does not fit"):
            index.upsert(seg, [{"unified": np.ones(DIM + 1, dtype=np.float32)}], 1)


@pytest.mark.parametrize("kind", ["edge", "local"])
def test_profile_mismatch_refused_on_reopen(kind: str, tmp_path: Path) -> None:
    cfg = make_cfg(kind, tmp_path)
    Index.open(cfg, PROFILE).close()
    other_model = ProfileInfo("fake", {"unified": "fake-hash-other"}, {"unified": DIM})
    other_dim = ProfileInfo("fake", {"unified": "fake-hash-32"}, {"unified": DIM * 2})
    other_name = ProfileInfo("offline", {"unified": "e5"}, {"unified": 384})
    for other, needle in [(other_model, "model"), (other_dim, "dimension"), (other_name, "offline")]:
        with pytest.raises(ProfileMismatchError, match=needle) as e:
            Index.open(cfg, other)
        assert "'fake'" in str(e.value)
    Index.open(cfg, PROFILE).close()  # the right profile still opens
    assert Index.stored_profile(cfg) == PROFILE


def test_collection_without_piece_vectors_skips_the_stage(tmp_path: Path) -> None:
    """A collection created before the word-piece vector existed: nothing is written to it or asked of it."""
    cfg = make_cfg("edge", tmp_path)
    engine = _make_engine(cfg)
    engine.create(dict(PROFILE.dims), {"loupe_schema": 1, "collection": "t", "profile": PROFILE.to_json()})
    engine.close()
    words = WordIds()
    idx = Index.open(cfg, PROFILE, pieces=words)
    assert idx.pieces is None
    fill(idx, FakeEmbedder(DIM))
    assert idx.count() == 6 and not words.ids  # no piece vectors computed
    found = idx.search([], "seals", pieces=Sparse([1], [1.0]), limit=3)
    assert found[0][0].source.uri == "/c/b.md"
    idx.close()


def test_edge_persists_and_locks(tmp_path: Path) -> None:
    cfg = make_cfg("edge", tmp_path)
    emb = FakeEmbedder(DIM)
    idx = Index.open(cfg, PROFILE)
    fill(idx, emb)
    with pytest.raises(StoreError, match="open in another Loupe process"):
        Index.open(cfg, PROFILE)
    idx.close()
    again = Index.open(cfg, PROFILE)
    assert again.count() == 6
    again.close()
    assert Index.list_collections(cfg) == ["t"]


def test_engines_agree(tmp_path: Path) -> None:
    """Congruence: Edge and qdrant-client rank the same top hits for dense, sparse and hybrid queries."""
    emb = FakeEmbedder(DIM)
    results = {}
    for kind in ("edge", "memory"):
        idx = Index.open(make_cfg(kind, tmp_path / kind), PROFILE)
        fill(idx, emb)
        out = []
        for text in ["seals sandbank", "ferry kiosk", "lighthouse budget pier", "cranes"]:
            q = emb.embed([TextInput(text)], role="query")[0]
            out.append([s.id for s, _ in idx.search([("unified", q, 1.0)], None, limit=3)])
            out.append([s.id for s, _ in idx.search([], text, limit=3)][:1])
        results[kind] = out
        idx.close()
    assert results["edge"] == results["memory"]


def test_tied_scores_rank_by_point_id_whatever_order_the_engine_gives() -> None:
    import random

    from loupe.index.engines import Found
    from loupe.index.store import deterministic_order

    found = [Found(f"id-{i}", s, {}) for i, s in enumerate([0.5, 0.7, 0.5, 0.7, 0.9, 0.5])]
    want = ["id-4", "id-1", "id-3", "id-0", "id-2"]
    for seed in range(5):
        shuffled = found[:]
        random.Random(seed).shuffle(shuffled)
        assert [f.id for f in deterministic_order(shuffled, 5)] == want


def test_a_fused_query_ranks_the_same_every_time(index: Index) -> None:
    """Two stages with the same weight tie often under RRF; the order of tied points is by id, not the engine's."""
    emb = FakeEmbedder(dim=DIM)
    fill(index, emb)
    q = emb.embed([TextInput("seals at the pier")], role="query")[0]
    runs = [[s.id for s, _ in index.search([("unified", q, 1.0)], "seals pier ferry", limit=6)] for _ in range(3)]
    assert runs[0] == runs[1] == runs[2] and len(runs[0]) == 6
    scores = [sc for _, sc in index.search([("unified", q, 1.0)], "seals pier ferry", limit=6)]
    assert scores == sorted(scores, reverse=True)
