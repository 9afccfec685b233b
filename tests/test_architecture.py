"""The import contracts in ``.importlinter`` hold: layers point down, no cycles, ops stays pure (CI runs this)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    pytest.importorskip("importlinter", reason="import-linter is in the dev extra: pip install -e '.[dev]'")
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.is_file() else (shutil.which("lint-imports") or "lint-imports")


def test_import_contracts_hold() -> None:
    proc = subprocess.run([_lint_imports(), "--no-cache", "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"lint-imports found broken contracts:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert "0 broken" in proc.stdout and "Contracts: 5 kept" in proc.stdout, proc.stdout[-3000:]


def test_contracts_catch_an_upward_import(tmp_path: Path) -> None:
    """The checker is live: the same contracts over a copy of the package with one upward import fail."""
    _lint_imports()
    pkg = tmp_path / "bglab"
    shutil.copytree(ROOT / "bglab", pkg, ignore=shutil.ignore_patterns("__pycache__", "models", "sample_data", "web"))
    with open(pkg / "ops" / "color.py", "a", encoding="utf-8") as fh:
        fh.write("\nfrom bglab.cli import _common  # noqa: E402,F401\n")
    proc = subprocess.run([_lint_imports(), "--no-cache", "--config", str(ROOT / ".importlinter")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(tmp_path),
                                                                             "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "bglab.ops.color" in proc.stdout and "BROKEN" in proc.stdout


def test_every_library_module_is_under_the_front_end_contract() -> None:
    """Contract 1 lists the library's top-level modules by name: a new module must be added there (or be a
    front end), else nothing would stop it from importing the CLI."""
    import configparser

    ini = configparser.ConfigParser()
    ini.read(ROOT / ".importlinter")
    listed = set(ini["importlinter:contract:front-ends-on-top"]["source_modules"].split())
    front = set(ini["importlinter:contract:front-ends-on-top"]["forbidden_modules"].split())
    pkg = ROOT / "bglab"
    tops = {f"bglab.{p.stem}" for p in pkg.glob("*.py") if p.stem != "__init__" and not p.stem.startswith("_")}
    tops |= {f"bglab.{p.name}" for p in pkg.iterdir() if (p / "__init__.py").is_file()}
    assert tops - listed - front == set(), "add these to source_modules in .importlinter"
