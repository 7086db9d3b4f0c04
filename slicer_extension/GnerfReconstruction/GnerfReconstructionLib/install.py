"""Where the module is installed and what it installs: the bundle it runs, the Python that runs it,
the packages "Install dependencies" asks pip for (and how), the sample data it registers.

Free of Slicer and Qt. The module runs either from a source checkout of monai-gnerf (the module
folder is ``<checkout>/slicer_extension/GnerfReconstruction``) or from an extension package, where
the build copied the bundle into the module's ``Resources``.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKOUT_DIR",
    "MODULE_DIR",
    "default_bundle_dir",
    "default_python",
    "dependency_requirements",
    "install_requirements",
    "installed_versions",
    "sample_data_files",
]

#: The distributions whose versions the panel shows after installing.
SHOWN_PACKAGES = ("monai-gnerf", "monai", "torch", "pytorch-ignite")

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
        return [f"monai-gnerf @ {CHECKOUT_DIR.as_uri()}"]  # a PEP 508 direct reference: pip and pip_ensure take it
    lines = (MODULE_DIR / "Resources" / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def install_requirements(slicer_module: Any, requirements: Sequence[str], requester: str = "MonaiGnerf") -> dict[str, str]:
    """Install what is missing of ``requirements`` into Slicer's Python; returns :func:`installed_versions`.

    Slicer 5.11 and newer have ``slicer.pydeps.pip_ensure`` (it checks first and installs only what
    is missing, naming the extension that asked); older ones have ``slicer.util.pip_install``.

    Args:
        slicer_module: the ``slicer`` package.
        requirements: PEP 508 requirement strings.
        requester: the name ``pip_ensure`` reports.
    """
    pydeps = getattr(slicer_module, "pydeps", None)
    if pydeps is not None and hasattr(pydeps, "pip_ensure"):
        from packaging.requirements import Requirement

        pydeps.pip_ensure([Requirement(r) for r in requirements], requester=requester)
    else:
        slicer_module.util.pip_install(list(requirements))
    return installed_versions()


def installed_versions(names: Sequence[str] = SHOWN_PACKAGES) -> dict[str, str]:
    """The installed version of each distribution, or ``"not installed"``."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sample_data_files() -> list[tuple[str, Path]]:
    """``(node name, file)`` of the sample data the module registers with Slicer's Sample Data module:
    the example chest CT, from the extension's ``Resources/SampleData`` or the source checkout."""
    name = "example_chest_ct.nii.gz"
    for folder in (MODULE_DIR / "Resources" / "SampleData", CHECKOUT_DIR / "monai_gnerf" / "data"):
        if (folder / name).is_file():
            return [("monai-gnerf example chest CT", folder / name)]
    return []
