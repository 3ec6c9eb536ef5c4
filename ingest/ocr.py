"""OCR for pages without a text layer: RapidOCR with the PP-OCR weights that ship in its wheel.

Kept behind a small protocol so the PDF module stays testable without the model and another engine
(tesseract, a GPU OCR) can be dropped in.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from loupe.errors import IngestError


@dataclass(frozen=True)
class OcrLine:
    """One recognised line: its text, the engine's confidence and its box in image pixels."""

    text: str
    score: float
    box: tuple[float, float, float, float]


class OcrEngine(Protocol):
    """Image (H×W×3 uint8 RGB) in, lines out."""

    name: str

    def __call__(self, image: np.ndarray) -> list[OcrLine]:
        """Recognise the lines of text in an image."""
        ...


class RapidOcr:
    """PP-OCRv6 small detection + recognition through ``rapidocr`` (onnxruntime, CPU)."""

    name = "rapidocr-ppocrv6-small"

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        """``params``: RapidOCR settings by dotted name (e.g. ``{"Det.limit_side_len": 640}``); None: its defaults."""
        self._engine: Any = None
        self._params = dict(params or {})
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._engine is None:
                try:
                    from rapidocr import RapidOCR
                except ImportError as e:
                    raise IngestError("ocr", "OCR needs the 'rapidocr' package: pip install rapidocr==3.10.0") from e
                # rapidocr logs every model file it opens at INFO and resets its logger's level when it builds
                # an engine; a filter survives that and keeps ingest output readable. It also warns for every
                # picture without text ("The text detection result is empty"): a normal outcome, not a warning.
                logging.getLogger("RapidOCR").addFilter(_quiet_rapidocr)
                self._engine = RapidOCR(params=self._params) if self._params else RapidOCR()
        return self._engine

    def __call__(self, image: np.ndarray) -> list[OcrLine]:
        """Run detection + recognition; boxes are the axis-aligned hulls of the detected quadrilaterals."""
        out = self._load()(image)
        if out.txts is None or out.boxes is None:
            return []
        lines = []
        for text, score, quad in zip(out.txts, out.scores, out.boxes, strict=True):
            q = np.asarray(quad, dtype=np.float32)
            box = (float(q[:, 0].min()), float(q[:, 1].min()), float(q[:, 0].max()), float(q[:, 1].max()))
            lines.append(OcrLine(str(text), float(score), box))
        return lines


def _quiet_rapidocr(record: logging.LogRecord) -> bool:
    """Keep RapidOCR's warnings and errors, except the one it logs for every image without text."""
    return record.levelno >= logging.WARNING and "detection result is empty" not in record.getMessage()


@functools.cache
def default_ocr() -> OcrEngine:
    """The shared OCR engine (loaded on first use)."""
    return RapidOcr()


# Video frames: RapidOCR's detector by default scales an image up until its SHORTER side is 736 px (a 640x360
# frame becomes 1308x736: ~1-2 s per frame on 2 cores). Capping the LONGER side at 640 px instead reads a caption
# line on 480x270-960x540 frames the same and takes ~0.1-0.2 s. Frame text is upright, so the 180-degree line
# classifier is skipped too.
# One onnxruntime thread: frame OCR runs beside ffmpeg and the embedder (ingest overlaps them), and a thread
# pool that spin-waits for a busy core costs more than it saves.
VIDEO_OCR_PARAMS: dict[str, Any] = {
    "Det.limit_side_len": 640,
    "Det.limit_type": "max",
    "Global.use_cls": False,
    "EngineConfig.onnxruntime.intra_op_num_threads": 1,
    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
}


@functools.cache
def video_ocr() -> OcrEngine:
    """The shared OCR engine for video frames (loaded on first use), tuned for speed on frame-sized images."""
    return RapidOcr(VIDEO_OCR_PARAMS)
