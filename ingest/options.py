"""Typed ingest options, validated with bounds and passed down from the entry point."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class IngestOptions(BaseModel):
    """How files are split into segments. Built once from the settings; ingest modules never read env."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_chars: int = Field(default=1000, ge=100, le=8000)
    chunk_overlap: int = Field(default=150, ge=0, le=2000)
    max_file_mb: float = Field(default=512.0, gt=0)
    max_pdf_pages: int = Field(default=5000, ge=1)
    pdf_password: str | None = None
