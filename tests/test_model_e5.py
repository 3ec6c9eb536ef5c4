"""EmbedderContract over every backend, and the real package-shipped e5 weights (marker ``model``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loupe.app.config import load_settings
from loupe.app.service import Loupe
from loupe.embedder.base import Embedder, ImageInput, TextInput
from loupe.embedder.e5 import E5Embedder
from loupe.embedder.fake import FakeEmbedder
from loupe.errors import EmbedError


class EmbedderContract:
    """What every backend guarantees; subclasses provide ``make``."""

    def make(self) -> Embedder:
        raise NotImplementedError

    def test_shape_dtype_norm_order(self) -> None:
        e = self.make()
        assert isinstance(e, Embedder) and "unified" in e.model_ids
        texts = ["short", "a much longer text about harbour cranes and dredging " * 3, "mid length text"]
        v = e.embed([TextInput(t) for t in texts])
        assert v.shape == (3, e.dim) and v.dtype == np.float32
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
        # Batching must restore the input order: each row equals the text embedded alone.
        for i, t in enumerate(texts):
            assert np.allclose(e.embed([TextInput(t)])[0], v[i], atol=1e-4)
        assert e.embed([]).shape == (0, e.dim)

    def test_related_text_is_closer(self) -> None:
        e = self.make()
        q = e.embed([TextInput("grey seals on the sandbank")], role="query")[0]
        docs = e.embed([TextInput("seals rest on a sandbank by the breakwater"), TextInput("the budget for 2026")])
        assert float(docs[0] @ q) > float(docs[1] @ q)


class TestFakeEmbedder(EmbedderContract):
    def make(self) -> Embedder:
        return FakeEmbedder(48)


@pytest.mark.model
class TestE5Embedder(EmbedderContract):
    def make(self) -> Embedder:
        return E5Embedder()

    def test_multilingual_and_text_only(self) -> None:
        e = E5Embedder()
        q = e.embed([TextInput("Wo kann man Fährtickets kaufen?")], role="query")[0]
        docs = e.embed(
            [TextInput("Ferry tickets can be bought at the kiosk by the pier."), TextInput("Cranes lift containers.")]
        )
        assert float(docs[0] @ q) > float(docs[1] @ q)
        with pytest.raises(EmbedError, match="text only"):
            e.embed([ImageInput("x.png")])


@pytest.mark.model
def test_offline_profile_finds_the_page(corpus: Path, data_dir: Path) -> None:
    """Real weights end to end: a paraphrased question finds the right PDF page first."""
    with Loupe(load_settings(None, data_dir=str(data_dir), collection="e5")) as lp:
        assert lp.profile.name == "offline"
        r = lp.ingest([corpus])
        assert not r.has_failures
        hits = lp.search("how many cranes does the container terminal have?", k=3)
        assert Path(hits[0].segment.source.uri).name == "report.pdf" and hits[0].locator_json == 3
        hits = lp.search("Robben auf der Sandbank", k=3)  # German query, English text
        assert Path(hits[0].segment.source.uri).name == "notes.md"
