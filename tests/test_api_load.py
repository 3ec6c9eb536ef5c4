"""The API on a real loopback socket: 8 concurrent query clients while ingest jobs run (0 errors; p50/p95
reported), and schemathesis fuzzing of every operation in the OpenAPI schema (0 server errors)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.api_support import headers, live_server, make_app

KEY = "local-admin"
WORDS = "harbour tide pier channel dredge beacon ferry cargo crane quay lock buoy anchor hull keel mast".split()


def _doc(i: int) -> bytes:
    rng = np.random.default_rng(i)
    return (" ".join(rng.choice(WORDS, 200)) + f" document {i}.").encode()


def run_load(base: str, seconds: float, clients: int = 8) -> dict[str, Any]:
    """``clients`` threads search in a loop for ``seconds`` while a feeder keeps an ingest job running."""
    with httpx.Client(base_url=base, headers=headers(KEY), timeout=60) as c:
        first = c.post("/v1/collections/docs/uploads", files=[("files", (f"seed{i}.txt", _doc(i))) for i in range(8)])
        first.raise_for_status()
        while c.get(f"/v1/jobs/{first.json()['id']}").json()["state"] not in ("done", "failed"):
            time.sleep(0.05)
    stop = threading.Event()
    latencies: list[float] = []
    errors: list[str] = []
    ingested = {"jobs": 0, "files": 0, "busy_s": 0.0}
    lock = threading.Lock()

    def feeder() -> None:
        n = 1000
        with httpx.Client(base_url=base, headers=headers(KEY), timeout=60) as c:
            while not stop.is_set():
                files = [("files", (f"load{n + j}.txt", _doc(n + j))) for j in range(6)]
                n += 6
                t0 = time.perf_counter()
                r = c.post("/v1/collections/docs/uploads", files=files)
                if r.status_code != 202:
                    errors.append(f"upload {r.status_code}")
                    return
                while not stop.is_set():
                    state = c.get(f"/v1/jobs/{r.json()['id']}").json()["state"]
                    if state in ("done", "failed"):
                        ingested["jobs"] += 1
                        ingested["files"] += 6
                        break
                    time.sleep(0.05)
                ingested["busy_s"] += time.perf_counter() - t0

    def client(i: int) -> None:
        with httpx.Client(base_url=base, headers=headers(KEY), timeout=60) as c:
            j = 0
            while not stop.is_set():
                q = f"{WORDS[(i + j) % len(WORDS)]} {WORDS[(i * 3 + j) % len(WORDS)]}"
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/collections/docs/search", json={"text": q, "k": 10})
                    ok = r.status_code == 200 and "hits" in r.json()
                    why = f"status {r.status_code}"
                except httpx.HTTPError as e:
                    ok, why = False, type(e).__name__
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if not ok:
                        errors.append(why)
                j += 1

    threads = [threading.Thread(target=feeder)] + [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    wall = time.perf_counter() - start
    lat = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
        "max_ms": round(float(lat.max()), 1) if lat.size else None,
        "ingest_jobs_done": ingested["jobs"],
        "files_ingested": ingested["files"],
    }


@pytest.mark.parametrize(
    "seconds", [pytest.param(4.0, id="short"), pytest.param(60.0, marks=pytest.mark.slow, id="60s")]
)
def test_eight_clients_during_ingest(data_dir: Path, seconds: float) -> None:
    with live_server(make_app(data_dir)) as base:
        figures = run_load(base, seconds)
    print("api load:", json.dumps(figures))
    assert figures["errors"] == 0, figures
    assert figures["requests"] >= 8


def test_schemathesis_finds_no_server_error(data_dir: Path) -> None:
    """Every operation of the OpenAPI schema, fuzzed (7 examples each, under 100 in all): no 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    failures: list[str] = []
    calls = 0
    corpus = data_dir.parent / "allowed"
    corpus.mkdir()
    (corpus / "a.txt").write_text("beacon maintenance in spring")
    with live_server(make_app(data_dir, api_allowed_roots=[str(corpus)])) as base:
        httpx.post(
            f"{base}/v1/collections/docs/uploads",
            headers=headers(KEY),
            files=[("files", ("seed.txt", b"ferry timetable in october"))],
        ).raise_for_status()
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        ops = [r.ok() for r in schema.get_all_operations()]
        per_op = max(1, 100 // len(ops))
        for op in ops:

            @settings(
                max_examples=per_op,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
            )
            @given(case=op.as_strategy())
            def fuzz(case: Any) -> None:
                nonlocal calls
                calls += 1
                resp = case.call(base_url=base, headers=headers(KEY), timeout=60)
                if resp.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path}: {resp.status_code} {resp.text[:200]}")

            fuzz()
    print("schemathesis:", json.dumps({"operations": len(ops), "calls": calls, "server_errors": len(failures)}))
    assert calls <= 100 + len(ops)
    assert not failures, "\n".join(failures[:10])
