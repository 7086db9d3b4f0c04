"""Where the module is installed and what it installs: the bundle it runs, the Python that runs it,
the packages "Install dependencies" asks pip for.

Free of Slicer and Qt. The module runs either from a source checkout of monai-gnerf (the module
folder is ``<checkout>/slicer_extension/GnerfReconstruction``) or from an extension package, where
the build copied the bundle into the module's ``Resources``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = [
    "CHECKOUT_DIR",
    "MODULE_DIR",
    "default_bundle_dir",
    "default_python",
    "dependency_requirements",
]

#: The module folder (``GnerfReconstruction``, holding ``Resources``).
MODULE_DIR = Path(__file__).resolve().parents[1]
#: The monai-gnerf source checkout when the module runs from one (two folders up).
CHECKOUT_DIR = MODULE_DIR.parents[1]


def default_bundle_dir() -> Path:
    """The MONAI bundle used when the panel names none.

    The bundle installed with the module (``Resources/bundle``, copied there by the extension's
    build) or, in a source checkout, the repository's ``bundle`` folder beside ``slicer_extension``.
    """
    candidates = [MODULE_DIR / "Resources" / "bundle", CHECKOUT_DIR / "bundle"]
    for candidate in candidates:
        if (candidate / "configs").is_dir():
            return candidate
    return candidates[-1]


def default_python() -> str:
    """The Python that runs the bundle: Slicer's ``PythonSlicer`` launcher when there is one, else this one."""
    name = "PythonSlicer.exe" if sys.platform.startswith("win") else "PythonSlicer"
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    return shutil.which("PythonSlicer") or sys.executable


def dependency_requirements() -> list[str]:
    """What "Install dependencies" passes to pip: this source checkout when the module runs from one,
    else the lines of ``Resources/requirements.txt``."""
    pyproject = CHECKOUT_DIR / "pyproject.toml"
    if pyproject.is_file() and 'name = "monai-gnerf"' in pyproject.read_text(encoding="utf-8"):
        return [str(CHECKOUT_DIR)]
    lines = (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
