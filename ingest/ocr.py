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

from app.errors import IngestError


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

    def __init__(self) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._engine is None:
                try:
                    from rapidocr import RapidOCR
                except ImportError as e:
                    raise IngestError("ocr", "OCR needs the 'rapidocr' package: pip install rapidocr==3.10.0") from e
                # rapidocr logs every model file it opens at INFO and resets its logger's level when it builds
                # an engine; a filter survives that and keeps ingest output readable.
                logging.getLogger("RapidOCR").addFilter(lambda record: record.levelno >= logging.WARNING)
                self._engine = RapidOCR()
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


@functools.cache
def default_ocr() -> OcrEngine:
    """The shared OCR engine (loaded on first use)."""
    return RapidOcr()
