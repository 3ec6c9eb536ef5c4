"""Typed ingest options, validated with bounds and passed down from the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


def media_folder(media_dir: Path, sha256: str) -> Path:
    """A source's folder in the media store: ``<media_dir>/<sha[:2]>/<sha>`` (keyed by content, not path)."""
    return media_dir / sha256[:2] / sha256


class IngestOptions(BaseModel):
    """How files are split into segments. Built once from the settings; ingest modules never read env."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_chars: int = Field(default=1000, ge=100, le=8000)
    chunk_overlap: int = Field(default=150, ge=0, le=2000)
    max_file_mb: float = Field(default=512.0, gt=0)
    max_pdf_pages: int = Field(default=5000, ge=1)
    pdf_password: str | None = None
    # Where page images and thumbnails go (the media store); None renders nothing.
    media_dir: Path | None = None
    # 100 dpi keeps a page readable on screen at ~60 KB as JPEG (measured ~37 ms per page to render + encode).
    render_dpi: int = Field(default=100, ge=36, le=300)
    # Rendering is capped in pixels so a 20,000-point page cannot allocate gigabytes.
    max_render_px: int = Field(default=2400, ge=256, le=10000)
    # "auto": OCR pages whose text layer has fewer than ocr_min_chars characters; "on": every page; "off": never.
    ocr: Literal["auto", "on", "off"] = "auto"
    ocr_dpi: int = Field(default=150, ge=72, le=400)
    ocr_min_chars: int = Field(default=20, ge=0)
    # Lines the OCR engine is less sure of are dropped (PP-OCR scores junk from noise and lines at ~0.5-0.7).
    ocr_min_score: float = Field(default=0.7, ge=0.0, le=1.0)
    # Tables are looked for only on pages with vector drawings (ruled tables); ~175 ms per page when they are.
    tables: bool = True
    # Text blocks repeated in the top/bottom band of at least this share of pages are running headers/footers.
    header_footer_band: float = Field(default=0.08, ge=0.0, le=0.3)

    # --- video (ingest/video.py) ---
    # Frames are decoded at 1 FPS (design.md §1) and scaled once to fit this square, padded with black:
    # EfficientNet-Lite0 takes exactly 224x224 (models.md), and 1 FPS x 224 px is what the native profile's
    # video embedders take too.
    video_frame_px: int = Field(default=224, ge=32, le=1024)
    # Window length and stride in frames (= seconds at 1 FPS); at most 32 frames per window (design.md §3).
    # Chosen on the dev set's 18 text->video_moment queries (eval/devset/sweep_video_windows.py,
    # docs/eval/video-windows.json; R@1, hits refined to frames): fixed 4/4 0.61, 8/8 0.56, 16/16 0.56; with scene
    # cuts 8/8 0.67, 16/16 0.78, 32/32 0.67. 16/16 and 32/32 with cuts made the same windows there (every scene
    # <= 14 s), so ~0.1 is run-to-run noise on 18 queries; cuts beat the fixed grid at 8 and 16. 16 s + cuts: a
    # window is a shot (or 16 s of a long one), half the windows of 8 s, and retrieval refines a hit to its frame.
    video_window_s: int = Field(default=16, ge=1, le=32)
    video_stride_s: int = Field(default=16, ge=1, le=32)
    # Skip decoding frames no other frame refers to (ffmpeg -skip_frame noref): at 1 FPS they are rarely the
    # sampled frame, and decoding dominates video ingest. Measured ~2x faster on 1080p30 H.264 (2 cores); the
    # sampled frame moves by at most a few source frames. Same frame counts for H.264/5, MPEG-2/4, VP8/9, AV1,
    # Theora and MJPEG test files.
    video_skip_nonref: bool = True
    # Skip H.264/HEVC's in-loop deblocking filter while decoding (ffmpeg -skip_loop_filter all): the frames are
    # scaled to 224 px (640 for OCR) by area averaging, which smooths far more than the filter does. With one
    # decoder thread it cut ffmpeg's CPU time on the 5-minute 720p30 bench video from ~10 s to ~6.7 s.
    video_skip_loop_filter: bool = True
    # ffmpeg decoder threads; 0 = half the cores this process may use (at least 1), leaving the rest to the
    # embedder that runs at the same time (frame threads cost CPU time: 1 thread ~6.7 s, 2 threads ~8.6 s).
    video_decode_threads: int = Field(default=0, ge=0, le=64)
    # Frame thumbnails in the media store: quality 85 keeps a 224x224 frame at 4-6 KB on generated test video
    # (flat scenes, testsrc2), i.e. ~40 MB per 2 hours; photographic frames are larger.
    video_jpeg_quality: int = Field(default=85, ge=30, le=95)
    # Text in the picture (titles, captions, slides, signs) read by OCR onto the frame and window segments.
    # "on": OCR every frame whose picture changed since the last OCR'd frame (unchanged frames reuse its text);
    # "auto": the same, but after a read without new text the next OCR waits 2, 4, ... up to video_ocr_max_gap_s
    # seconds (reset when new text is found), and at most video_ocr_per_min OCRs per minute of video (+3 at the
    # start) are made, so a burned-in clock or moving footage cannot make OCR the cost of ingest; "off": never.
    video_ocr: Literal["auto", "on", "off"] = "auto"
    # OCR reads a larger copy of the frame, fit into this square: 224 px is too small for captions. RapidOCR's
    # detector at <= 640 px took ~0.1-0.2 s per frame on 2 cores, ~1-2 s at its default 736 px minimum side
    # (measured on 480x270-960x540 frames with one caption line; ingest/ocr.py video_ocr()).
    video_ocr_px: int = Field(default=640, ge=224, le=1920)
    # A frame "changed" when some cell of a 16x16 grid of its colour means moved by at least this much (0-255)
    # against the last OCR'd frame: a caption line changes its cells by tens of levels, H.264 noise by 1-2.
    video_ocr_change: float = Field(default=8.0, ge=0.0, le=255.0)
    video_ocr_max_gap_s: int = Field(default=8, ge=1, le=600)
    # ~0.2-0.5 s per OCR on 2 cores: 6 per minute is ~2-5 % of real time, within the 20x-real-time ingest target.
    video_ocr_per_min: float = Field(default=6.0, ge=0.1, le=60.0)
    # Windows end early at a scene change (the next window starts at it), once they hold video_window_min_s
    # frames; a scene change is a mean absolute difference of the 16x16 colour-mean grid against the previous
    # frame of at least video_scene_change (0-255). Measured on generated 1-FPS footage: cuts between flat colour
    # scenes 87-89; continuous motion stays below it (lavfi pan 13-20, testsrc2 5-15, mandelbrot zoom 3-16).
    # Cuts between two similar-looking real shots can score under 30 and are then not cut: windows stay fixed.
    video_scene_cuts: bool = True
    video_scene_change: float = Field(default=30.0, ge=0.0, le=255.0)
    video_window_min_s: int = Field(default=2, ge=1, le=32)
    # A frame whose colour grid is within this of the last embedded frame's (largest cell change, 0-255) is the
    # same picture: it points at that frame's pixels (meta["picture"]), so the embedder classifies it once. Half
    # the OCR change threshold, so a changed caption line still counts as a new picture; 0 embeds every frame.
    video_same_picture: float = Field(default=4.0, ge=0.0, le=255.0)

    # --- audio (ingest/audio.py; also the audio track of a video) ---
    # Clips are cut at silences and at most this long (10 s ~ one or two spoken sentences; the speech encoder
    # reads up to 30 s, the label bridge pools 0.96 s patches).
    audio_clip_max_s: float = Field(default=10.0, ge=2.0, le=30.0)
    # Shorter sounds are widened to this (with surrounding audio) so every clip has enough context to embed.
    audio_clip_min_s: float = Field(default=1.0, ge=0.1, le=10.0)
    # A clip cut mid-sound (it reached audio_clip_max_s) and the next one share this much audio, so a word on
    # the cut is whole in one of them.
    audio_clip_overlap_s: float = Field(default=0.5, ge=0.0, le=5.0)
    # Energy gate, RMS per 32 ms frame in dBFS: quieter frames are silence and never reach the VAD model.
    # -50 dBFS is below room tone of ordinary recordings (-40..-60) and far above digital silence.
    audio_silence_db: float = Field(default=-50.0, ge=-120.0, le=-10.0)
    # This much silence ends a clip (a pause between sentences; shorter gaps are pauses within speech).
    audio_min_silence_s: float = Field(default=0.3, ge=0.05, le=5.0)
    # Silero VAD's own default threshold for a speech frame.
    audio_speech_threshold: float = Field(default=0.5, ge=0.05, le=0.95)
    # A clip is a speech_clip when at least this share of its sounding frames is speech, else an audio_clip.
    audio_speech_ratio: float = Field(default=0.5, ge=0.0, le=1.0)
    # Voice activity detection (silero-vad, ONNX); off labels every clip audio_clip.
    audio_vad: bool = True

    @model_validator(mode="after")
    def _check_media_bounds(self) -> IngestOptions:
        if self.audio_clip_min_s >= self.audio_clip_max_s:
            raise ValueError("audio_clip_min_s must be below audio_clip_max_s")
        if self.audio_clip_overlap_s * 2 > self.audio_clip_max_s:
            raise ValueError("audio_clip_overlap_s must be at most half of audio_clip_max_s")
        if self.video_window_min_s > self.video_window_s:
            raise ValueError("video_window_min_s must be at most video_window_s")
        return self
