"""Test-set evaluation: 3D metrics of reconstructed volumes, 2D metrics of projection sets.

Conventions (those of NAF and SAX-NeRF for volumes, of MedNeRF for projections), always with an
explicit ``data_range``:

* Volumes (HU) are clipped below at -1000 HU (air, where HU -> attenuation clips), the
  reference is brought onto the prediction's grid (area-averaged when coarser; the grids must
  cover the same box, as every reconstruction of ``monai-gnerf`` does), both are min-max
  normalized with the reference's range (:func:`~monai_gnerf.metrics.image.normalize_to_reference`)
  and compared with ``data_range=1``. Clipping then normalizing in HU gives the same numbers as
  normalizing attenuation, which is what the reconstruction's own validation reports.
* Projection sets (line integrals) are min-max normalized with the reference stack's range and
  compared view by view with ``data_range=1``; a case's value is the mean over its views.
* Test-set metrics (distribution metrics such as FID/KID) see all normalized views of all cases
  at once: pass them as ``test_set_metrics_2d`` (the hook ``bundle/configs/evaluate.json`` uses);
  :func:`feature_set_metric` builds one from a feature distance of
  :mod:`monai_gnerf.metrics.features` and a feature extractor.

The volume half runs as a MONAI evaluation (what ``bundle/configs/evaluate.json`` composes):
:func:`volume_datalist` pairs the files, :class:`NormalizedVolumePaird` loads a pair and applies
the conventions above, and :func:`volume_evaluator` is a ``SupervisedEvaluator`` (the
reconstruction is the prediction: an identity network) with one ``IgniteMetricHandler`` of
:class:`ImagePairMetric` per metric, whose per-case details become ``metrics_3d.csv``.

Pairing (:func:`volume_pairs`, :func:`projection_pairs`): references are one CT or a folder of
CTs (cases as in :func:`monai_gnerf.data.ct_cases`); the reconstruction of case
``c`` is ``reconstructions/c/reconstruction.nii.gz`` (what ``reconstruct.json --output_dir
reconstructions/c`` writes) or ``reconstructions/c.nii.gz``. Reference projections are one
projection folder or a folder of them (``c/geometry.json``), matched by folder name.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from monai.inferers import Inferer, SimpleInferer
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.transforms import MapTransform
from monai.utils import CommonKeys
from torch import nn

from monai_gnerf.config import path_text
from monai_gnerf.data import ct_cases, is_ct_collection, resolve_ct_path
from monai_gnerf.errors import ErrorsReportedOnce, GnerfInputError, input_errors_surface
from monai_gnerf.geometry import resample_area, resampled_affine
from monai_gnerf.io import atomic_output_dir, check_output, load_ct, load_projections, write_json
from monai_gnerf.metrics.features import RandomConvFeatures, TorchScriptFeatures, extract_features
from monai_gnerf.metrics.image import gmsd, normalize_to_reference, psnr, ssim

__all__ = [
    "AIR_HU",
    "ImagePairMetric",
    "NormalizedVolumePaird",
    "volume_datalist",
    "volume_evaluator",
    "METRICS_2D",
    "METRICS_3D",
    "RECONSTRUCTION_FILE",
    "PairMetric",
    "SetMetric",
    "evaluate_test_set",
    "feature_set_metric",
    "projection_metrics",
    "projection_pairs",
    "normalized_volumes",
    "reference_on_grid",
    "volume_metrics",
    "volume_pairs",
]

PairMetric = Callable[[torch.Tensor, torch.Tensor, float], float]
"""``metric(prediction, target, data_range) -> float`` on one image or volume."""
SetMetric = Callable[[torch.Tensor, torch.Tensor], float]
"""``metric(predicted_views, reference_views) -> float`` on ``(N, H, W)`` stacks in [0, 1]."""

AIR_HU = -1000.0
METRICS_3D: dict[str, PairMetric] = {"psnr_db": psnr, "ssim": ssim}
METRICS_2D: dict[str, PairMetric] = {"psnr_db": psnr, "ssim": ssim, "gmsd": gmsd}
RECONSTRUCTION_FILE = "reconstruction.nii.gz"
_BOX_TOLERANCE_MM = 0.01
_LOGGER = logging.getLogger(__name__)


def reference_on_grid(
    reference: torch.Tensor,
    reference_affine: torch.Tensor,
    shape: Sequence[int],
    affine: torch.Tensor,
) -> torch.Tensor:
    """Resample a reference volume onto another grid covering the same box.

    Area-averaging (anti-aliased) when the target grid is coarser along every axis, trilinear
    interpolation otherwise; the grid itself when it is the same.

    Raises:
        GnerfInputError: the grids do not cover the same box (different field of view or orientation).
    """
    shape = tuple(int(n) for n in shape)
    reference_affine = torch.as_tensor(reference_affine, dtype=torch.float64)
    expected = resampled_affine(reference_affine, tuple(reference.shape), shape)
    if not torch.allclose(expected, torch.as_tensor(affine, dtype=torch.float64), atol=_BOX_TOLERANCE_MM, rtol=0):
        raise GnerfInputError(
            f"the prediction grid {list(shape)} does not cover the reference's box {list(reference.shape)}: "
            "compare reconstructions made from projections of that reference."
        )
    if shape == tuple(reference.shape):
        return reference
    if all(n <= m for n, m in zip(shape, reference.shape)):
        return resample_area(reference, shape)
    return F.interpolate(reference[None, None].float(), size=shape, mode="trilinear", align_corners=False)[0, 0]


def volume_metrics(
    prediction_hu: torch.Tensor,
    reference_hu: torch.Tensor,
    metrics: Mapping[str, PairMetric] | None = None,
) -> dict[str, float]:
    """3D metrics of a volume against a reference on the same grid, both in HU (see module docstring)."""
    estimate, truth = normalized_volumes(prediction_hu, reference_hu)
    return {name: float(metric(estimate, truth, 1.0)) for name, metric in (metrics or METRICS_3D).items()}


def _check_range(reference: torch.Tensor, what: str) -> None:
    """The metrics normalize by the reference's range: a constant reference has none."""
    if reference.numel() and reference.max() == reference.min():
        raise GnerfInputError(f"the {what} is constant ({float(reference.max()):.6g} everywhere): "
                              "the metrics normalize by its range, which is zero.")  # fmt: skip


def normalized_volumes(prediction_hu: torch.Tensor, reference_hu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A volume and its reference on the same grid (HU) as the 3D metrics compare them: clipped
    below at :data:`AIR_HU`, min-max normalized with the reference's range (float64)."""
    if prediction_hu.shape != reference_hu.shape:
        raise GnerfInputError(f"volume shapes differ: {tuple(prediction_hu.shape)} vs {tuple(reference_hu.shape)}.")
    reference = reference_hu.double().clamp(min=AIR_HU)
    _check_range(reference, "reference volume (clipped at air)")
    return normalize_to_reference(prediction_hu.double().clamp(min=AIR_HU), reference)


def _normalized_views(prediction: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if prediction.shape != reference.shape:
        raise GnerfInputError(
            f"projection stacks differ in shape: {tuple(prediction.shape)} vs reference {tuple(reference.shape)}."
        )
    _check_range(reference, "reference projection stack")
    return normalize_to_reference(prediction.double(), reference.double())


def projection_metrics(
    prediction: torch.Tensor,
    reference: torch.Tensor,
    metrics: Mapping[str, PairMetric] | None = None,
) -> dict[str, float]:
    """2D metrics of a projection stack ``(views, rows, cols)`` against a reference: mean over views."""
    estimate, truth = _normalized_views(prediction, reference)
    return {
        name: float(sum(metric(e, t, 1.0) for e, t in zip(estimate, truth)) / len(truth))
        for name, metric in (metrics or METRICS_2D).items()
    }


def feature_set_metric(
    distance: Callable[[torch.Tensor, torch.Tensor], float | tuple[float, ...]],
    extractor: nn.Module | str | Path | None = None,
    batch_size: int = 64,
) -> SetMetric:
    """A test-set metric from a feature-space distance and a feature extractor.

    The extractor is made here, so a missing or unreadable file is refused (as a
    :class:`~monai_gnerf.errors.GnerfInputError`) before an evaluation writes anything.

    Args:
        distance: e.g. :func:`monai_gnerf.metrics.features.frechet_distance` (FID) or
            :func:`~monai_gnerf.metrics.features.kernel_inception_distance` (KID; of its
            ``(mean, standard error)`` the mean is kept).
        extractor: a module mapping grey images ``(N, H, W)`` in [0, 1] to features ``(N, D)``;
            a path: a local TorchScript network (e.g. Inception-v3) loaded by
            :class:`~monai_gnerf.metrics.features.TorchScriptFeatures`; None: the fixed random CNN
            :class:`~monai_gnerf.metrics.features.RandomConvFeatures` (values comparable between
            runs of this project only, not with published Inception FID/KID).
        batch_size: images per extractor call.

    Returns:
        ``metric(predicted_views, reference_views) -> float`` for ``test_set_metrics_2d``; its
        ``description`` attribute names the features.
    """
    if extractor is None:
        extractor = RandomConvFeatures()
    elif not isinstance(extractor, nn.Module):
        extractor = TorchScriptFeatures(extractor)

    def features_of(views: torch.Tensor) -> torch.Tensor:
        return extract_features(views.float(), extractor, batch_size)

    def metric(predicted_views: torch.Tensor, reference_views: torch.Tensor) -> float:
        with torch.no_grad():
            value = distance(features_of(predicted_views), features_of(reference_views))
        return float(value[0] if isinstance(value, tuple) else value)

    if isinstance(extractor, nn.Module):
        features = type(extractor).__name__
    elif extractor is None:
        features = "RandomConvFeatures() (fixed random CNN: compare runs of this project only)"
    else:
        features = f"TorchScript network {extractor}"
    metric.description = f"{getattr(distance, '__name__', 'distance')} of {features} features"  # type: ignore[attr-defined]
    return metric


def _reconstruction_of(reconstructions: Path, name: str, single: bool) -> Path:
    if single and reconstructions.is_file():
        return reconstructions
    candidates = [reconstructions / RECONSTRUCTION_FILE] if single else []
    candidates += [reconstructions / name / RECONSTRUCTION_FILE, reconstructions / f"{name}.nii.gz"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise GnerfInputError(f"no reconstruction for case {name!r}: looked for {', '.join(map(str, candidates))}.")


def volume_pairs(reconstructions: str | Path, references: str | Path) -> list[tuple[str, Path, Path]]:
    """``(case, reconstruction, reference)`` triples of a test set (pairing: see module docstring).

    Args:
        reconstructions: a reconstruction NIfTI, or a folder of them.
        references: a reference CT (file, DICOM folder or ``example``), or a folder of CTs.
    """
    reconstructions = Path(path_text("reconstructions", reconstructions))
    references = path_text("references", references)
    if not reconstructions.exists():
        raise GnerfInputError(f"reconstructions not found: {reconstructions}")
    single = not is_ct_collection(references)
    return [(name, _reconstruction_of(reconstructions, name, single), ref) for name, ref in ct_cases(references)]


def projection_pairs(projections: str | Path, reference_projections: str | Path) -> list[tuple[str, Path, Path]]:
    """``(case, projection folder, reference projection folder)`` triples (pairing: see module docstring)."""
    projections = Path(path_text("projections", projections))
    reference_projections = Path(path_text("reference_projections", reference_projections))
    for path in (projections, reference_projections):
        if not path.is_dir():
            raise GnerfInputError(f"projection folder not found: {path}")
    if (reference_projections / "geometry.json").is_file():
        return [(reference_projections.name, projections, reference_projections)]
    cases = sorted(p for p in reference_projections.iterdir() if (p / "geometry.json").is_file())
    if not cases:
        raise GnerfInputError(f"{reference_projections} holds no projection folder (no geometry.json).")
    missing = [p.name for p in cases if not (projections / p.name).is_dir()]
    if missing:
        raise GnerfInputError(f"{projections} lacks the projection folders of cases: {', '.join(missing)}.")
    return [(p.name, projections / p.name, p) for p in cases]


def _mean(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, float]:
    return {name: sum(row[name] for row in rows) / len(rows) for name in names} if rows else {}


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class ImagePairMetric(CumulativeIterationMetric):
    """A pair metric of this library (``metric(prediction, target, data_range)``: PSNR, SSIM, GMSD)
    as a MONAI metric: one value per batch item, the mean (or ``reduction``) over all items.

    Args:
        metric: the pair metric.
        data_range: its explicit data range.
        reduction: MONAI's reduction of the per-item values.
    """

    def __init__(self, metric: PairMetric, data_range: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.metric, self.data_range, self.reduction = metric, data_range, reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        values = [float(self.metric(p[0], t[0], self.data_range)) for p, t in zip(y_pred, y)]
        return torch.tensor(values, dtype=torch.float64)[:, None]

    def aggregate(self) -> torch.Tensor:
        value, _ = do_metric_reduction(self.get_buffer(), self.reduction)
        return value


class NormalizedVolumePaird(MapTransform):
    """Load a (reconstruction, reference) pair of files and apply the volume conventions of the module.

    The reference (HU) is brought onto the reconstruction's grid, both are clipped below at
    :data:`AIR_HU` and min-max normalized with the reference's range; each becomes a
    ``(1, X, Y, Z)`` ``MetaTensor`` with the reconstruction's affine.

    Args:
        keys: the reconstruction's key and the reference's key, in that order.
    """

    def __init__(self, keys: Sequence[str] = (CommonKeys.IMAGE, CommonKeys.LABEL)) -> None:
        super().__init__(keys)
        self.prediction_key, self.reference_key = tuple(self.keys)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        prediction, reference = load_ct(d[self.prediction_key]), load_ct(resolve_ct_path(d[self.reference_key]))
        # clipped before it is averaged, as attenuation is (HU -> attenuation clips at air): a
        # CT's padding (-2048 HU) must not drag a boundary voxel below what its tissue gives
        clipped = reference.as_tensor().clamp(min=AIR_HU)
        truth = reference_on_grid(clipped, reference.affine, prediction.shape, prediction.affine)
        estimate, truth = normalized_volumes(prediction.as_tensor(), truth)
        for key, value in ((self.prediction_key, estimate), (self.reference_key, truth)):
            d[key] = MetaTensor(value[None], affine=prediction.affine, meta={"filename_or_obj": str(d[key])})
        return d


def volume_datalist(reconstructions: str | Path, references: str | Path) -> list[dict[str, str]]:
    """The test set as MONAI data: ``{"case", "image": reconstruction, "label": reference}`` per case
    (pairing: :func:`volume_pairs`)."""
    return [{"case": name, CommonKeys.IMAGE: str(prediction), CommonKeys.LABEL: str(reference)}
            for name, prediction, reference in volume_pairs(reconstructions, references)]  # fmt: skip


def volume_evaluator(
    data_loader: DataLoader,
    metrics: Mapping[str, PairMetric] | None = None,
    network: nn.Module | None = None,
    inferer: Inferer | None = None,
    handlers: Sequence[Any] | None = None,
    device: torch.device | str = "cpu",
) -> SupervisedEvaluator:
    """A ``SupervisedEvaluator`` of volume pairs (:class:`NormalizedVolumePaird` data).

    Args:
        data_loader: batches of normalized pairs.
        metrics: name -> pair metric (default :data:`METRICS_3D`), each an ``IgniteMetricHandler``
            of :class:`ImagePairMetric` with ``data_range=1`` that keeps its per-case details;
            the first is the key metric.
        network: maps a reconstruction to the prediction (default the identity).
        inferer: default MONAI's ``SimpleInferer``.
        handlers: evaluation handlers (e.g. ``StatsHandler``, ``MetricsSaver``).
        device: where the pairs are compared.
    """
    pairs = from_engine([CommonKeys.PRED, CommonKeys.LABEL])
    made = {name: IgniteMetricHandler(ImagePairMetric(metric, 1.0), output_transform=pairs, save_details=True)
            for name, metric in (metrics if metrics is not None else METRICS_3D).items()}  # fmt: skip
    first = next(iter(made))
    evaluator = SupervisedEvaluator(
        device=torch.device(device), val_data_loader=data_loader, network=network or nn.Identity(),
        inferer=inferer or SimpleInferer(), key_val_metric={first: made[first]},
        additional_metrics={k: v for k, v in made.items() if k != first} or None,
    )  # fmt: skip
    for handler in (ErrorsReportedOnce(), *(handlers or ())):  # a bad input is reported once, by the caller
        handler.attach(evaluator)
    return evaluator


def _run_evaluator(evaluator: SupervisedEvaluator) -> None:
    """Run an evaluation quietly (no Ignite run lines); a bad input (an unreadable file, grids that
    do not match) comes out as its own :class:`GnerfInputError`, which the caller reports once."""
    level = evaluator.logger.level
    evaluator.logger.setLevel(logging.CRITICAL)
    try:
        with input_errors_surface():
            evaluator.run()
    finally:
        evaluator.logger.setLevel(level)


def _volume_rows(evaluator: SupervisedEvaluator, datalist: list[dict[str, str]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Run a volume evaluator: one row per case with its grid and metrics (the handlers' details), and the metric names."""
    shapes: list[list[int]] = []

    def record_shapes(engine: SupervisedEvaluator) -> None:  # the batch is decollated by now: one dict per case
        shapes.extend(list(item[CommonKeys.IMAGE].shape[1:]) for item in engine.state.batch)

    evaluator.add_event_handler(Events.ITERATION_COMPLETED, record_shapes)
    try:
        _run_evaluator(evaluator)
    finally:
        evaluator.remove_event_handler(record_shapes, Events.ITERATION_COMPLETED)
    details = {name: values.flatten().tolist() for name, values in evaluator.state.metric_details.items()}
    rows = []
    for i, item in enumerate(datalist):
        values = {name: float(column[i]) for name, column in details.items()}
        _LOGGER.info(f"3D {item['case']}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        rows.append({"case": item["case"], "prediction": item[CommonKeys.IMAGE], "reference": item[CommonKeys.LABEL],
                     "shape": shapes[i], **values})  # fmt: skip
    return rows, list(details)


def evaluate_test_set(
    output_dir: str | Path,
    reconstructions: str | Path | None = None,
    references: str | Path | None = None,
    projections: str | Path | None = None,
    reference_projections: str | Path | None = None,
    metrics_3d: Mapping[str, PairMetric] | None = None,
    metrics_2d: Mapping[str, PairMetric] | None = None,
    test_set_metrics_2d: Mapping[str, SetMetric] | None = None,
    evaluator: SupervisedEvaluator | None = None,
) -> dict[str, Any]:
    """Evaluate reconstructions against reference CTs and/or projection sets against reference ones.

    Writes ``output_dir/metrics_3d.csv`` (columns ``case, prediction, reference`` and one per
    3D metric), ``output_dir/metrics_2d.csv`` (``case, prediction, reference, views`` and one
    per 2D metric) for the kinds evaluated, and ``output_dir/metrics.json`` (per-case rows, means
    and test-set metrics; strict JSON, so the infinite PSNR of an exact copy is ``null``), all
    written once every case is scored: a case that fails leaves no metric file.

    Args:
        output_dir: folder for the CSV and JSON files.
        reconstructions: reconstruction NIfTI (HU) or folder of them; needs ``references``.
        references: reference CT (HU) or folder of CTs.
        projections: projection folder or folder of them; needs ``reference_projections``.
        reference_projections: reference projection folder or folder of them.
        metrics_3d: name -> ``metric(prediction, target, data_range)``; default :data:`METRICS_3D`.
        metrics_2d: name -> per-view metric; default :data:`METRICS_2D`.
        test_set_metrics_2d: name -> ``metric(predicted_views, reference_views)`` over all views of
            all cases (e.g. FID/KID); default none.
        evaluator: the volume evaluation (:func:`volume_evaluator` over the data of
            :func:`volume_datalist` in this order, as ``evaluate.json`` builds it); default one of
            ``metrics_3d``. Its metrics (the handlers' per-case details) are the 3D columns.

    Returns:
        The content of ``metrics.json``.

    Raises:
        GnerfInputError: nothing to evaluate, a missing file or case, or mismatched grids/shapes.
    """
    if (reconstructions is None) != (references is None):
        raise GnerfInputError("give both reconstructions and references, or neither.")
    if (projections is None) != (reference_projections is None):
        raise GnerfInputError("give both projections and reference_projections, or neither.")
    if reconstructions is None and projections is None:
        raise GnerfInputError(
            "nothing to evaluate: give reconstructions and references (3D) and/or projections and "
            "reference_projections (2D)."
        )
    metrics_3d = dict(metrics_3d if metrics_3d is not None else METRICS_3D)
    metrics_2d = dict(metrics_2d if metrics_2d is not None else METRICS_2D)
    test_set_metrics_2d = dict(test_set_metrics_2d or {})
    output_dir = check_output(path_text("output_dir", output_dir), "dir", overwrite=True)  # metric files are rewritten
    summary: dict[str, Any] = {
        "data_range": 1.0,
        "normalization": "min-max with the reference's range; volumes clipped below at -1000 HU first",
        "outputs": {},
    }
    tables: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}  # file name -> rows, columns
    if reconstructions is not None and references is not None:
        datalist = volume_datalist(reconstructions, references)
        if evaluator is None:
            loader = DataLoader(Dataset(datalist, NormalizedVolumePaird()), batch_size=1)
            evaluator = volume_evaluator(loader, metrics_3d)
        rows, names = _volume_rows(evaluator, datalist)
        tables["metrics_3d.csv"] = (rows, ["case", "prediction", "reference", *names])
        summary["volumes"] = {"metrics": names, "cases": rows, "mean": _mean(rows, names)}
    if projections is not None and reference_projections is not None:
        rows, all_estimates, all_truths = [], [], []
        for name, prediction_dir, reference_dir in projection_pairs(projections, reference_projections):
            prediction, _ = load_projections(prediction_dir)
            reference, _ = load_projections(reference_dir)
            values = projection_metrics(prediction.as_tensor(), reference.as_tensor(), metrics_2d)
            _LOGGER.info(f"2D {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            rows.append({"case": name, "prediction": str(prediction_dir), "reference": str(reference_dir),
                         "views": int(reference.shape[0]), **values})  # fmt: skip
            if test_set_metrics_2d:
                estimate, truth = _normalized_views(prediction.as_tensor(), reference.as_tensor())
                all_estimates.append(estimate)
                all_truths.append(truth)
        test_set: dict[str, float] = {}
        if test_set_metrics_2d:
            if len({tuple(t.shape[1:]) for t in all_truths}) > 1:
                raise GnerfInputError("test-set metrics need projections of one detector size in every case.")
            estimates, truths = torch.cat(all_estimates), torch.cat(all_truths)
            test_set = {name: float(metric(estimates, truths)) for name, metric in test_set_metrics_2d.items()}
        tables["metrics_2d.csv"] = (rows, ["case", "prediction", "reference", "views", *metrics_2d])
        summary["projections"] = {
            "metrics": list(metrics_2d),
            "cases": rows,
            "mean": _mean(rows, list(metrics_2d)),
            "test_set": test_set,
            "test_set_descriptions": {
                name: getattr(metric, "description", "") for name, metric in test_set_metrics_2d.items()
            },
        }
    summary["outputs"] = {name.replace(".", "_"): str(output_dir / name) for name in [*tables, "metrics.json"]}
    with atomic_output_dir(output_dir) as staging:  # every case scored before any file is written
        for name, (rows, columns) in tables.items():
            _write_csv(staging / name, rows, columns)
        write_json(staging / "metrics.json", summary)
    for kind in ("volumes", "projections"):
        for name, value in summary.get(kind, {}).get("mean", {}).items():
            _LOGGER.info(f"mean {kind} {name}: {value:.4f}" if math.isfinite(value) else f"mean {kind} {name}: {value}")
    return summary
