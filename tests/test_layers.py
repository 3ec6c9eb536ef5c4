"""The house rules, read from the source: no room imports a room above it (loupe/layers.py), the product never
imports the lab, and the installed distribution holds one top-level package, ``loupe``."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loupe.layers import LAYERS, may_import, room_of

ROOT = Path(__file__).resolve().parent.parent
# Each room's real folder (loupe/ links to them); the namespace root's own modules are loupe/*.py.
ROOM_FOLDERS = {"app": "app", "ingest": "ingest", "embedder": "embedder", "index": "index", "ui": "ui", "lab": "lab"}
# Names that must only ever be reached through the namespace (a bare `import app` works in a checkout only).
BARE_ROOTS = set(ROOM_FOLDERS)
PRODUCT_ROOMS = ("loupe.ingest", "loupe.embedder", "loupe.index", "loupe.app", "loupe.ui")


def module_name(path: Path) -> str:
    """The dotted name a source file has inside the ``loupe`` namespace."""
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[0] != "loupe":
        parts.insert(0, "loupe")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> Iterator[Path]:
    """Every module of the namespace: loupe/*.py and each room's folder."""
    yield from sorted((ROOT / "loupe").glob("*.py"))
    for folder in ROOM_FOLDERS.values():
        yield from sorted((ROOT / folder).rglob("*.py"))


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement, top level or inside functions, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from loupe import ingest` imports the room loupe.ingest, not only the namespace root.
            if target == "loupe":
                found += [(node.lineno, f"loupe.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """What in ``source`` (the text of ``module``) breaks the layer rule."""
    bad: list[str] = []
    for line, target in imports_of(source, module, is_package):
        top = target.split(".")[0]
        if top in BARE_ROOTS:
            bad.append(f"{module}:{line} imports {target!r} outside the namespace (write loupe.{target})")
        elif top == "loupe" and target != "loupe":
            try:
                allowed = may_import(module, target)
            except ValueError as e:
                bad.append(f"{module}:{line} imports {target!r}: {e}")
                continue
            if not allowed:
                bad.append(f"{module}:{line} ({room_of(module)}) imports {target} ({room_of(target)}), a higher layer")
    return bad


def test_every_room_is_in_the_layer_order() -> None:
    rooms = {r for layer in LAYERS for r in layer}
    assert {f"loupe.{r}" for r in ROOM_FOLDERS} <= rooms
    for folder in ROOM_FOLDERS.values():
        assert (ROOT / "loupe" / folder).resolve() == (ROOT / folder).resolve(), (
            f"loupe/{folder} must link to {folder}/"
        )


def test_no_module_imports_a_higher_layer() -> None:
    bad: list[str] = []
    for path in source_files():
        bad += violations(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert not bad, "layer rule broken (loupe/layers.py):\n" + "\n".join(bad)


def test_no_product_module_imports_the_lab() -> None:
    """The lab (evaluation, benchmarks, training) imports the product; the product never imports the lab."""
    bad = []
    for path in source_files():
        mod = module_name(path)
        if room_of(mod) not in PRODUCT_ROOMS:
            continue
        src = path.read_text(encoding="utf-8")
        bad += [
            f"{mod}:{n} {t}" for n, t in imports_of(src, mod, path.name == "__init__.py") if t.startswith("loupe.lab")
        ]
    assert not bad, bad


def test_the_checker_catches_climbs_and_bare_imports() -> None:
    """The rule itself can fail: each kind of breach in a made-up module is reported."""
    src = (
        "from loupe.types import Segment\n"  # fine: the bottom layer
        "from loupe.app.service import Loupe\n"  # ingest reaching up to app
        "import embedder.profiles\n"  # a room outside the namespace
        "def f():\n    from loupe.lab.bench import cli\n"  # a lazy climb counts too
        "from loupe import embedder\n"  # a peer room in the same layer
    )
    found = violations(src, "loupe.ingest.pdf")
    assert len(found) == 4, found
    assert any("loupe.app.service" in v for v in found)
    assert any("outside the namespace" in v for v in found)
    assert any("loupe.lab.bench" in v for v in found)
    assert any("loupe.embedder" in v and "higher layer" in v for v in found)
    assert violations("from .store import Index\n", "loupe.index.tenants") == []
    assert violations("from ..types import Segment\n", "loupe.index.store") == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Loupe built as a wheel, as `pip install .` builds it (no dependencies fetched).

    It is built from a copy of what the build reads (the links in loupe/ kept as links), because setuptools builds
    in the source tree and a stale build/ folder there would leak removed files into the wheel."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "loupe", src / "loupe", symlinks=True, ignore=ignore)
    for folder in ROOM_FOLDERS.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "PIP_NO_INPUT": "1"}, timeout=300)
    (found,) = out.glob("loupe-*.whl")
    return found


def test_the_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"loupe", next(t for t in tops if t.endswith(".dist-info"))}, tops
    # Every room and the shipped speech head travel inside the namespace.
    for f in ("loupe/app/cli.py", "loupe/index/store.py", "loupe/ui/streamlit_app.py", "loupe/lab/bench/cli.py"):
        assert f in names
    assert "loupe/embedder/data/speech_head.pt" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry).decode()
    assert "loupe = loupe.app.cli:main" in text and "loupe.commands" in text


def test_installed_loupe_runs_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """`pip install` of the wheel into a fresh venv: no top-level app/index/ui, and `loupe --help` lists every
    command, the lab's included. Dependencies come from this venv's site-packages (read through a .pth file, which
    does not process the editable install's own .pth, so the checkout stays off sys.path)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "loupe-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The venv's own python runs pip (found through the .pth), so the `loupe` script's shebang is the venv's.
    pip = [py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    for name in ("app", "index", "ui", "ingest", "embedder", "lab"):
        assert not (site / name).exists(), f"{name} installed at the top level of site-packages"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import importlib.util as u, loupe.app.cli as c; print(c.__file__); print(u.find_spec('app'))"
    out = subprocess.run([py, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    where, app_spec = out.stdout.split()
    assert where.startswith(str(site)) and app_spec == "None", out.stdout
    helped = subprocess.run(
        [venv / "bin" / "loupe", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert helped.returncode == 0, helped.stderr
    for command in ("ingest", "search", "ask", "serve", "ui", "eval", "bench", "train"):
        assert command in helped.stdout
    assert "unavailable" not in helped.stderr, helped.stderr


def test_the_cli_starts_without_the_generator_or_torch() -> None:
    """`loupe ingest` / `loupe search` pay for llama-index (~0.8 s) and torch (~1.5 s) only when a question or a
    torch model needs them: importing the CLI and the service loads neither."""
    code = (
        "import sys, loupe.app.cli, loupe.app.service, loupe.app.chat; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'llama_index', 'torch', 'transformers'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
