"""Ingest orchestrator end to end with the fake profile: idempotence, replacement, deletion, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loupe.app.config import load_settings
from loupe.app.service import Loupe
from tests.conftest import write_pdf


def loupe(data_dir: Path, collection: str = "kb") -> Loupe:
    return Loupe(load_settings(None, data_dir=str(data_dir), profile="fake", collection=collection))


def by_name(report: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(f for f in report["files"] if Path(f["path"]).name == name)


def test_ingest_search_reingest_replace_delete(corpus: Path, data_dir: Path) -> None:
    with loupe(data_dir) as lp:
        r1 = lp.ingest([corpus]).to_json()
        assert r1["summary"]["ok"] == 5 and r1["summary"]["failed"] == 0, r1
        n_points = lp.index().count()
        assert n_points == r1["summary"]["segments"]

        hits = lp.search("container terminal ship-to-shore cranes", k=5)
        assert Path(hits[0].segment.source.uri).name == "report.pdf" and hits[0].locator_json == 3

        # Unchanged: nothing re-embedded, no new points.
        r2 = lp.ingest([corpus]).to_json()
        assert r2["summary"]["unchanged"] == 5 and r2["summary"]["segments"] == 0
        assert lp.index().count() == n_points

        # Changed content replaces exactly that file's points.
        before = lp.index().sources()
        (corpus / "minutes.txt").write_text("The board rejected the ferry timetable.\n\nSecond paragraph about gulls.")
        r3 = lp.ingest([corpus]).to_json()
        assert by_name(r3, "minutes.txt")["status"] == "ok" and r3["summary"]["unchanged"] == 4
        after = lp.index().sources()
        uri = str(corpus / "minutes.txt")
        assert {k: v for k, v in after.items() if k != uri} == {k: v for k, v in before.items() if k != uri}
        states = lp.index().source_states(uri)
        assert len(states) == 1 and states[0].complete
        assert lp.search("ferry timetable rejected", k=1)[0].segment.source.uri == uri

        # Delete one source; prune removes files gone from disk.
        assert lp.delete_source(str(corpus / "notes.md")) == 1
        (corpus / "faq.html").unlink()
        r4 = lp.ingest([corpus], prune=True).to_json()
        assert r4["deleted_sources"] == [str(corpus / "faq.html")]
        # notes.md is still on disk, so the same run ingested it again.
        assert by_name(r4, "notes.md")["status"] == "ok"
        assert set(lp.index().sources()) == {
            str(corpus / n) for n in ("report.pdf", "minutes.txt", "harbour_map.png", "notes.md")
        }


def test_interrupted_file_is_redone(corpus: Path, data_dir: Path) -> None:
    with loupe(data_dir) as lp:
        lp.ingest([corpus])
        idx = lp.index()
        uri = str(corpus / "report.pdf")
        # Simulate a crash half way through this file: drop one of its points.
        some = next(iter(idx.iter_points()))
        from loupe.index.engines import FieldFilter

        pts = [p for p in idx.iter_points(FieldFilter(must={"source.uri": uri}))]
        idx.engine.delete(FieldFilter(must={"segment_id": pts[0].payload["segment_id"]}))
        assert some is not None and not idx.source_states(uri)[0].complete
        r = lp.ingest([corpus]).to_json()
        assert by_name(r, "report.pdf")["status"] == "ok"
        assert idx.source_states(uri)[0].complete


def test_bad_files_are_reported_and_the_rest_ingested(tmp_path: Path, data_dir: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "good.txt").write_text("Sea kayaks can be rented at the north beach from May to September.")
    (bad / "empty.txt").write_bytes(b"")
    full = write_pdf(tmp_path / "full.pdf", ["page one text " * 50, "page two text " * 50])
    (bad / "truncated.pdf").write_bytes(full.read_bytes()[:300])
    (bad / "binary.txt").write_bytes(os.urandom(2048) + b"\x00" * 10)
    (bad / "fake.pdf").write_text("this is not a pdf at all")
    (bad / "unknown.xyz").write_text("no ingest module for this")
    os.mkfifo(bad / "pipe.txt")
    with loupe(data_dir) as lp:
        report = lp.ingest([bad, tmp_path / "missing-folder"])
    r = report.to_json()
    assert report.has_failures
    assert by_name(r, "good.txt")["status"] == "ok"
    reasons = {Path(f["path"]).name: (f["status"], f["reason"]) for f in r["files"]}
    assert reasons["empty.txt"] == ("failed", "is empty (0 bytes)")
    assert reasons["truncated.pdf"][0] == "failed" and "PDF" in reasons["truncated.pdf"][1]
    assert reasons["binary.txt"][0] == "failed" and "binary" in reasons["binary.txt"][1]
    assert reasons["fake.pdf"][0] == "failed" and "not a PDF" in reasons["fake.pdf"][1]
    assert reasons["pipe.txt"][0] == "failed" and "named pipe" in reasons["pipe.txt"][1]
    assert reasons["unknown.xyz"][0] == "skipped"
    assert reasons["missing-folder"] == ("failed", "no such file or folder")


def test_truncated_pdf_keeps_parseable_pages(tmp_path: Path, data_dir: Path) -> None:
    """A PDF cut after its first pages (no xref) is repaired by MuPDF: what parses is kept."""
    full = write_pdf(tmp_path / "full.pdf", [f"distinct topic number {i} " * 20 for i in range(6)])
    data = full.read_bytes()
    cut = tmp_path / "docs" / "cut.pdf"
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with loupe(data_dir) as lp:
        r = lp.ingest([cut.parent]).to_json()
    f = r["files"][0]
    # Either MuPDF recovers some pages (ok, with the count) or it refuses the file with a reason; never a crash.
    assert f["status"] in ("ok", "failed") and (f["segments"] > 0 or f["reason"])


def test_symlink_loop_does_not_hang(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "loop"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.txt").write_text("loop test text")
    os.symlink(root, root / "a" / "back")
    with loupe(data_dir) as lp:
        r = lp.ingest([root]).to_json()
    assert r["summary"]["ok"] == 1


def test_embedding_failure_fails_only_that_file(tmp_path: Path, data_dir: Path) -> None:
    """Files are embedded together in batches; when a batch fails, each file is retried alone."""
    from loupe.embedder.fake import FakeEmbedder
    from loupe.embedder.profiles import EmbeddingProfile
    from loupe.errors import EmbedError

    class Picky(FakeEmbedder):
        def embed(self, items, *, role="passage"):  # type: ignore[no-untyped-def]
            if any("poison" in getattr(i, "text", "") for i in items):
                raise EmbedError("cannot embed poison")
            return super().embed(items, role=role)

    folder = tmp_path / "f"
    folder.mkdir()
    for name, text in [("a.txt", "alpha harbour"), ("b.txt", "poison pill"), ("c.txt", "gamma lighthouse")]:
        (folder / name).write_text(text)
    settings = load_settings(None, data_dir=str(data_dir), profile="fake", collection="kb")
    with Loupe(settings, EmbeddingProfile("fake", Picky(64))) as lp:
        r = lp.ingest([folder]).to_json()
    status = {Path(f["path"]).name: (f["status"], f["reason"]) for f in r["files"]}
    assert status == {"a.txt": ("ok", None), "b.txt": ("failed", "cannot embed poison"), "c.txt": ("ok", None)}


def test_deleting_a_source_keeps_media_another_collection_uses(tmp_path: Path, data_dir: Path) -> None:
    """Two collections ingest the same PDF; deleting it from one keeps the other's page images."""
    pdf = write_pdf(tmp_path / "shared.pdf", ["Pilotage is compulsory for vessels over 80 metres."])
    with loupe(data_dir, "a") as a, loupe(data_dir, "b") as b:
        a.ingest([pdf])
        b.ingest([pdf])
        b_media = [h.segment.media for h in b.search("pilotage vessels", k=3) if h.segment.media is not None]
        assert b_media, "the PDF page should carry a page image"
        assert a.delete_source(str(pdf)) > 0
        assert all(Path(m.path).exists() for m in b_media)
        assert not list((data_dir / "media" / "a").rglob("*.jpg"))


def test_query_picture_text_needs_three_confident_words(tmp_path: Path) -> None:
    from PIL import Image

    from loupe.app.service import query_image_text
    from loupe.ingest.ocr import OcrLine

    pic = tmp_path / "q.png"
    Image.new("RGB", (64, 32), "white").save(pic)

    def ocr_of(*lines: tuple[str, float]):  # type: ignore[no-untyped-def]
        return lambda image: [OcrLine(t, s, (0, 0, 1, 1)) for t, s in lines]

    assert query_image_text(str(pic), ocr_of(("north channel", 0.9), ("dredging", 0.8))) == "north channel dredging"
    assert query_image_text(str(pic), ocr_of(("north channel", 0.9), ("dredging", 0.3))) == ""  # 2 confident words
    assert query_image_text(str(tmp_path / "missing.png"), ocr_of(("a b c", 0.9))) == ""


@pytest.mark.model
def test_a_photo_of_a_page_finds_the_page(corpus: Path, data_dir: Path, tmp_path: Path) -> None:
    """The query picture's text (real RapidOCR) becomes the text part; without it the fake profile has only pixels."""
    from PIL import Image, ImageDraw

    pic = tmp_path / "photo.png"
    im = Image.new("RGB", (900, 120), "white")
    ImageDraw.Draw(im).text((10, 40), "Dredging of the north channel removed silt", fill="black", font_size=36)
    im.save(pic)
    with loupe(data_dir) as lp:
        lp.ingest([corpus])
        hits = lp.search(image=str(pic), k=3)
        assert Path(hits[0].segment.source.uri).name == "report.pdf" and hits[0].locator_json == 2
        lp.settings = lp.settings.model_copy(update={"query_image_ocr": False})
        assert not any(h.locator_json == 2 and h.rank == 1 for h in lp.search(image=str(pic), k=3))
