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
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from monai_gnerf.config import Config, config_from_dict, config_to_dict, parse_json
from monai_gnerf.errors import GeometryError

__all__ = ["ProjectionGeometry", "ViewFrame", "list_presets", "load_geometry"]

BeamType = Literal["cone", "parallel"]
_MAX_DISTANCE_MM = 1.0e5  # 100 m: anything larger is a unit mistake, not a scanner


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


def _rotate(vectors: torch.Tensor, axis: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """Right-handed (Rodrigues) rotation of ``(B, 3)`` vectors about unit axes ``(B, 3)`` by ``(B,)`` angles."""
    cos, sin = torch.cos(angle_rad)[:, None], torch.sin(angle_rad)[:, None]
    dot = (axis * vectors).sum(-1, keepdim=True)
    return vectors * cos + torch.linalg.cross(axis, vectors) * sin + axis * dot * (1.0 - cos)


def _unit(values: Sequence[float], name: str) -> torch.Tensor:
    vec = torch.tensor([float(x) for x in values], dtype=torch.float64)
    norm = torch.linalg.vector_norm(vec)
    if vec.shape != (3,) or not torch.isfinite(vec).all() or norm < 1e-9:
        raise GeometryError(f"{name} must be a finite, non-zero 3-vector, got {list(values)}.")
    return vec / norm


def _is_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and 0.0 < value < _MAX_DISTANCE_MM


@dataclass(frozen=True)
class ProjectionGeometry(Config):
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

    config_kind = "geometry"
    config_error = GeometryError

    def __post_init__(self) -> None:
        super().__post_init__()
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
        if self.tilt_deg is not None and not all(math.isfinite(t) for t in self.tilt_deg):
            raise GeometryError("tilt_deg must hold finite tilts in degrees (no NaN or infinity).")
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

    @property
    def pixel_spacing_at_isocenter_mm(self) -> tuple[float, float]:
        """The detector pixel pitch ``(row, col)`` projected to the isocenter, mm (what the data resolve there)."""
        return (self.pixel_spacing_mm[0] / self.magnification, self.pixel_spacing_mm[1] / self.magnification)

    # ------------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (lists instead of tuples)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectionGeometry:
        """Build from :meth:`to_dict` output; unknown keys are an error, not silently ignored."""
        return config_from_dict(cls, data, GeometryError)

    def to_json(self, path: str | Path | None = None) -> str:
        """Serialize to JSON text, written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> ProjectionGeometry:
        """Load from a JSON file path or from JSON text."""
        data: str | bytes = str(source)
        if not data.lstrip().startswith("{"):
            path = Path(source)
            if not path.is_file():
                raise GeometryError(f"geometry file not found: {path}")
            data = path.read_bytes()
        return cls.from_dict(parse_json(data, "geometry JSON", GeometryError))

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

    def frames(self, angles_deg: torch.Tensor, tilt_deg: torch.Tensor | None = None) -> ViewFrame:
        """Frames of views at arbitrary orbit angles, batched and differentiable in the angles.

        This is the one place where the orbit turns into positions: :meth:`frame`, :meth:`rays`,
        :meth:`rays_at` and :meth:`projection_matrix` all derive from it.

        Args:
            angles_deg: ``(B,)`` orbit angles in degrees; their dtype and device are the output's.
            tilt_deg: optional ``(B,)`` tilts about the angle-0 detector column direction, degrees.

        Returns:
            A :class:`ViewFrame` whose fields are ``(B, 3)`` tensors (world mm, unit vectors).
        """
        dtype, device = angles_deg.dtype, angles_deg.device
        as_t = lambda x: x.to(dtype=dtype, device=device)  # noqa: E731
        iso = as_t(self._require_isocenter())
        axis = _unit(self.rotation_axis, "rotation_axis")
        s0 = _unit(self.source_direction, "source_direction")
        s0 = s0 - (s0 @ axis) * axis  # keep the angle-0 source direction perpendicular to the axis
        s0 = s0 / torch.linalg.vector_norm(s0)
        v0 = -axis
        u0 = torch.linalg.cross(-s0, v0)
        axis, s, u, v = (as_t(x).expand(angles_deg.shape[0], 3) for x in (axis, s0, u0, v0))
        if tilt_deg is not None:
            tilt = torch.deg2rad(tilt_deg.to(dtype=dtype, device=device))
            s, v = (_rotate(x, u, tilt) for x in (s, v))
        angle = torch.deg2rad(angles_deg)
        s, u, v = (_rotate(x, axis, angle) for x in (s, u, v))
        offset = self.detector_offset_mm[0] * v + self.detector_offset_mm[1] * u
        if self.beam == "cone":
            sad = float(self.source_to_isocenter_mm)  # type: ignore[arg-type]
            sdd = float(self.source_to_detector_mm)  # type: ignore[arg-type]
            source = iso + sad * s
            center = iso - (sdd - sad) * s + offset
        else:
            source = iso.expand_as(s)
            center = iso + offset
        return ViewFrame(source_mm=source, detector_center_mm=center, u=u, v=v, n=-s)

    def frame(self, view: int) -> ViewFrame:
        """Source, detector centre and detector axes of one view, in float64 world mm."""
        angle = torch.tensor([self.angles_deg[view]], dtype=torch.float64)
        tilt = None if self.tilt_deg is None else torch.tensor([self.tilt_deg[view]], dtype=torch.float64)
        f = self.frames(angle, tilt)
        return ViewFrame(f.source_mm[0], f.detector_center_mm[0], f.u[0], f.v[0], f.n[0])

    def pixel_grid(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column coordinates ``(rows*cols,)`` of every pixel centre, row-major."""
        n_rows, n_cols = self.detector_shape
        r, c = torch.meshgrid(
            torch.arange(n_rows, dtype=dtype, device=device), torch.arange(n_cols, dtype=dtype, device=device),
            indexing="ij",
        )  # fmt: skip
        return r.reshape(-1), c.reshape(-1)

    def rays_at(
        self,
        angles_deg: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        tilt_deg: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World rays (mm) through continuous pixel positions of views at arbitrary angles.

        The angle list and tilts of the geometry are not used, only its orbit, distances and
        detector; the result is differentiable with respect to ``angles_deg`` (pose fitting).

        Args:
            angles_deg: ``(B,)`` orbit angles in degrees.
            rows: ``(B, R)`` continuous row coordinates (pixel centres at integers).
            cols: ``(B, R)`` continuous column coordinates.
            tilt_deg: optional ``(B,)`` tilts, degrees.

        Returns:
            Origins and unit directions, each ``(B, R, 3)``, in the dtype and device of ``rows``.
            Cone-beam rays start at the source; parallel-beam rays start on the plane through the
            isocenter perpendicular to the beam (renderers clip rays to the volume, so a parallel
            ray is integrated over its whole chord).
        """
        f = self.frames(angles_deg.to(dtype=rows.dtype, device=rows.device), tilt_deg)
        n_rows, n_cols = self.detector_shape
        dv, du = self.pixel_spacing_mm
        pixels = (
            f.detector_center_mm[:, None]
            + ((rows - (n_rows - 1) / 2.0) * dv)[..., None] * f.v[:, None]
            + ((cols - (n_cols - 1) / 2.0) * du)[..., None] * f.u[:, None]
        )
        if self.beam == "parallel":
            return pixels, f.n[:, None].expand_as(pixels)
        direction = pixels - f.source_mm[:, None]
        return f.source_mm[:, None].expand_as(pixels), direction / torch.linalg.vector_norm(direction, dim=-1, keepdim=True)

    def rays(
        self,
        views: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins and unit directions in world mm through every pixel centre of views.

        Computed view by view in float64 by :meth:`rays_at` (temporaries of one view at a time),
        then cast; each output has shape ``(views, rows, cols, 3)``.
        """
        views = list(range(self.num_views)) if views is None else list(views)
        rows, cols = self.pixel_grid(dtype=torch.float64)
        origins, directions = [], []
        for view in views:
            angle = torch.tensor([self.angles_deg[view]], dtype=torch.float64)
            tilt = None if self.tilt_deg is None else torch.tensor([self.tilt_deg[view]], dtype=torch.float64)
            o, d = self.rays_at(angle, rows[None], cols[None], tilt)
            origins.append(o.view(*self.detector_shape, 3).to(device=device, dtype=dtype))
            directions.append(d.view(*self.detector_shape, 3).to(device=device, dtype=dtype))
        return torch.stack(origins), torch.stack(directions)

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


def _presets() -> resources.abc.Traversable:
    return resources.files("monai_gnerf.geometry").joinpath("presets")


def list_presets() -> list[str]:
    """Names of the geometry presets shipped with the package (``monai_gnerf/geometry/presets``)."""
    root = _presets()
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def load_geometry(spec: str | Path | ProjectionGeometry | dict[str, Any]) -> ProjectionGeometry:
    """Resolve a geometry from a preset name, a JSON file path, a dict, or pass one through."""
    if isinstance(spec, ProjectionGeometry):
        return spec
    if isinstance(spec, dict):
        return ProjectionGeometry.from_dict(spec)
    text = str(spec)
    if text in list_presets():
        return ProjectionGeometry.from_json(_presets().joinpath(f"{text}.json").read_text())
    if Path(text).is_file() or text.lstrip().startswith("{"):
        return ProjectionGeometry.from_json(text)
    raise GeometryError(f"{text!r} is neither a geometry JSON file nor a preset; presets: {', '.join(list_presets())}.")
