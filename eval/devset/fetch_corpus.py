#!/usr/bin/env python3
"""Re-create ``eval/devset/corpus/`` from the Debian packages its files come from.

The dev set (``queries.jsonl`` next to this file) is labelled against real documentation that ships in Debian 12
(bookworm) packages. The corpus itself need not be committed: this script downloads the pinned ``.deb`` files with
``apt-get download``, unpacks only the members it needs (``dpkg-deb --fsys-tarfile``), copies them under short,
stable names (gunzipping the two ``*.gz`` text files) and checks every result against the sha256 in ``MANIFEST``.

    python eval/devset/fetch_corpus.py                # download into a temp dir, write eval/devset/corpus/
    python eval/devset/fetch_corpus.py --debs /tmp/d  # keep / reuse the .deb files in /tmp/d
    python eval/devset/fetch_corpus.py --check        # only verify an existing corpus
    python eval/devset/fetch_corpus.py --sources      # print the SOURCES.md table

Needs ``apt-get`` and ``dpkg-deb`` (any Debian/Ubuntu host with bookworm sources; no root needed for download).
If a pinned version has left the mirror, the current candidate is tried instead; the sha256 check then tells
whether the content is still the same. Old versions stay on https://snapshot.debian.org/ (pass them via --debs).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "corpus"

# Package -> version the manifest was built from (Debian 12 bookworm, main).
PACKAGES: dict[str, str] = {
    "texlive-latex-base-doc": "2022.20230122-3",
    "octave-doc": "7.3.0-2",
    "developers-reference": "12.18",
    "desktop-base": "12.0.6+nmu1~deb12u1",
    "sqlite3-doc": "3.40.1-2+deb12u2",
    "harden-doc": "3.19+nmu1",
    "maxima-doc": "5.46.0-11",
}

TL = "usr/share/doc/texlive-doc/latex"
LPPL = "LPPL-1.3c (texlive-latex-base-doc copyright, Licenses.gz)"


@dataclass(frozen=True)
class Item:
    """One corpus file: where it goes, where it comes from, and what it must hash to."""

    dest: str  # relative to the corpus folder
    package: str
    member: str  # path inside the package, without the leading "./"
    sha256: str
    size: int  # bytes after copy / gunzip
    licence: str
    pages: int | None = None  # PDFs only
    gunzip: bool = False


# fmt: off
MANIFEST: tuple[Item, ...] = (
    # --- PDFs (text->pdf_page targets) ---
    Item("pdf/latex-usrguide.pdf", "texlive-latex-base-doc", f"{TL}/base/usrguide.pdf",
         "f4dceb77c9c9257e1dc7d4d6af541c5a13b49bff94d95b9d85f46be252c41591", 473980, LPPL, 21),
    Item("pdf/latex-clsguide.pdf", "texlive-latex-base-doc", f"{TL}/base/clsguide.pdf",
         "7f4ff05faf7307e9a3228fa4ab0e295921e3a155422e10521cd885862e8c99d7", 414419, LPPL, 33),
    Item("pdf/latex-fntguide.pdf", "texlive-latex-base-doc", f"{TL}/base/fntguide.pdf",
         "fb1b5ecbdf1a1b39698896ac567c0525f65de2202107b504f5c0dc76e5e69be4", 517838, LPPL, 39),
    Item("pdf/latex-grfguide.pdf", "texlive-latex-base-doc", f"{TL}/graphics/grfguide.pdf",
         "61b4d5bcad567811f2c6e076b656b190f97aea4fd528dd906396de06e93ec50a", 330978, LPPL, 16),
    Item("pdf/lppl-1.3c.pdf", "texlive-latex-base-doc", f"{TL}/base/lppl.pdf",
         "5836a11253ba59b79c0b52cf010c0d280eaa6bda709f8d6824f2a3924207fef6", 132382,
         "verbatim copies allowed (licence text itself); LPPL-1.3c package", 8),
    Item("pdf/ltnews35.pdf", "texlive-latex-base-doc", f"{TL}/base/ltnews35.pdf",
         "6a55393a07561aa90c547e782eedb65b215bc49f3725baca8cc1e1e746cfe6d1", 563089, LPPL, 8),
    Item("pdf/natbib.pdf", "texlive-latex-base-doc", f"{TL}/natbib/natbib.pdf",
         "fb7c6708e6167dc9a875943f0638b341dd6b9b677aed5f6d56fdf3bbcc68e511", 292843,
         "LPPL (natbib: lppl, texlive-latex-base-doc Licenses.gz)", 26),
    Item("pdf/octave-refcard-a4.pdf", "octave-doc", "usr/share/doc/octave/refcard-a4.pdf",
         "7de62b24c8aa8b82d37e91948cd411c0dae8678233603419de976f0bf9538706", 129539, "GPL-3+", 3),
    Item("pdf/debian-developers-reference.pdf", "developers-reference",
         "usr/share/developers-reference/developers-reference.pdf",
         "88e5ac4d15444fd3adb821dc863bd91b820e99a27e65728e74975ab1752652f5", 573430, "GPL-2", 114),
    # --- plain text / markdown / HTML (text->text targets) ---
    Item("text/latex-bug-reports.txt", "texlive-latex-base-doc", f"{TL}/base/bugs.txt",
         "b8b91028f696952550b76f9ed1e9f6db3605ba948beb0a48ccaba8541e9d1de2", 3282, LPPL),
    Item("text/geometry-readme.md", "texlive-latex-base-doc", f"{TL}/geometry/README.md",
         "dfa79cda1eaa8baa30e295e9bbbb0973d328bc32d3281ef5ace5817059d4ed48", 2481, LPPL),
    Item("text/fancyhdr-readme.txt", "texlive-latex-base-doc", f"{TL}/fancyhdr/README",
         "75a1bb7f75aea6c536e3e0da9a7f250f36d558bad35a78082cb16ae420a4e384", 2031,
         "LPPL-1.3 (fancyhdr: lppl1.3, Licenses.gz)"),
    Item("text/desktop-base-readme-debian.txt", "desktop-base", "usr/share/doc/desktop-base/README.Debian.gz",
         "1de3c6c864da8d3404c624782bb2a4c9a0a5689976c71c366e611582cf54baab", 15462, "GPL-2+", gunzip=True),
    Item("text/octave-news-debian.txt", "octave-doc", "usr/share/doc/octave-doc/NEWS.Debian.gz",
         "257b97b1e17ef5431f230b2f77ef0373744fee5d90feae8c4e3460c58beb5f6b", 1913, "GPL-3+", gunzip=True),
    Item("text/sqlite-quirks.html", "sqlite3-doc", "usr/share/doc/sqlite3/quirks.html",
         "e8a8a6e4045a812b96ecfe45f41d42d412e9e1bfd667fb3ab11d589d02ee136f", 24103, "public-domain"),
    Item("text/sqlite-when-to-use.html", "sqlite3-doc", "usr/share/doc/sqlite3/whentouse.html",
         "4f780133368c5fed82ec3340854f5e1c74e11d4d7388780842f057a6712e69e4", 20533, "public-domain"),
    Item("text/sqlite-vacuum.html", "sqlite3-doc", "usr/share/doc/sqlite3/lang_vacuum.html",
         "a3538f97def4dcb979752ceaf60e3fc3fc7f2fd425ec02987fa76e9c5eba3e31", 14134, "public-domain"),
    Item("text/sqlite-floating-point.html", "sqlite3-doc", "usr/share/doc/sqlite3/floatingpoint.html",
         "0418b7d361be81b600f5c070e1bc19feeb6158600a31ca86481c6be3e6eb7487", 18810, "public-domain"),
    Item("text/harden-after-compromise.html", "harden-doc",
         "usr/share/doc/harden-doc/html/en-US/after-compromise.html",
         "ac63fcf2c44298acaf2337f3429dfd084af39afd6a7cdee706eb11a3204709c5", 7305, "GPL-2.0"),
    Item("text/harden-tcpwrappers.html", "harden-doc", "usr/share/doc/harden-doc/html/en-US/tcpwrappers.html",
         "934ec1bb80e5e4d272ac2eccb15f2b8557ca7069915f25648500258a9ec8390f", 6720, "GPL-2.0"),
    Item("text/harden-restrict-reboots.html", "harden-doc",
         "usr/share/doc/harden-doc/html/en-US/restrict-reboots.html",
         "9e79f04322697a4c281311fa3501cae50a5ef9de3578c727f016921567b93d9a", 5416, "GPL-2.0"),
    # --- raster images (text->image targets) ---
    Item("images/maxima-worldmap_make_poly_continent.png", "maxima-doc",
         "usr/share/doc/maxima-doc/html/figures/worldmap_make_poly_continent.png",
         "30bb5449e741821fe5a32e2b9d9d3bfb6b0df38ff46fedc5140a0ac9a98b13e2", 63264, "GPL-2"),
    Item("images/maxima-draw_bars.png", "maxima-doc", "usr/share/doc/maxima-doc/html/figures/draw_bars.png",
         "92c2478204d3436bb0f72f185a34f7f809ea35aa41dba4a722c6ffb932418943", 9918, "GPL-2"),
    Item("images/maxima-plotdf2.png", "maxima-doc", "usr/share/doc/maxima-doc/html/figures/plotdf2.png",
         "b4bcd32bafd6667455215024f25990f1a9c69e687e0f5e32197b8ebc977b4876", 14651, "GPL-2"),
    Item("images/maxima-draw_tube.png", "maxima-doc", "usr/share/doc/maxima-doc/html/figures/draw_tube.png",
         "f3348e69c4f3c8320438adf8487ce6803ecac91b298b9813a1584b5d8bcef0d0", 68229, "GPL-2"),
    Item("images/maxima-plotting22.png", "maxima-doc", "usr/share/doc/maxima-doc/html/figures/plotting22.png",
         "44870838e042786cac3cb2eceece71494083b6a5a779e1d834c6e2c7fe93f8c1", 90088, "GPL-2"),
    Item("images/octave-errorbar.png", "octave-doc", "usr/share/doc/octave/octave.html/errorbar.png",
         "42e1e6338e82c1801d9b2914c8748585ff7feae2325d568ac466c4cb01d18096", 37154, "GPL-3+"),
    Item("images/octave-polar.png", "octave-doc", "usr/share/doc/octave/octave.html/polar.png",
         "79f822912b43597974b1d61f2d74b47ccf0edb20e8075775d6b18b41fa9c94c5", 67772, "GPL-3+"),
    Item("images/octave-spmatrix.png", "octave-doc", "usr/share/doc/octave/octave.html/spmatrix.png",
         "633738b182df49298c469263fceb3d8002f865bc21d21882cf0e7f43293b4b1e", 80662, "GPL-3+"),
    Item("images/octave-voronoi.png", "octave-doc", "usr/share/doc/octave/octave.html/voronoi.png",
         "6c8ced27f944269e417188da09134c3b5d04b36ba70ef1b5986f5e89fd2b118e", 55764, "GPL-3+"),
    Item("images/octave-griddata.png", "octave-doc", "usr/share/doc/octave/octave.html/griddata.png",
         "5aa0af22a8bbf5994c3d9f3078abcb936144924783a57c49a4f61a550467615d", 128204, "GPL-3+"),
    Item("images/desktop-base-spacefun-grub.png", "desktop-base",
         "usr/share/desktop-base/spacefun-theme/grub/grub-16x9.png",
         "a8bccd3f1bbb67842e6716aaf81ddc22ff4807e98dd17f20a65abb89ac9a8df9", 81578,
         "GPL-2 (spacefun-theme/*, Valessio Brito)"),
    Item("images/desktop-base-softwaves-grub.png", "desktop-base",
         "usr/share/desktop-base/softwaves-theme/grub/grub-16x9.png",
         "112c5b7481bca5848bb614104ff9c3a68bb5b3550e9f91340a69dbb028779fb2", 631946,
         "GPL-2+ (softwaves-theme/*, Juliette Taka Belin)"),
    Item("images/desktop-base-spacefun-earth.png", "desktop-base", "usr/share/plymouth/themes/spacefun/earth2.png",
         "2f2ba8d44aab56037f7a797ce43c1d774752172a5cd4dde1cb7c1805c6b02f5b", 38610,
         "GPL-2 (spacefun-theme/*, Valessio Brito)"),
)
# fmt: on


class FetchError(RuntimeError):
    """Something the user has to fix (missing tool, package not downloadable, hash mismatch)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _deb_version(deb: Path) -> str:
    out = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _find_deb(folder: Path, package: str, version: str | None) -> Path | None:
    for deb in sorted(folder.glob(f"{package}_*.deb")):
        if version is None or _deb_version(deb) == version:
            return deb
    return None


def obtain_debs(folder: Path, packages: dict[str, str]) -> dict[str, Path]:
    """Reuse ``<pkg>_<ver>_*.deb`` files in ``folder`` or download them there with ``apt-get download``."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError("apt-get and dpkg-deb are needed (run this on a Debian/Ubuntu host)")
    found: dict[str, Path] = {}
    for package, version in packages.items():
        deb = _find_deb(folder, package, version)
        if deb is None:
            print(f"downloading {package}={version}", file=sys.stderr)
            done = subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=folder, capture_output=True)
            if done.returncode != 0:
                print(f"  {package}={version} not downloadable; trying the current candidate", file=sys.stderr)
                subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True)
            deb = _find_deb(folder, package, version) or _find_deb(folder, package, None)
        if deb is None:
            raise FetchError(
                f"could not get {package} (wanted {version}); fetch it from https://snapshot.debian.org/ "
                f"and pass its folder with --debs"
            )
        found[package] = deb
    return found


def extract_members(deb: Path, members: Sequence[str], into: Path) -> None:
    """Write the named members of ``deb``'s data archive under ``into`` (same relative paths)."""
    wanted = {m.removeprefix("./") for m in members}
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                name = info.name.removeprefix("./")
                if name not in wanted:
                    continue
                if not info.isfile():
                    raise FetchError(f"{deb.name}: {name} is not a regular file in the package")
                src = tar.extractfile(info)
                assert src is not None
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("wb") as out:
                    shutil.copyfileobj(src, out)
                wanted.discard(name)
    finally:
        proc.stdout.close()
        proc.wait()
    if wanted:
        raise FetchError(f"{deb.name}: members not found: {', '.join(sorted(wanted))}")


def build(out: Path, debs_dir: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="loupe-devset-") as tmp:
        work = Path(tmp)
        folder = debs_dir or work / "debs"
        folder.mkdir(parents=True, exist_ok=True)
        debs = obtain_debs(folder, {p: v for p, v in PACKAGES.items() if any(i.package == p for i in MANIFEST)})
        unpacked = work / "root"
        for package, deb in debs.items():
            members = [i.member for i in MANIFEST if i.package == package]
            extract_members(deb, members, unpacked / package)
        for item in MANIFEST:
            src = unpacked / item.package / item.member
            dest = out / item.dest
            dest.parent.mkdir(parents=True, exist_ok=True)
            if item.gunzip:
                with gzip.open(src, "rb") as fin, dest.open("wb") as fout:
                    shutil.copyfileobj(fin, fout)
            else:
                shutil.copyfile(src, dest)


def check(out: Path) -> list[str]:
    """Problems with the corpus under ``out`` (missing files, wrong hashes, stray files); empty when it is exact."""
    problems = []
    for item in MANIFEST:
        path = out / item.dest
        if not path.is_file():
            problems.append(f"missing: {item.dest}")
        elif (digest := sha256_of(path)) != item.sha256:
            problems.append(f"sha256 mismatch: {item.dest} is {digest}, manifest says {item.sha256}")
    known = {item.dest for item in MANIFEST}
    if out.is_dir():
        problems += [
            f"not in manifest: {p.relative_to(out).as_posix()}"
            for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).as_posix() not in known
        ]
    return problems


def sources_markdown() -> str:
    """The per-file table for SOURCES.md."""
    lines = [
        "| corpus file | package (version) | original path | licence | sha256 | pages / bytes |",
        "|---|---|---|---|---|---|",
    ]
    for i in MANIFEST:
        origin = f"/{i.member}" + (" (gunzipped)" if i.gunzip else "")
        extent = f"{i.pages} pages" if i.pages is not None else f"{i.size} B"
        lines.append(
            f"| `{i.dest}` | {i.package} ({PACKAGES[i.package]}) | `{origin}` | {i.licence} | `{i.sha256}` | {extent} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus folder (default: %(default)s)")
    parser.add_argument("--debs", type=Path, help="folder to reuse/keep the downloaded .deb files in")
    parser.add_argument("--check", action="store_true", help="only verify an existing corpus against the manifest")
    parser.add_argument("--sources", action="store_true", help="print the SOURCES.md file table and exit")
    args = parser.parse_args(argv)
    if args.sources:
        sys.stdout.write(sources_markdown())
        return 0
    out: Path = args.out.resolve()
    try:
        if not args.check:
            build(out, args.debs.resolve() if args.debs else None)
    except (FetchError, OSError, subprocess.CalledProcessError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    problems = check(out)
    for p in problems:
        print(p, file=sys.stderr)
    n_pages = sum(i.pages or 0 for i in MANIFEST)
    total = sum(i.size for i in MANIFEST)
    status = "FAILED" if problems else "ok"
    print(f"{status}: {len(MANIFEST)} files ({n_pages} PDF pages, {total / 1e6:.1f} MB) in {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
