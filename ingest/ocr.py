"""OCR for pages without a text layer and for video frames: RapidOCR with the PP-OCR weights that ship in its
wheel.

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


# The text detector (a small conv net, ~2/3 of a read) runs on OpenVINO's CPU kernels where the package is
# installed: on a 640x352 frame, one thread, 0.060 s against onnxruntime's 0.200 s, outputs within 3e-7 (f32).
# f32 is asked for explicitly: on CPUs with AMX, OpenVINO would otherwise pick bf16 (0.030 s), whose boxes differ
# from f32's on some frames (a frame counter found in 19 of 20 frames), and the same file must read the same text
# on every machine. Recognition stays on onnxruntime: OpenVINO measured no faster there (0.080 vs 0.085 s).
DETECTOR_MODEL = "PP-OCRv6_det_small.onnx"
# RapidOCR settings that choose a detector model other than the shipped one.
OTHER_DETECTOR_KEYS = frozenset({"model_path", "model_dir", "ocr_version", "model_type", "lang_type", "engine_type"})


class _OpenVinoDetector:
    """RapidOCR's detector session (``__call__(batch) -> probability map``) on OpenVINO, f32."""

    def __init__(self, model: str, threads: int | None) -> None:
        import openvino as ov

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._request = ov.Core().compile_model(model, "CPU", config).create_infer_request()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self._request.infer([batch])
        return np.array(self._request.get_output_tensor().data)  # a copy: the request reuses its buffer


class RapidOcr:
    """PP-OCRv6 small detection + recognition through ``rapidocr`` on CPU: detection on OpenVINO where it is
    installed (``detector``), recognition on onnxruntime."""

    name = "rapidocr-ppocrv6-small"

    def __init__(self, params: dict[str, Any] | None = None, *, detector: str = "openvino") -> None:
        """``params``: RapidOCR settings by dotted name (e.g. ``{"Det.limit_side_len": 640}``); None: its defaults.
        ``detector``: "openvino" (falls back to onnxruntime when OpenVINO is missing) or "onnxruntime"."""
        if detector not in ("openvino", "onnxruntime"):
            raise ValueError(f"unknown OCR detector runtime {detector!r}: use 'openvino' or 'onnxruntime'")
        self._engine: Any = None
        self._params = dict(params or {})
        self._lock = threading.Lock()
        self.detector = detector  # the runtime asked for; after loading, the one in use

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
                engine = RapidOCR(params=self._params) if self._params else RapidOCR()
                if self.detector == "openvino":
                    self.detector = _use_openvino_detector(engine, self._params)
                self._engine = engine
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


def _use_openvino_detector(engine: Any, params: dict[str, Any]) -> str:
    """Put the OpenVINO detector in ``engine`` (a ``rapidocr.RapidOCR``); the runtime now in use. RapidOCR's own
    OpenVINO engine cannot ask for f32, so its onnxruntime detector session is swapped for one on the same shipped
    model file (tests/test_video_ocr.py checks the swap still takes with the pinned rapidocr). Settings that pick
    another detector model keep RapidOCR's own session."""
    import importlib.util
    from pathlib import Path

    import rapidocr

    model = Path(rapidocr.__file__).parent / "models" / DETECTOR_MODEL
    other_model = any(k.startswith("Det.") and k.split(".", 1)[1] in OTHER_DETECTOR_KEYS for k in params)
    if other_model or importlib.util.find_spec("openvino") is None or not model.exists():
        return "onnxruntime"
    threads = params.get("EngineConfig.onnxruntime.intra_op_num_threads")
    try:
        detector = engine._load_det_model()
        detector.session = _OpenVinoDetector(str(model), int(threads) if threads and threads > 0 else None)
    except Exception as e:  # a rapidocr or OpenVINO that does not fit: onnxruntime reads the same text, slower
        logging.getLogger(__name__).warning("OCR detection runs on onnxruntime: OpenVINO did not load (%s)", e)
        return "onnxruntime"
    return "openvino"


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
