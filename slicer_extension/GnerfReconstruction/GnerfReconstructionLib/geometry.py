"""Acquisition geometry from the panel's choices: the presets, custom distances, X-ray node geometry.

Free of Slicer and Qt; monai-gnerf is imported only when a geometry is built, so the panel opens
before it is installed. A geometry monai-gnerf rejects is reported as a :class:`GnerfInputProblem`.
"""

from __future__ import annotations

from dataclasses import replace

from .install import CHECKOUT_DIR
from .parameters import GnerfInputProblem, ReconstructionParameters, parse_angles

__all__ = [
    "base_geometry",
    "geometry_presets",
    "xray_geometry",
]


def geometry_presets() -> list[str]:
    """Geometry preset names: the installed monai-gnerf's, else the JSON files of the source checkout."""
    try:
        from monai_gnerf.geometry import list_presets
    except ImportError:
        folder = CHECKOUT_DIR / "monai_gnerf" / "geometry" / "presets"
        names = sorted(p.stem for p in folder.glob("*.json"))
        return names or ["chest_cbct"]
    return list_presets()


def _preset(params: ReconstructionParameters):
    from monai_gnerf.errors import GnerfInputError
    from monai_gnerf.geometry import load_geometry

    try:
        return load_geometry(params.geometry)
    except GnerfInputError as err:
        raise GnerfInputProblem(str(err)) from None


def _with_custom_distances(geometry, params: ReconstructionParameters):
    if not params.custom_geometry:
        return geometry
    from monai_gnerf.errors import GnerfInputError

    try:
        return replace(
            geometry,
            beam="cone",
            source_to_isocenter_mm=float(params.source_to_isocenter_mm),
            source_to_detector_mm=float(params.source_to_detector_mm),
            name=f"{geometry.name or 'custom'}-custom",
        )
    except GnerfInputError as err:
        raise GnerfInputProblem(str(err)) from None


def base_geometry(params: ReconstructionParameters):
    """The ``ProjectionGeometry`` of the chosen preset, with the custom distances when they are chosen.

    Args:
        params: the panel's choices.

    Raises:
        GnerfInputProblem: no such preset, or impossible distances.
    """
    return _with_custom_distances(_preset(params), params)


def xray_geometry(
    params: ReconstructionParameters, detector_shape: tuple[int, int], node_spacing_mm: tuple[float, float]
):
    """The ``ProjectionGeometry`` of X-ray nodes: preset (or custom) distances, the nodes' pixels.

    The detector has the nodes' pixel count; its pixel size is the nodes' spacing
    (``use_node_spacing``) or the preset's detector size spread over those pixels. The isocenter is
    the RAS origin, the orbit axis superior, view 0 posterior-anterior.

    Args:
        params: the panel's choices.
        detector_shape: ``(rows, cols)`` of the X-ray images.
        node_spacing_mm: ``(row, col)`` pixel spacing of the nodes, mm.
    """
    from monai_gnerf.errors import GnerfInputError

    base = base_geometry(params)
    num_views = len(params.xray_node_ids)
    if params.use_node_spacing:
        spacing = tuple(float(s) for s in node_spacing_mm)
    else:
        extent = [n * s for n, s in zip(base.detector_shape, base.pixel_spacing_mm)]
        spacing = tuple(e / n for e, n in zip(extent, detector_shape))
    angles = parse_angles(params.view_angles, num_views, base.angles_deg)
    try:
        return replace(
            base,
            angles_deg=tuple(angles),
            tilt_deg=None,
            detector_shape=tuple(detector_shape),
            pixel_spacing_mm=spacing,
            isocenter_mm=(0.0, 0.0, 0.0),
            name=f"{base.name or 'geometry'}-slicer",
            description=f"X-ray volume nodes from 3D Slicer on the {base.name or 'custom'} geometry.",
        )
    except GnerfInputError as err:
        raise GnerfInputProblem(str(err)) from None
