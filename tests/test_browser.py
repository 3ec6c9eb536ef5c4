"""End to end in a real browser: ``loupe ui`` on a small generated corpus, driven in headless Debian Chromium.

Searches by text, by an uploaded picture, by an uploaded WAV and by a microphone recording (Chromium's fake capture
device playing a WAV), opens a page hit and a video hit, asks a question and opens a citation; asserts on the DOM.
Screenshots land in the test's tmp folder (kept by pytest) and, when ``LOUPE_SCREENSHOTS`` names a folder, are
copied there too. The fake profile keeps it fast; the offline profile's screenshots for the docs come from
tools/screenshots.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from loupe.app.config import load_settings
from loupe.app.service import Loupe
from tests.conftest import write_pdf
from tests.media_fixtures import have_ffmpeg, make_scene_video, tone, write_wav
from tests.ui_browser import (
    ask,
    browser_page,
    chromium_missing,
    clear_uploads,
    idle,
    loaded_images,
    main_text,
    only_kinds,
    open_page,
    record,
    running_ui,
    search_text,
    shot,
    upload,
    videos,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or ""),
    pytest.mark.skipif(not have_ffmpeg(), reason="needs ffmpeg for the video and audio files"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A PDF, a picture, a 3 s video with sound and a WAV, ingested with the fake profile."""
    root = tmp_path_factory.mktemp("browser")
    files = root / "files"
    files.mkdir()
    pdf = write_pdf(
        files / "report.pdf",
        [
            "Harbour annual report. Introduction to the port authority and its mission.",
            "Dredging of the north channel removed forty thousand cubic metres of silt in spring.",
        ],
    )
    img = Image.new("RGB", (160, 120), "white")
    ImageDraw.Draw(img).rectangle((20, 20, 120, 80), fill="navy")
    img.save(files / "harbour_map.png")
    wav = write_wav(files / "horn.wav", np.concatenate([tone(1.5, 220.0), np.zeros(8000), tone(1.0, 660.0)]))
    video = make_scene_video(files / "webcam.mp4", 3, audio=wav)
    data = root / "data"
    data.mkdir()
    with Loupe(load_settings(data_dir=data, profile="fake", collection="e2e")) as lp:
        report = lp.ingest([files])
    assert not report.has_failures, report.to_json()
    return {"data": data, "pdf": pdf, "image": files / "harbour_map.png", "wav": wav, "video": video}


@pytest.fixture(scope="module")
def page(corpus: dict[str, Path]) -> Iterator[Any]:
    """The UI on the corpus, open in Chromium."""
    env = {"LOUPE_GENERATOR": "extractive"}
    with running_ui(corpus["data"], "e2e", "fake", env=env) as url, browser_page(microphone=corpus["wav"]) as pg:
        pg.goto(url)
        pg.get_by_placeholder("words, a phrase or a question", exact=False).wait_for()
        idle(pg)
        yield pg


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where screenshots go; copied to $LOUPE_SCREENSHOTS at the end when it is set."""
    folder = tmp_path_factory.mktemp("screenshots")
    yield folder
    target = os.environ.get("LOUPE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for png in folder.glob("*.png"):
            shutil.copy2(png, Path(target) / png.name)


def test_text_search_shows_the_page_with_its_box(page: Any, shots: Path) -> None:
    search_text(page, "dredging north channel silt")
    text = main_text(page)
    assert "results for" in text
    first = text.split("2.")[0]
    assert "report.pdf" in first and "page 2" in first
    assert "the matching passage" in text
    assert loaded_images(page) >= 1
    # Open the whole page.
    page.get_by_role("button", name="Whole page").first.click()
    popover = page.locator('[data-testid="stPopoverBody"]')
    popover.wait_for()
    assert popover.locator("img").count() == 1
    shot(page, shots / "e2e-page-hit.png")
    page.keyboard.press("Escape")


def test_image_upload_finds_the_picture(page: Any, shots: Path, corpus: dict[str, Path]) -> None:
    search_text(page, "")
    upload(page, "Search by image", corpus["image"])
    page.get_by_text("results for image").wait_for()
    text = main_text(page)
    assert "results for" in text
    assert "harbour_map.png" in text.split("2.")[0]
    shot(page, shots / "e2e-image-query.png")
    clear_uploads(page)


def test_wav_upload_is_a_voice_query(page: Any, corpus: dict[str, Path]) -> None:
    upload(page, "upload a recording", corpus["wav"])
    page.get_by_text("results for recording").wait_for()
    text = main_text(page)
    assert "results for recording" in text
    assert "Something went wrong" not in text and "Traceback" not in text
    clear_uploads(page)


def test_video_hit_plays_from_the_moment(page: Any, shots: Path) -> None:
    only_kinds(page, "Video")
    search_text(page, "webcam")
    assert "webcam.mp4" in main_text(page)
    page.wait_for_function("() => Array.from(document.querySelectorAll('video')).some(v => v.readyState >= 1)")
    found = videos(page)
    assert found and all(v["error"] is None for v in found)
    assert any(v["ready"] >= 1 for v in found)  # the browser loaded the media: it can play it
    shot(page, shots / "e2e-video-hit.png")
    only_kinds(page)


def test_microphone_recording_is_a_voice_query(page: Any, shots: Path) -> None:
    """st.audio_input with Chromium's fake microphone playing the WAV: record, stop, the recording is the query."""
    search_text(page, "")
    record(page, 2.0)
    page.get_by_text("results for recording").wait_for()
    assert "score" in main_text(page)
    shot(page, shots / "e2e-microphone.png")


def test_chat_answer_cites_and_opens_the_passage(page: Any, shots: Path) -> None:
    open_page(page, "Ask")
    ask(page, "How much silt did the dredging of the north channel remove?")
    text = main_text(page)
    assert "Extractive answer" in text
    assert "[1]" in text
    expanders = page.locator('[data-testid="stExpander"]')
    assert expanders.count() >= 1
    assert "report.pdf" in expanders.first.inner_text()
    # The first citation is open and shows the page band; open the next one too.
    if expanders.count() > 1:
        expanders.nth(1).locator("summary").click()
        idle(page)
    assert loaded_images(page) >= 1
    shot(page, shots / "e2e-chat.png")
