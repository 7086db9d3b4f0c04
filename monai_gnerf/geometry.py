"""X-ray projection geometry as serializable data.

One :class:`ProjectionGeometry` describes a whole acquisition: the beam type (cone or parallel),
the circular orbit (source-to-isocenter and source-to-detector distances in mm, list of angles,
optional per-view tilt), and the flat-panel detector (pixel count, pixel spacing in mm, offsets
in mm). It is the single source of truth shared by DRR generation, reconstruction, the MONAI
bundle and the Slicer module, and round-trips through JSON.

Frames and conventions (all positions and directions in the patient/world frame of the volume's
affine, i.e. MONAI/NIfTI RAS millimetres):

* The orbit rotates about ``rotation_axis`` (default ``(0, 0, 1)``, superior) through
  ``isocenter_mm`` (``None`` means "the centre of the volume", resolved by :meth:`resolved`).
* At angle 0 the source sits at ``isocenter + SAD * source_direction``; the default
  ``source_direction = (0, -1, 0)`` (posterior) gives a posterior-anterior (PA) radiograph.
  Positive angles rotate source and detector counter-clockwise about the axis (right-hand rule).
* ``tilt_deg`` (optional, one per view) first rotates the angle-0 frame about the detector's
  column direction ``u``: a cranio-caudal tilt, like a C-arm's secondary angle.
* Detector image axes: rows run along ``v = -rotation_axis`` (row 0 is the superior edge), columns
  along ``u = n x v`` with ``n`` the central beam direction (source towards detector). For the
  default PA view this puts the patient's right on the image's left, as radiographs are read.
* ``detector_offset_mm = (row, col)`` shifts the detector centre along ``v`` and ``u``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from monai_gnerf.errors import GeometryError

__all__ = ["ProjectionGeometry", "ViewFrame", "list_presets", "load_geometry"]

BeamType = Literal["cone", "parallel"]
_MAX_DISTANCE_MM = 1.0e5  # 100 m: anything larger is a unit mistake, not a scanner
_PRESET_PACKAGE = "monai_gnerf.presets"


@dataclass(frozen=True)
class ViewFrame:
    """World-frame (mm) positions and unit vectors of one view.

    Attributes:
        source_mm: X-ray focal spot (cone beam) or, for parallel beam, the isocenter.
        detector_center_mm: centre of the detector panel, offsets included.
        u: unit vector along detector columns (increasing column index).
        v: unit vector along detector rows (increasing row index).
        n: unit central-beam direction, from source towards detector.
    """

    source_mm: torch.Tensor
    detector_center_mm: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    n: torch.Tensor


def _rotation_matrix(axis: torch.Tensor, angle_rad: float) -> torch.Tensor:
    """Right-handed rotation by ``angle_rad`` about the unit vector ``axis`` (Rodrigues)."""
    x, y, z = axis.tolist()
    k = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=axis.dtype)
    eye = torch.eye(3, dtype=axis.dtype)
    return eye + math.sin(angle_rad) * k + (1.0 - math.cos(angle_rad)) * (k @ k)


def _unit(values: Sequence[float], name: str) -> torch.Tensor:
    vec = torch.tensor([float(x) for x in values], dtype=torch.float64)
    norm = torch.linalg.vector_norm(vec)
    if vec.shape != (3,) or not torch.isfinite(vec).all() or norm < 1e-9:
        raise GeometryError(f"{name} must be a finite, non-zero 3-vector, got {list(values)}.")
    return vec / norm


def _is_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and 0.0 < value < _MAX_DISTANCE_MM


@dataclass(frozen=True)
class ProjectionGeometry:
    """A circular-orbit cone-beam or parallel-beam acquisition (see the module docstring).

    Args:
        beam: ``"cone"`` (point source) or ``"parallel"``.
        angles_deg: orbit angle of each view, degrees.
        detector_shape: detector pixels as ``(rows, cols)``.
        pixel_spacing_mm: detector pixel pitch as ``(row, col)`` in mm.
        source_to_isocenter_mm: source-to-axis distance (SAD), mm; cone beam only.
        source_to_detector_mm: source-to-detector distance (SDD), mm; cone beam only.
        detector_offset_mm: detector shift along ``(v, u)``, mm.
        isocenter_mm: world position of the orbit centre; ``None`` = centre of the volume.
        rotation_axis: world direction of the orbit axis.
        source_direction: world direction from isocenter to source at angle 0.
        tilt_deg: optional per-view tilt about the detector column direction, degrees.
        name: short identifier, e.g. the preset name.
        description: free text describing where the numbers come from.
    """

    beam: BeamType
    angles_deg: tuple[float, ...]
    detector_shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float]
    source_to_isocenter_mm: float | None = None
    source_to_detector_mm: float | None = None
    detector_offset_mm: tuple[float, float] = (0.0, 0.0)
    isocenter_mm: tuple[float, float, float] | None = None
    rotation_axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    source_direction: tuple[float, float, float] = (0.0, -1.0, 0.0)
    tilt_deg: tuple[float, ...] | None = None
    name: str = ""
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # normalise containers so that JSON lists and tuples compare equal
        set_ = object.__setattr__
        set_(self, "angles_deg", tuple(float(a) for a in self.angles_deg))
        set_(self, "detector_shape", tuple(int(s) for s in self.detector_shape))
        set_(self, "pixel_spacing_mm", tuple(float(s) for s in self.pixel_spacing_mm))
        set_(self, "detector_offset_mm", tuple(float(s) for s in self.detector_offset_mm))
        set_(self, "rotation_axis", tuple(float(s) for s in self.rotation_axis))
        set_(self, "source_direction", tuple(float(s) for s in self.source_direction))
        if self.isocenter_mm is not None:
            set_(self, "isocenter_mm", tuple(float(s) for s in self.isocenter_mm))
        if self.tilt_deg is not None:
            set_(self, "tilt_deg", tuple(float(s) for s in self.tilt_deg))
        self._validate()

    def _validate(self) -> None:
        if self.beam not in ("cone", "parallel"):
            raise GeometryError(f"beam must be 'cone' or 'parallel', got {self.beam!r}.")
        if not self.angles_deg or not all(math.isfinite(a) for a in self.angles_deg):
            raise GeometryError("angles_deg must be a non-empty list of finite angles in degrees.")
        if len(self.detector_shape) != 2 or min(self.detector_shape) < 1:
            raise GeometryError(f"detector_shape must be (rows, cols) >= 1, got {self.detector_shape}.")
        if len(self.pixel_spacing_mm) != 2 or not all(_is_positive(s) for s in self.pixel_spacing_mm):
            raise GeometryError(f"pixel_spacing_mm must be two positive sizes in mm, got {self.pixel_spacing_mm}.")
        if len(self.detector_offset_mm) != 2 or not all(math.isfinite(s) for s in self.detector_offset_mm):
            raise GeometryError(f"detector_offset_mm must be two finite offsets in mm, got {self.detector_offset_mm}.")
        if self.isocenter_mm is not None and (
            len(self.isocenter_mm) != 3 or not all(math.isfinite(s) for s in self.isocenter_mm)
        ):
            raise GeometryError(f"isocenter_mm must be a finite 3-vector in mm, got {self.isocenter_mm}.")
        if self.tilt_deg is not None and len(self.tilt_deg) != len(self.angles_deg):
            raise GeometryError(
                f"tilt_deg needs one value per view ({len(self.angles_deg)}), got {len(self.tilt_deg)}."
            )
        axis = _unit(self.rotation_axis, "rotation_axis")
        source = _unit(self.source_direction, "source_direction")
        if abs(float(axis @ source)) > 0.999:
            raise GeometryError("source_direction must not be parallel to rotation_axis.")
        if self.beam == "cone":
            sad, sdd = self.source_to_isocenter_mm, self.source_to_detector_mm
            if not (_is_positive(sad) and _is_positive(sdd)):
                raise GeometryError(
                    "cone beam needs positive source_to_isocenter_mm and source_to_detector_mm "
                    f"below {_MAX_DISTANCE_MM:g} mm, got {sad} and {sdd}."
                )
            if sdd <= sad:  # type: ignore[operator]
                raise GeometryError(
                    f"source_to_detector_mm ({sdd}) must exceed source_to_isocenter_mm ({sad}): "
                    "the patient lies between source and detector."
                )

    # ------------------------------------------------------------------ properties
    @property
    def num_views(self) -> int:
        """Number of projections."""
        return len(self.angles_deg)

    @property
    def magnification(self) -> float:
        """Geometric magnification at the isocenter (SDD / SAD; 1 for parallel beam)."""
        if self.beam == "parallel":
            return 1.0
        return float(self.source_to_detector_mm) / float(self.source_to_isocenter_mm)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (lists instead of tuples)."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectionGeometry:
        """Build from :meth:`to_dict` output; unknown keys are an error, not silently ignored."""
        if not isinstance(data, dict):
            raise GeometryError(f"a geometry must be a JSON object, got {type(data).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GeometryError(f"unknown geometry field(s) {unknown}; known fields: {sorted(known)}.")
        try:
            return cls(**data)
        except TypeError as err:
            raise GeometryError(f"incomplete geometry: {err}.") from None

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize to JSON text, written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> ProjectionGeometry:
        """Load from a JSON file path or from JSON text."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise GeometryError(f"geometry file not found: {path}")
            text = path.read_text()
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise GeometryError(f"geometry JSON is not valid: {err}.") from None

    # ------------------------------------------------------------------ derived geometries
    def resolved(self, isocenter_mm: Sequence[float]) -> ProjectionGeometry:
        """Copy with the isocenter fixed (no-op when the geometry already has one)."""
        if self.isocenter_mm is not None:
            return self
        return replace(self, isocenter_mm=tuple(float(x) for x in isocenter_mm))

    def subset(self, views: Sequence[int]) -> ProjectionGeometry:
        """Geometry restricted to the given view indices (in that order)."""
        tilts = None if self.tilt_deg is None else tuple(self.tilt_deg[i] for i in views)
        return replace(self, angles_deg=tuple(self.angles_deg[i] for i in views), tilt_deg=tilts)

    def with_uniform_angles(self, num_views: int, arc_deg: float = 360.0, start_deg: float = 0.0) -> ProjectionGeometry:
        """Copy with ``num_views`` angles evenly spaced over ``arc_deg`` (endpoint excluded), no tilt."""
        if num_views < 1:
            raise GeometryError(f"num_views must be at least 1, got {num_views}.")
        angles = tuple(start_deg + arc_deg * i / num_views for i in range(num_views))
        return replace(self, angles_deg=angles, tilt_deg=None)

    def with_detector_shape(self, rows: int, cols: int) -> ProjectionGeometry:
        """Copy with another pixel count over the same physical detector (pitch rescaled)."""
        if rows < 1 or cols < 1:
            raise GeometryError(f"detector shape must be positive, got ({rows}, {cols}).")
        pitch = (
            self.pixel_spacing_mm[0] * self.detector_shape[0] / rows,
            self.pixel_spacing_mm[1] * self.detector_shape[1] / cols,
        )
        return replace(self, detector_shape=(int(rows), int(cols)), pixel_spacing_mm=pitch)

    # ------------------------------------------------------------------ frames and rays
    def _require_isocenter(self) -> torch.Tensor:
        if self.isocenter_mm is None:
            raise GeometryError("the geometry has no isocenter yet: call .resolved(volume_center_mm) first.")
        return torch.tensor(self.isocenter_mm, dtype=torch.float64)

    def frame(self, view: int) -> ViewFrame:
        """Source, detector centre and detector axes of one view, in float64 world mm."""
        iso = self._require_isocenter()
        axis = _unit(self.rotation_axis, "rotation_axis")
        s0 = _unit(self.source_direction, "source_direction")
        s0 = s0 - (s0 @ axis) * axis  # keep the angle-0 source direction perpendicular to the axis
        s0 = s0 / torch.linalg.vector_norm(s0)
        v0 = -axis
        u0 = torch.linalg.cross(-s0, v0)
        rot = _rotation_matrix(axis, math.radians(self.angles_deg[view]))
        if self.tilt_deg is not None:
            rot = rot @ _rotation_matrix(u0, math.radians(self.tilt_deg[view]))
        s, u, v = rot @ s0, rot @ u0, rot @ v0
        offset = self.detector_offset_mm[0] * v + self.detector_offset_mm[1] * u
        if self.beam == "cone":
            sad = float(self.source_to_isocenter_mm)  # type: ignore[arg-type]
            sdd = float(self.source_to_detector_mm)  # type: ignore[arg-type]
            source = iso + sad * s
            center = iso - (sdd - sad) * s + offset
        else:
            source = iso.clone()
            center = iso + offset
        return ViewFrame(source_mm=source, detector_center_mm=center, u=u, v=v, n=-s)

    def pixel_positions(self, view: int) -> torch.Tensor:
        """World position (mm) of every detector pixel centre, shape ``(rows, cols, 3)``, float64."""
        f = self.frame(view)
        rows, cols = self.detector_shape
        dv, du = self.pixel_spacing_mm
        r = (torch.arange(rows, dtype=torch.float64) - (rows - 1) / 2.0) * dv
        c = (torch.arange(cols, dtype=torch.float64) - (cols - 1) / 2.0) * du
        return f.detector_center_mm + r[:, None, None] * f.v + c[None, :, None] * f.u

    def rays(
        self,
        views: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions in world mm, each of shape ``(views, rows, cols, 3)``.

        Cone-beam rays start at the source; parallel-beam rays start on the plane through the
        isocenter perpendicular to the beam (renderers clip rays to the volume, so a parallel ray
        is integrated over its whole length through the volume).
        """
        views = range(self.num_views) if views is None else views
        origins, directions = [], []
        for view in views:
            pixels = self.pixel_positions(view)
            f = self.frame(view)
            if self.beam == "cone":
                d = pixels - f.source_mm
                directions.append(d / torch.linalg.vector_norm(d, dim=-1, keepdim=True))
                origins.append(f.source_mm.expand_as(pixels))
            else:
                directions.append(f.n.expand_as(pixels))
                origins.append(pixels)
        return (
            torch.stack(origins).to(device=device, dtype=dtype),
            torch.stack(directions).to(device=device, dtype=dtype),
        )

    def projection_matrix(self, view: int) -> torch.Tensor:
        """3x4 matrix ``P`` (float64) with ``(row * w, col * w, w) = P @ (x, y, z, 1)`` for world mm.

        ``w`` is the depth along the central ray for cone beam (pinhole model) and 1 for parallel
        beam; ``(row, col)`` are continuous pixel coordinates (pixel centres at integers).
        """
        f = self.frame(view)
        rows, cols = self.detector_shape
        dv, du = self.pixel_spacing_mm
        off_v, off_u = self.detector_offset_mm
        matrix = torch.zeros(3, 4, dtype=torch.float64)
        if self.beam == "cone":
            sdd = float(self.source_to_detector_mm)  # type: ignore[arg-type]
            depth = torch.cat([f.n, -(f.n @ f.source_mm)[None]])
            for i, (axis, pitch, offset, size) in enumerate(((f.v, dv, off_v, rows), (f.u, du, off_u, cols))):
                lateral = torch.cat([axis, -(axis @ f.source_mm)[None]])
                matrix[i] = sdd / pitch * lateral + ((size - 1) / 2.0 - offset / pitch) * depth
            matrix[2] = depth
        else:
            iso = f.source_mm
            for i, (axis, pitch, offset, size) in enumerate(((f.v, dv, off_v, rows), (f.u, du, off_u, cols))):
                matrix[i, :3] = axis / pitch
                matrix[i, 3] = -(axis @ iso) / pitch - offset / pitch + (size - 1) / 2.0
            matrix[2, 3] = 1.0
        return matrix

    def project_points(self, points_mm: torch.Tensor, view: int) -> torch.Tensor:
        """Continuous detector coordinates ``(row, col)`` (pixel units) of world points (mm).

        The pinhole formula for cone beam (scaled by SDD over the depth along the central ray),
        orthogonal projection for parallel beam; see :meth:`projection_matrix`.
        """
        matrix = self.projection_matrix(view).to(points_mm.device)
        h = points_mm.to(torch.float64) @ matrix[:, :3].T + matrix[:, 3]
        return h[..., :2] / h[..., 2:3]


def list_presets() -> list[str]:
    """Names of the geometry presets shipped with the package (``configs/geometry``)."""
    root = resources.files(_PRESET_PACKAGE)
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def load_geometry(spec: str | Path | ProjectionGeometry | dict[str, Any]) -> ProjectionGeometry:
    """Resolve a geometry from a preset name, a JSON file path, a dict, or pass one through."""
    if isinstance(spec, ProjectionGeometry):
        return spec
    if isinstance(spec, dict):
        return ProjectionGeometry.from_dict(spec)
    text = str(spec)
    if text in list_presets():
        return ProjectionGeometry.from_json(resources.files(_PRESET_PACKAGE).joinpath(f"{text}.json").read_text())
    if Path(text).is_file() or text.lstrip().startswith("{"):
        return ProjectionGeometry.from_json(text)
    raise GeometryError(f"{text!r} is neither a geometry JSON file nor a preset; presets: {', '.join(list_presets())}.")
