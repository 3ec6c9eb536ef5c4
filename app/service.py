"""``Loupe``: the one facade the CLI, the UI and the API call. Holds the settings, the profile and the index.

The index is opened on first use and kept open (embedded Qdrant allows one process per collection).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loupe.app.chat import Turn, condense_question, recent_history
from loupe.app.config import Settings
from loupe.app.generate import Answer, AnswerStream
from loupe.app.media import drop_unused_media
from loupe.app.pipeline import IngestPipeline, IngestReport, IngestRunner, ProgressFn
from loupe.app.retrieve import Filters, search
from loupe.embedder.base import AudioInput
from loupe.embedder.profiles import CLIP_RATE, EmbeddingProfile, Query, profile_from_settings
from loupe.errors import ConfigError, EmbedError, GeneratorError, LoupeError, StoreError
from loupe.index.store import Index, IndexConfig
from loupe.ingest import IngestOptions
from loupe.types import Hit

if TYPE_CHECKING:  # the generator (llama-index) loads on the first question, not on every ingest or search
    from loupe.app.llm import StreamingLLM

log = logging.getLogger(__name__)


def index_config(settings: Settings, collection: str | None = None, tenant: str | None = None) -> IndexConfig:
    """The index location a settings object describes (``tenant`` is written into every point's payload)."""
    return IndexConfig(
        data_dir=settings.data_dir,
        collection=collection or settings.collection,
        engine=settings.engine,
        qdrant_url=settings.qdrant_url,
        qdrant_api_key=settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None,
        tenant=tenant or "default",
        shard_number=settings.qdrant_shard_number,
        replication_factor=settings.qdrant_replication_factor,
        write_consistency_factor=settings.qdrant_write_consistency_factor,
    )


def media_dir(settings: Settings) -> Path:
    """The media store of the settings' collection. One folder per collection: deleting a source drops media no
    point of *its* collection refers to, which must not reach into another collection holding the same file."""
    return settings.data_dir / "media" / settings.collection


def ingest_options(settings: Settings) -> IngestOptions:
    """Typed ingest options from the settings."""
    return IngestOptions(
        chunk_chars=settings.chunk_chars,
        chunk_overlap=settings.chunk_overlap,
        max_file_mb=settings.max_file_mb,
        max_pdf_pages=settings.max_pdf_pages,
        media_dir=media_dir(settings),
        ocr=settings.ocr,
        render_dpi=settings.render_dpi,
        video_ocr=settings.video_ocr,
    )


def ingest_runner(
    settings: Settings,
    index: Index,
    profile: EmbeddingProfile,
    *,
    show_progress: bool = False,
    allowed_roots: Iterable[str | os.PathLike[str]] | None = None,
) -> IngestRunner:
    """The ingest the settings ask for: in this process, or on a Ray cluster when ``ray_address`` is set
    (app/distributed.py; same ``run(paths, prune=, on_file=)``, same report and manifest)."""
    if settings.ray_address:
        from functools import partial

        from loupe.app.distributed import RayIngest, RayOptions, require_ray

        require_ray()  # before anything else: the install hint, not a half-started ingest
        opts = RayOptions(
            address=settings.ray_address,
            workers=settings.ray_workers,
            cpus_per_worker=settings.ray_cpus_per_worker,
            gpus_per_worker=settings.ray_gpus_per_worker,
        )
        # Workers build their own profile from the settings (a loaded model is not shipped over the network),
        # by the name of the driver's profile (the API may open a collection with another than the default).
        worker_settings = settings.model_copy(update={"profile": profile.name})
        return RayIngest(
            index,
            profile,
            ingest_options(settings),
            opts,
            partial(profile_from_settings, worker_settings),
            allowed_roots=allowed_roots,
        )
    return IngestPipeline(
        index,
        profile,
        ingest_options(settings),
        batch_size=settings.embed_batch_size,
        show_progress=show_progress,
        allowed_roots=allowed_roots,
    )


def decode_query_audio(path: str) -> AudioInput:
    """A recorded query as 16 kHz mono samples (the rate every audio backend takes), marked speech when it would be
    stored as a speech clip (a spoken question), else a sound given as an example (embedded as sound clips are)."""
    if not Path(path).is_file():
        raise ConfigError(f"audio query file {path} does not exist")
    try:
        from loupe.ingest.audio import decode_to_array

        samples = decode_to_array(Path(path))
    except LoupeError:
        raise
    except Exception as e:
        raise EmbedError(f"cannot decode the audio query {path}: {e}") from e
    from loupe.ingest.audio import is_speech

    try:
        speech = is_speech(samples)
    except Exception as e:  # the VAD is part of the install; a query must still run without it
        log.warning("voice activity detection failed on %s (%s): the query is taken as speech", path, e)
        speech = True
    return AudioInput(samples, CLIP_RATE, speech=speech)


# Fewer recognised words than this is noise (a logo, an axis tick), not text to search by.
QUERY_OCR_MIN_WORDS = 3
QUERY_OCR_MIN_SCORE = 0.6


def query_image_text(path: str, ocr: Any = None) -> str:
    """The text an analyst's query picture shows (OCR lines with confidence >= 0.6), or "" when it shows fewer than
    three words or cannot be read. The picture is still searched by its pixels either way."""
    import numpy as np
    from PIL import Image

    from loupe.ingest.ocr import default_ocr

    try:
        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        lines = (ocr or default_ocr())(pixels)
    except Exception as e:  # a picture OCR cannot read is searched by its pixels alone
        log.info("query picture %s not OCR'd: %s", path, type(e).__name__)
        return ""
    text = " ".join(line.text for line in lines if line.score >= QUERY_OCR_MIN_SCORE).strip()
    return text if len(text.split()) >= QUERY_OCR_MIN_WORDS else ""


class Loupe:
    """Search and ask over one collection.

    >>> lp = Loupe(load_settings(data_dir="/tmp/kb"))  # doctest: +SKIP
    >>> lp.ingest(["docs/"]).summary()  # doctest: +SKIP
    >>> lp.search("quarterly revenue")[0].segment.source.uri  # doctest: +SKIP
    """

    def __init__(
        self, settings: Settings, profile: EmbeddingProfile | None = None, *, tenant: str | None = None
    ) -> None:
        self.settings = settings
        self._profile = profile
        self._index: Index | None = None
        self._llm: StreamingLLM | None = None
        self._llm_problem = ""
        self._llm_made = False
        # With a tenant (the API), every read of the index is filtered to that tenant's points server-side.
        self.tenant = tenant

    @property
    def profile(self) -> EmbeddingProfile:
        """The embedding profile (constructed lazily; weights load on first embed)."""
        if self._profile is None:
            self._profile = profile_from_settings(self.settings)
        return self._profile

    @property
    def collection(self) -> str:
        """The collection this facade works on."""
        return self.settings.collection

    def index(self, *, create: bool = False) -> Index:
        """The open index (opened on first use; created only when ``create``)."""
        if self._index is None:
            os.makedirs(self.settings.data_dir, exist_ok=True)
            cfg = index_config(self.settings, tenant=self.tenant)
            self._index = Index.open(
                cfg, self.profile.info, create=create, pieces=self.profile.pieces, tenant_scoped=self.tenant is not None
            )
        return self._index

    def close(self) -> None:
        """Release the index."""
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self) -> Loupe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations ------------------------------------------------------------------------------------------
    def ingest(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        prune: bool = False,
        show_progress: bool = False,
        on_file: ProgressFn | None = None,
    ) -> IngestReport:
        """Ingest files and folders into the collection (created with this profile if new)."""
        pipeline = ingest_runner(self.settings, self.index(create=True), self.profile, show_progress=show_progress)
        return pipeline.run(paths, prune=prune, on_file=on_file)

    def search(
        self,
        text: str | None = None,
        *,
        image: str | None = None,
        audio: str | None = None,
        k: int = 10,
        filters: Filters | None = None,
        calibrated: bool = False,
    ) -> list[Hit]:
        """Hits for a text, image or voice query; [] for an empty collection. ``calibrated=True`` merges the
        modality families by calibrated scores (experimental, app/calibration.py; off by default)."""
        if image and not (text and text.strip()) and self.settings.query_image_ocr:
            text = query_image_text(image) or None
        query = Query(text=text, image=image, audio=decode_query_audio(audio) if audio else None)
        if not query.kinds():
            return []
        try:
            idx = self.index()
        except StoreError:
            if self.collection not in self.collections():
                return []
            raise
        return search(idx, self.profile, query, k=k, filters=filters, calibration=calibrated)

    @property
    def llm(self) -> StreamingLLM | None:
        """The generator the settings name (None: extractive, or the local model is not installed)."""
        if not self._llm_made:
            self._llm_made = True
            from loupe.app.llm import create_llm

            try:
                self._llm = create_llm(self.settings)
            except GeneratorError as e:
                self._llm_problem = str(e)
        return self._llm

    def ask_stream(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        k: int = 5,
        filters: Filters | None = None,
        image: str | None = None,
        audio: str | None = None,
    ) -> AnswerStream:
        """Answer as a stream: condense a follow-up with ``history``, retrieve, then generate with citations.

        Iterate the result for text pieces; then ``.answer`` (checked citations, flags, label), ``.hits``,
        ``.standalone_question`` and ``.ttft_s``. ``image``/``audio`` add query parts to the retrieval.
        """
        llm = self.llm
        standalone = condense_question(question, history, llm)
        hits = self.search(standalone, image=image, audio=audio, k=k, filters=filters)
        stream = AnswerStream(
            question,
            hits,
            llm,
            history=recent_history(history),
            images=bool(llm is not None and llm.sees_images),
            standalone_question=standalone,
            unavailable=self._llm_problem,
        )
        return stream

    def ask(
        self,
        question: str,
        *,
        history: Sequence[Turn] = (),
        k: int = 5,
        filters: Filters | None = None,
        image: str | None = None,
        audio: str | None = None,
    ) -> tuple[Answer, list[Hit]]:
        """An answer with [n] citations and the hits it was drawn from (:meth:`ask_stream`, consumed)."""
        stream = self.ask_stream(question, history=history, k=k, filters=filters, image=image, audio=audio)
        return stream.answer, stream.hits

    def delete_source(self, source: str) -> int:
        """Delete a source (path as ingested, or relative to the current folder). Returns points deleted."""
        uri = str(Path(source).absolute())
        idx = self.index()
        shas = {s.sha256 for s in idx.source_states(uri)}
        n = idx.delete_source(uri)
        drop_unused_media(idx, media_dir(self.settings), shas)
        return n

    def collections(self) -> list[str]:
        """Collection names at this location."""
        return Index.list_collections(index_config(self.settings))

    def stats(self) -> dict[str, Any]:
        """Counts per modality, sources, profile."""
        return self.index().stats()

    def sources(self) -> dict[str, int]:
        """Every source uri in the collection with its point count (for source filters and admin pages)."""
        return self.index().sources()

    def rebuild(self, *, on_file: ProgressFn | None = None) -> IngestReport:
        """Drop the collection and ingest its sources again with the current settings (e.g. new chunk sizes).

        Sources whose files no longer exist are reported as failed and are gone afterwards.
        """
        uris = sorted(self.sources())
        self.index().drop()
        self._index = None
        return self.ingest(uris, on_file=on_file)
