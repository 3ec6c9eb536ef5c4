"""Office and web formats through unstructured (offline spaCy), with page/slide numbers where they exist."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from loupe.app.config import load_settings
from loupe.app.service import Loupe
from loupe.errors import IngestError
from loupe.ingest import IngestOptions, prepare, segments

SAMPLE = Path(__file__).resolve().parent.parent / "sample"


def segs_of(path: Path) -> list:  # type: ignore[type-arg]
    return list(segments(prepare(path, IngestOptions()), IngestOptions()))


def test_sample_corpus_ingests_completely(data_dir: Path) -> None:
    with Loupe(load_settings(None, data_dir=str(data_dir), profile="fake", collection="s")) as lp:
        r = lp.ingest([SAMPLE]).to_json()
        assert r["summary"]["failed"] == 0 and r["summary"]["ok"] == r["summary"]["files"] >= 11, r
        slides = {h.locator_json for h in lp.search("phishing", k=20) if h.segment.source.uri.endswith(".pptx")}
    assert slides and all(isinstance(s, int) for s in slides)  # pptx slides are pages


def test_pptx_slides_and_xlsx_sheets_are_pages() -> None:
    pptx = segs_of(SAMPLE / "docs" / "board_briefing.pptx")
    assert {s.locator.page for s in pptx} == {1, 2, 3, 4}
    xlsx = segs_of(SAMPLE / "docs" / "budget_2026.xlsx")
    assert xlsx and xlsx[0].locator.page == 1 and "Insurance" in " ".join(s.text or "" for s in xlsx)


def test_odt_and_rtf_through_pandoc(tmp_path: Path) -> None:
    import pypandoc

    pypandoc.convert_text(
        "# Tides\n\nSpring tides peak at 4.2 metres.", "odt", format="md", outputfile=str(tmp_path / "t.odt")
    )
    (tmp_path / "t.rtf").write_text(r"{\rtf1\ansi{\fonttbl\f0\fswiss Helvetica;}\f0\pard Ferry timetable changes.\par}")
    assert "4.2 metres" in " ".join(s.text or "" for s in segs_of(tmp_path / "t.odt"))
    assert "Ferry timetable" in " ".join(s.text or "" for s in segs_of(tmp_path / "t.rtf"))
    (tmp_path / "bad.rtf").write_text("plain text pretending")
    with pytest.raises(IngestError, match="not an RTF"):
        prepare(tmp_path / "bad.rtf", IngestOptions())


def test_partitioning_makes_no_network_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """unstructured would download spaCy's en_core_web_sm; the injected blank pipeline must be used instead."""
    calls: list[object] = []

    def record(self: socket.socket, address: object) -> None:
        calls.append(address)
        raise OSError("network blocked")

    monkeypatch.setattr(socket.socket, "connect", record)
    p = tmp_path / "long.txt"
    p.write_text("The harbour master said the tide was high. The ferry left at noon! Was it late?\n\n" * 20)
    out = segs_of(p)
    assert out and calls == []


@pytest.mark.skipif(shutil.which("pandoc") is not None, reason="only meaningful where pandoc is absent from PATH")
def test_pandoc_comes_from_the_wheel() -> None:
    import pypandoc

    assert pypandoc.get_pandoc_version()
