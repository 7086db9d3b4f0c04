"""Single-X-ray reconstruction with a trained generative prior (MedNeRF / UMedNeRF).

Given one radiograph on the model's detector (line integrals) and a trained
:class:`~monai_gnerf.networks.generator.RadianceFieldGenerator`:

1. **GAN inversion**: from several starts (the mean code, then random draws), optimize the shape
   and appearance codes (and, with ``optimize_pose``, the view angle) so the rendered view
   matches the X-ray; keep the best;
2. **generator fine-tuning**: optimize the generator's weights and the codes together, with a
   small learning rate, against the same view.

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
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from monai_gnerf.config import Config
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.losses import StructuralLoss, UncertaintyWeightedLoss, VGGFeatureLoss
from monai_gnerf.networks import RadianceFieldGenerator

__all__ = ["SingleViewConfig", "SingleViewFit", "fit_single_view"]

_LOGGER = logging.getLogger(__name__)
Weighting = Literal["fixed", "uncertainty"]


@dataclass
class SingleViewConfig(Config):
    """Options of :func:`fit_single_view`.

    Args:
        angle_deg: orbit angle of the X-ray (0 = PA), degrees; the start value if optimized.
        optimize_pose: optimize the angle jointly with the codes (pose-aware fitting).
        restarts: latent starts tried in the inversion (the mean code, then random draws); the
            best is kept.
        latent_iterations: inversion steps (codes, pose).
        finetune_iterations: generator fine-tuning steps.
        latent_lr: Adam learning rate of the codes.
        pose_lr_deg: Adam learning rate of the angle, degrees.
        finetune_lr: Adam learning rate of the generator weights.
        weighting: ``"fixed"`` (``mse_weight``, ``structural_weight``) or ``"uncertainty"``.
        mse_weight: fixed weight of the pixel MSE.
        structural_weight: fixed weight of the structural term.
        structural_loss: ``"ssim"`` (no weights needed) or ``"vgg"`` (needs ``vgg_weights``).
        vgg_weights: local torchvision ``vgg16`` state-dict file for ``"vgg"``.
        latent_prior_weight: weight of ``|z|^2 / dim`` keeping codes near the prior.
        seed: random seed of the latent starts.
    """

    angle_deg: float = 0.0
    optimize_pose: bool = False
    restarts: int = 4
    latent_iterations: int = 150
    finetune_iterations: int = 150
    latent_lr: float = 0.05
    pose_lr_deg: float = 1.0
    finetune_lr: float = 2e-4
    weighting: Weighting = "uncertainty"
    mse_weight: float = 1.0
    structural_weight: float = 0.1
    structural_loss: Literal["ssim", "vgg"] = "ssim"
    vgg_weights: str | None = None
    latent_prior_weight: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weighting not in ("fixed", "uncertainty"):
            raise GnerfInputError(f"weighting must be 'fixed' or 'uncertainty', got {self.weighting!r}.")
        if self.structural_loss not in ("ssim", "vgg"):
            raise GnerfInputError(f"structural_loss must be 'ssim' or 'vgg', got {self.structural_loss!r}.")
        if self.restarts < 1 or self.latent_iterations < 0 or self.finetune_iterations < 0:
            raise GnerfInputError("restarts must be >= 1 and iteration counts >= 0.")


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
    """

    generator: RadianceFieldGenerator
    z_shape: torch.Tensor
    z_appearance: torch.Tensor
    angle_deg: float
    history: list[float]
    task_weights: tuple[float, float]


class _Objective(nn.Module):
    """Pixel MSE + structural term, fixed or uncertainty-weighted, on display-unit images."""

    def __init__(self, config: SingleViewConfig) -> None:
        super().__init__()
        self.config = config
        self.structural = VGGFeatureLoss(config.vgg_weights) if config.structural_loss == "vgg" else StructuralLoss()
        self.uncertainty = UncertaintyWeightedLoss(2) if config.weighting == "uncertainty" else None

    def forward(self, rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = [F.mse_loss(rendered, target), self.structural(rendered[None], target[None])]
        if self.uncertainty is not None:
            return self.uncertainty(terms)
        return self.config.mse_weight * terms[0] + self.config.structural_weight * terms[1]

    def weights(self) -> tuple[float, float]:
        if self.uncertainty is None:
            return self.config.mse_weight, self.config.structural_weight
        w = self.uncertainty.weights().detach()
        return float(w[0]), float(w[1])


class _Renderer:
    """Renders the whole view of the X-ray for given codes and angle."""

    def __init__(self, geometry: ProjectionGeometry, device: torch.device) -> None:
        self.geometry = geometry
        rows, cols = geometry.pixel_grid(device)
        self.rows, self.cols = rows[None], cols[None]

    def __call__(self, generator: RadianceFieldGenerator, z_s, z_a, angle_deg: torch.Tensor) -> torch.Tensor:
        o, d = self.geometry.rays_at(angle_deg.view(1), self.rows, self.cols)
        return generator(z_s, z_a, o, d)[0].view(*self.geometry.detector_shape)


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _start_latents(model: RadianceFieldGenerator, restart: int, rng: torch.Generator, device: torch.device):
    """The first start is the prior's mean code (zeros), later starts are random draws."""
    z_s, z_a = model.sample_latents(1, rng, device)
    return (torch.zeros_like(z_s), torch.zeros_like(z_a)) if restart == 0 else (z_s, z_a)


def _latent_penalty(z_s: torch.Tensor, z_a: torch.Tensor) -> torch.Tensor:
    return (z_s.pow(2).mean() + z_a.pow(2).mean()) / 2.0


def _optimize(
    params: list[dict[str, Any]], steps: int, loss_fn, history: list[float], label: str, progress: bool
) -> float:
    """Adam over parameter groups for ``steps`` steps; returns the last loss."""
    if steps == 0:
        return float("nan")
    optimizer = torch.optim.Adam([group for group in params if group["params"]])
    loss = torch.zeros(())
    for _ in tqdm(range(steps), desc=label, disable=not progress, leave=False):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return loss.item()


def fit_single_view(
    generator: RadianceFieldGenerator,
    geometry: ProjectionGeometry,
    xray: torch.Tensor,
    config: SingleViewConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> SingleViewFit:
    """Fit the prior to one X-ray: latent inversion (from several starts), then fine-tuning.

    Args:
        generator: trained generator (left unchanged; a copy is fine-tuned).
        geometry: the model's acquisition (isocenter at the generator's origin); its detector
            must match ``xray``.
        xray: ``(rows, cols)`` line integrals on the model's detector.
        config: options (default :class:`SingleViewConfig`).
        device: ``cpu`` or ``cuda``.
        progress: show progress bars.
    """
    config = config or SingleViewConfig()
    device = torch.device(device)
    if tuple(xray.shape) != tuple(geometry.detector_shape):
        raise GnerfInputError(
            f"the X-ray {tuple(xray.shape)} does not match the model detector {geometry.detector_shape}."
        )
    target = (xray.to(device).float() / generator.config.value_scale).detach()
    model = copy.deepcopy(generator).to(device).train()
    model.requires_grad_(False)
    render = _Renderer(geometry, device)
    objective = _Objective(config).to(device)
    history: list[float] = []
    rng = torch.Generator().manual_seed(config.seed)

    def loss_of(z_s: torch.Tensor, z_a: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
        rendered = render(model, z_s, z_a, angle)
        return objective(rendered, target) + config.latent_prior_weight * _latent_penalty(z_s, z_a)

    best: tuple[Any, ...] | None = None
    for restart in range(config.restarts):
        z_s, z_a = (z.clone().requires_grad_(True) for z in _start_latents(model, restart, rng, device))
        angle = torch.tensor(float(config.angle_deg), device=device, requires_grad=config.optimize_pose)
        objective_start = copy.deepcopy(objective.state_dict())
        groups = [{"params": [z_s, z_a], "lr": config.latent_lr}, {"params": _trainable(objective), "lr": 0.01}]
        if config.optimize_pose:
            groups.append({"params": [angle], "lr": config.pose_lr_deg})
        step_loss = functools.partial(loss_of, z_s, z_a, angle)
        _optimize(groups, config.latent_iterations, step_loss, history, f"inversion {restart + 1}", progress)
        with torch.no_grad():
            mse = F.mse_loss(render(model, z_s, z_a, angle), target).item()
        if best is None or mse < best[0]:
            best = (mse, z_s.detach(), z_a.detach(), angle.detach(), copy.deepcopy(objective.state_dict()))
        objective.load_state_dict(objective_start)
    _, z_s0, z_a0, angle0, objective_state = best  # type: ignore[misc]
    objective.load_state_dict(objective_state)
    z_s, z_a = z_s0.clone().requires_grad_(True), z_a0.clone().requires_grad_(True)
    angle = angle0.clone().requires_grad_(config.optimize_pose)
    model.requires_grad_(True)

    groups = [
        {"params": list(model.parameters()), "lr": config.finetune_lr},
        {"params": [z_s, z_a], "lr": config.latent_lr * 0.1},
        {"params": _trainable(objective), "lr": 0.01},
    ]
    if config.optimize_pose:
        groups.append({"params": [angle], "lr": config.pose_lr_deg * 0.1})
    step_loss = functools.partial(loss_of, z_s, z_a, angle)
    _optimize(groups, config.finetune_iterations, step_loss, history, "fine-tuning", progress)
    model.eval().requires_grad_(False)
    _LOGGER.info(
        f"single-view fit: angle {float(angle.detach()):.1f} deg, final loss {history[-1] if history else float('nan'):.4g}"
    )
    return SingleViewFit(model, z_s.detach(), z_a.detach(), float(angle.detach()), history, objective.weights())
