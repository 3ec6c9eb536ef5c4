"""Tenancy where it is enforced: an engine view that scopes every read to one tenant and stamps every write.

The API (app/api.py, app/tenants.py) decides which tenant a request acts for; :meth:`Index.open` with
``tenant_scoped=True`` wraps its engine in :class:`TenantEngine`, so nothing above the index can forget the filter.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from loupe.index.engines import Engine, FieldFilter, Found, PointData, VectorQuery


class TenantEngine:
    """An :class:`~loupe.index.engines.Engine` seen by one tenant: every read, count and delete is restricted to
    points whose payload ``tenant`` is this tenant, and every write is stamped with it.

    This sits under :class:`~loupe.index.store.Index`, so search, stats, source states, media lookups and deletes
    are all scoped without each caller remembering to add a filter. A lock serialises engine calls: the
    embedded engine is shared by the API's request threads and its ingest worker.
    """

    def __init__(self, inner: Engine, tenant: str) -> None:
        self.inner = inner
        self.tenant = tenant
        self._lock = threading.RLock()

    def _scoped(self, flt: FieldFilter | None) -> FieldFilter:
        own = FieldFilter(must={"tenant": self.tenant})
        if flt is None:
            return own
        asked = flt.must.get("tenant", self.tenant)
        if asked != self.tenant and not (isinstance(asked, list | tuple | set) and self.tenant in asked):
            # The caller asked for another tenant's points: the intersection with this tenant's is empty.
            return FieldFilter(must={"tenant": self.tenant}, must_not={"tenant": self.tenant})
        # The tenant condition is merged last so a caller's filter can never replace it.
        return flt.merged(own)

    def metadata(self) -> dict[str, Any] | None:
        """The collection's metadata (not tenant specific)."""
        with self._lock:
            return self.inner.metadata()

    def create(self, dims: Mapping[str, int], metadata: dict[str, Any]) -> None:
        """Create the collection."""
        with self._lock:
            self.inner.create(dims, metadata)

    def attach(self) -> None:
        """Open the collection."""
        with self._lock:
            self.inner.attach()

    def upsert(self, points: Sequence[PointData]) -> None:
        """Store points, each stamped with this tenant."""
        stamped = [replace(p, payload={**p.payload, "tenant": self.tenant}) for p in points]
        with self._lock:
            self.inner.upsert(stamped)

    def delete(self, flt: FieldFilter) -> None:
        """Delete this tenant's points matching the filter."""
        with self._lock:
            self.inner.delete(self._scoped(flt))

    def query(self, stages: Sequence[VectorQuery], flt: FieldFilter | None, limit: int) -> list[Found]:
        """Nearest neighbours among this tenant's points."""
        with self._lock:
            return self.inner.query(stages, self._scoped(flt), limit)

    def scroll(
        self, flt: FieldFilter | None, fields: Sequence[str] | None, batch: int = 512, vector: str | None = None
    ) -> Iterator[Found]:
        """This tenant's points matching the filter."""
        it = self.inner.scroll(self._scoped(flt), fields, batch, vector)
        while True:
            with self._lock:
                page = [f for _, f in zip(range(batch), it, strict=False)]
            yield from page
            if len(page) < batch:
                return

    def count(self, flt: FieldFilter | None) -> int:
        """How many of this tenant's points match."""
        with self._lock:
            return self.inner.count(self._scoped(flt))

    def drop(self) -> None:
        """Drop the whole collection (the API gives each tenant its own collections folder)."""
        with self._lock:
            self.inner.drop()

    def close(self) -> None:
        """Close the inner engine."""
        with self._lock:
            self.inner.close()
