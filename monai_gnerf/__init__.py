"""monai-gnerf: generative and neural radiance fields for X-ray and CT, built on MONAI.

The package is layered (``ARCHITECTURE.md``); every public name of its subpackages is also
available here, imported on first use so that ``import monai_gnerf`` stays cheap::

    from monai_gnerf import load_geometry, render_drr, reconstruct, GenerateDRRd
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

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


def __getattr__(name: str) -> Any:
    for sub in SUBPACKAGES:
        module = importlib.import_module(f"{__name__}.{sub}")
        if name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
