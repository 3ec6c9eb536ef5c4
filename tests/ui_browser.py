"""Drive ``loupe ui`` in Debian's headless Chromium through Playwright (the PyPI package; no browser download).

Shared by the browser test (tests/test_browser.py, fake profile) and the screenshot script
(tools/screenshots.py, offline profile on the sample corpus). Selectors use Streamlit's ``data-testid``
attributes and visible text, which are what a user sees.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# The flags the issue names: no sandbox (root in CI containers), no GPU, and nothing that phones home.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parent.parent
# Streamlit answers its health check within ~2 s on an idle machine (stack-notes); a busy 2-core CI box is slower.
START_TIMEOUT_S = 60.0
# Streamlit took ~15 s to stop on SIGTERM on the busy CI machine; then it is killed.
STOP_TIMEOUT_S = 20.0
# Waiting for a result: the first query loads the embedder (seconds for the offline profile).
WAIT_MS = 120_000
MAIN = '[data-testid="stMainBlockContainer"]'


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
        return "needs Debian's chromium: apt-get install chromium (make system-deps does it as root)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "needs the playwright package: pip install -e '.[dev]'"
    return None


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_ui(data_dir: Path, collection: str, profile: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``loupe ui`` in a subprocess until the block ends; yields its URL once the health check answers."""
    port = free_port()
    cmd = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())", "ui"]
    cmd += ["--data-dir", str(data_dir), "--collection", collection, "--profile", profile, "--port", str(port)]
    full_env = {**os.environ, **(env or {})}
    log = data_dir / f"ui-{port}.log"
    with log.open("w") as out:
        # Own process group: whatever the server starts is stopped with it.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"loupe ui exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"loupe ui did not answer within {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000, *, microphone: Path | None = None) -> Iterator[Any]:
    """A Playwright page in headless Debian Chromium; with ``microphone``, that WAV file is the microphone."""
    from playwright.sync_api import sync_playwright

    exe = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    flags = list(CHROMIUM_FLAGS)
    if microphone is not None:
        # Chromium's fake capture device plays the file as the microphone; the fake UI grants the permission.
        flags += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
        ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=flags, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if microphone is not None:
                page.context.grant_permissions(["microphone"])
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


# -- actions -------------------------------------------------------------------------------------------------
def idle(page: Any) -> None:
    """Wait until Streamlit has finished the current run and drawn it.

    The app root carries ``data-test-script-state`` (``running`` / ``notRunning``). A run starts a moment after
    the action that caused it, so first give it up to a second to start, then wait for it to end, for spinners
    and skeleton placeholders to go and for every image to be decoded.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    state = "() => { const app = document.querySelector('.stApp'); return app && app.dataset.testScriptState; }"
    with contextlib.suppress(PlaywrightTimeout):  # a run that was over before we looked
        page.wait_for_function(f"() => ({state})() === 'running'", timeout=1000)
    page.wait_for_function(
        f"""() => {{
            if (({state})() === 'running') return false;
            if (document.querySelector('[data-testid="stSkeleton"], [data-testid="stSpinner"]')) return false;
            return Array.from(document.querySelectorAll('img')).every(i => i.complete);
        }}""",
        timeout=WAIT_MS,
    )
    page.wait_for_timeout(300)


def open_page(page: Any, name: str) -> None:
    """Click a page in the sidebar navigation (keeps the session, unlike a fresh URL)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=name).first.click()
    page.get_by_role("heading", name=name, exact=True).first.wait_for()
    idle(page)


def search_text(page: Any, text: str) -> None:
    """Type a query into the search box and press Enter; wait for the results line."""
    box = page.get_by_placeholder("words, a phrase or a question", exact=False)
    box.fill(text)
    box.press("Enter")
    idle(page)


def upload(page: Any, label: str, path: Path) -> None:
    """Put a file into the file uploader whose label is ``label``."""
    widget = page.locator('[data-testid="stFileUploader"]', has_text=label).first
    widget.locator('input[type="file"]').set_input_files(str(path))
    widget.locator('[data-testid="stFileChip"]').first.wait_for()  # uploaded; the rerun starts after this
    idle(page)


def clear_uploads(page: Any) -> None:
    """Remove every uploaded file from the uploaders on the page."""
    buttons = page.locator('[data-testid="stFileChipDeleteBtn"] button')
    while buttons.count():
        buttons.first.click()
        idle(page)


def record(page: Any, seconds: float = 2.0) -> None:
    """Record from the microphone with the "Search by voice" widget for ``seconds``."""
    widget = page.locator('[data-testid="stAudioInput"]').first
    widget.get_by_role("button", name="Record").click()
    page.wait_for_timeout(int(seconds * 1000))
    widget.get_by_role("button", name="Stop recording").click()
    idle(page)


def only_kinds(page: Any, *kinds: str) -> None:
    """Set the "Only these kinds" filter to ``kinds`` (their on-screen names, e.g. "Video")."""
    widget = page.locator('[data-testid="stMultiSelect"]', has_text="Only these kinds").first
    clear = widget.locator('[data-testid="stMultiSelectClearAll"], [aria-label="Clear all"]')
    if clear.count():
        clear.first.click()
        idle(page)
    for kind in kinds:
        widget.locator("input").first.click()
        page.get_by_role("option", name=kind, exact=True).click()
        idle(page)
    page.keyboard.press("Escape")
    idle(page)


def ask(page: Any, question: str) -> None:
    """Send a question in the chat box and wait for the answer's first citation."""
    box = page.locator('[data-testid="stChatInput"] textarea')
    box.fill(question)
    box.press("Enter")
    idle(page)


def scroll_to(page: Any, locator: Any) -> None:
    """Scroll the main area so that ``locator`` is at the top of the window."""
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)


def main_text(page: Any) -> str:
    """All visible text of the main area."""
    return str(page.locator(MAIN).inner_text())


def videos(page: Any) -> list[dict[str, Any]]:
    """Every <video> on the page: its source, current time and ready state (4 = can play through)."""
    js = (
        "() => Array.from(document.querySelectorAll('video')).map(v => ({src: v.currentSrc || v.src, "
        "time: v.currentTime, ready: v.readyState, error: v.error ? v.error.code : null}))"
    )
    result: list[dict[str, Any]] = page.evaluate(js)
    return result


def loaded_images(page: Any) -> int:
    """How many <img> in the main area have decoded pixels."""
    return int(
        page.evaluate(
            "() => Array.from(document.querySelectorAll('[data-testid=\"stMainBlockContainer\"] img'))"
            ".filter(i => i.complete && i.naturalWidth > 0).length"
        )
    )


def shot(page: Any, path: Path, *, locator: Any = None, max_colours: int = 256) -> Path:
    """A PNG of the page (or one element), quantised to a palette so that it stays small in git."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_suffix(".raw.png")
    (locator or page).screenshot(path=str(raw))
    with Image.open(raw) as im:
        im.convert("RGB").quantize(colors=max_colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    return path
