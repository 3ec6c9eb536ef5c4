"""The llama-index adapter, and the README example run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import load_settings
from app.llama import LoupeRetriever
from app.service import Loupe

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
