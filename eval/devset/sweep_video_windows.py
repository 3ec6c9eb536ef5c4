"""Choose the default video window, stride and scene cuts by measurement: the dev set's text->video_moment queries
(queries.jsonl, ids vid-*) against the generated videos alone, one fresh collection per setting.

    python eval/devset/sweep_video_windows.py [--profile offline] [--out docs/eval/video-windows.json]

Each setting re-ingests corpus/video (frame OCR included) with the app's own pipeline and scores the queries the
way ``loupe eval`` does (a returned range overlapping the target range widened by 1 s), so hits are what the app
returns: windows refined to their best frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

import loupe.app.service as service  # noqa: E402  (the repository root goes on sys.path first)
from loupe.app.config import load_settings  # noqa: E402
from loupe.lab.evaluation.retrieval import load_queries, run_queries  # noqa: E402

# (window frames, stride frames, scene cuts)
SETTINGS: tuple[tuple[int, int, bool], ...] = (
    (4, 4, False),
    (8, 8, False),
    (16, 16, False),
    (8, 8, True),
    (16, 16, True),
    (32, 32, True),
)


class MemoOcr:
    """The frame OCR engine, remembered by pixels: every setting reads the same frames, so OCR runs once."""

    def __init__(self) -> None:
        from loupe.ingest.ocr import video_ocr

        self.engine = video_ocr()
        self.name = self.engine.name
        self.seen: dict[bytes, Any] = {}

    def __call__(self, image: Any) -> Any:
        import hashlib

        key = hashlib.sha256(image.tobytes()).digest()
        if key not in self.seen:
            self.seen[key] = self.engine(image)
        return self.seen[key]


def sweep(profile: str, settings: Sequence[tuple[int, int, bool]]) -> list[dict[str, Any]]:
    """One row per setting: R@1/5, MRR@10, nDCG@10 over the vid-* queries, windows made, seconds."""
    queries = [q for q in load_queries(HERE / "queries.jsonl") if q.modality == "text->video_moment"]
    import loupe.ingest.video as ingest_video

    memo = MemoOcr()
    ingest_video.video_ocr = lambda: memo  # type: ignore[assignment]
    orig = service.ingest_options
    rows = []
    for window, stride, cuts in settings:
        update = {"video_window_s": window, "video_stride_s": stride, "video_scene_cuts": cuts}
        service.ingest_options = lambda s, u=update: orig(s).model_copy(update=u)  # type: ignore[misc]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            cfg = load_settings(None, data_dir=tmp, profile=profile, collection="sweep")
            with service.Loupe(cfg) as lp:
                report = lp.ingest([HERE / "corpus" / "video"])
                windows = sum(int(f.details.get("windows", 0)) for f in report.files)

                def search(q: Any, base: Path, lp: Any = lp) -> list[tuple[str, Any, float]]:
                    return [(h.segment.source.uri, h.locator_json, h.score) for h in lp.search(q.text, k=10)]

                scores = run_queries(queries, HERE, search)
        service.ingest_options = orig
        row: dict[str, Any] = {"window_s": window, "stride_s": stride, "scene_cuts": cuts, "windows": windows}
        row |= {k: scores["overall"].get(k) for k in ("n", "R@1", "R@5", "MRR@10", "nDCG@10")}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="offline")
    ap.add_argument("--out", type=Path, default=HERE.parent.parent / "docs" / "eval" / "video-windows.json")
    args = ap.parse_args(argv)
    rows = sweep(args.profile, SETTINGS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"profile": args.profile, "queries": "vid-* (text->video_moment)", "rows": rows}, indent=2)
    )
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
