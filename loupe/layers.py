"""The layer order of Loupe's rooms, written once (tests/test_layers.py reads every import against it).

A module may import from its own room and from rooms in lower layers only. Rooms in the same layer do not
import each other: ingest knows no model, the embedder no file format; the UI and the lab both sit on app.
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    # records, errors and the prefetch queue: import nothing of Loupe
    ("loupe", "loupe.types", "loupe.errors", "loupe.layers", "loupe.threads"),
    ("loupe.ingest", "loupe.embedder"),  # files -> segments; items -> vectors
    ("loupe.index",),  # segments + vectors <-> Qdrant points
    ("loupe.app",),  # retrieve, generate, orchestrate, CLI, API
    ("loupe.ui", "loupe.lab"),  # the Streamlit UI; evaluation, benchmarks, training
)


def room_of(module: str) -> str:
    """The room a dotted module name belongs to: its longest prefix that names a room.

    >>> room_of("loupe.index.store")
    'loupe.index'
    """
    rooms = [r for layer in LAYERS for r in layer]
    best = max((r for r in rooms if module == r or module.startswith(r + ".")), key=len, default=None)
    if best is None:
        raise ValueError(f"{module!r} is not in any room of loupe.layers.LAYERS")
    return best


def layer_of(room: str) -> int:
    """The layer number of a room (0 is the bottom)."""
    for i, layer in enumerate(LAYERS):
        if room in layer:
            return i
    raise ValueError(f"{room!r} is not a room; rooms: {[r for layer in LAYERS for r in layer]}")


def may_import(importer: str, imported: str) -> bool:
    """Whether module ``importer`` may import module ``imported`` under the layer rule."""
    a, b = room_of(importer), room_of(imported)
    return a == b or layer_of(b) < layer_of(a)
