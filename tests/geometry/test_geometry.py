from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from monai_gnerf.data import Ellipsoid, EllipsoidPhantom
from monai_gnerf.errors import GeometryError
from monai_gnerf.geometry import ProjectionGeometry, grid_for_spacing, list_presets, load_geometry, volume_center_mm
from monai_gnerf.render import render_drr


def cone(**kw):
    base = dict(
        beam="cone",
        angles_deg=(0.0, 30.0, 90.0),
        detector_shape=(40, 60),
        pixel_spacing_mm=(2.0, 2.5),
        source_to_isocenter_mm=500.0,
        source_to_detector_mm=800.0,
        isocenter_mm=(0.0, 0.0, 0.0),
    )
    base.update(kw)
    return ProjectionGeometry(**base)


@pytest.mark.parametrize("name", list_presets())
def test_presets_round_trip_through_json(name, tmp_path):
    geometry = load_geometry(name)
    path = tmp_path / "g.json"
    geometry.to_json(path)
    again = ProjectionGeometry.from_json(path)
    assert again == geometry
    assert json.loads(path.read_text())["name"] == name


def test_mednerf_chest_preset_matches_the_paper_setup():
    g = load_geometry("mednerf_chest")
    assert g.num_views == 72 and g.angles_deg[1] - g.angles_deg[0] == 5.0
    assert g.detector_shape == (128, 128)
    assert g.detector_shape[0] * g.pixel_spacing_mm[0] == pytest.approx(500.0)
    assert (g.source_to_isocenter_mm, g.source_to_detector_mm) == (541.0, 949.0)
    assert g.magnification == pytest.approx(949.0 / 541.0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(source_to_detector_mm=400.0), "must exceed"),
        (dict(pixel_spacing_mm=(0.0, 1.0)), "pixel_spacing_mm"),
        (dict(angles_deg=(float("nan"),)), "angles_deg"),
        (dict(angles_deg=()), "angles_deg"),
        (dict(beam="fan"), "beam"),
        (dict(tilt_deg=(1.0,)), "tilt_deg"),
        (dict(source_direction=(0.0, 0.0, 2.0)), "parallel to rotation_axis"),
        (dict(source_to_isocenter_mm=-5.0), "positive"),
        (dict(source_to_detector_mm=1e9), "positive"),
    ],
)
def test_nonsense_geometry_is_rejected_with_a_clear_message(change, message):
    with pytest.raises(GeometryError, match=message):
        cone(**change)


def test_unknown_and_missing_fields_are_errors():
    data = cone().to_dict()
    with pytest.raises(GeometryError, match="unknown geometry field"):
        ProjectionGeometry.from_dict({**data, "sad": 3})
    del data["beam"]
    with pytest.raises(GeometryError, match=r"incomplete geometry: it lacks the required field\(s\) \['beam'\]\.$"):
        ProjectionGeometry.from_dict(data)


def test_point_projects_where_the_pinhole_formula_says():
    g = cone(detector_offset_mm=(4.0, -6.0))
    point = torch.tensor([12.0, 30.0, -20.0], dtype=torch.float64)
    # view 0: source at y=-500 (posterior), detector plane y=+300, u=-x, v=-z
    scale = 800.0 / (point[1] + 500.0)
    col = (-point[0] * scale - (-6.0)) / 2.5 + (60 - 1) / 2
    row = (-point[2] * scale - 4.0) / 2.0 + (40 - 1) / 2
    rc = g.project_points(point, 0)
    assert rc[0].item() == pytest.approx(row.item(), abs=1e-9)
    assert rc[1].item() == pytest.approx(col.item(), abs=1e-9)


def test_ray_through_projected_pixel_passes_through_the_point():
    g = cone(tilt_deg=(0.0, 10.0, -15.0))
    point = torch.tensor([5.0, -8.0, 14.0], dtype=torch.float64)
    for view in range(g.num_views):
        row, col = g.project_points(point, view).tolist()
        frame = g.frame(view)
        pixel = (
            frame.detector_center_mm
            + (row - (40 - 1) / 2) * 2.0 * frame.v
            + (col - (60 - 1) / 2) * 2.5 * frame.u
        )
        ray = pixel - frame.source_mm
        to_point = point - frame.source_mm
        assert torch.linalg.vector_norm(torch.linalg.cross(ray, to_point)) / ray.norm() / to_point.norm() < 1e-12


def test_rendered_blob_lands_on_the_pinhole_pixel():
    blob = EllipsoidPhantom((Ellipsoid((12.0, 10.0, -9.0), (3.0, 3.0, 3.0), 0.0, 0.05),), profile=2)
    volume = blob.voxelize((64, 64, 64), (2.0, 2.0, 2.0), dtype=torch.float64)
    g = cone(detector_shape=(101, 101), pixel_spacing_mm=(1.0, 1.0))
    drr = render_drr(volume, g)
    for view in range(g.num_views):
        rows = torch.arange(101, dtype=torch.float64)
        weights = drr[view] / drr[view].sum()
        centroid = torch.stack([(weights.sum(1) * rows).sum(), (weights.sum(0) * rows).sum()])
        expected = g.project_points(torch.tensor([12.0, 10.0, -9.0], dtype=torch.float64), view)
        assert torch.allclose(centroid, expected, atol=0.05)


def test_opposite_parallel_views_are_mirror_images(smooth_volume):
    g = ProjectionGeometry(
        beam="parallel", angles_deg=(25.0, 205.0), detector_shape=(64, 64), pixel_spacing_mm=(3.2, 3.2)
    )
    drr = render_drr(smooth_volume, g)
    assert drr[0].abs().max() > 1.0
    assert torch.allclose(drr[0], drr[1].flip(-1), atol=1e-4 * drr.max().item())


def test_shifting_the_volume_shifts_the_drr_by_the_magnified_amount():
    blob = EllipsoidPhantom((Ellipsoid((0.0, 0.0, 0.0), (4.0, 4.0, 4.0), 0.0, 0.05),), profile=2)
    volume = blob.voxelize((48, 48, 48), (1.5, 1.5, 1.5), dtype=torch.float64)
    g = cone(detector_shape=(96, 96), pixel_spacing_mm=(1.0, 1.0), angles_deg=(0.0,))
    shifted = volume.clone()
    shifted.affine = volume.affine.clone()
    shifted.affine[2, 3] += 10.0  # 10 mm superior: the image moves up (rows run inferior)
    shifted.affine[0, 3] += 10.0  # 10 mm to the patient's right: the image moves left

    def centroid(img):
        idx = torch.arange(96, dtype=torch.float64)
        w = img / img.sum()
        return torch.stack([(w.sum(1) * idx).sum(), (w.sum(0) * idx).sum()])

    before = centroid(render_drr(volume, g)[0])
    after = centroid(render_drr(shifted, g.resolved((0.0, 0.0, 0.0)))[0])
    expected_px = 10.0 * g.magnification / 1.0
    assert (before - after).tolist() == pytest.approx([expected_px, expected_px], rel=0.005)


def test_subset_and_resolved():
    g = dataclasses.replace(cone(), isocenter_mm=None, tilt_deg=(1.0, 2.0, 3.0))
    with pytest.raises(GeometryError, match="isocenter"):
        g.frame(0)
    r = g.resolved((1.0, 2.0, 3.0)).subset([2, 0])
    assert r.angles_deg == (90.0, 0.0) and r.tilt_deg == (3.0, 1.0) and r.isocenter_mm == (1.0, 2.0, 3.0)


def test_load_geometry_reports_unknown_names():
    with pytest.raises(GeometryError, match="presets: .*mednerf_chest"):
        load_geometry("no_such_preset")


def test_a_spacing_coarser_than_the_field_of_view_keeps_two_voxels_and_warns(caplog):
    affine = torch.diag(torch.tensor([2.5, 2.5, 2.5, 1.0], dtype=torch.float64))
    with caplog.at_level("WARNING", logger="monai_gnerf.geometry.grids"):
        shape, coarse = grid_for_spacing((144, 144, 8), affine, 15.0)
    assert shape == (24, 24, 2)  # 20 mm thick: 2 voxels, not the 1 that 15 mm would give
    assert caplog.text.count("coarser than the 360 x 360 x 20 mm field of view") == 1
    assert torch.allclose(volume_center_mm(coarse, shape), volume_center_mm(affine, (144, 144, 8)))  # same box
    caplog.clear()
    with caplog.at_level("WARNING", logger="monai_gnerf.geometry.grids"):
        assert grid_for_spacing((144, 144, 8), affine, 10.0)[0] == (36, 36, 2)
    assert caplog.text == ""
