"""The wheel holds only ``eventpipe/``; every package folder is mapped."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FEATURE_FOLDERS = ["connectors", "transforms", "pipelines", "schema_registry", "dlq", "backfill"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_folders() -> dict[str, Path]:
    """import name -> folder, for every folder holding an __init__.py."""
    out: dict[str, Path] = {}
    for top, name in [("eventpipe", "eventpipe")] + [
        (f, f"eventpipe.{f}") for f in FEATURE_FOLDERS
    ]:
        base = ROOT / top
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            out[".".join([name, *rel.parts]) if rel.parts else name] = init.parent
    return out


def test_feature_folders_are_mapped_under_eventpipe() -> None:
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    for folder in FEATURE_FOLDERS:
        assert mapping.get(f"eventpipe.{folder}") == folder


def test_every_package_folder_is_listed() -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    missing = sorted(set(_package_folders()) - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = sorted(listed - set(_package_folders()))
    assert not stale, f"listed but no folder with __init__.py: {stale}"


@pytest.mark.slow
def test_wheel_holds_only_eventpipe_and_imports(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    wheel = next(tmp_path.glob("eventpipe-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"eventpipe"}
    assert any(n.startswith("eventpipe/db/migrations/0001_") for n in names)
    # Install into a scratch target and import every subpackage from there.
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    packages = sorted(_package_folders())
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        f"for name in {packages!r}:\n"
        "    m = importlib.import_module(name)\n"
        f"    assert m.__file__.startswith({str(target)!r}), (name, m.__file__)\n"
        "print('ok')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
