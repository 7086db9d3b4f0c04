"""Single-X-ray reconstruction with a trained generative prior (MedNeRF / UMedNeRF).

Given one radiograph on the model's detector (line integrals) and a trained
:class:`~monai_gnerf.networks.generator.RadianceFieldGenerator`:

1. **GAN inversion**: from several starts (a Gauss-Newton MAP fit of the code from the prior's
   mean, then draws from the prior), optimize the shape and appearance codes (and, with
   ``optimize_pose``, the view angle) so the rendered view matches the X-ray, coarse to fine (the
   first ``coarse_fraction`` of the steps on a detector ``coarse_factor`` times smaller); keep the
   best, a start included (a search never returns a code that fits worse than where it began).
   The codes are held near the prior by ``latent_prior_weight`` times their squared Mahalanobis
   distance per dimension under the :class:`LatentPrior` (the learned distribution of the
   training subjects' codes when the generator file has one, else the standard normal the GAN
   samples from);
2. **generator fine-tuning**: optimize the generator's weights and the codes together, with a
   small learning rate, against the same view.

Both phases stop by **the discrepancy principle** (Morozov): once the input view's mean squared
error is down to ``discrepancy`` times the error the prior's MAP code leaves on views of subjects
it never saw (:attr:`LatentPrior.residual_mse`, measured when the prior is trained,
:func:`map_residual_mse`), the view is explained as well as the prior can explain a new subject;
fitting it closer fits what one view cannot tell (on held-out phantoms the unseen views got worse
with every step past that point, while a real chest, which the prior explains less well, keeps
its fine-tuning). The default fit is therefore the MAP code, then fine-tuning only as far as the
view needs: the gradient search from random starts did not beat the Gauss-Newton start on
held-out phantoms nor on a real chest, so it runs only when asked for (``restarts``,
``latent_iterations``).

``budget_s`` bounds the wall time of the whole fit; the phases share it in proportion to their
step counts.

The loss has two terms, pixel MSE and a structural term (``1 - SSIM``, or VGG16 features from a
local weights file), combined either with fixed weights (MedNeRF) or with UMedNeRF's learned
uncertainties ``L = L_1/(2 s_1^2) + L_2/(2 s_2^2) + log(s_1 s_2)``
(:class:`~monai_gnerf.losses.UncertaintyWeightedLoss`). The fitted field then renders the 360-degree
views (72 at 5 degrees) and is sampled into a volume (attenuation in 1/mm, or HU).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from monai_gnerf.config import Config, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.losses import StructuralLoss, UncertaintyWeightedLoss, VGGFeatureLoss
from monai_gnerf.networks import RadianceFieldGenerator
from monai_gnerf.progress import progress_bar

__all__ = ["LatentPrior", "SingleViewConfig", "SingleViewFit", "copy_input_views", "fit_single_view", "map_residual_mse"]

_LOGGER = logging.getLogger(__name__)
Weighting = Literal["fixed", "uncertainty", "uncertainty_ratio"]
_GAUSS_NEWTON_ITERATIONS = 2
_GAUSS_NEWTON_STEP = 0.01  # code units (the prior's codes have unit scale)


@dataclass
class SingleViewConfig(Config):
    """Options of :func:`fit_single_view`.

    Args:
        angle_deg: orbit angle of the X-ray (0 = PA), degrees; the start value if optimized.
        optimize_pose: optimize the angle jointly with the codes (pose-aware fitting).
        restarts: latent starts tried in the inversion (the Gauss-Newton MAP code, then random
            draws); the best is kept.
        latent_iterations: gradient inversion steps (codes, pose) from each start; 0 keeps the
            Gauss-Newton MAP code (the default; with ``optimize_pose`` give steps).
        finetune_iterations: generator fine-tuning steps.
        latent_lr: Adam learning rate of the codes.
        pose_lr_deg: Adam learning rate of the angle, degrees.
        finetune_lr: Adam learning rate of the generator weights.
        weighting: ``"fixed"`` (``mse_weight``, ``structural_weight``), ``"uncertainty"``
            (UMedNeRF's learned weights) or ``"uncertainty_ratio"`` (the same learned weights
            normalized to sum to 1: the learned mix of the two terms, the data term's total
            weight fixed against the latent penalty; the default: on validation phantoms it
            fitted unseen views better than both the published weights and the fixed ones).
        mse_weight: fixed weight of the pixel MSE.
        structural_weight: fixed weight of the structural term.
        structural_loss: ``"ssim"`` (no weights needed) or ``"vgg"`` (needs ``vgg_weights``).
        vgg_weights: local torchvision ``vgg16`` state-dict file for ``"vgg"``.
        latent_prior_weight: weight of the squared Mahalanobis distance per dimension of the
            codes under the latent prior.
        coarse_factor: detector downsampling of the coarse inversion steps (1: no coarse steps).
        coarse_fraction: fraction of each inversion's steps done coarse.
        budget_s: wall-time budget of the whole fit, seconds, or ``None`` (step counts only).
        discrepancy: stop the inversion and the fine-tuning once the input view's mean squared
            error is at most this multiple of the prior's calibrated residual
            (:attr:`LatentPrior.residual_mse`); ``None``, or a prior without one, runs every step.
        seed: random seed of the latent starts.
    """

    angle_deg: float = 0.0
    optimize_pose: bool = False
    restarts: PositiveInt = 1
    latent_iterations: NonNegativeInt = 0
    finetune_iterations: NonNegativeInt = 150
    latent_lr: PositiveFloat = 0.05
    pose_lr_deg: PositiveFloat = 1.0
    finetune_lr: PositiveFloat = 2e-5
    weighting: Weighting = "uncertainty_ratio"
    mse_weight: NonNegativeFloat = 1.0
    structural_weight: NonNegativeFloat = 0.1
    structural_loss: Literal["ssim", "vgg"] = "ssim"
    vgg_weights: str | None = None
    latent_prior_weight: NonNegativeFloat = 1e-3
    coarse_factor: PositiveInt = 2
    coarse_fraction: UnitInterval = 0.5
    budget_s: PositiveFloat | None = None
    discrepancy: PositiveFloat | None = 1.0
    seed: int = 0


class LatentPrior:
    """A Gaussian over the concatenated (shape, appearance) codes: starts and the inversion penalty.

    Args:
        mean: ``(D,)`` mean code.
        covariance: ``(D, D)`` covariance (symmetric positive definite).
        residual_mse: the mean squared error (display units) the MAP code leaves on the views of
            subjects the prior never saw (:func:`map_residual_mse`), or ``None`` if unmeasured.
    """

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor, residual_mse: float | None = None) -> None:
        if mean.ndim != 1 or tuple(covariance.shape) != (mean.shape[0],) * 2:
            raise GnerfInputError(f"latent prior: mean {tuple(mean.shape)} and covariance {tuple(covariance.shape)}.")
        self.mean = mean.float()
        factor, info = torch.linalg.cholesky_ex(covariance.double())
        if info.item() != 0 or not (torch.isfinite(mean).all() and torch.isfinite(factor).all()):
            raise GnerfInputError("latent prior: its mean is not finite or its covariance is not positive definite.")
        self.cholesky = factor.float()
        self.residual_mse = residual_mse

    @classmethod
    def standard_normal(cls, dim: int) -> LatentPrior:
        """The GAN's sampling distribution ``N(0, I)``."""
        return cls(torch.zeros(dim), torch.eye(dim))

    @classmethod
    def of_generator(cls, generator: RadianceFieldGenerator, extra: dict[str, Any] | None = None) -> LatentPrior:
        """The learned distribution stored in a generator file's ``extra`` (with its calibrated
        ``map_residual_mse`` when the file has one), else the standard normal."""
        extra = extra or {}
        if "latent_mean" in extra and "latent_covariance" in extra:
            residual = extra.get("map_residual_mse")
            return cls(torch.as_tensor(extra["latent_mean"]), torch.as_tensor(extra["latent_covariance"]),
                       None if residual is None else float(residual))  # fmt: skip
        return cls.standard_normal(generator.config.shape_dim + generator.config.appearance_dim)

    def sample(self, rng: torch.Generator) -> torch.Tensor:
        """One draw ``(D,)``."""
        return self.mean + self.cholesky @ torch.randn(self.mean.shape[0], generator=rng)

    def precision(self) -> torch.Tensor:
        """The inverse covariance ``(D, D)``."""
        return torch.cholesky_inverse(self.cholesky.double()).float()

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distance of ``z`` ``(D,)`` per dimension."""
        chol = self.cholesky.to(z.device)
        white = torch.linalg.solve_triangular(chol, (z - self.mean.to(z.device))[:, None], upper=False)
        return white.pow(2).mean()


@dataclass
class SingleViewFit:
    """Result of :func:`fit_single_view`.

    Attributes:
        generator: the fine-tuned copy of the generator (the input generator is unchanged).
        z_shape: fitted shape code ``(1, shape_dim)``.
        z_appearance: fitted appearance code ``(1, appearance_dim)``.
        angle_deg: fitted (or given) view angle, degrees.
        history: loss per step, both phases.
        task_weights: final weights ``(mse, structural)`` (learned or fixed).
        input_mse: the input view's mean squared error (display units) at the last loss evaluated.
        target_mse: the discrepancy target the fit stopped at, or ``None`` (every step ran).
    """

    generator: RadianceFieldGenerator
    z_shape: torch.Tensor
    z_appearance: torch.Tensor
    angle_deg: float
    history: list[float]
    task_weights: tuple[float, float]
    input_mse: float
    target_mse: float | None


class _Objective(nn.Module):
    """Pixel MSE + structural term, fixed or uncertainty-weighted, on display-unit images.

    With ``"uncertainty_ratio"`` the uncertainties learn from the terms' magnitudes exactly as with
    ``"uncertainty"`` (their own objective on the detached terms), while the image is fitted with
    the learned weights normalized to sum to 1.
    """

    def __init__(self, config: SingleViewConfig) -> None:
        super().__init__()
        self.config = config
        self.structural = VGGFeatureLoss(config.vgg_weights) if config.structural_loss == "vgg" else StructuralLoss()
        self.uncertainty = UncertaintyWeightedLoss(2) if config.weighting != "fixed" else None

    def forward(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = [F.mse_loss(rendered, target), self.structural(rendered[None], target[None])]
        if self.uncertainty is None:
            return self.config.mse_weight * terms[0] + self.config.structural_weight * terms[1]
        if self.config.weighting == "uncertainty":
            return self.uncertainty(terms)
        mix = self._ratio()
        return mix[0] * terms[0] + mix[1] * terms[1] + self.uncertainty([t.detach() for t in terms])

    def _ratio(self) -> torch.Tensor:
        w = self.uncertainty.weights().detach()
        return w / w.sum()

    def weights(self) -> tuple[float, float]:
        if self.uncertainty is None:
            return self.config.mse_weight, self.config.structural_weight
        w = self._ratio() if self.config.weighting == "uncertainty_ratio" else self.uncertainty.weights().detach()
        return float(w[0]), float(w[1])


class _Renderer:
    """Renders the whole view of the X-ray (or its coarse version) for a code and an angle."""

    def __init__(self, geometry: ProjectionGeometry, target: torch.Tensor, factor: int, device: torch.device) -> None:
        if factor > 1:
            rows, cols = (max(1, n // factor) for n in geometry.detector_shape)
            geometry = geometry.with_detector_shape(rows, cols)
            target = F.adaptive_avg_pool2d(target[None, None], (rows, cols))[0, 0]
        self.geometry, self.target = geometry, target
        rows, cols = geometry.pixel_grid(device)
        self.rows, self.cols = rows[None], cols[None]

    def __call__(self, generator: RadianceFieldGenerator, z: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
        o, d = self.geometry.rays_at(angle_deg.view(1), self.rows, self.cols)
        z_s, z_a = z[None, : generator.config.shape_dim], z[None, generator.config.shape_dim :]
        return generator(z_s, z_a, o, d)[0].view(*self.geometry.detector_shape)


def _gauss_newton_start(
    model: RadianceFieldGenerator, render: _Renderer, prior: LatentPrior, angle_deg: torch.Tensor,
    prior_weight: float, iterations: int = _GAUSS_NEWTON_ITERATIONS,
) -> torch.Tensor:
    """The code minimizing ``mean((view(z) - target)^2) + prior_weight * penalty(z)`` by Gauss-Newton.

    From the prior's mean, each iteration linearizes the rendered view in the code (a Jacobian
    by central differences of ``_GAUSS_NEWTON_STEP``, all codes rendered in one batch: any
    architecture, no forward-mode AD needed) and solves the regularized normal equations. For a
    generator linear in its code (the grid generator's PCA path) one iteration is the MAP fit of
    that linear model, the start a linear baseline would give; the decoder's non-linearity is
    followed by the next iterations and by the gradient inversion that starts from the result.
    """
    device = render.target.device
    mean = prior.mean.to(device)
    dim, pixels = mean.shape[0], render.target.numel()
    precision = prior.precision().to(device).double() * prior_weight / dim
    steps = _GAUSS_NEWTON_STEP * torch.eye(dim, device=device)
    o, d = render.geometry.rays_at(angle_deg.detach().view(1), render.rows, render.cols)
    z = mean.clone()
    with torch.no_grad():
        for _ in range(iterations):
            codes = torch.cat([z[None], z + steps, z - steps])
            views = model(codes[:, : model.config.shape_dim], codes[:, model.config.shape_dim :],
                          o.expand(len(codes), -1, -1), d.expand(len(codes), -1, -1))  # fmt: skip
            jacobian = ((views[1 : dim + 1] - views[dim + 1 :]) / (2.0 * _GAUSS_NEWTON_STEP)).T.double()  # (pixels, D)
            residual = (render.target.flatten() - views[0]).double()
            normal = jacobian.T @ jacobian / pixels + precision
            gradient = jacobian.T @ residual / pixels - precision @ (z - mean).double()
            z = z + torch.linalg.solve(normal, gradient).float()
    return z


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


class _Clock:
    """Deadlines of the fit's phases: each gets the budget's share of its steps."""

    def __init__(self, budget_s: float | None, total_steps: int) -> None:
        self.budget_s, self.total_steps = budget_s, max(1, total_steps)
        self.start = time.monotonic()
        self.granted_s = 0.0

    def out_of_time(self) -> bool:
        """Whether the whole budget is spent (never without one)."""
        return self.budget_s is not None and time.monotonic() > self.start + self.budget_s

    def grant(self, steps: int) -> float:
        """The deadline (monotonic seconds) of a phase of ``steps`` steps; ``inf`` without a budget."""
        if self.budget_s is None:
            return math.inf
        self.granted_s += self.budget_s * steps / self.total_steps
        return self.start + self.granted_s


def _optimize(
    params: list[dict[str, Any]], steps: int, loss_fn, history: list[float], label: str, progress: bool,
    deadline: float = math.inf, done: Callable[[], bool] | None = None,
) -> float:
    """Adam over parameter groups for ``steps`` steps, until ``deadline`` or until ``done()`` holds
    after a loss evaluation (that step is not taken); returns the last loss.

    The progress bar counts steps, or, when a deadline stops the phase, seconds up to the deadline
    (``label (s) [elapsed/granted]``, its ETA the time left), with the step count beside it.
    """
    if steps == 0:
        return float("nan")
    optimizer = torch.optim.Adam([group for group in params if group["params"]])
    loss = torch.zeros(())
    start, timed = time.monotonic(), math.isfinite(deadline)
    total = max(1, round(deadline - start)) if timed else steps
    bar = progress_bar(total=total, desc=f"{label} (s)" if timed else label, disable=not progress, leave=False)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        history.append(loss.item())
        if not math.isfinite(history[-1]):
            bar.close()
            raise GnerfInputError(f"the single-view fit diverged in its {label} at step {step + 1} (loss "
                                  f"{history[-1]}): lower the learning rates (finetune_lr, latent_lr).")  # fmt: skip
        if done is not None and done():
            break
        loss.backward()
        optimizer.step()
        if timed:
            bar.update(min(round(time.monotonic() - start), total) - bar.n)
            bar.set_postfix_str(f"step {step + 1}/{steps}", refresh=False)
        else:
            bar.update(1)
        if time.monotonic() > deadline:
            break
    bar.close()
    return loss.item()


class _Discrepancy:
    """The input view's mean squared error as the fit goes, against the discrepancy target.

    ``record`` keeps the error of each full-resolution render the loss makes (no extra render);
    ``reached()`` says whether the last one is at most the target (never without a target).
    """

    def __init__(self, target_mse: float | None) -> None:
        self.target_mse, self.mse = target_mse, math.inf

    def record(self, rendered: torch.Tensor, target: torch.Tensor) -> None:
        self.mse = F.mse_loss(rendered.detach(), target).item()

    def reached(self) -> bool:
        return self.target_mse is not None and self.mse <= self.target_mse


def _map_start(
    model: RadianceFieldGenerator, coarse: _Renderer, prior: LatentPrior, config: SingleViewConfig
) -> torch.Tensor:
    """The Gauss-Newton MAP code of the fit's first start (on the coarse detector)."""
    return _gauss_newton_start(model, coarse, prior, torch.tensor(float(config.angle_deg)), config.latent_prior_weight)


def _renderers(geometry: ProjectionGeometry, target: torch.Tensor, config: SingleViewConfig, device: torch.device):
    """The full-resolution renderer of the view and its coarse one (the same with ``coarse_factor`` 1)."""
    fine = _Renderer(geometry, target, 1, device)
    return fine, (_Renderer(geometry, target, config.coarse_factor, device) if config.coarse_factor > 1 else fine)


def map_residual_mse(
    generator: RadianceFieldGenerator, geometry: ProjectionGeometry, views: torch.Tensor,
    latent_prior: LatentPrior, config: SingleViewConfig | None = None, device: torch.device | str = "cpu",
) -> float:  # fmt: skip
    """Mean squared error (display units) the prior's MAP code leaves on views of unseen subjects.

    What :attr:`LatentPrior.residual_mse` holds: measured when a prior is trained, on subjects of
    its population that it never saw, with the fit's own MAP start (:func:`fit_single_view`).

    Args:
        generator: the trained generator.
        geometry: its acquisition (isocenter at the generator's origin).
        views: ``(N, rows, cols)`` line integrals at ``config.angle_deg`` of ``N`` unseen subjects.
        latent_prior: the learned latent distribution.
        config: the fit's options (default :class:`SingleViewConfig`).
        device: ``cpu`` or ``cuda``.
    """
    config = config or SingleViewConfig()
    device = torch.device(device)
    model = generator.to(device).eval()
    errors = []
    with torch.no_grad():
        for view in views:
            target = view.to(device).float() / generator.config.value_scale
            fine, coarse = _renderers(geometry, target, config, device)
            z = _map_start(model, coarse, latent_prior, config).to(device)
            errors.append(F.mse_loss(fine(model, z, torch.tensor(float(config.angle_deg), device=device)), target).item())
    return sum(errors) / len(errors)


def fit_single_view(
    generator: RadianceFieldGenerator,
    geometry: ProjectionGeometry,
    xray: torch.Tensor,
    config: SingleViewConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    latent_prior: LatentPrior | None = None,
) -> SingleViewFit:
    """Fit the prior to one X-ray: latent inversion (from several starts, coarse to fine), then fine-tuning.

    Args:
        generator: trained generator (left unchanged; a copy is fine-tuned).
        geometry: the model's acquisition (isocenter at the generator's origin); its detector
            must match ``xray``.
        xray: ``(rows, cols)`` line integrals on the model's detector.
        config: options (default :class:`SingleViewConfig`).
        device: ``cpu`` or ``cuda``.
        progress: show progress bars.
        latent_prior: the codes' prior (default: the standard normal).
    """
    config = config or SingleViewConfig()
    device = torch.device(device)
    if tuple(xray.shape) != tuple(geometry.detector_shape):
        raise GnerfInputError(
            f"the X-ray {tuple(xray.shape)} does not match the model detector {geometry.detector_shape}."
        )
    prior = latent_prior or LatentPrior.standard_normal(generator.config.shape_dim + generator.config.appearance_dim)
    target = (xray.to(device).float() / generator.config.value_scale).detach()
    model = copy.deepcopy(generator).to(device).train()
    model.requires_grad_(False)
    fine, coarse = _renderers(geometry, target, config, device)
    objective = _Objective(config).to(device)
    history: list[float] = []
    rng = torch.Generator().manual_seed(config.seed)
    clock = _Clock(config.budget_s, config.restarts * config.latent_iterations + config.finetune_iterations)
    discrepancy = _Discrepancy(None if config.discrepancy is None or prior.residual_mse is None
                               else config.discrepancy * prior.residual_mse)  # fmt: skip

    def loss_of(render: _Renderer, z: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        rendered = render(model, z, angle)
        if render is fine:
            discrepancy.record(rendered, render.target)
        return objective(rendered, render.target) + config.latent_prior_weight * prior.penalty(z)

    def invert(z: torch.Tensor, angle: torch.Tensor, label: str) -> None:
        coarse_steps = round(config.latent_iterations * config.coarse_fraction) if coarse is not fine else 0
        groups = [{"params": [z], "lr": config.latent_lr}, {"params": _trainable(objective), "lr": 0.01}]
        if config.optimize_pose:
            groups.append({"params": [angle], "lr": config.pose_lr_deg})
        for render, steps in ((coarse, coarse_steps), (fine, config.latent_iterations - coarse_steps)):
            step_loss = functools.partial(loss_of, render, z, angle)
            stop = discrepancy.reached if render is fine else None
            _optimize(groups, steps, step_loss, history, label, progress, clock.grant(steps), stop)

    def candidate(z: torch.Tensor, angle: torch.Tensor) -> tuple[Any, ...]:
        """(input-view MSE, code, angle, uncertainty state), the error also recorded as the fit's."""
        with torch.no_grad():
            discrepancy.record(fine(model, z, angle), target)
        return discrepancy.mse, z.detach().clone(), angle.detach().clone(), copy.deepcopy(objective.state_dict())

    best: tuple[Any, ...] | None = None
    for restart in range(config.restarts):
        if restart > 0 and clock.out_of_time():
            _LOGGER.warning(f"single-view fit: the budget of {config.budget_s:g} s was spent after {restart} of "
                            f"{config.restarts} restarts; keeping the best of those.")  # fmt: skip
            break
        start = _map_start(model, coarse, prior, config) if restart == 0 else prior.sample(rng)
        z = start.to(device).requires_grad_(True)
        angle = torch.tensor(float(config.angle_deg), device=device, requires_grad=config.optimize_pose)
        found = [candidate(z, angle)]
        if not discrepancy.reached():
            invert(z, angle, f"inversion {restart + 1}/{config.restarts}")
            found.append(candidate(z, angle))
        objective.load_state_dict(found[0][3])
        best = min([*found, *([best] if best else [])], key=lambda c: c[0])
    _, z0, angle0, objective_state = best  # type: ignore[misc]
    discrepancy.mse = best[0]  # type: ignore[index]
    objective.load_state_dict(objective_state)
    z = z0.clone().requires_grad_(True)
    angle = angle0.clone().requires_grad_(config.optimize_pose)
    model.requires_grad_(True)

    groups = [
        {"params": list(model.parameters()), "lr": config.finetune_lr},
        {"params": [z], "lr": config.latent_lr * 0.1},
        {"params": _trainable(objective), "lr": 0.01},
    ]
    if config.optimize_pose:
        groups.append({"params": [angle], "lr": config.pose_lr_deg * 0.1})
    step_loss = functools.partial(loss_of, fine, z, angle)
    deadline = clock.grant(config.finetune_iterations)
    if not discrepancy.reached():
        _optimize(groups, config.finetune_iterations, step_loss, history, "fine-tuning", progress, deadline, discrepancy.reached)
    model.eval().requires_grad_(False)
    _LOGGER.info(
        f"single-view fit: angle {float(angle.detach()):.1f} deg, input-view MSE {discrepancy.mse:.3g}"
        + (f" (discrepancy target {discrepancy.target_mse:.3g})" if discrepancy.target_mse is not None else "")
    )
    z = z.detach()[None]
    shape_dim = generator.config.shape_dim
    return SingleViewFit(
        model, z[:, :shape_dim], z[:, shape_dim:], float(angle.detach()), history, objective.weights(),
        discrepancy.mse, discrepancy.target_mse,
    )


def copy_input_views(view: torch.Tensor, num_views: int) -> torch.Tensor:
    """The trivial single-view baseline: the input at every angle of a full orbit, mirrored
    left-right for the back half (angles strictly between 90 and 270 degrees), ``(V, H, W)``."""
    back = [90.0 < 360.0 * v / num_views < 270.0 for v in range(num_views)]
    return torch.stack([view.flip(-1) if is_back else view for is_back in back])
