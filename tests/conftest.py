"""Shared fixtures: a network guard on every test, settings in tmp_path, generated documents."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX socket path
        return True
    host = address[0] if isinstance(address, tuple) and address else ""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def extractive_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers are extractive unless a test picks a generator (the default local model takes seconds per answer)."""
    monkeypatch.setenv("LOUPE_GENERATOR", "extractive")


@pytest.fixture(autouse=True)
def block_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test runs with outbound connections refused (loopback and unix sockets stay allowed)."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            raise RuntimeError(f"network access blocked in tests: {address!r}")
        return real_connect(self, address)

    def guarded_ex(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            raise RuntimeError(f"network access blocked in tests: {address!r}")
        return real_connect_ex(self, address)

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        host = args[0] if args else kwargs.get("host")
        if host in (None, "localhost") or (isinstance(host, str) and _is_local((host, 0))):
            return real_getaddrinfo(*args, **kwargs)
        raise RuntimeError(f"DNS lookup blocked in tests: {host!r}")

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    yield


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty Loupe data dir."""
    d = tmp_path / "data"
    d.mkdir()
    return d


def write_pdf(path: Path, pages: list[str]) -> Path:
    """A text-layer PDF with one string per page (PyMuPDF)."""
    import pymupdf

    doc = pymupdf.open()
    for text in pages:
        page = doc.new_page()
        page.insert_textbox(pymupdf.Rect(72, 72, 520, 770), text, fontsize=11)
    doc.save(str(path))
    doc.close()
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small mixed folder: a 3-page PDF, markdown, text, HTML and an image."""
    from PIL import Image, ImageDraw

    root = tmp_path / "corpus"
    root.mkdir()
    write_pdf(
        root / "report.pdf",
        [
            "Harbour annual report. Introduction to the port authority and its mission.",
            "Dredging of the north channel removed forty thousand cubic metres of silt in spring.",
            "The container terminal operates six ship-to-shore cranes with a combined lift of 300 tonnes.",
        ],
    )
    (root / "notes.md").write_text("# Wildlife\n\nA colony of grey seals rests on the sandbank near the breakwater.\n")
    (root / "minutes.txt").write_text("The board approved the budget for lighthouse repairs on Tuesday.\n")
    (root / "faq.html").write_text(
        "<html><body><h1>Visitor FAQ</h1><p>Ferry tickets can be bought at the kiosk by the pier.</p></body></html>"
    )
    img = Image.new("RGB", (64, 48), "white")
    ImageDraw.Draw(img).rectangle((8, 8, 40, 30), fill="blue")
    img.save(root / "harbour_map.png")
    return root


@pytest.fixture(scope="session")
def tiny_gemma2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight EmbeddingGemma 2 (all towers) in a local folder, built once per session."""
    pytest.importorskip("transformers")
    from tests.tiny_models import build_embeddinggemma2

    return build_embeddinggemma2(tmp_path_factory.mktemp("tiny-gemma2") / "embeddinggemma2")
