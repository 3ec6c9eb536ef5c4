"""Loupe: multimodal search and RAG over document, image, video and audio archives, in one vector space.

The one importable namespace. Its rooms are the repository's top-level folders, linked in here so that an
installed Loupe puts a single ``loupe`` package into site-packages (no top-level ``app`` or ``index``):

    loupe.types, loupe.errors   the record types (Segment, locators, Hit) and the error hierarchy
    loupe.ingest    ingest/     files in, Segments out (pure: no models, no Qdrant)
    loupe.embedder  embedder/   items in, vectors out; embedding profiles
    loupe.index     index/      Segments + vectors <-> Qdrant points in one collection; tenancy
    loupe.app       app/        retrieval, generation, the ingest orchestrator, config, CLI, REST API
    loupe.ui        ui/         the Streamlit UI (calls loupe.app only)
    loupe.lab       lab/        evaluation, benchmarks, training: they import the product, never the reverse

A module imports only from its own room and from rooms in lower layers; the order is written once, in
:mod:`loupe.layers`, and tests/test_layers.py enforces it by reading every import.
"""

from __future__ import annotations

__version__ = "0.1.0"
