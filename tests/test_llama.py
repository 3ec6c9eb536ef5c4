"""The llama-index adapter, and the README example run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loupe.app.config import load_settings
from loupe.app.llama import LoupeRetriever
from loupe.app.service import Loupe

README = Path(__file__).resolve().parent.parent / "README.md"


def test_retriever_returns_nodes_with_places(corpus: Path, data_dir: Path) -> None:
    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        lp.ingest([corpus])
        nodes = LoupeRetriever(lp, k=3).retrieve("six ship-to-shore cranes container terminal")
    assert nodes and nodes[0].node.metadata["file"].endswith("report.pdf") and nodes[0].node.metadata["page"] == 3
    assert "cranes" in nodes[0].node.get_content()


def test_readme_llama_index_example_runs(corpus: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"```python\n(# llama-index example.*?)```", README.read_text(), re.S)
    assert block, "README must hold the llama-index example"
    code = block.group(1)
    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        lp.ingest([corpus])
    # The example builds its own Loupe from settings: point it at the test data and the fake profile.
    monkeypatch.setenv("LOUPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOUPE_PROFILE", "fake")
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    response = scope["response"]
    assert response.source_nodes and response.source_nodes[0].node.metadata["file"].endswith(".pdf")  # type: ignore[attr-defined]


def test_retriever_takes_an_image_with_the_text(corpus: Path, data_dir: Path, tmp_path: Path) -> None:
    from llama_index.core.schema import QueryBundle
    from PIL import Image

    picture = tmp_path / "q.png"
    Image.new("RGB", (32, 32), (10, 120, 200)).save(picture)
    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        lp.ingest([corpus])
        text_only = LoupeRetriever(lp, k=3).retrieve("six ship-to-shore cranes container terminal")
        both = LoupeRetriever(lp, k=3).retrieve(
            QueryBundle("six ship-to-shore cranes container terminal", image_path=str(picture))
        )
    assert both and text_only and both[0].node.metadata["page"] == 3
    assert [n.score for n in both] != [n.score for n in text_only]  # the image part took part in the fusion


def test_a_llama_index_chat_engine_runs_on_loupe_retriever_and_generator(corpus: Path, data_dir: Path) -> None:
    from collections.abc import Iterator, Sequence

    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.chat_engine import CondensePlusContextChatEngine

    from loupe.app.llm import StreamingLLM, message_text

    class Echo(StreamingLLM):
        """Answers with the first words of the context it was given, so the test can see retrieval happened."""

        def stream_messages(self, messages: Sequence[ChatMessage]) -> Iterator[str]:
            text = " ".join(message_text(m) for m in messages)
            yield "cranes" if "cranes" in text else "nothing"

    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake")) as lp:
        lp.ingest([corpus])
        engine = CondensePlusContextChatEngine.from_defaults(LoupeRetriever(lp, k=2), llm=Echo())
        first = engine.chat("How many ship-to-shore cranes does the container terminal have?")
        follow = engine.chat("and where are they?")
    assert str(first) == "cranes" and first.source_nodes[0].node.metadata["file"].endswith("report.pdf")
    assert follow.source_nodes  # the follow-up was condensed with the history and retrieved again
