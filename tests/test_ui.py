"""The Streamlit page (ui/streamlit_app.py) driven through AppTest, on the fake embedding profile."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.config import load_settings
from app.service import Loupe

APP = Path(__file__).resolve().parent.parent / "ui" / "streamlit_app.py"


@pytest.fixture(autouse=True)
def ui_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """LOUPE_* pointing at a fresh data dir; the resource cache (the cached Loupe) cleared before and after."""
    monkeypatch.setenv("LOUPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOUPE_PROFILE", "fake")
    monkeypatch.setenv("LOUPE_COLLECTION", "test")
    monkeypatch.delenv("LOUPE_CONFIG", raising=False)
    st.cache_resource.clear()
    yield data_dir
    st.cache_resource.clear()  # on_release closes the index so the next test (or process) can open it


def ingest(data_dir: Path, paths: list[Path]) -> None:
    """Ingest with the facade, then close: the embedded index allows one opener at a time."""
    with Loupe(load_settings(data_dir=data_dir, profile="fake", collection="test")) as lp:
        report = lp.ingest(paths)
    assert not report.has_failures


@pytest.fixture
def docs(tmp_path: Path, data_dir: Path) -> list[Path]:
    """Three small text files, ingested into collection ``test``."""
    folder = tmp_path / "docs"
    folder.mkdir()
    files = {
        "seals.md": "# Wildlife\n\nA colony of grey seals rests on the sandbank near the breakwater.\n",
        "lighthouse.txt": "The board approved the budget for lighthouse repairs on Tuesday.\n",
        "ferry_notes.txt": "Ferry tickets [cheap] can be bought at the kiosk *by the pier*.\n",
    }
    paths = []
    for name, text in files.items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    ingest(data_dir, paths)
    return paths


def run_app() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def markdown_text(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def test_empty_data_dir_shows_kind_message() -> None:
    at = run_app()
    assert at.title[0].value == "Loupe"
    assert any("Nothing ingested yet" in str(i.value) for i in at.info)
    assert "test" in at.sidebar.header[0].value


def test_search_shows_matching_file(docs: list[Path]) -> None:
    at = run_app()
    assert [m.value for m in at.sidebar.metric] == ["3", "3"]  # points, sources
    at.text_input(key="query").input("lighthouse repairs budget").run()
    assert not at.exception, [e.value for e in at.exception]
    text = markdown_text(at)
    assert "lighthouse.txt" in text
    assert "**lighthouse**" in text  # query words emphasised
    assert any(str(docs[1]) in str(c.value).replace("\\", "") for c in at.caption)  # full path, small text


def test_search_escapes_document_markdown(docs: list[Path]) -> None:
    at = run_app()
    at.text_input(key="query").input("ferry kiosk").run()
    text = markdown_text(at)
    assert r"\[cheap\]" in text and r"\*by the pier\*" in text
    # The filter offers the modalities present; picking the only one keeps the hits.
    assert at.sidebar.multiselect(key="modalities").options == ["text"]
    at.sidebar.multiselect(key="modalities").select("text").run()
    assert "ferry\\_notes.txt" in markdown_text(at)
    assert not any("No matches" in str(i.value) for i in at.info)


def test_ask_tab_cites_sources(docs: list[Path]) -> None:
    at = run_app()
    assert [t.label for t in at.tabs] == ["Search", "Ask"]
    at.text_input(key="question").input("When were the lighthouse repairs approved?").run()
    assert not at.exception, [e.value for e in at.exception]
    ask = at.tabs[1]
    assert ask.info and "Extractive" in str(ask.info[0].value)
    cites = [str(m.value) for m in ask.markdown]
    assert any(c.startswith("**[1]**") for c in cites)
    assert any("lighthouse repairs" in c for c in cites)


def test_image_hit_shows_the_image(corpus: Path, data_dir: Path) -> None:
    ingest(data_dir, [corpus / "harbour_map.png", corpus / "notes.md"])
    at = run_app()
    at.sidebar.multiselect(key="modalities").select("image").run()
    at.text_input(key="query").input("harbour map").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "harbour\\_map.png" in markdown_text(at)
    assert len(at.get("image")) >= 1


def test_page_imports_the_app_package_in_a_fresh_process(data_dir: Path, tmp_path: Path) -> None:
    """Streamlit puts ui/ first on sys.path: nothing there may shadow the ``app`` package."""
    code = (
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP)!r}, default_timeout=60).run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "print(at.info[0].value)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Nothing ingested yet" in out.stdout
