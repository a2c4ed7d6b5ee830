"""The wheel holds only ``eventpipe/``, every package of it, and each imports from there."""

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
    """import name -> folder, for every folder under eventpipe/ holding an __init__.py."""
    out: dict[str, Path] = {}
    for init in (ROOT / "eventpipe").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if "__pycache__" not in rel.parts:
            out[".".join(rel.parts)] = init.parent
    return out


def test_features_live_under_eventpipe_so_imports_resolve_to_real_paths() -> None:
    # mypy, ruff and every other tool resolve eventpipe.<feature> by path: no
    # package-dir mapping may put a feature elsewhere.
    setuptools = _pyproject()["tool"]["setuptools"]
    assert "package-dir" not in setuptools
    assert setuptools["packages"]["find"]["include"] == ["eventpipe*"]
    for folder in FEATURE_FOLDERS:
        assert f"eventpipe.{folder}" in _package_folders()
        assert not (ROOT / folder).exists(), f"{folder}/ belongs under eventpipe/"


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
    # the console's templates and static files ship in the package (no build step)
    for shipped in ("templates/base.html", "templates/dlq_record.html", "static/console.js"):
        assert f"eventpipe/console/{shipped}" in names, shipped
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
