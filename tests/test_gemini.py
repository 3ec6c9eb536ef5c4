"""The Gemini embedder against a local fake of the documented HTTP contract (no network)."""

from __future__ import annotations

import base64
import io
import logging
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from loupe.app.config import load_settings
from loupe.embedder.base import AudioInput, EmbedInput, ImageInput, TextInput, VideoInput
from loupe.embedder.gemini import GeminiEmbedder, wav_bytes
from loupe.embedder.profiles import profile_from_settings
from loupe.errors import ConfigError, EmbedError
from tests.gemini_fake import KEY, FakeGemini, fake_gemini, vector


@pytest.fixture
def server() -> Iterator[FakeGemini]:
    with fake_gemini() as state:
        yield state


@pytest.fixture
def picture(tmp_path: Path) -> str:
    from PIL import Image

    p = tmp_path / "red.png"
    Image.new("RGB", (16, 12), (200, 0, 0)).save(p)
    return str(p)


def make(server: FakeGemini, **kw: object) -> GeminiEmbedder:
    sleeps: list[float] = []
    emb = GeminiEmbedder(KEY, base_url=server.url, sleep=sleeps.append, **kw)  # type: ignore[arg-type]
    emb.sleeps = sleeps  # type: ignore[attr-defined]
    return emb


def test_request_shape_and_vectors(server: FakeGemini, picture: str, tmp_path: Path) -> None:
    emb = make(server, dim=256)
    clip = AudioInput(np.zeros(1600, dtype=np.float32), 16_000)
    items: list[EmbedInput] = [TextInput("hello"), ImageInput(picture, text="a red card"), clip]
    items += [VideoInput(tuple([picture] * 10), text=None)]
    out = emb.embed(items)
    assert out.shape == (4, 256) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)  # the fake's vectors have norm 3
    assert len(server.requests) == 1
    assert server.headers[0]["x-goog-api-key"] == KEY and "key=" not in server.url
    reqs = server.requests[0]["requests"]
    assert [r["outputDimensionality"] for r in reqs] == [256] * 4
    assert reqs[0]["content"]["parts"] == [{"text": "hello"}]
    img, caption = reqs[1]["content"]["parts"]
    assert img["inline_data"]["mime_type"] == "image/png" and caption == {"text": "a red card"}
    assert base64.b64decode(img["inline_data"]["data"]) == Path(picture).read_bytes()
    audio = reqs[2]["content"]["parts"][0]["inline_data"]
    assert audio["mime_type"] == "audio/wav"
    with wave.open(io.BytesIO(base64.b64decode(audio["data"]))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (16_000, 1, 1600)
    assert len(reqs[3]["content"]["parts"]) == 6  # a video window: at most 6 frames as images
    # The vector is the server's, normalised.
    expected = np.asarray(vector(reqs[0]["content"]["parts"], 256)) / 3.0
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_batches_of_at_most_batch_size_in_order(server: FakeGemini) -> None:
    emb = make(server, batch_size=3)
    texts = [TextInput(f"text {i}") for i in range(7)]
    out = emb.embed(texts)
    assert [len(r["requests"]) for r in server.requests] == [3, 3, 1]
    alone = make(server).embed([texts[5]])
    np.testing.assert_allclose(out[5], alone[0], atol=1e-6)
    assert emb.embed([]).shape == (0, 768)


def test_retries_429_and_5xx_with_bounded_backoff(server: FakeGemini) -> None:
    server.script = [429, 503, 500]
    emb = make(server, max_retries=4, backoff_s=1.0, max_backoff_s=3.0)
    out = emb.embed([TextInput("x")])
    assert out.shape == (1, 768)
    assert emb.sleeps == [1.0, 2.0, 3.0]  # type: ignore[attr-defined]


def test_retry_after_is_honoured_up_to_the_cap(server: FakeGemini) -> None:
    server.script, server.retry_after = [429, 429], "100"
    emb = make(server, max_backoff_s=5.0)
    emb.embed([TextInput("x")])
    assert emb.sleeps == [5.0, 5.0]  # type: ignore[attr-defined]


def test_gives_up_after_max_retries(server: FakeGemini) -> None:
    server.script = [429] * 10
    emb = make(server, max_retries=2)
    with pytest.raises(EmbedError, match=r"HTTP 429.*rate limited"):
        emb.embed([TextInput("x")])
    assert len(server.requests) == 3


def test_bad_key_is_refused_without_leaking_it(server: FakeGemini, caplog: pytest.LogCaptureFixture) -> None:
    secret = "wrong-key-SECRET"
    emb = GeminiEmbedder(secret, base_url=server.url, sleep=lambda s: None)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EmbedError, match="HTTP 401") as info:
        emb.embed([TextInput("x")])
    assert len(server.requests) == 1  # 401 is not retried
    assert secret not in str(info.value) and secret not in repr(emb) and secret not in caplog.text


def test_client_errors_are_reported_not_retried(server: FakeGemini) -> None:
    server.script = [400]
    emb = make(server)
    with pytest.raises(EmbedError, match="HTTP 400: scripted 400"):
        emb.embed([TextInput("x")])
    assert len(server.requests) == 1 and emb.sleeps == []  # type: ignore[attr-defined]
    emb.model = "no model"  # a space breaks the documented path → the fake answers 404
    with pytest.raises(EmbedError, match="HTTP 404"):
        emb.embed([TextInput("x")])


def test_unreachable_server(server: FakeGemini) -> None:
    emb = GeminiEmbedder(KEY, base_url="http://127.0.0.1:9", max_retries=1, sleep=lambda s: None, timeout_s=2)
    with pytest.raises(EmbedError, match="cannot reach the Gemini API"):
        emb.embed([TextInput("x")])


def test_dims_and_key_are_validated() -> None:
    with pytest.raises(ConfigError, match="128-3072"):
        GeminiEmbedder(KEY, dim=64)
    with pytest.raises(ConfigError, match="LOUPE_GEMINI_API_KEY"):
        GeminiEmbedder(None)
    assert GeminiEmbedder(KEY, dim=3072).model_ids == {"unified": "gemini:gemini-embedding-2 (dim 3072)"}


def test_task_types_only_when_asked(server: FakeGemini) -> None:
    make(server).embed([TextInput("q")], role="query")
    assert "taskType" not in server.requests[-1]["requests"][0]
    make(server, query_task="RETRIEVAL_QUERY").embed([TextInput("q")], role="query")
    assert server.requests[-1]["requests"][0]["taskType"] == "RETRIEVAL_QUERY"


def test_embed_file_sends_the_whole_file(server: FakeGemini, tmp_path: Path) -> None:
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(b"%PDF-1.4 fake")
    v = make(server).embed_file(pdf)
    assert v.shape == (768,)
    part = server.requests[-1]["requests"][0]["content"]["parts"][0]["inline_data"]
    assert part["mime_type"] == "application/pdf" and base64.b64decode(part["data"]) == b"%PDF-1.4 fake"


def test_wav_bytes_clips_and_encodes() -> None:
    data = wav_bytes(np.array([0.0, 2.0, -2.0], dtype=np.float32), 8000)
    with wave.open(io.BytesIO(data)) as w:
        frames = np.frombuffer(w.readframes(3), dtype="<i2")
    assert frames.tolist() == [0, 32767, -32767]


def test_profile_from_settings_takes_the_key(server: FakeGemini, tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path, profile="gemini", gemini_api_key=KEY, profile_options={"base_url": server.url})
    prof = profile_from_settings(s)
    assert prof.info.dims == {"unified": 768}
    assert prof.unified.embed([TextInput("hello")]).shape == (1, 768)
    with pytest.raises(ConfigError, match="API key"):
        profile_from_settings(load_settings(data_dir=tmp_path, profile="gemini"))


def test_end_to_end_with_the_gemini_profile(server: FakeGemini, picture: str, tmp_path: Path) -> None:
    """Loupe with the gemini profile ingests text and an image through the fake API and searches them."""
    import shutil

    from loupe.app.service import Loupe

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "seals.md").write_text("# Seals\n\nGrey seals rest on the sandbank near the breakwater.\n")
    shutil.copy(picture, corpus / "red.png")
    settings = load_settings(
        data_dir=tmp_path / "data", profile="gemini", gemini_api_key=KEY, profile_options={"base_url": server.url}
    )
    with Loupe(settings) as lp:
        assert not lp.ingest([corpus]).has_failures
        assert lp.stats()["profile"]["model_ids"] == {"unified": "gemini:gemini-embedding-2 (dim 768)"}
        # The fake's vectors are hashes (no similarity), so only the plumbing is checked here, not the ranking.
        assert lp.search("grey seals") and lp.search(image=str(corpus / "red.png"))
    sent = [p for body in server.requests for r in body["requests"] for p in r["content"]["parts"]]
    assert any("inline_data" in p and p["inline_data"]["mime_type"] == "image/png" for p in sent)
