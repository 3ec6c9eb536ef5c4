"""A local fake of the Gemini ``batchEmbedContents`` HTTP contract (loopback only), for tests.

It checks each request against the documented shape (path, ``x-goog-api-key`` header, ``requests[]`` with
``model``, ``content.parts`` of ``text`` or ``inline_data{mime_type, data(base64)}``, ``outputDimensionality``)
and answers 400 with a Google-style error body when a request is malformed. Otherwise each embedding is a
deterministic function of the request's parts, scaled so that it is not unit length (the client must normalise).
``script`` queues status codes to answer before the normal behaviour (e.g. ``[429, 503]``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

KEY = "test-key-123"
PATH = re.compile(r"^/v1beta/models/([\w.-]+):batchEmbedContents$")


@dataclass
class FakeGemini:
    """State shared with the handler: recorded requests and scripted answers."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    retry_after: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def vector(parts: list[dict[str, Any]], dim: int) -> list[float]:
    """The fake's embedding of a content: seeded by its parts, length 3 (not normalised)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()
    v = np.random.default_rng(int.from_bytes(digest[:8], "little")).standard_normal(dim)
    return [float(x) for x in 3.0 * v / np.linalg.norm(v)]


def _problem(body: Any, model: str) -> str | None:
    """Why a batch body breaks the documented contract, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list) or not body["requests"]:
        return "requests[] missing"
    if len(body["requests"]) > 100:
        return "at most 100 requests per batch"
    for r in body["requests"]:
        if r.get("model") != f"models/{model}":
            return "request model must match the path's model"
        dim = r.get("outputDimensionality")
        if not isinstance(dim, int) or not 128 <= dim <= 3072:
            return "outputDimensionality must be 128-3072"
        parts = r.get("content", {}).get("parts")
        if not isinstance(parts, list) or not parts:
            return "content.parts[] missing"
        for p in parts:
            if "text" in p and isinstance(p["text"], str):
                continue
            inline = p.get("inline_data")
            if not isinstance(inline, dict) or not isinstance(inline.get("mime_type"), str):
                return "a part needs text or inline_data.mime_type"
            try:
                base64.b64decode(inline.get("data", ""), validate=True)
            except (binascii.Error, ValueError):
                return "inline_data.data must be base64"
    return None


@contextmanager
def fake_gemini() -> Iterator[FakeGemini]:
    """Serve the fake on 127.0.0.1 (a free port) for the duration of the block."""
    state = FakeGemini()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"null")
            with state.lock:
                state.requests.append(body)
                state.headers.append({k.lower(): v for k, v in self.headers.items()})
                scripted = state.script.pop(0) if state.script else None
            if scripted is not None:
                extra = {"Retry-After": state.retry_after} if state.retry_after else None
                self._send(scripted, {"error": {"code": scripted, "message": f"scripted {scripted}"}}, extra)
                return
            m = PATH.match(self.path)
            if not m:
                self._send(404, {"error": {"code": 404, "message": f"no such method {self.path}"}})
                return
            if self.headers.get("x-goog-api-key") != KEY:
                self._send(401, {"error": {"code": 401, "message": "API key not valid"}})
                return
            problem = _problem(body, m.group(1))
            if problem:
                self._send(400, {"error": {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"}})
                return
            embs = [{"values": vector(r["content"]["parts"], r["outputDimensionality"])} for r in body["requests"]]
            self._send(200, {"embeddings": embs})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval keeps shutdown (once per test) fast.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
