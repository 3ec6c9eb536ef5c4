"""The Streamlit UI (ui/streamlit_app.py and its pages in ui/views/) driven through AppTest, on the fake profile.

Each test checks what a user would see: the right file in the results, previews of the right kind, kind messages
(never a traceback) for an empty collection, a bad upload, no hits, a stopped generator and a locked collection.
"""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from loupe.app.config import load_settings
from loupe.app.service import Loupe
from loupe.types import Hit, PageLoc, Segment, SourceRef
from loupe.ui.common import cited_markdown, clock, crop_around, emphasise, md_escape, snippet, where
from tests.conftest import write_pdf
from tests.media_fixtures import make_scene_video, needs_ffmpeg, tone, write_wav

APP = Path(__file__).resolve().parent.parent / "ui" / "streamlit_app.py"


@pytest.fixture(autouse=True)
def ui_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """LOUPE_* pointing at a fresh data dir; the resource cache (the cached Loupe) cleared before and after."""
    monkeypatch.setenv("LOUPE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("LOUPE_PROFILE", "fake")
    monkeypatch.setenv("LOUPE_COLLECTION", "test")
    monkeypatch.setenv("LOUPE_GENERATOR", "extractive")
    for name in ("LOUPE_CONFIG", "LOUPE_API_ALLOWED_ROOTS", "LOUPE_GENERATOR_URL"):
        monkeypatch.delenv(name, raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield data_dir
    st.cache_resource.clear()  # on_release closes the index so the next test (or process) can open it
    st.cache_data.clear()


def ingest(data_dir: Path, paths: list[Path]) -> None:
    """Ingest with the facade, then close: the embedded index allows one opener at a time."""
    with Loupe(load_settings(data_dir=data_dir, profile="fake", collection="test")) as lp:
        report = lp.ingest(paths)
    assert not report.has_failures, report.to_json()


@pytest.fixture
def docs(tmp_path: Path, data_dir: Path) -> list[Path]:
    """Three small text files and a two-page PDF, ingested into collection ``test``."""
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
    paths.append(
        write_pdf(
            folder / "report.pdf",
            ["Harbour annual report and mission.", "Dredging of the north channel removed forty thousand tonnes."],
        )
    )
    ingest(data_dir, paths)
    return paths


def picture(path: Path, colour: str = "blue") -> Path:
    img = Image.new("RGB", (64, 48), "white")
    img.paste(Image.new("RGB", (30, 20), colour), (8, 8))
    img.save(path)
    return path


def run_app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    if page is not None:
        at.switch_page(page).run()
    assert_kind(at)
    return at


def assert_kind(at: AppTest) -> None:
    """No traceback reached the page."""
    assert not at.exception, [e.value for e in at.exception]


def markdown_text(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def image_captions(at: AppTest) -> list[str]:
    return [str(c) for img in at.get("image") for c in getattr(img, "captions", [])]


def alerts(at: AppTest) -> str:
    return "\n".join(str(a.value) for a in [*at.info, *at.warning, *at.error, *at.success])


# -- pure helpers ------------------------------------------------------------------------------------------------
def test_md_escape_and_emphasis_keep_document_text_inert() -> None:
    assert md_escape("# not a heading <b>x</b> [link](u)") == r"\# not a heading \<b\>x\</b\> \[link\](u)"
    out = emphasise("The crane *lifts* 40 t at the pier.", "crane pier the")
    assert out == r"The **crane** \*lifts\* 40 t at the **pier**."  # stop words are not emphasised


def test_cited_markdown_bolds_marks_but_not_document_brackets() -> None:
    assert (
        cited_markdown("Deepened to 13.5 m [1]. See *notes* [2]")
        == r"Deepened to 13.5 m **[1]**. See \*notes\* **[2]**"
    )
    assert cited_markdown("a [b] c") == r"a \[b\] c"


def test_snippet_clock_where() -> None:
    assert snippet("a  b\n c") == "a b c"
    assert snippet("x" * 10, width=5) == "xxxx…"
    assert clock(75.9) == "1:15" and clock(3725) == "1:02:05"
    src = SourceRef("/a.pdf", "0" * 64, "application/pdf", "a", 1, 0.0)
    assert where(Hit(Segment("s", src, "text", PageLoc(3), "t"), 1.0)) == "page 3"
    assert where(Hit(Segment("s", src, "text", None, "t"), 1.0)) == ""


def test_crop_around_keeps_the_box_and_full_width() -> None:
    page = Image.new("RGB", (300, 1000))
    band = crop_around(page, (50, 500, 250, 510))
    assert band.width == 300
    assert band.height >= 100  # at least a third of the width, though the box is 10 px high
    assert band.height < 400
    assert crop_around(page, (0, 0, 300, 1000)).size == (300, 1000)


# -- pages -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [None, "views/chat.py", "views/collections.py"])
def test_empty_collection_says_what_to_do(page: str | None) -> None:
    at = run_app(page)
    assert "is empty" in alerts(at) and "Ingest" in alerts(at)
    assert not at.text_input and not at.chat_input


def test_navigation_lists_the_four_pages() -> None:
    at = run_app()
    assert at.title[0].value == "Search"
    for page, title in [
        ("views/chat.py", "Ask"),
        ("views/ingest.py", "Ingest"),
        ("views/collections.py", "Collections"),
    ]:
        at.switch_page(page).run()
        assert_kind(at)
        assert at.title[0].value == title


def test_search_shows_matching_file_with_emphasis_and_path(docs: list[Path]) -> None:
    at = run_app()
    at.text_input(key="query").input("lighthouse repairs budget").run()
    assert_kind(at)
    text = markdown_text(at)
    assert "lighthouse.txt" in text.split("**2.**")[0]  # first card
    assert "**lighthouse**" in text
    assert any(str(docs[1]) in str(c.value).replace("\\", "") for c in at.caption)
    assert any(getattr(b, "label", "") == "Open source" for b in at.get("download_button"))


def test_search_escapes_document_markdown_and_filters(docs: list[Path]) -> None:
    at = run_app()
    at.text_input(key="query").input("ferry kiosk").run()
    assert r"\[cheap\]" in markdown_text(at) and r"\*by the pier\*" in markdown_text(at)
    assert at.multiselect(key="modalities").options == ["Text"]  # labels of the kinds present
    at.multiselect(key="sources").select(str(docs[2])).run()
    assert_kind(at)
    cards = [m for m in markdown_text(at).splitlines() if m.startswith("**") and "score" in m]
    assert cards and all("ferry\\_notes.txt" in c for c in cards)


def test_page_hit_shows_the_page_with_its_box(docs: list[Path]) -> None:
    at = run_app()
    at.text_input(key="query").input("dredging north channel").run()
    assert_kind(at)
    assert "report.pdf · page 2" in markdown_text(at)
    assert "page 2, the matching passage" in image_captions(at)


def test_no_hits_message(docs: list[Path], data_dir: Path, tmp_path: Path) -> None:
    ingest(data_dir, [picture(tmp_path / "map.png")])
    at = run_app()
    at.multiselect(key="modalities").select("Images").run()
    at.multiselect(key="sources").select(str(docs[1])).run()  # a text file, filtered to images: nothing
    at.text_input(key="query").input("lighthouse").run()
    assert_kind(at)
    assert "No matches" in alerts(at)


def test_image_query_finds_the_same_picture(docs: list[Path], data_dir: Path, tmp_path: Path) -> None:
    target = picture(tmp_path / "harbour_map.png", "blue")
    ingest(data_dir, [target, picture(tmp_path / "other.png", "red")])
    at = run_app()
    at.file_uploader(key="image").set_value(("query.png", target.read_bytes(), "image/png")).run()
    assert_kind(at)
    first = markdown_text(at).split("**2.**")[0]
    assert "harbour\\_map.png" in first and "Images" in first
    assert "your picture" in image_captions(at)
    assert len(at.get("image")) >= 2  # the query picture and the hit's


def test_broken_image_upload_is_a_message_not_a_traceback(docs: list[Path]) -> None:
    at = run_app()
    at.file_uploader(key="image").set_value(("photo.png", b"not a png at all", "image/png")).run()
    assert_kind(at)
    assert "not a picture Loupe can read" in alerts(at)
    assert "score" not in markdown_text(at)


@needs_ffmpeg
def test_voice_query_and_media_previews(data_dir: Path, tmp_path: Path) -> None:
    """A recording as the query; video hits get a player at the moment and a frame, audio hits a player."""
    sound = write_wav(tmp_path / "horn.wav", np.concatenate([tone(1.5, 220.0), np.zeros(8000), tone(1.0, 660.0)]))
    video = make_scene_video(tmp_path / "scene.mp4", 3, audio=sound)
    ingest(data_dir, [sound, video])
    at = run_app()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((tone(1.0, 220.0) * 32767).astype("<i2").tobytes())
    at.audio_input(key="voice").set_value(("rec.wav", buf.getvalue(), "audio/wav")).run()
    assert_kind(at)
    assert "results for recording" in "\n".join(str(c.value) for c in at.caption)
    at.multiselect(key="modalities").select("Video").run()
    assert_kind(at)
    assert len(at.get("video")) >= 1
    at.multiselect(key="modalities").unselect("Video").select("Sounds").run()
    at.multiselect(key="sources").select(str(sound)).run()
    assert_kind(at)
    assert len(at.get("audio")) >= 1


def test_ask_streams_an_extractive_answer_with_citations(docs: list[Path]) -> None:
    at = run_app("views/chat.py")
    at.chat_input(key="question").set_value("When were the lighthouse repairs approved?").run()
    assert_kind(at)
    assert "Extractive" in "\n".join(str(c.value) for c in at.caption)
    assert "**[1]**" in markdown_text(at)
    labels = [e.label for e in at.expander]
    assert labels and labels[0].startswith("[1] lighthouse.txt")
    # The conversation stays on the page for the next question.
    at.chat_input(key="question").set_value("and the seals?").run()
    assert_kind(at)
    assert len(at.get("chat_message")) == 4


def test_stopped_generator_falls_back_with_a_warning(docs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator whose endpoint is down: the passages are shown, labelled, no traceback."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("LOUPE_GENERATOR", "openai")
    monkeypatch.setenv("LOUPE_GENERATOR_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("LOUPE_GENERATOR_MODEL", "none")
    monkeypatch.setenv("LOUPE_GENERATOR_TIMEOUT_S", "2")
    at = run_app("views/chat.py")
    at.chat_input(key="question").set_value("When were the lighthouse repairs approved?").run()
    assert_kind(at)
    assert at.warning and "unavailable" in str(at.warning[0].value)
    assert "**[1]**" in markdown_text(at)


class _StopsMidAnswer(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that streams two pieces of an answer, then drops the connection."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", "100000")  # promises more than it sends
        self.end_headers()
        for piece in ("The board approved the repairs ", "on Tuesday [1]"):
            event = {"choices": [{"delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_generator_stopping_mid_answer_keeps_the_text_and_says_so(
    docs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StopsMidAnswer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("LOUPE_GENERATOR", "openai")
        monkeypatch.setenv("LOUPE_GENERATOR_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
        monkeypatch.setenv("LOUPE_GENERATOR_MODEL", "stub")
        at = run_app("views/chat.py")
        at.chat_input(key="question").set_value("When were the lighthouse repairs approved?").run()
    finally:
        server.shutdown()
        server.server_close()
    assert_kind(at)
    assert at.warning and "stopped early" in str(at.warning[0].value)
    assert "approved the repairs" in markdown_text(at)


def test_ask_error_is_a_message(docs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Loupe, "ask_stream", broken)
    at = run_app("views/chat.py")
    at.chat_input(key="question").set_value("anything?").run()
    assert_kind(at)
    assert "failed unexpectedly" in alerts(at) and "disk on fire" in alerts(at)


def test_ingest_page_uploads_and_reports(data_dir: Path) -> None:
    at = run_app("views/ingest.py")
    assert "No server folder" in alerts(at)
    at.file_uploader(key="uploads").set_value(
        [
            ("notes.txt", b"The pilot boat Tern is electric.", "text/plain"),
            ("broken.pdf", b"%PDF-1.4 junk", "application/pdf"),
        ]
    ).run()
    at.button(key="ingest_uploads").click().run()
    assert_kind(at)
    assert [m.value for m in at.metric][:3] == ["1", "0", "1"]  # ingested, unchanged, failed
    assert "could not be read" in alerts(at)
    rows = at.dataframe[0].value
    assert set(rows["status"]) == {"ok", "failed"}
    assert rows[rows["status"] == "failed"]["reason"].iloc[0]
    # The uploads are kept: previews and "Open source" read them later.
    assert (data_dir / "uploads" / "test" / "notes.txt").is_file()
    # Searching now finds the uploaded file.
    at.switch_page("views/search.py").run()
    at.text_input(key="query").input("pilot boat").run()
    assert "notes.txt" in markdown_text(at)


def test_ingest_page_folder_under_allowed_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "archive"
    (root / "2025").mkdir(parents=True)
    (root / "2025" / "minutes.txt").write_text("The ferry timetable changes in May.")
    monkeypatch.setenv("LOUPE_API_ALLOWED_ROOTS", str(root))
    at = run_app("views/ingest.py")
    at.text_input(key="subfolder").input("../..").run()
    assert "outside the allowed folders" in alerts(at)
    at.text_input(key="subfolder").input("2025").run()
    assert "1 files" in "\n".join(str(c.value) for c in at.caption)
    at.button(key="ingest_folder").click().run()
    assert_kind(at)
    assert at.metric[0].value == "1"
    at.button(key="ingest_folder").click().run()
    assert [m.value for m in at.metric][:2] == ["0", "1"]  # the second time it is unchanged


def test_collections_page_counts_deletes_and_rebuilds(docs: list[Path]) -> None:
    at = run_app("views/collections.py")
    assert [m.value for m in at.metric] == [str(2 + 3), "4"]  # points (PDF pages 2 + 3 texts), sources
    assert "fake-hash-64" in str(at.dataframe[1].value["model"].tolist())
    at.selectbox(key="victim").select(str(docs[1])).run()
    at.checkbox(key="sure_delete").check().run()
    at.button(key="delete").click().run()
    assert_kind(at)
    assert "Deleted lighthouse.txt" in alerts(at).replace("\\", "")
    at.run()
    assert at.metric[1].value == "3"
    at.checkbox(key="sure_rebuild").check().run()
    at.button(key="rebuild").click().run()
    assert_kind(at)
    assert "up to date" in alerts(at)
    at.run()
    assert at.metric[1].value == "3"


def test_sidebar_switches_collection_and_starts_a_new_one(docs: list[Path], data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("Cormorants dry their wings on the mooring posts.")
    with Loupe(load_settings(data_dir=data_dir, profile="fake", collection="birds")) as lp:
        lp.ingest([other])
    at = run_app("views/collections.py")
    picker = at.sidebar.selectbox(key="collection_choice")
    assert picker.options == ["birds", "test"] and picker.value == "test"
    picker.select("birds").run()
    assert_kind(at)
    assert [m.value for m in at.metric] == ["1", "1"]
    # A typed new name (AppTest cannot type into the box: a new session starts with the name as its state).
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.session_state["collection_choice"] = "fresh"
    at.run()
    assert_kind(at)
    assert at.sidebar.selectbox(key="collection_choice").value == "fresh"
    assert "`fresh` is empty" in alerts(at)


def test_locked_collection_explains_how_to_share(docs: list[Path], data_dir: Path) -> None:
    """Another process (here: another open index) holds the embedded collection: say so and what to do."""
    with Loupe(load_settings(data_dir=data_dir, profile="fake", collection="test")) as other:
        other.stats()  # takes the lock
        at = run_app()
        assert "another Loupe process" in alerts(at)
        assert "Ingest" in alerts(at)
    at.button(key="retry_open").click().run()  # "Try again" once the other process is gone
    assert_kind(at)
    assert at.text_input(key="query")


def test_release_lets_another_process_open_the_collection(docs: list[Path], data_dir: Path) -> None:
    at = run_app("views/collections.py")
    at.button(key="release").click().run()
    assert "Released" in alerts(at)
    with Loupe(load_settings(data_dir=data_dir, profile="fake", collection="test")) as other:
        assert other.stats()["sources"] == 4


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
    assert "is empty" in out.stdout
