"""Datasets of X-ray views for training generative priors.

Every dataset yields dictionaries ``{"image": (H, W) line integrals, "angle_deg": (), "subject": (),
"index": ()}`` (float32 tensors; line integrals are dimensionless ``-ln(I/I0)``; ``subject`` names
the subject, ``index`` is its position ``0 .. num_subjects-1`` in the dataset), one item per
(subject, view):

* :class:`PhantomViewDataset`: the procedural population, exact closed-form projections.
* :class:`CTViewDataset`: a list or folder of CTs (HU), DRRs rendered on the fly with the Joseph
  projector (CTs are loaded once and kept as attenuation volumes).
* :class:`MedNeRFFolderDataset`: MedNeRF-format folders (one folder per subject, its PNG views
  sorted by name, evenly spaced over 360 degrees: 72 views at 5 degrees).

``angles_deg`` lists the view angles a dataset draws from, so a generator can sample poses from
the same distribution. Datasets that know their subjects' volumes (phantoms, CTs) also answer
``attenuation_at(index, points_mm)``: the attenuation (1/mm) at points given relative to the
isocenter, which a prior's optional 3D term compares with its own field. Datasets that make
their views (phantoms, CTs) answer ``prepare_subject(index)``, which makes them ahead of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from monai_gnerf.data.examples import resolve_ct_path
from monai_gnerf.data.phantoms import EllipsoidPhantom
from monai_gnerf.data.population import VALIDATION_START, CTPopulation, PhantomPopulation, VolumeSubject
from monai_gnerf.errors import GnerfInputError, input_errors_surface
from monai_gnerf.geometry import ProjectionGeometry, load_geometry
from monai_gnerf.io import check_png, read_png16
from monai_gnerf.render import sample_volume_at

__all__ = [
    "CT_SUFFIXES",
    "CTViewDataset",
    "MedNeRFFolderDataset",
    "PhantomViewDataset",
    "case_name",
    "ct_cases",
    "is_ct_collection",
]

CT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
"""File suffixes read as CT volumes (besides DICOM series folders)."""


def _item(image: torch.Tensor, angle_deg: float, subject: int, index: int) -> dict[str, Any]:
    return {
        "image": image.float(),
        "angle_deg": torch.tensor(angle_deg, dtype=torch.float32),
        "subject": torch.tensor(subject),
        "index": torch.tensor(index),
    }


class _ViewDataset(Dataset):
    """Items indexed as ``subject * num_views + view``."""

    angles_deg: tuple[float, ...]
    num_subjects: int

    def __len__(self) -> int:
        return self.num_subjects * len(self.angles_deg)

    def _split(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} views.")
        return divmod(index, len(self.angles_deg))


class PhantomViewDataset(_ViewDataset):
    """Projections of a population: exact for the procedural phantoms, Joseph DRRs for varied CTs.

    Args:
        population: a :class:`~monai_gnerf.data.population.PhantomPopulation` or
            :class:`~monai_gnerf.data.population.CTPopulation`.
        geometry: acquisition (preset name, file or object); the isocenter is the world origin.
        subjects: subject indices in this split.
    """

    def __init__(
        self,
        population: PhantomPopulation | CTPopulation,
        geometry: str | ProjectionGeometry,
        subjects: Sequence[int],
    ) -> None:
        self.population = population
        self.geometry = load_geometry(geometry).resolved((0.0, 0.0, 0.0))
        self.subjects = [int(s) for s in subjects]
        if not self.subjects:
            raise GnerfInputError("a phantom dataset needs at least one subject.")
        self.angles_deg = self.geometry.angles_deg
        self.num_subjects = len(self.subjects)
        self._views: dict[int, torch.Tensor] = {}
        self._subjects: dict[int, EllipsoidPhantom | VolumeSubject] = {}
        self._rays = self.geometry.rays(dtype=torch.float64)

    def subject(self, subject_index: int) -> EllipsoidPhantom | VolumeSubject:
        """The anatomy of one subject of the split (made once)."""
        if subject_index not in self._subjects:
            self._subjects[subject_index] = self.population.subject(self.subjects[subject_index])
        return self._subjects[subject_index]

    def views(self, subject_index: int) -> torch.Tensor:
        """All views ``(V, H, W)`` of one subject of the split (computed once, in one batch)."""
        if subject_index not in self._views:
            self._views[subject_index] = self.subject(subject_index).line_integrals(*self._rays).float()
        return self._views[subject_index]

    def prepare_subject(self, subject_index: int) -> None:
        """Make and keep one subject's views now, not when a batch first reaches them."""
        self.views(subject_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject, view = self._split(index)
        return _item(self.views(subject)[view], self.angles_deg[view], self.subjects[subject], subject)

    def attenuation_at(self, index: int, points_mm: torch.Tensor) -> torch.Tensor:
        """Attenuation (1/mm) of subject ``index`` of the split at points ``(..., 3)`` (isocenter frame)."""
        return self.subject(index).density(points_mm.double()).to(points_mm.dtype)

    def validation_views(self, count: int, view: int = 0) -> torch.Tensor:
        """View ``view`` ``(count, H, W)`` of the population's first ``count`` validation subjects
        (from :data:`~monai_gnerf.data.population.VALIDATION_START`, never in a training split)."""
        rays = self.geometry.subset([view]).rays(dtype=torch.float64)
        subjects = range(VALIDATION_START, VALIDATION_START + count)
        return torch.stack([self.population.subject(s).line_integrals(*rays).float()[0] for s in subjects])


def case_name(path: str | Path) -> str:
    """A case name: the file name without its CT suffix (``ct.nii.gz`` -> ``ct``), or a folder's name."""
    name = Path(path).name
    for suffix in CT_SUFFIXES + (".dcm",):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _is_ct_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(CT_SUFFIXES) and not path.name.startswith(".")


def is_ct_collection(dataset: str | Path) -> bool:
    """Whether ``dataset`` is a folder of CTs (CT files or series subfolders) rather than one CT."""
    path = resolve_ct_path(dataset)
    if not path.is_dir():
        return False
    return any(_is_ct_file(p) or (p.is_dir() and not p.name.startswith(".")) for p in path.iterdir())


def ct_cases(dataset: str | Path) -> list[tuple[str, Path]]:
    """The CTs of a dataset as ``(case name, path)`` pairs, sorted by name.

    Args:
        dataset: a CT file, a DICOM series folder, ``example``, or a folder of CTs.

    Raises:
        GnerfInputError: the path does not exist or is an empty folder, or two CTs of a folder share
            a case name.
    """
    path = resolve_ct_path(dataset)
    if not path.exists():
        raise GnerfInputError(f"dataset not found: {path}")
    if path.is_dir() and not any(path.iterdir()):
        raise GnerfInputError(f"dataset folder {path} is empty; it needs CT files, DICOM series folders or the files of one series.")
    if not is_ct_collection(path):
        return [(case_name(path), path)]
    cases: dict[str, Path] = {}
    for item in sorted(path.iterdir()):
        if not (_is_ct_file(item) or (item.is_dir() and not item.name.startswith("."))):
            continue
        name = case_name(item)
        if name in cases:
            raise GnerfInputError(f"{cases[name]} and {item} have the same case name {name!r}; rename one.")
        cases[name] = item
    return sorted(cases.items())


class CTViewDataset(_ViewDataset):
    """DRRs of CT volumes, made by a MONAI preprocessing once per CT and cached.

    Args:
        ct: a folder of CTs, one CT (file, DICOM folder or ``example``), or a list of paths (HU).
        geometry: acquisition (its angles are the dataset's).
        transform: ``{"image": CT path}`` -> ``{"image": attenuation (1/mm) MetaTensor with its
            affine, "views": (views, rows, cols) line integrals whose ``meta["geometry"]`` holds
            the resolved geometry}``; :func:`monai_gnerf.transforms.ct_view_preprocessing`
            (``LoadCTd -> HUToAttenuationd -> GenerateDRRd``) is the library's.
    """

    def __init__(
        self, ct: str | Path | Sequence[str | Path], geometry: str | ProjectionGeometry, transform: Callable[[dict], dict]
    ) -> None:  # fmt: skip
        self.paths = [Path(p) for p in ct] if isinstance(ct, (list, tuple)) else [p for _, p in ct_cases(ct)]
        self.geometry = load_geometry(geometry)
        self.transform = transform
        self.angles_deg = self.geometry.angles_deg
        self.num_subjects = len(self.paths)
        self._subjects: dict[int, dict[str, Any]] = {}

    def _subject(self, subject: int) -> dict[str, Any]:
        if subject not in self._subjects:
            with torch.no_grad(), input_errors_surface():  # Compose wraps an unreadable CT's error
                self._subjects[subject] = self.transform({"image": str(self.paths[subject])})
        return self._subjects[subject]

    def prepare_subject(self, subject_index: int) -> None:
        """Load one CT and make its DRRs now, not when a batch first reaches them."""
        self._subject(subject_index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject, view = self._split(index)
        image = self._subject(subject)["views"][view].as_subclass(torch.Tensor)
        return _item(image, self.angles_deg[view], subject, subject)

    def attenuation_at(self, index: int, points_mm: torch.Tensor) -> torch.Tensor:
        """Trilinear attenuation (1/mm) of CT ``index`` at points ``(..., 3)`` relative to its isocenter; 0 outside."""
        data = self._subject(index)
        centre = torch.tensor(data["views"].meta["geometry"]["isocenter_mm"], dtype=points_mm.dtype, device=points_mm.device)
        volume = data["image"]
        return sample_volume_at(volume.as_subclass(torch.Tensor), volume.affine, points_mm + centre)


class MedNeRFFolderDataset(_ViewDataset):
    """MedNeRF-format data: ``root/<subject>/*.png``, views sorted by name over 360 degrees.

    Args:
        root: folder of subject folders.
        full_scale: line integral represented by a white pixel (PNGs hold display values; the
            default matches :class:`~monai_gnerf.networks.generator.GeneratorConfig.value_scale`).
    """

    def __init__(self, root: str | Path, full_scale: float = 4.0) -> None:
        root = Path(root)
        if not root.is_dir():
            raise GnerfInputError(f"MedNeRF data folder not found: {root}")
        self.subject_files = [sorted(d.glob("*.png")) for d in sorted(root.iterdir()) if d.is_dir()]
        self.subject_files = [files for files in self.subject_files if files]
        if not self.subject_files:
            raise GnerfInputError(f"no subject folders with PNG views in {root}")
        counts = {len(files) for files in self.subject_files}
        if len(counts) != 1:
            raise GnerfInputError(f"subjects in {root} have different numbers of views: {sorted(counts)}")
        num_views = counts.pop()
        for files in self.subject_files:  # an unreadable view fails now, not in the middle of training
            for path in files:
                check_png(path)
        self.angles_deg = tuple(360.0 * v / num_views for v in range(num_views))
        self.num_subjects = len(self.subject_files)
        self.full_scale = full_scale

    def __getitem__(self, index: int) -> dict[str, Any]:
        subject, view = self._split(index)
        image = torch.from_numpy(read_png16(self.subject_files[subject][view], self.full_scale))
        return _item(image, self.angles_deg[view], subject, subject)
