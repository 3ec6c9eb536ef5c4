"""Server mode for a cluster: what Loupe asks a Qdrant server for when it creates a collection.

No Qdrant server can run here, so a loopback HTTP fake of the three REST calls involved records the requests that
qdrant-client really sends: the collection's shard number, replication factor and write consistency factor from
the settings, and the tenant field indexed with ``is_tenant`` (payload-partitioned tenants). Against a real
server these settings are covered by the Index contract tests when LOUPE_QDRANT_URL is set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from loupe.app.config import load_settings
from loupe.app.service import index_config
from loupe.embedder.profiles import create_profile
from loupe.index.store import Index


class _Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, Any]]

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _answer(self, result: Any) -> None:
        body = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        if self.path.rstrip("/") == "":
            body = json.dumps({"title": "qdrant - vector search engine", "version": "1.20.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.split("?")[0].endswith("/exists"):
            self._answer({"exists": False})
        else:
            self.send_error(404)

    def do_PUT(self) -> None:
        n = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(n) or b"null")
        self.calls.append(("PUT", self.path.split("?")[0], body))
        if "/index" in self.path:
            self._answer({"operation_id": len(self.calls), "status": "completed"})
        else:
            self._answer(True)


@pytest.fixture
def fake_qdrant() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    calls: list[tuple[str, str, Any]] = []
    handler = type("Handler", (_Recorder,), {"calls": calls})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        server.shutdown()
        server.server_close()


def test_new_server_collection_gets_the_cluster_layout_and_tenant_index(
    fake_qdrant: tuple[str, list[tuple[str, str, Any]]], tmp_path: Path
) -> None:
    url, calls = fake_qdrant
    settings = load_settings(
        data_dir=tmp_path,
        profile="fake",
        qdrant_url=url,
        qdrant_shard_number=6,
        qdrant_replication_factor=2,
        qdrant_write_consistency_factor=2,
    )
    Index.open(index_config(settings), create_profile("fake").info, create=True).close()
    created = [body for verb, path, body in calls if verb == "PUT" and path == "/collections/default"]
    assert len(created) == 1
    body = created[0]
    assert (body["shard_number"], body["replication_factor"], body["write_consistency_factor"]) == (6, 2, 2)
    assert body["metadata"]["profile"]["name"] == "fake"
    indexes = {b["field_name"]: b["field_schema"] for verb, path, b in calls if path == "/collections/default/index"}
    assert indexes["tenant"] == {"type": "keyword", "is_tenant": True}
    assert indexes["source.uri"] == "keyword" and indexes["locator.page"] == "integer"


def test_without_layout_settings_the_server_defaults_apply(
    fake_qdrant: tuple[str, list[tuple[str, str, Any]]], tmp_path: Path
) -> None:
    url, calls = fake_qdrant
    Index.open(
        index_config(load_settings(data_dir=tmp_path, profile="fake", qdrant_url=url)), create_profile("fake").info
    ).close()
    body = next(b for verb, path, b in calls if verb == "PUT" and path == "/collections/default")
    assert not {"shard_number", "replication_factor", "write_consistency_factor"} & {k for k, v in body.items() if v}
