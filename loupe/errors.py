"""One error hierarchy for Loupe.

Every error a user can cause derives from :class:`LoupeError`; its message names the file, collection or
setting involved and says what to do about it. Library code raises these; entry points (CLI, API, UI)
catch :class:`LoupeError` and show the message without a traceback.
"""

from __future__ import annotations


class LoupeError(Exception):
    """Base class of every error Loupe raises on purpose."""


class ConfigError(LoupeError):
    """A setting is missing, malformed or contradicts another one."""


class IngestError(LoupeError):
    """A source file could not be turned into segments.

    The orchestrator catches it, reports the file as failed with this message, and goes on with the rest.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class EmbedError(LoupeError):
    """An embedder could not load its model or embed an input."""


class GeneratorError(LoupeError):
    """A generator (local model, endpoint, API) could not produce an answer; Loupe falls back to extractive."""


class StoreError(LoupeError):
    """The vector store (Qdrant) refused an operation or is unreachable."""


# The conventions name it IndexError_; the alias keeps both spellings importable without shadowing the builtin.
IndexError_ = StoreError


class ProfileMismatchError(StoreError):
    """A collection was built with one embedding profile and opened with another.

    Vectors from different spaces cannot be compared, so mixing them is refused.
    """

    def __init__(self, collection: str, stored: str, requested: str, detail: str = "") -> None:
        msg = (
            f"collection {collection!r} was built with embedding profile {stored}, but this run uses {requested}"
            f"{' (' + detail + ')' if detail else ''}. Open it with the profile it was built with, or ingest into "
            f"a new collection (--collection NAME)."
        )
        super().__init__(msg)
        self.collection = collection
        self.stored = stored
        self.requested = requested


class UnknownNameError(ConfigError, ValueError):
    """A backend, profile or engine name that is not registered; the message lists the valid names."""
