"""The trained speech head on onnxruntime: speech clips and spoken queries without importing torch.

The head (embedder/speech.py: soft tokens read by e5's transformer, blended with the pooled head) is a torch module
loaded from a torch checkpoint. Importing torch and building the head cost ~1.5-2 s of CPU at the start of every
ingest or query process that meets speech, on a 2-core machine a tenth of a 5-minute video's whole ingest. So the
head is exported once to ONNX (first use, into the cache folder next to e5's and the image classifier's graphs,
keyed by the checkpoint's digest; never a download) and later processes run the graphs with onnxruntime alone.

The graphs are fp32 and compute what the torch modules compute: outputs within 4e-7 of torch's on the shipped head
(tests/test_speech.py), so the vectors and the model id stay the same. The blend of the two heads and the pooled
head's calibration are the few numpy lines :class:`OnnxSpeechHead` repeats from ``BlendedHead.forward``.

>>> head = load_runtime_head(HEAD_FILE)  # doctest: +SKIP
>>> head.vectors(frames, voiced).shape  # doctest: +SKIP
(2, 2, 384)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from loupe.embedder.base import cpu_session, file_digest, l2_normalize
from loupe.threads import machine_threads

log = logging.getLogger(__name__)
# Bump when the exported graphs' inputs, outputs or meaning change: older exports are then ignored.
EXPORT_VERSION = 2


class TorchSpeechHead:
    """The numpy interface of a speech head, over the torch module (the fallback, and the exporter's source)."""

    def __init__(self, module: Any) -> None:
        self.module = module
        soft = getattr(module, "main", module)
        self.code_ids = np.asarray(soft.config["code_ids"], np.int64) if hasattr(soft, "posteriors") else None
        self.calibration: dict[str, Any] | None = getattr(module, "calibration", None)
        self.passage_calibration: dict[str, Any] | None = self.calibration or getattr(
            getattr(module, "other", None), "calibration", None
        )

    def vectors(self, frames: np.ndarray, voiced: np.ndarray) -> np.ndarray:
        """``(b, 2, 384)``: the query and passage outputs of right-padded frames ``(b, t, 384)``."""
        import torch

        with torch.no_grad():
            return np.asarray(self.module(torch.from_numpy(frames), torch.from_numpy(voiced)).numpy())

    def posteriors(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Soft-token distributions ``(b, t', K)`` and their mask, or None for a head without soft tokens."""
        import torch

        if self.code_ids is None:
            return None
        soft = getattr(self.module, "main", self.module)
        with torch.no_grad():
            p, keep = soft.posteriors(torch.from_numpy(frames))
        return p.numpy(), keep.numpy()


class OnnxSpeechHead:
    """The same interface on the exported graphs (``main.onnx``; ``soft.onnx``, the soft tokens alone, for a
    soft-token head; ``other.onnx`` for a blend; ``head.json``)."""

    def __init__(self, folder: Path, num_threads: int = 0) -> None:
        meta = json.loads((folder / "head.json").read_text())
        threads = num_threads or machine_threads()

        def session(name: str) -> Any:
            return cpu_session(folder / name, threads)

        self._main = session("main.onnx")
        # The soft tokens alone (piece masses): the vectors' graph would also run e5's transformer for them.
        self._posteriors = session("soft.onnx") if meta["soft"] else None
        self._other = session("other.onnx") if meta["blend"] else None
        self._soft = bool(meta["soft"])
        self._blend: dict[str, float] | None = meta["blend"]
        cals = np.load(folder / "calibration.npz")

        def cal(prefix: str) -> dict[str, Any] | None:
            keys = [k for k in cals.files if k.startswith(prefix + ".")]
            return {k.split(".", 1)[1]: np.asarray(cals[k], np.float32) for k in keys} or None

        self.calibration = cal("main") if not self._blend else None
        self._other_cal = cal("other")
        self.passage_calibration = self.calibration or self._other_cal
        self.code_ids = np.asarray(meta["code_ids"], np.int64) if self._soft else None

    @staticmethod
    def _run(session: Any, frames: np.ndarray, voiced: np.ndarray) -> list[np.ndarray]:
        feed = {"frames": frames, "voiced": voiced}
        return list(session.run(None, {i.name: feed[i.name] for i in session.get_inputs()}))

    def vectors(self, frames: np.ndarray, voiced: np.ndarray) -> np.ndarray:
        """``(b, 2, 384)``: the query and passage outputs of right-padded frames ``(b, t, 384)``."""
        a = self._run(self._main, frames, voiced)[0]
        if self._other is None or self._blend is None:
            return np.asarray(a, np.float32)
        b = self._run(self._other, frames, voiced)[0]
        # BlendedHead.forward (embedder/speech.py), in numpy.
        w, pw = float(self._blend["weight"]), float(self._blend["passage_weight"])
        query = l2_normalize(w * a[:, 0] + (1 - w) * b[:, 0])
        if pw >= 1.0:
            return np.stack([query, a[:, 1]], axis=1)
        from loupe.embedder.speech import calibrate

        other = l2_normalize(b[:, 1])
        if self._other_cal is not None:
            other = calibrate(other, self._other_cal["passage_mean"], float(self._other_cal["passage_level"]))
        passage = l2_normalize(pw * l2_normalize(a[:, 1]) + (1 - pw) * other)
        return np.stack([query, passage], axis=1)

    def posteriors(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Soft-token distributions ``(b, t', K)`` and their mask, or None for a head without soft tokens."""
        if self._posteriors is None:
            return None
        p, keep = self._run(self._posteriors, frames, np.ones(frames.shape[:2], dtype=bool))
        return np.asarray(p, np.float32), np.asarray(keep, bool)


def cache_root() -> Path:
    """The folder exports go to unless told otherwise: e5's (``~/.cache/loupe``)."""
    from loupe.embedder.e5_onnx import default_cache_dir

    return default_cache_dir()


def export_folder(head_path: Path, cache_dir: Path | None = None) -> Path:
    """Where the graphs of the head file ``head_path`` go (one folder per checkpoint digest)."""
    return (cache_dir or cache_root()) / f"speech-head-onnx-v{EXPORT_VERSION}-{file_digest(head_path)}"


def export_head(module: Any, folder: Path) -> Path:
    """Write ``module`` (a head from ``speech.load_head``) as ONNX graphs into ``folder``, atomically."""
    import torch

    t0 = time.perf_counter()
    log.warning("speech head: exporting to ONNX once into %s ...", folder)
    blended = hasattr(module, "main") and hasattr(module, "other")
    main = module.main if blended else module
    soft = hasattr(main, "posteriors")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}-{threading.get_ident()}")
    tmp.mkdir(parents=True, exist_ok=True)
    frames = torch.zeros(2, 12, int(main.norm.normalized_shape[0]))
    frames[:, :9] = torch.randn(2, 9, frames.shape[2])
    voiced = torch.ones(2, 12, dtype=torch.bool)

    class _Soft(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = main

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x, None)

    class _Posteriors(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = main

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.head.posteriors(x)

    class _Pooled(torch.nn.Module):
        def __init__(self, head: Any) -> None:
            super().__init__()
            self.head = head

        def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return self.head(x, m)

    def write(wrapper: torch.nn.Module, name: str, inputs: tuple[Any, ...], outputs: list[str]) -> None:
        names = ["frames", "voiced"][: len(inputs)]
        axes: dict[str, dict[int, str]] = {"frames": {0: "batch", 1: "frames"}, "voiced": {0: "batch", 1: "frames"}}
        axes.update({o: {0: "batch"} for o in outputs})
        if name == "soft.onnx":
            axes.update({"posteriors": {0: "batch", 1: "tokens"}, "keep": {0: "batch", 1: "tokens"}})
        # eval() on the wrapper: export restores the wrapper's own mode afterwards, recursively, and a wrapper in
        # training mode would leave the live head with its dropout switched on.
        wrapper.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic on the frame count
            torch.onnx.export(
                wrapper,
                inputs,
                str(tmp / name),
                input_names=names,
                output_names=outputs,
                dynamic_axes={k: v for k, v in axes.items() if k in names or k in outputs},
                opset_version=17,
                dynamo=False,
            )

    if soft:
        write(_Soft(), "main.onnx", (frames,), ["vectors"])
        write(_Posteriors(), "soft.onnx", (frames,), ["posteriors", "keep"])
    else:
        write(_Pooled(main), "main.onnx", (frames, voiced), ["vectors"])
    cals: dict[str, np.ndarray] = {}
    for prefix, head in (("main", main), ("other", module.other if blended else None)):
        for k, v in (getattr(head, "calibration", None) or {}).items():
            cals[f"{prefix}.{k}"] = np.asarray(v, np.float32)
    if blended:
        write(_Pooled(module.other), "other.onnx", (frames, voiced), ["vectors"])
    np.savez(str(tmp / "calibration.npz"), **cals)  # type: ignore[arg-type]
    meta = {
        "version": EXPORT_VERSION,
        "soft": soft,
        "blend": {"weight": module.weight, "passage_weight": module.passage_weight} if blended else None,
        "code_ids": [int(i) for i in main.config["code_ids"]] if soft else [],
    }
    (tmp / "head.json").write_text(json.dumps(meta))
    try:
        tmp.rename(folder)
    except OSError:  # another process exported it first: theirs is the same graph
        shutil.rmtree(tmp, ignore_errors=True)
    log.warning("speech head: exported in %.1f s", time.perf_counter() - t0)
    return folder


def load_runtime_head(head_path: Path, *, cache_dir: Path | None = None, onnx: bool = True) -> Any:
    """The head of ``head_path`` as :class:`OnnxSpeechHead` (exported on first use) or, with ``onnx=False`` or
    when the export fails, as :class:`TorchSpeechHead`."""
    from loupe.embedder.speech import load_head

    folder = export_folder(head_path, cache_dir)
    if onnx and (folder / "head.json").is_file():
        try:
            return OnnxSpeechHead(folder)
        except Exception as e:  # a damaged export: the torch module gives the same vectors
            log.warning("speech head: cannot open the ONNX export %s (%s); delete it to export again", folder, e)
            onnx = False
    module = load_head(head_path)
    if onnx:
        try:
            return OnnxSpeechHead(export_head(module, folder))
        except Exception as e:  # any export failure: the torch module gives the same vectors
            log.warning("speech head: ONNX export failed (%s); running the torch module instead", e)
    return TorchSpeechHead(module)
