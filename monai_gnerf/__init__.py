"""monai-gnerf: generative and neural radiance fields for X-ray and CT, built on MONAI.

The package is layered (``ARCHITECTURE.md``); every public name of its subpackages is also
available here, imported on first use so that ``import monai_gnerf`` stays cheap::

    from monai_gnerf import load_geometry, render_drr, reconstruct, GenerateDRRd
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__version__ = "0.1.0"

# OpenMP worker threads that wait by spinning take the CPU from the main thread and from other
# processes: on 2 cores, a DRR run took 12 s alone and 15-16 s beside one busy process with the
# default policy, 10 s and 11-12 s with passive waiting. It only takes effect when monai_gnerf is
# imported before torch (as by the CLI); an explicit OMP_WAIT_POLICY is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SUBPACKAGES = (
    "errors",
    "config",
    "physics",
    "geometry",
    "io",
    "render",
    "transforms",
    "data",
    "metrics",
    "networks",
    "losses",
    "engines",
    "apps",
)
"""The layers, bottom first; public names are looked up in this order."""


def main() -> None:
    """The ``monai-gnerf`` command (:func:`monai_gnerf.apps.cli.main`); a Ctrl-C while it loads its
    libraries (torch, MONAI: seconds) also ends in one line and status 130."""
    try:
        cli = importlib.import_module(f"{__name__}.apps.cli")
    except KeyboardInterrupt:
        from monai_gnerf.errors import report_interrupted  # light: logging, re, sys

        report_interrupted()
        sys.exit(130)
    cli.main()


def __getattr__(name: str) -> Any:
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{sub}")
        if name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
