"""Parameters of the GnerfReconstruction module, free of Slicer, Qt and torch.

One :class:`ReconstructionParameters` holds everything the panel lets a user choose. It is what the
logic runs, what the scene's parameter node stores (as strings), and what the panel shows:
:data:`PARAMETER_WIDGETS` names the widget of ``Resources/UI/GnerfReconstruction.ui`` that edits
each field, and :data:`CHOICES` lists the values behind each combo box, in the order of its items.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "CHOICES",
    "METHOD_LABELS",
    "PARAMETER_WIDGETS",
    "SOURCE_LABELS",
    "GnerfInputProblem",
    "ReconstructionParameters",
    "parameters_from_strings",
    "parameters_to_strings",
    "parse_angles",
]

#: Input kinds: one-slice X-ray volume nodes, or a CT volume node to simulate X-rays from.
SOURCE_LABELS = {
    "xrays": "X-ray volumes",
    "ct": "CT volume (simulate X-rays)",
}

#: Reconstruction methods, as the bundle names them, with the labels of the panel.
METHOD_LABELS = {
    "grid": "Sparse-view attenuation field (grid, ours)",
    "naf": "Sparse-view attenuation field (NAF hash grid)",
    "nerf": "Sparse-view NeRF (frequency MLP)",
    "fdk": "FDK / filtered backprojection",
    "generative": "Single-view generative (checkpoint)",
}

DEVICES = ("cpu", "cuda")

#: The values behind each combo box, in the order of its items in the .ui file. The geometry combo
#: box is filled at run time from the presets of the installed monai-gnerf.
CHOICES: dict[str, tuple[str, ...]] = {
    "source": tuple(SOURCE_LABELS),
    "method": tuple(METHOD_LABELS),
    "device": DEVICES,
}

#: The widget (object name in the .ui file) that edits each parameter.
PARAMETER_WIDGETS: dict[str, str] = {
    "source": "sourceComboBox",
    "xray_node_ids": "xrayVolumesComboBox",
    "ct_node_id": "ctVolumeComboBox",
    "values_are_intensities": "intensitiesCheckBox",
    "view_angles": "viewAnglesLineEdit",
    "num_views": "numViewsSpinBox",
    "method": "methodComboBox",
    "geometry": "geometryComboBox",
    "custom_geometry": "customGeometryCheckBox",
    "source_to_isocenter_mm": "sadSpinBox",
    "source_to_detector_mm": "sddSpinBox",
    "use_node_spacing": "nodeSpacingCheckBox",
    "checkpoint": "checkpointPathLineEdit",
    "device": "deviceComboBox",
    "budget_s": "budgetSpinBox",
    "spacing_mm": "spacingSpinBox",
    "bundle_dir": "bundlePathLineEdit",
    "keep_temp": "keepTempCheckBox",
}


class GnerfInputProblem(ValueError):
    """The panel's choices cannot be run (nothing selected, mismatched X-rays, missing bundle...)."""


@dataclass
class ReconstructionParameters:
    """What the user chose in the panel.

    Attributes:
        source: ``"xrays"`` (reconstruct from X-ray volume nodes) or ``"ct"`` (simulate X-rays from
            a CT volume node first, then reconstruct them).
        xray_node_ids: MRML IDs of the one-slice X-ray volume nodes, one view each, in view order.
        ct_node_id: MRML ID of the CT volume node (values in HU).
        values_are_intensities: the X-ray pixels are intensities ``I`` (bright = more photons)
            rather than line integrals; they are converted with ``-ln(I / I0)``, ``I0`` being the
            brightest pixel of each image (the unattenuated beam).
        view_angles: orbit angle of each X-ray in degrees, comma separated; empty: the preset's
            angles when it has as many views, else views evenly spread over 360 degrees.
        num_views: number of X-rays simulated from the CT (evenly over 360 degrees).
        method: ``grid``, ``naf``, ``nerf``, ``fdk`` or ``generative``.
        geometry: geometry preset name (``monai-gnerf presets``).
        custom_geometry: replace the preset's distances by the two below (cone beam).
        source_to_isocenter_mm: source-to-axis distance (SAD) of a custom geometry, mm.
        source_to_detector_mm: source-to-detector distance (SDD) of a custom geometry, mm.
        use_node_spacing: take the detector pixel size from the X-ray nodes' spacing (DICOM DX/CR
            keep it); otherwise the preset's detector size is spread over the nodes' pixels.
        checkpoint: model checkpoint of the single-view generative method; empty: the bundle's
            shipped chest prior (``models/model.pt``).
        device: ``cpu`` or ``cuda``.
        budget_s: wall-time budget of the training methods, seconds.
        spacing_mm: voxel size of the reconstruction, mm; 0 chooses it from the data.
        bundle_dir: the MONAI bundle folder; empty: the bundle shipped with the module.
        keep_temp: keep the temporary folder (inputs, logs, outputs) after the run.
    """

    source: str = "xrays"
    xray_node_ids: tuple[str, ...] = field(default_factory=tuple)
    ct_node_id: str = ""
    values_are_intensities: bool = False
    view_angles: str = ""
    num_views: int = 20
    method: str = "grid"
    geometry: str = "chest_cbct"
    custom_geometry: bool = False
    source_to_isocenter_mm: float = 1000.0
    source_to_detector_mm: float = 1500.0
    use_node_spacing: bool = True
    checkpoint: str = ""
    device: str = "cpu"
    budget_s: float = 120.0
    spacing_mm: float = 0.0
    bundle_dir: str = ""
    keep_temp: bool = False

    def __post_init__(self) -> None:
        self.xray_node_ids = tuple(self.xray_node_ids)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}.")


def _encode(value: Any) -> str:
    if isinstance(value, tuple):
        return json.dumps(list(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, tuple):
        return tuple(json.loads(text)) if text.strip() else ()
    if isinstance(default, int):
        return int(float(text))
    if isinstance(default, float):
        return float(text)
    return text


def parameters_to_strings(params: ReconstructionParameters) -> dict[str, str]:
    """Every field as a string, as a Slicer parameter node stores it."""
    return {name: _encode(value) for name, value in asdict(params).items()}


def parameters_from_strings(values: dict[str, str]) -> ReconstructionParameters:
    """Parameters from :func:`parameters_to_strings` output; missing or unreadable fields keep their defaults."""
    defaults = ReconstructionParameters()
    kwargs: dict[str, Any] = {}
    for f in fields(ReconstructionParameters):
        text = values.get(f.name)
        if text is None:
            continue
        try:
            value = _decode(text, getattr(defaults, f.name))
        except (ValueError, TypeError):
            continue
        if f.name not in CHOICES or value in CHOICES[f.name]:
            kwargs[f.name] = value
    return ReconstructionParameters(**kwargs)


def parse_angles(text: str, num_views: int, preset_angles: Sequence[float] = ()) -> list[float]:
    """Orbit angles in degrees for ``num_views`` X-rays.

    Args:
        text: comma- or space-separated angles, one per view; empty for the default.
        num_views: number of X-rays.
        preset_angles: the preset's angles, used when ``text`` is empty and they are as many.

    Returns:
        The angles; by default the preset's, else ``num_views`` angles evenly over 360 degrees.
    """
    tokens = [t for t in text.replace(",", " ").replace(";", " ").split() if t]
    if not tokens:
        if len(preset_angles) == num_views:
            return [float(a) for a in preset_angles]
        return [360.0 * i / num_views for i in range(num_views)]
    try:
        angles = [float(t) for t in tokens]
    except ValueError:
        raise GnerfInputProblem(f"view angles must be numbers in degrees, got {text!r}.") from None
    if len(angles) != num_views or not all(math.isfinite(a) for a in angles):
        raise GnerfInputProblem(f"give one finite view angle per X-ray: {num_views} X-ray(s), {len(angles)} angle(s).")
    return angles
