"""Make a hostile corpus: hundreds of broken, misleading or dangerous files with good files mixed in.

Every file is generated here (no outside material). ``make_corpus(folder)`` writes the files and returns what
each one is and what ingest must do with it:

- ``bad``: must be reported as failed or skipped, with a reason;
- ``good``: must be indexed;
- ``tolerated``: damaged but possibly readable (a truncated PDF MuPDF can repair, text with invalid UTF-8):
  any outcome is fine as long as it is reported, and a failure carries a reason;
- ``vanish``: a good file the test deletes just before ingest reaches it (must be reported failed).

Run it by hand: ``python tests/hostile/make_hostile.py /tmp/hostile`` prints the counts per kind.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Expect = Literal["bad", "good", "tolerated", "vanish"]


@dataclass(frozen=True)
class Item:
    """One generated file: its name in the corpus, its kind (e.g. ``pdf_encrypted``) and the expectation."""

    name: str
    kind: str
    expect: Expect


def _pdf(pages: list[str]) -> bytes:
    import pymupdf

    doc = pymupdf.open()
    for text in pages:
        doc.new_page().insert_textbox(pymupdf.Rect(72, 72, 520, 770), text, fontsize=11)
    data: bytes = doc.tobytes()
    doc.close()
    return data


def _encrypted_pdf(text: str, user_pw: str) -> bytes:
    import pymupdf

    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), text)
    data: bytes = doc.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=user_pw, owner_pw=user_pw + "-owner")
    doc.close()
    return data


def _png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (20, 120, 200)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_bomb(width: int, height: int, bit_depth: int = 1) -> bytes:
    """A valid PNG of zeros whose pixel count is far beyond PIL's bomb limit; a few hundred KB on disk."""
    row = 1 + (width * bit_depth + 7) // 8
    comp = zlib.compressobj(9)
    blank = b"\x00" * row
    parts = [comp.compress(blank) for _ in range(height)]
    idat = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _wav(seconds: float = 1.0, freq: float = 440.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def _docx(text: str) -> bytes:
    import docx

    d = docx.Document()
    d.add_paragraph(text)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _zip_bomb_docx(unpacked_mb: int) -> bytes:
    """A docx-shaped zip whose document.xml inflates to ``unpacked_mb`` MB of zeros (ratio ~1000:1)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            block = b"\x00" * (1 << 20)
            for _ in range(unpacked_mb):
                f.write(block)
    return buf.getvalue()


GOOD_TEXT = [
    "Tide tables for the northern pier list high water forty minutes after the southern pier.",
    "The ferry timetable changes in October; the last crossing leaves at nine in the evening.",
    "Cargo cranes on quay four lift containers of up to forty tonnes.",
    "Beacon maintenance happens every spring before the sailing season opens.",
    "The lock gates close when the river level falls below two metres.",
]


def make_corpus(folder: Path, seed: int = 0, per_kind: int | None = None) -> dict[str, Item]:
    """Write the hostile corpus into ``folder``; returns name → :class:`Item`.

    ``per_kind`` keeps at most that many files of each kind (a quick corpus with every kind in it)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items: dict[str, Item] = {}

    def room(kind: str) -> bool:
        return per_kind is None or sum(1 for it in items.values() if it.kind == kind) < per_kind

    def put(name: str, data: bytes | Callable[[Path], None], kind: str, expect: Expect) -> None:
        if not room(kind):
            return
        path = folder / name
        if callable(data):
            data(path)
        else:
            path.write_bytes(data)
        items[name] = Item(name, kind, expect)

    # --- good files -------------------------------------------------------------------------------------------
    for i in range(20):
        put(f"good_{i:02d}.txt", (GOOD_TEXT[i % 5] + f" Note {i}.").encode(), "good_text", "good")
    for i in range(5):
        put(f"good_{i}.md", f"# Harbour note {i}\n\n{GOOD_TEXT[i]}".encode(), "good_markdown", "good")
        put(f"good_{i}.pdf", _pdf([GOOD_TEXT[i], GOOD_TEXT[(i + 1) % 5]]), "good_pdf", "good")
        put(f"good_{i}.png", _png(colour=(40 * i, 100, 200)), "good_png", "good")
    for i in range(3):
        put(f"good_{i}.docx", _docx(GOOD_TEXT[i]), "good_docx", "good")
        put(
            f"good_{i}.html",
            f"<html><body><h1>Note</h1><p>{GOOD_TEXT[i]}</p></body></html>".encode(),
            "good_html",
            "good",
        )
    for i in range(2):
        put(f"good_{i}.wav", _wav(1.5, 300 + 200 * i), "good_wav", "good")

    # --- PDFs -------------------------------------------------------------------------------------------------
    base_pdf = _pdf([f"{GOOD_TEXT[i % 5]} Page {i}." for i in range(6)])
    for i in range(20):
        cut = rng.randint(16, len(base_pdf) - 16)
        put(f"pdf_truncated_{i:02d}.pdf", base_pdf[:cut], "pdf_truncated", "tolerated")
    for i in range(30):
        put(f"pdf_garbage_{i:02d}.pdf", b"%PDF-1.7\n" + rng.randbytes(rng.randint(0, 4000)), "pdf_garbage", "bad")
    for i in range(10):
        data = bytearray(base_pdf)
        for _ in range(200):
            data[rng.randrange(9, len(data))] = rng.randrange(256)
        put(f"pdf_flipped_{i:02d}.pdf", bytes(data), "pdf_bitflips", "tolerated")
    for i in range(5):
        put(f"pdf_encrypted_{i}.pdf", _encrypted_pdf(GOOD_TEXT[i], f"secret{i}"), "pdf_encrypted", "bad")
    put("pdf_header_only.pdf", b"%PDF-1.4\n%%EOF\n", "pdf_garbage", "bad")

    # --- empty files with every kind of extension -------------------------------------------------------------
    for ext in [".txt", ".md", ".pdf", ".png", ".jpg", ".mp4", ".wav", ".ogg", ".docx", ".pptx", ".xlsx", ".html"]:
        put(f"zero{ext}", b"", "zero_byte", "bad")
    for ext in [".csv", ".mkv", ".flac", ".gif", ".rtf", ".eml", ".odt", ".webm"]:
        put(f"zero_b{ext}", b"", "zero_byte", "bad")

    # --- wrong extensions --------------------------------------------------------------------------------------
    wrong: list[tuple[str, bytes]] = [
        ("png_named.txt", _png()),
        ("pdf_named.png", base_pdf),
        ("text_named.mp4", b"just some words that are not a video\n" * 10),
        ("text_named.wav", b"RIFF? no, plain text pretending to be audio\n" * 5),
        ("zip_named.pdf", _docx("hello")),
        ("pdf_named.docx", base_pdf),
        ("png_named.docx", _png()),
        ("wav_named.png", _wav(0.2)),
        ("html_named.ogg", b"<html><body>not audio</body></html>"),
        ("playlist_named.mp4", b"#EXTM3U\n#EXTINF:-1,x\nfile:///etc/passwd\n"),
        ("concat_named.mkv", b"ffconcat version 1.0\nfile '/etc/hostname'\n"),
        ("elf_named.txt", b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 64),
        ("binary_named.md", b"\x00\x01\x02\x03" * 100),
        ("gzip_named.csv", b"\x1f\x8b\x08\x00" + rng.randbytes(200)),
        ("jpeg_named.html", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(100)),
        ("text_named.xlsx", b"a,b,c\n1,2,3\n"),
        ("text_named.pptx", b"slide one\nslide two\n"),
        ("text_named.rtf", b"plain text, no rtf header"),
        ("png_named.pdf", _png()),
        ("text_named.flac", b"words words words\n" * 20),
    ]
    for name, data in wrong:
        put(name, data, "wrong_extension", "bad")

    # --- corrupt audio and video -------------------------------------------------------------------------------
    wav = _wav(1.0)
    for i in range(10):
        put(f"wav_truncated_header_{i}.wav", wav[: rng.randint(12, 40)], "corrupt_wav", "bad")
        put(f"ogg_garbage_{i}.ogg", b"OggS\x00\x02" + rng.randbytes(rng.randint(20, 3000)), "corrupt_ogg", "bad")
        ftyp = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
        put(f"mp4_no_moov_{i}.mp4", ftyp + rng.randbytes(rng.randint(20, 5000)), "corrupt_mp4", "bad")
    for i in range(5):
        # Valid RIFF/WAVE header whose fmt chunk declares nonsense (0 channels, 0 Hz).
        fmt = struct.pack("<HHIIHH", 1, 0, 0, 0, 0, 16)
        data = b"RIFF" + struct.pack("<I", 36 + 100) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
        put(f"wav_bad_fmt_{i}.wav", data + b"data" + struct.pack("<I", 100) + rng.randbytes(100), "corrupt_wav", "bad")

    # --- images -------------------------------------------------------------------------------------------------
    good_png = _png((300, 200))
    for i in range(10):
        put(f"png_truncated_{i}.png", good_png[: rng.randint(20, len(good_png) - 30)], "png_truncated", "bad")
    for i in range(20):
        put(f"jpg_garbage_{i:02d}.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(500), "jpg_garbage", "bad")
    for i, (w, h, bits) in enumerate([(40000, 40000, 1), (30000, 20000, 1), (100000, 5000, 1), (20000, 20000, 8)]):
        put(f"png_bomb_{i}.png", _png_bomb(w, h, bits), "png_decompression_bomb", "bad")

    # --- zip bombs and broken office files ----------------------------------------------------------------------
    for i, mb in enumerate([300, 40]):  # above the 256 MB cap; above the 100:1 ratio
        put(f"zip_bomb_{i}.docx", _zip_bomb_docx(mb), "zip_bomb_docx", "bad")
    for i in range(12):
        put(f"docx_garbage_{i}.docx", b"PK\x03\x04" + rng.randbytes(rng.randint(30, 2000)), "docx_corrupt", "bad")
    for i in range(4):
        put(f"xlsx_garbage_{i}.xlsx", b"PK\x03\x04" + rng.randbytes(500), "xlsx_corrupt", "bad")

    # --- deep nesting, huge page counts, invalid UTF-8 -----------------------------------------------------------
    for i, depth in enumerate([5_000, 20_000, 100_000]):
        html = "<html><body>" + "<div>" * depth + "deep harbour text" + "</div>" * depth + "</body></html>"
        put(f"nested_{i}.html", html.encode(), "deeply_nested_html", "tolerated")
    put("nested_unclosed.html", ("<div><span><b>" * 30_000).encode(), "deeply_nested_html", "tolerated")
    pages = "\f".join(f"Page {p}: harbour log entry number {p}." for p in range(10_000))
    put("ten_thousand_pages.txt", pages.encode(), "10000_page_text", "tolerated")
    for i in range(20):
        body = GOOD_TEXT[i % 5].encode() + bytes([0xC3, 0x28, 0xA0, 0xA1, 0xE2, 0x82, 0xF0, 0x90, 0x28, 0xBC, 0xFF])
        put(f"invalid_utf8_{i:02d}.txt", body * (1 + i), "invalid_utf8", "tolerated")

    # --- links, pipes, unsupported types -------------------------------------------------------------------------
    for i in range(8 if per_kind is None else max(1, per_kind // 2)):
        a, b = folder / f"loop_{i}_a.txt", folder / f"loop_{i}_b.txt"
        a.symlink_to(b.name)
        b.symlink_to(a.name)
        items[a.name] = Item(a.name, "symlink_loop", "bad")
        items[b.name] = Item(b.name, "symlink_loop", "bad")
    for i in range(4 if per_kind is None else 1):
        s = folder / f"self_loop_{i}.pdf"
        s.symlink_to(s.name)
        items[s.name] = Item(s.name, "symlink_loop", "bad")
        if not room("dangling_symlink"):
            continue
        d = folder / f"dangling_{i}.txt"
        d.symlink_to(f"missing_target_{i}.txt")
        items[d.name] = Item(d.name, "dangling_symlink", "bad")
    loop_dir = folder / "dir_loop"
    loop_dir.mkdir()
    (loop_dir / "back").symlink_to("..")  # a folder link back up: the walk must not follow it
    for i in range(2 if per_kind is None else 1):
        fifo = folder / f"pipe_{i}.txt"
        os.mkfifo(fifo)
        items[fifo.name] = Item(fifo.name, "named_pipe", "bad")
    for ext in [".exe", ".bin", ".dll", ".so", ".iso", ".dat", ".xyz", ".tar", ".7z", ".py"]:
        put(f"unsupported{ext}", rng.randbytes(64), "unsupported_type", "bad")
    put("typescript.ts", b"export const x: number = 1;\n", "unsupported_type", "bad")

    # --- files that vanish mid-ingest (the test deletes them just before they are read) -------------------------
    for i in range(10):
        put(f"vanish_{i:02d}.txt", GOOD_TEXT[i % 5].encode(), "vanishes_mid_ingest", "vanish")
    return items


def counts(items: dict[str, Item]) -> dict[str, int]:
    """How many files per expectation."""
    out: dict[str, int] = {}
    for it in items.values():
        out[it.expect] = out.get(it.expect, 0) + 1
    return out


if __name__ == "__main__":
    made = make_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus"))
    print(json.dumps({"files": len(made), **counts(made)}, indent=2))
