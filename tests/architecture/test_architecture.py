"""The package's layers hold (import contracts), its code passes the linter, and its public names are
reachable from the top."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import monai_gnerf

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([str(lint), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    result = _lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def _ruff(*paths: Path) -> subprocess.CompletedProcess:
    ruff = Path(sys.executable).with_name("ruff")
    return subprocess.run([str(ruff), "check", "--no-cache", *map(str, paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_the_code_passes_the_linter():
    """``ruff check`` with the rules of pyproject.toml on the repository's Python files (what git ignores is skipped)."""
    result = _ruff(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]


def test_the_linter_finds_an_unused_import(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import os\n")
    result = _ruff(module)
    assert result.returncode == 1 and "F401" in result.stdout


def _lint_copy_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """``lint-imports`` on a copy of the package where ``module`` (a path below it) gains ``line``."""
    shutil.copytree(ROOT / "monai_gnerf", tmp_path / "monai_gnerf", ignore=shutil.ignore_patterns("*.nii.gz"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "monai_gnerf" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402,F401\n")
    return _lint_imports(tmp_path, tmp_path)


def test_an_upward_import_breaks_the_layers(tmp_path):
    result = _lint_copy_with(tmp_path, "geometry/grids.py", "from monai_gnerf.engines import reconstruct")
    assert result.returncode == 1
    assert "Contracts: 1 kept, 1 broken." in result.stdout
    assert "monai_gnerf.geometry.grids -> monai_gnerf.engines" in result.stdout


def test_the_library_may_not_import_the_bundle_code(tmp_path):
    result = _lint_copy_with(tmp_path, "apps/cli.py", "import scripts")
    assert result.returncode == 1 and "Contracts: 1 kept, 1 broken." in result.stdout


def test_every_public_name_is_exported_once_and_reachable_from_the_top():
    owners: dict[str, str] = {}
    for sub in monai_gnerf.SUBPACKAGES:
        module = importlib.import_module(f"monai_gnerf.{sub}")
        for name in module.__all__:
            assert name not in owners, f"{name} is exported by monai_gnerf.{owners[name]} and monai_gnerf.{sub}"
            owners[name] = sub
            assert getattr(monai_gnerf, name) is getattr(module, name)
    assert len(owners) > 120
    assert {"ProjectionGeometry", "render_drr", "reconstruct", "GenerateDRRd", "BodyMaskd", "psnr"} <= set(owners)
