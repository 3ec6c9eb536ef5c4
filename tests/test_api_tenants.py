"""Tenant isolation: look-alike documents of two tenants never cross, over search, ask, media, stats, jobs and
deletes; and the payload filter alone keeps tenants apart inside one physical collection."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from loupe.embedder.profiles import create_profile
from loupe.index.engines import FieldFilter
from loupe.index.store import Index, IndexConfig
from loupe.index.tenants import TenantEngine
from loupe.types import Segment, SourceRef, segment_id
from tests.api_support import headers, make_app, wait_job

TENANTS = {"acme-admin": "ACME", "globex-admin": "GLOBEX", "local-admin": "LOCAL"}


def lookalikes(company: str) -> list[tuple[str, bytes]]:
    """The same file names and nearly the same words for every tenant; only the company name differs."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 90, 90)).save(buf, "PNG")
    return [
        ("revenue.txt", f"Quarterly revenue report for {company}: revenue grew in the third quarter.".encode()),
        ("board.md", f"# Board minutes\n\nThe {company} board approved the merger plan.".encode()),
        ("logo.png", buf.getvalue()),
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, dict[str, Any]]]]:
    data = tmp_path_factory.mktemp("tenants")
    seen: dict[str, dict[str, Any]] = {}
    with TestClient(make_app(data)) as client:
        for key, company in TENANTS.items():
            r = client.post(
                "/v1/collections/docs/uploads",
                headers=headers(key),
                files=[("files", f) for f in lookalikes(company)],
            )
            job = wait_job(client, r.json()["id"], key)
            assert job["summary"]["ok"] == 3, job
            seen[key] = {"job": job["id"], "company": company}
        yield client, seen


QUERIES = ["quarterly revenue report", "board approved the merger", "logo", "ACME GLOBEX LOCAL revenue"]


def _foreign(company: str, text: str) -> bool:
    return any(c in text for c in TENANTS.values() if c != company)


def test_search_and_ask_never_cross(world: tuple[TestClient, dict[str, dict[str, Any]]]) -> None:
    client, seen = world
    for key, info in seen.items():
        own_sources: set[str] = set()
        for q in QUERIES:
            r = client.post("/v1/collections/docs/search", headers=headers(key), json={"text": q, "k": 50})
            hits = r.json()["hits"]
            assert hits, (key, q)
            for h in hits:
                assert not _foreign(info["company"], json.dumps(h)), (key, q, h)
                own_sources.add(h["source"])
            r = client.post("/v1/collections/docs/ask", headers=headers(key), json={"question": q, "k": 20})
            assert not _foreign(info["company"], r.text), (key, q)
            with client.stream(
                "POST", "/v1/collections/docs/ask", headers=headers(key), json={"question": q, "stream": True}
            ) as s:
                assert not _foreign(info["company"], "".join(s.iter_text()))
        info["sources"] = own_sources
        info["segments"] = {
            h["segment_id"]
            for q in QUERIES
            for h in client.post("/v1/collections/docs/search", headers=headers(key), json={"text": q, "k": 50}).json()[
                "hits"
            ]
        }
        # Image query: same pixels for every tenant, still only own hits.
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (90, 90, 90)).save(buf, "PNG")
        r = client.post(
            "/v1/collections/docs/search/upload", headers=headers(key), files={"image": ("q.png", buf.getvalue())}
        )
        assert r.status_code == 200 and all(h["segment_id"] in info["segments"] for h in r.json()["hits"])
        r = client.post(
            "/v1/collections/docs/ask/upload",
            headers=headers(key),
            data={"question": "quarterly revenue", "k": "20"},
            files={"image": ("q.png", buf.getvalue())},
        )
        assert r.status_code == 200 and not _foreign(info["company"], r.text)


def test_media_stats_jobs_and_deletes_never_cross(world: tuple[TestClient, dict[str, dict[str, Any]]]) -> None:
    client, seen = world
    if "segments" not in seen["acme-admin"]:
        test_search_and_ask_never_cross(world)
    for key, info in seen.items():
        stats = client.get("/v1/collections/docs", headers=headers(key)).json()
        assert stats["sources"] == 3, (key, stats)
        listed = client.get("/v1/collections/docs/sources", headers=headers(key)).json()
        assert len(listed) == 3 and {s["source"] for s in listed} >= info["sources"]
        for other, oinfo in seen.items():
            if other == key:
                continue
            for sid in oinfo["segments"]:
                if sid in info["segments"]:
                    continue
                assert client.get(f"/v1/collections/docs/media/{sid}", headers=headers(key)).status_code == 404
            assert client.get(f"/v1/jobs/{oinfo['job']}", headers=headers(key)).status_code == 404
            for src in oinfo["sources"]:
                if src in info["sources"]:
                    continue  # upload names are per-tenant folders; the same name means the caller's own file
                r = client.delete("/v1/collections/docs/sources", headers=headers(key), params={"source": src})
                assert r.status_code == 404, (key, src)
    # Nothing was deleted by the attempts above.
    for key in seen:
        assert client.get("/v1/collections/docs", headers=headers(key)).json()["sources"] == 3


def test_payload_filter_alone_separates_tenants(tmp_path: Path) -> None:
    """Two tenants writing into one physical collection: each sees, counts and deletes only its own points."""
    profile = create_profile("fake")
    idx = Index.open(IndexConfig(data_dir=tmp_path), profile.info)
    shared = idx.engine
    try:
        views = {}
        for tenant in ("acme", "globex"):
            view = Index(idx.cfg, TenantEngine(shared, tenant), profile.info)
            src = SourceRef(f"/docs/{tenant}.txt", tenant * 4, "text/plain", tenant, 10, 1.0)
            seg = Segment(segment_id(src, "text", None), src, "text", None, "merger plan approved")
            vecs = profile.embed_segments([seg])
            view.upsert([seg], vecs, source_segments=1)  # type: ignore[arg-type]
            views[tenant] = view
        assert shared.count(None) == 2
        for tenant, view in views.items():
            assert view.count() == 1 and view.stats()["sources"] == 1
            found = view.search([], "merger plan approved", limit=10)  # BM25 only: the same words in both
            assert [s.source.uri for s, _ in found] == [f"/docs/{tenant}.txt"]
            # A caller filter naming the other tenant cannot widen the view.
            other = "globex" if tenant == "acme" else "acme"
            assert view.count(FieldFilter(must={"tenant": other})) == 0
        assert views["acme"].delete_source("/docs/globex.txt") == 0
        assert shared.count(None) == 2
    finally:
        idx.close()
