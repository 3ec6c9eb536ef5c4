"""Screenshots of the Loupe UI for the docs: the sample corpus, the offline profile, headless Debian Chromium.

Ingests ``sample/`` (as ``make demo`` does; unchanged files are skipped), starts ``loupe ui``, and saves:

- ``search-page-hit.png``  a text query whose best hit is a PDF page, drawn with the hit's box;
- ``search-video-hit.png`` the same search box filtered to video: player at the moment and the frame;
- ``search-audio-hit.png`` filtered to sounds: the clip's player;
- ``chat-answer.png``      a question on the Ask page, the answer with [n] citations, the first one opened.

Usage (needs chromium from apt and the dev extra, i.e. playwright)::

    python tools/screenshots.py [--out docs/screenshots] [--data-dir .loupe-demo] [--generator extractive]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the browser driver lives with the tests (tests/ui_browser.py)

from loupe.app.config import load_settings  # noqa: E402
from loupe.app.service import Loupe  # noqa: E402
from tests.ui_browser import (  # noqa: E402
    ask,
    browser_page,
    chromium_missing,
    idle,
    only_kinds,
    open_page,
    running_ui,
    scroll_to,
    search_text,
    shot,
)

# What each screenshot asks; the answers are in sample/ (docs/sample-queries.md lists more).
PAGE_QUERY = "how deep was the north channel dredged and who was the contractor"
VIDEO_QUERY = "container ship passing the lighthouse"
AUDIO_QUERY = "foghorn"
QUESTION = "How deep was the North Channel dredged, and which contractor did the work?"


def ingest_sample(data_dir: Path, collection: str, sample: Path) -> None:
    """Make sure the collection holds the sample corpus (offline profile)."""
    settings = load_settings(data_dir=data_dir, collection=collection, profile="offline")
    with Loupe(settings) as lp:
        summary = lp.ingest([sample]).summary()
    print(f"ingest: {summary['ok']} ingested, {summary['unchanged']} unchanged, {summary['failed']} failed")


def take(out: Path, data_dir: Path, collection: str, generator: str) -> list[Path]:
    """Drive the UI and write the four PNGs; returns their paths."""
    env = {"LOUPE_GENERATOR": generator, "OMP_WAIT_POLICY": "passive"}
    saved: list[Path] = []
    with running_ui(data_dir, collection, "offline", env=env) as url, browser_page(1400, 1000) as page:
        page.goto(url)
        page.get_by_placeholder("words, a phrase or a question", exact=False).wait_for()
        idle(page)
        search_text(page, PAGE_QUERY)
        saved.append(shot(page, out / "search-page-hit.png"))  # the query box and the first row of hits
        only_kinds(page, "Video")
        search_text(page, VIDEO_QUERY)
        page.wait_for_function("() => Array.from(document.querySelectorAll('video')).some(v => v.readyState >= 2)")
        scroll_to(page, page.locator('[data-testid="stMultiSelect"]').first)  # filters and hits in view
        saved.append(shot(page, out / "search-video-hit.png"))
        only_kinds(page, "Sounds")
        search_text(page, AUDIO_QUERY)
        scroll_to(page, page.locator('[data-testid="stMultiSelect"]').first)
        saved.append(shot(page, out / "search-audio-hit.png"))
        open_page(page, "Ask")
        ask(page, QUESTION)
        page.locator('[data-testid="stExpander"]').first.wait_for()
        idle(page)
        scroll_to(page, page.locator('[data-testid="stChatMessage"]').first)  # the question, answer, citation
        saved.append(shot(page, out / "chat-answer.png"))
    return saved


def main() -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".loupe-demo", help="as make demo (DEMO_DATA)")
    parser.add_argument("--collection", default="demo")
    parser.add_argument("--sample", type=Path, default=ROOT / "sample")
    parser.add_argument(
        "--generator",
        default="extractive",
        help="answer mode for the Ask shot (default extractive: quoted passages; 'local' uses the packaged model)",
    )
    args = parser.parse_args()
    why = chromium_missing()
    if why:
        print(f"cannot take screenshots: {why}", file=sys.stderr)
        return 2
    os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    ingest_sample(args.data_dir, args.collection, args.sample)
    for path in take(args.out, args.data_dir, args.collection, args.generator):
        print(f"{path.stat().st_size:>8}  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
