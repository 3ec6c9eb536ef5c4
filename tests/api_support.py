"""Helpers for the API tests: keys for two tenants, an app on the fake profile, a live loopback server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from loupe.app.api import create_app
from loupe.app.config import load_settings
from loupe.app.tenants import Access, KeyStore, hash_key

KEYS = {
    "acme-admin": ("acme", {"docs": "write", "shared": "write"}),
    "acme-reader": ("acme", {"docs": "read"}),
    "globex-admin": ("globex", {"docs": "write", "shared": "write"}),
    "local-admin": ("default", {"*": "write"}),
}


def key_store() -> KeyStore:
    """Key name doubles as the key in tests (only its hash is stored)."""
    return KeyStore(tuple((hash_key(k), Access(k, t, cols)) for k, (t, cols) in KEYS.items()))  # type: ignore[arg-type]


def headers(key: str) -> dict[str, str]:
    """Request headers carrying a key."""
    return {"X-API-Key": key}


def make_app(data_dir: Path, **overrides: Any) -> FastAPI:
    """The API on the fake profile with the test keys."""
    # Extractive answers: the local generator model would take minutes per question on 2 cores.
    settings = load_settings(data_dir=data_dir, profile="fake", generator="extractive", **overrides)
    return create_app(settings, keys=key_store())


def wait_job(client: Any, job_id: str, key: str, timeout: float = 120.0) -> dict[str, Any]:
    """Poll a job until it is done or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get(f"/v1/jobs/{job_id}", headers=headers(key))
        r.raise_for_status()
        job: dict[str, Any] = r.json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish in {timeout} s")


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 in a thread; yields its base URL; stops it on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
