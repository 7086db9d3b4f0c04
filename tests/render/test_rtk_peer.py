"""The RTK peer's geometry mapping (benchmarks/peers/rtk_peer.py): RTK sees the scanner we simulate.

RTK's Joseph projection of the example CT must equal ours view by view (NCC >= 0.999), with the
isocenter off the volume's centre so the translation is tested too, and RTK's FDK must land within
1 dB of ours against the CT. Skipped when itk-rtk (part of the ``[test]`` extra) is absent.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

itk = pytest.importorskip("itk")
if not hasattr(itk, "RTK"):  # itk-rtk adds RTK to itk's lazily loaded modules
    pytest.skip("itk-rtk is not installed (pip install itk-rtk==2.7.0.post1, in the [test] extra)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))

import rtk_peer  # noqa: E402

from monai_gnerf.data import example_ct_path  # noqa: E402
from monai_gnerf.geometry import load_geometry, volume_center_mm  # noqa: E402
from monai_gnerf.io import load_ct  # noqa: E402
from monai_gnerf.metrics.image import normalize_to_reference, psnr  # noqa: E402
from monai_gnerf.physics import hu_to_attenuation  # noqa: E402
from monai_gnerf.render import fdk, render_drr  # noqa: E402


@pytest.fixture(scope="module")
def example_mu():
    rtk_peer.set_threads(2)
    return hu_to_attenuation(load_ct(example_ct_path()))


def _geometry(mu, shift_mm=(0.0, 0.0, 0.0)):
    coarse = replace(load_geometry("chest_cbct"), detector_shape=(80, 80), pixel_spacing_mm=(7.5, 7.5))
    centre = volume_center_mm(mu.affine, mu.shape) + torch.tensor(shift_mm, dtype=torch.float64)
    return coarse.with_uniform_angles(8).resolved(centre.tolist())


def _ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_rtk_joseph_projection_equals_ours(example_mu):
    geometry = _geometry(example_mu, shift_mm=(12.0, -20.0, 8.0))
    ours = render_drr(example_mu, geometry)
    theirs = rtk_peer.joseph_projections(example_mu.as_tensor(), example_mu.affine, geometry)
    assert theirs.shape == ours.shape
    assert min(_ncc(ours[v], theirs[v]) for v in range(geometry.num_views)) >= 0.999
    assert float(theirs.sum() / ours.sum()) == pytest.approx(1.0, abs=0.02)  # same units: line integrals


def test_rtk_fdk_is_within_one_db_of_ours(example_mu):
    geometry = _geometry(example_mu)
    projections = render_drr(example_mu, geometry)
    grid = (tuple(example_mu.shape), example_mu.affine)
    truth = example_mu.as_tensor().double()
    ours = fdk(projections, geometry, *grid)
    theirs, _, _ = rtk_peer.rtk_reconstruct(rtk_peer.RTKMethod("fdk"), projections, geometry, *grid, budget_s=0.0)
    scores = [psnr(*normalize_to_reference(v.double().clamp(min=0.0), truth), 1.0) for v in (ours, theirs)]
    assert scores[0] > 15.0  # a reconstruction, not noise
    assert abs(scores[0] - scores[1]) <= 1.0
