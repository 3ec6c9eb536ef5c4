"""Typed ingest options, validated with bounds and passed down from the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
