"""Audio: any format ffmpeg reads → 16 kHz mono float32, streamed → clips cut at silences → speech or sound.

Pipeline, all in bounded memory (a ring buffer of about ``audio_clip_max_s + 3`` seconds):

1. ffmpeg decodes the stream to 16 kHz mono float32 on a pipe (``aresample`` with ``async=1`` pads gaps left by
   damaged packets with silence and aligns the first sample to t=0, so the timeline stays the source's:
   a video's audio clips carry video seconds).
2. Each 32 ms frame (512 samples, Silero VAD's frame) gets its RMS level; frames below ``audio_silence_db`` are
   silence and never reach the model, so a 4-hour silent recording costs only its decoding.
3. Sounding frames go through Silero VAD (the ONNX export shipped in the ``silero-vad`` wheel).
4. A clip opens at the first sounding frame and closes after ``audio_min_silence_s`` of silence, or when it
   reaches ``audio_clip_max_s`` — then it is cut at the quietest non-speech frame of its second half and the
   next clip starts ``audio_clip_overlap_s`` earlier. Short sounds are widened to ``audio_clip_min_s``.
5. A clip whose sounding frames are at least ``audio_speech_ratio`` speech is a ``speech_clip``, else an
   ``audio_clip``. It is written to the media store as 16 kHz mono 16-bit WAV
   (``<media_dir>/<sha[:2]>/<sha>/clip-<start_ms>-<end_ms>.wav``, what ``embedder.profiles.load_clip`` reads).

Usage::

    for seg in iter_audio(Path("talk.mp3"), source, IngestOptions(media_dir=Path("media"))):
        print(seg.modality, seg.locator, seg.meta["speech_ratio"])
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from loupe.errors import IngestError
from loupe.ingest.ffmpeg import PROTOCOLS, FfmpegReader, MediaInfo, Tools, compile_args, input_url, probe, tools_for
from loupe.ingest.options import IngestOptions, media_folder
from loupe.types import MediaRef, Segment, SourceRef, TimeLoc, segment_id

SAMPLE_RATE = 16_000
# Silero VAD at 16 kHz reads 512-sample frames (32 ms) with the previous frame's last 64 samples as context.
FRAME = 512
CONTEXT = 64
FRAME_S = FRAME / SAMPLE_RATE
# Frames per read from ffmpeg: 256 x 512 float32 = 512 KiB (~8 s of audio) per block.
READ_FRAMES = 256
# A clip starts and ends this much beyond its first/last sounding frame, so onsets and decays are not clipped.
PAD_S = 0.1
# A clip with less sound than this (a click, a single noisy frame) is dropped.
MIN_SOUND_S = 0.1
# Cut cost at a forced cut: level in dB plus this many dB per unit of speech probability, so a quiet frame inside
# a word loses to a slightly louder pause between words.
SPEECH_CUT_PENALTY_DB = 40.0
_SEQUENCE_MODEL = "silero_vad_16k_sequence.onnx"


# --- voice activity ------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _vad_session() -> Any:
    """Silero VAD's sequence ONNX model (bit-exact with its streaming model, one call per block of frames).

    Loaded from the silero-vad wheel's data folder without importing the ``silero_vad`` package: its import pulls
    in torch (~3 s and ~190 MB here) and calls ``torch.set_num_threads(1)`` process-wide, which would slow every
    torch model loaded beside it. Only numpy and onnxruntime are needed to run the model.
    """
    import onnxruntime

    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    model = next((Path(p) / "data" / _SEQUENCE_MODEL for p in locations if (Path(p) / "data").is_dir()), None)
    if model is None or not model.is_file():
        raise IngestError("silero-vad", "voice activity model not found; pip install silero-vad==6.2.3")
    so = onnxruntime.SessionOptions()
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = 1  # one frame sequence is tiny; threads cost more than they save
    return onnxruntime.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])


class SileroVad:
    """Streaming Silero VAD: per-frame speech probabilities with the LSTM state carried between calls.

    ``probs(frames, contexts)`` takes ``(n, 512)`` frames and the ``(n, 64)`` samples preceding each one.
    Call :meth:`reset` where the audio it sees is not contiguous with the previous call.
    """

    def __init__(self) -> None:
        self.session = _vad_session()
        self.reset()

    def reset(self) -> None:
        """Forget the LSTM state (a new, non-contiguous stretch of audio follows)."""
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)

    def probs(self, frames: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Speech probability per frame, float32 in [0, 1]."""
        if len(frames) == 0:
            return np.zeros(0, dtype=np.float32)
        x = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1), dtype=np.float32)
        out, self._h, self._c = self.session.run(["speech_probs", "hn", "cn"], {"input": x, "h": self._h, "c": self._c})
        return np.asarray(out, dtype=np.float32).reshape(-1)


def is_speech(samples: np.ndarray, opts: IngestOptions | None = None) -> bool:
    """Whether a recording would be stored as speech: the same VAD, gates and ratio that make a ``speech_clip``
    at ingest, over the whole recording (a spoken query vs a sound given as an example). Silence counts as speech
    (nothing else to go on)."""
    opts = opts or IngestOptions()
    seg = AudioSegmenter(opts, SileroVad())
    clips = [*seg.feed(np.asarray(samples, dtype=np.float32)), *seg.finish()]
    sound = sum(c.sound_s for c in clips)
    if sound <= 0:
        return True
    return sum(c.speech_ratio * c.sound_s for c in clips) / sound >= opts.audio_speech_ratio


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Per-frame (32 ms) speech probabilities of a whole 16 kHz signal, from a fresh state (for tests/tools)."""
    n = math.ceil(len(samples) / FRAME)
    frames = np.zeros(n * FRAME, dtype=np.float32)
    frames[: len(samples)] = samples
    frames2 = frames.reshape(n, FRAME)
    contexts = np.zeros((n, CONTEXT), dtype=np.float32)
    if n > 1:
        contexts[1:] = frames2[:-1, -CONTEXT:]
    return SileroVad().probs(frames2, contexts)


# --- segmentation --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """A cut piece of audio: where it is (frames of 32 ms from the stream start), its samples and its labels."""

    start_s: float
    end_s: float
    samples: np.ndarray
    speech_ratio: float
    rms_db: float
    sound_s: float


def _db(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    return np.asarray(10.0 * np.log10(np.mean(np.square(x, dtype=np.float64), axis=axis) + 1e-12), dtype=np.float32)


class AudioSegmenter:
    """Cuts a 16 kHz mono stream into clips (see the module docstring). Pure numpy; feed blocks, get clips.

    Memory is a fixed ring of the last few seconds of samples and per-frame features, whatever the length of
    the stream.
    """

    def __init__(self, opts: IngestOptions, vad: SileroVad | None = None) -> None:
        self.gate_db = opts.audio_silence_db
        self.speech_threshold = opts.audio_speech_threshold
        self.max_frames = max(2, int(opts.audio_clip_max_s / FRAME_S))
        self.min_frames = max(1, round(opts.audio_clip_min_s / FRAME_S))
        self.overlap_frames = round(opts.audio_clip_overlap_s / FRAME_S)
        self.min_silence_frames = max(1, round(opts.audio_min_silence_s / FRAME_S))
        self.pad_frames = round(PAD_S / FRAME_S)
        self.min_sound_frames = max(1, round(MIN_SOUND_S / FRAME_S))
        self.vad = vad
        cap = self.max_frames + self.min_frames + self.overlap_frames + self.min_silence_frames + READ_FRAMES + 64
        self.cap = cap
        self._ring = np.zeros((cap, FRAME), dtype=np.float32)
        self._rms = np.full(cap, -120.0, dtype=np.float32)
        self._prob = np.zeros(cap, dtype=np.float32)
        self._silent = np.ones(cap, dtype=bool)
        self._rest = np.zeros(0, dtype=np.float32)  # samples short of a whole frame, carried to the next feed
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._vad_contiguous = False  # the previous frame went through the VAD (state still valid)
        self.frames = 0  # frames seen so far
        self.samples = 0  # samples seen so far (the last frame may be partial)
        self._open: int | None = None  # first frame of the open clip
        self._own_start = 0  # first frame that belongs to the open clip alone (after a forced cut's overlap)
        self._last_sound = -1
        self._own_sound = 0

    # -- feeding ------------------------------------------------------------------------------------------------

    def feed(self, samples: np.ndarray) -> Iterator[Clip]:
        """Add samples (float32, any length); yields the clips that this completes."""
        if len(self._rest):
            samples = np.concatenate([self._rest, samples])
        n = len(samples) // FRAME
        self._rest = samples[n * FRAME :].copy()
        if n:
            yield from self._frames(samples[: n * FRAME].reshape(n, FRAME), real=n * FRAME)

    def finish(self) -> Iterator[Clip]:
        """End of stream: the partial last frame (zero-padded) and the clip still open."""
        if len(self._rest):
            real = len(self._rest)
            frame = np.zeros((1, FRAME), dtype=np.float32)
            frame[0, :real] = self._rest
            self._rest = np.zeros(0, dtype=np.float32)
            yield from self._frames(frame, real=real)
        if self._open is not None:
            end = min(self._last_sound + 1 + self.pad_frames, self.frames)
            clip = self._close(end, stream_end=True)
            if clip is not None:
                yield clip

    # -- internals ----------------------------------------------------------------------------------------------

    def _frames(self, block: np.ndarray, real: int) -> Iterator[Clip]:
        n = len(block)
        first = self.frames
        rms = _db(block, axis=1)
        silent = rms < self.gate_db
        probs = self._vad_block(block, silent)
        idx = (first + np.arange(n)) % self.cap
        self._ring[idx] = block
        self._rms[idx] = rms
        self._prob[idx] = probs
        self._silent[idx] = silent
        self.frames += n
        self.samples += real
        self._context = block[-1, -CONTEXT:].copy()
        yield from self._advance(first, silent)

    def _vad_block(self, block: np.ndarray, silent: np.ndarray) -> np.ndarray:
        probs = np.zeros(len(block), dtype=np.float32)
        if self.vad is None or bool(silent.all()):
            self._vad_contiguous = False
            return probs
        contexts = np.empty((len(block), CONTEXT), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = block[:-1, -CONTEXT:]
        sounding = ~silent
        # Runs of sounding frames: the model sees each run in one call, its state reset where a run begins
        # after skipped silence (and carried over from the previous block when the run continues).
        edges = np.flatnonzero(np.diff(np.concatenate([[0], sounding.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            if not (a == 0 and self._vad_contiguous):
                self.vad.reset()
            probs[a:b] = self.vad.probs(block[a:b], contexts[a:b])
        self._vad_contiguous = bool(sounding[-1])
        return probs

    def _advance(self, first: int, silent: np.ndarray) -> Iterator[Clip]:
        i = 0
        n = len(silent)
        while i < n:
            if self._open is None:
                loud = np.flatnonzero(~silent[i:])
                if len(loud) == 0:
                    return  # all silence and no clip open: nothing to do (the fast path for long silences)
                i += int(loud[0])
                f = first + i
                self._open = max(0, f - self.pad_frames, self.frames - self.cap + 1)
                self._own_start = self._open
                self._last_sound = f
                self._own_sound = 0
            f = first + i
            if not silent[i]:
                self._last_sound = f
                self._own_sound += 1
            elif f - self._last_sound >= self.min_silence_frames:
                clip = self._close(self._last_sound + 1 + self.pad_frames)
                if clip is not None:
                    yield clip
                i += 1
                continue
            if f + 1 - self._open >= self.max_frames:
                yield from self._forced_cut(f)
            i += 1

    def _forced_cut(self, f: int) -> Iterator[Clip]:
        assert self._open is not None
        lo = self._open + self.max_frames // 2
        cand = np.arange(lo, f + 1)
        ring = cand % self.cap
        cost = self._rms[ring] + SPEECH_CUT_PENALTY_DB * self._prob[ring]
        cut = int(cand[int(np.argmin(cost))]) + 1  # the clip ends after the quietest frame
        clip = self._emit(self._open, cut)
        if clip is not None:
            yield clip
        self._open = max(cut - self.overlap_frames, self._open + 1)
        self._own_start = cut
        after = np.arange(cut, f + 1) % self.cap
        self._own_sound = int(np.count_nonzero(~self._silent[after]))

    def _close(self, end: int, stream_end: bool = False) -> Clip | None:
        assert self._open is not None
        start, own_sound = self._open, self._own_sound
        self._open = None
        if own_sound < self.min_sound_frames:
            return None
        end = min(end, self.frames)
        if end - start < self.min_frames:
            # Widen a short sound with the audio around it: forward up to what has been read, then backward.
            end = self.frames if stream_end else min(self.frames, start + self.min_frames)
            start = max(0, end - self.min_frames, self.frames - self.cap + 1)
        return self._emit(start, end)

    def _emit(self, start: int, end: int) -> Clip | None:
        if end <= start:
            return None
        ring = np.arange(start, end) % self.cap
        samples = self._ring[ring].reshape(-1)
        end_sample = min(end * FRAME, self.samples)
        samples = samples[: max(0, end_sample - start * FRAME)]
        if len(samples) == 0:
            return None
        silent = self._silent[ring]
        sound = int(np.count_nonzero(~silent))
        speech = int(np.count_nonzero((self._prob[ring] >= self.speech_threshold) & ~silent))
        return Clip(
            start_s=round(start * FRAME_S, 3),
            end_s=round(end_sample / SAMPLE_RATE, 3),
            samples=np.array(samples, dtype=np.float32),
            speech_ratio=round(speech / sound, 3) if sound else 0.0,
            rms_db=round(float(_db(samples)), 1),
            sound_s=round(sound * FRAME_S, 3),
        )


# --- decoding and segments -----------------------------------------------------------------------------------


def decode_args(path: Path, stream_index: int, tools: Tools) -> list[str]:
    """ffmpeg arguments that write one audio stream as 16 kHz mono float32 to stdout."""
    import ffmpeg  # ffmpeg-python builds the command line

    inp = ffmpeg.input(input_url(path), protocol_whitelist=PROTOCOLS)
    out = ffmpeg.output(
        inp[str(stream_index)],
        "pipe:",
        format="f32le",
        acodec="pcm_f32le",
        ac=1,
        # async=1: fill gaps (damaged or missing packets) with silence and trim overlaps, without stretching;
        # first_pts=0: pad the start so sample 0 is t=0 of the file (a video's timeline).
        af=f"aresample={SAMPLE_RATE}:async=1:first_pts=0",
    )
    return compile_args(out, tools)


def clip_folder(opts: IngestOptions, source: SourceRef, path: Path, what: str) -> Path:
    """The source's folder in the media store (created); audio and video cannot be ingested without one."""
    if opts.media_dir is None:
        raise IngestError(str(path), f"{what} ingest needs a media store for its frames and clips (media_dir is unset)")
    folder = media_folder(opts.media_dir, source.sha256)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise IngestError(str(path), f"cannot create the media folder {folder}: {e.strerror or e}") from e
    return folder


def write_wav(path: Path, samples: np.ndarray) -> None:
    """Write 16 kHz mono 16-bit PCM WAV atomically (a reader never sees half a clip)."""
    import soundfile

    tmp = path.with_name(path.name + ".tmp")
    soundfile.write(str(tmp), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    tmp.replace(path)


def audio_segments(
    path: Path,
    source: SourceRef,
    opts: IngestOptions,
    info: MediaInfo,
    report: dict[str, Any] | None = None,
    *,
    tools: Tools | None = None,
) -> Iterator[Segment]:
    """Clips of the first audio stream of an already probed file (also used for a video's audio track).

    ``report`` receives ``audio_s`` (decoded seconds), ``audio_clips``, ``speech_clips`` and, when ffmpeg
    complained but some audio decoded, a line in ``warnings``.
    """
    stream = info.audio
    if stream is None:
        raise IngestError(str(path), "has no audio stream")
    tools = tools or tools_for(path)
    folder = clip_folder(opts, source, path, "audio")
    seg = AudioSegmenter(opts, SileroVad() if opts.audio_vad else None)
    counts = {"audio_clip": 0, "speech_clip": 0}
    stats: dict[str, Any] = report if report is not None else {}
    with FfmpegReader(decode_args(path, stream.index, tools), path) as reader:
        for block in reader.blocks(READ_FRAMES * FRAME * 4):
            samples = np.frombuffer(block[: len(block) // 4 * 4], dtype="<f4")
            for clip in seg.feed(samples):
                yield _clip_segment(clip, source, opts, folder, counts)
        for clip in seg.finish():
            yield _clip_segment(clip, source, opts, folder, counts)
        code = reader.finish()
        decoded_s = seg.samples / SAMPLE_RATE
        stats["audio_s"] = round(decoded_s, 3)
        stats["audio_clips"] = counts["audio_clip"]
        stats["speech_clips"] = counts["speech_clip"]
        if seg.samples == 0:
            raise IngestError(
                str(path),
                f"no audio could be decoded (zero duration or damaged stream; ffmpeg: {reader.reason()})",
            )
        if code != 0 or reader.stderr_lines:
            expected = info.duration_s
            where = ""
            if expected and abs(expected - decoded_s) > 1.0:
                where = (
                    f" ({decoded_s:.1f} s of {expected:.1f} s decoded: cut short, or damaged parts skipped; mp3 has"
                    " no timestamps, so there times after a skipped part shift earlier)"
                )
            stats.setdefault("warnings", []).append(
                f"audio: ffmpeg reported damage, the readable parts were kept{where}: {reader.reason()}"
            )


def _clip_segment(clip: Clip, source: SourceRef, opts: IngestOptions, folder: Path, counts: dict[str, int]) -> Segment:
    speech = opts.audio_vad and clip.speech_ratio >= opts.audio_speech_ratio
    modality: Literal["speech_clip", "audio_clip"] = "speech_clip" if speech else "audio_clip"
    counts[modality] += 1
    wav = folder / f"clip-{round(clip.start_s * 1000)}-{round(clip.end_s * 1000)}.wav"
    try:
        write_wav(wav, clip.samples)
    except (OSError, RuntimeError) as e:  # soundfile raises RuntimeError (LibsndfileError) on write failures
        raise IngestError(source.uri, f"cannot write audio clip {wav} to the media store: {e}") from e
    loc = TimeLoc(clip.start_s, clip.end_s)
    return Segment(
        id=segment_id(source, modality, loc),
        source=source,
        modality=modality,
        locator=loc,
        text=None,
        media=MediaRef(path=str(wav), kind="audio", start_s=clip.start_s, end_s=clip.end_s),
        meta={"speech_ratio": clip.speech_ratio, "rms_db": clip.rms_db, "sound_s": clip.sound_s},
    )


def decode_to_array(path: Path, max_s: float = 120.0) -> np.ndarray:
    """A short recording (e.g. a spoken query) decoded whole to 16 kHz mono float32 samples.

    Reads at most ``max_s`` seconds (the rest is ignored), so a long file cannot fill memory. Raises IngestError
    naming the file when ffmpeg is missing, the file has no audio, or nothing decodes.

    >>> samples = decode_to_array(Path("question.ogg"))  # doctest: +SKIP
    """
    tools = tools_for(path)
    info = probe(path, tools)
    if info.audio is None:
        raise IngestError(str(path), "has no audio stream")
    limit = int(max_s * SAMPLE_RATE) * 4
    blocks: list[bytes] = []
    got = 0
    with FfmpegReader(decode_args(path, info.audio.index, tools), path) as reader:
        for block in reader.blocks(READ_FRAMES * FRAME * 4):
            blocks.append(block[: limit - got])
            got += len(blocks[-1])
            if got >= limit:
                break
        else:
            reader.finish()
    data = b"".join(blocks)
    samples = np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").astype(np.float32)
    if len(samples) == 0:
        raise IngestError(str(path), f"no audio could be decoded (zero duration or damaged; ffmpeg: {reader.reason()})")
    return samples


def iter_audio(
    path: Path, source: SourceRef, opts: IngestOptions, report: dict[str, Any] | None = None
) -> Iterator[Segment]:
    """Yield ``speech_clip`` / ``audio_clip`` segments of an audio file (its first audio stream).

    Raises IngestError naming the file when ffmpeg is missing, the file is not audio, or nothing decodes.
    """
    tools = tools_for(path)
    info = probe(path, tools)
    if info.audio is None:
        raise IngestError(str(path), "has no audio stream (a video file with an audio extension?)")
    if report is not None:
        report["duration_s"] = info.duration_s
    yield from audio_segments(path, source, opts, info, report, tools=tools)
