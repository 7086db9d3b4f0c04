"""Image-quality metrics for projections (2D) and volumes (3D) with an explicit data range.

Every metric takes ``data_range`` explicitly: inferring it from the dtype or from the data
silently shifts PSNR by decibels. For volumes, the convention of NAF/SAX-NeRF is to min-max
normalize with the ground truth's range first (:func:`normalize_to_reference`) and use
``data_range=1``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["normalize_to_reference", "psnr", "ssim_map", "ssim", "gmsd"]


def normalize_to_reference(volume: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map both tensors with the reference's min-max to [0, 1]; the estimate is clipped to [0, 1]."""
    low, high = reference.min(), reference.max()
    scale = (high - low).clamp(min=torch.finfo(reference.dtype).tiny)
    return ((volume - low) / scale).clamp(0.0, 1.0), (reference - low) / scale


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``."""
    mse = F.mse_loss(prediction.double(), target.double()).item()
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gaussian_blur(x: torch.Tensor, sigma: float, size: int) -> torch.Tensor:
    """Separable Gaussian filter ("valid" region) of a ``(1, 1, *spatial)`` tensor."""
    taps = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2.0
    g = torch.exp(-(taps**2) / (2 * sigma**2))
    g = g / g.sum()
    dims = x.ndim - 2
    conv = F.conv3d if dims == 3 else F.conv2d
    for axis in range(dims):
        shape = [1, 1] + [size if a == axis else 1 for a in range(dims)]
        x = conv(x, g.view(shape))
    return x


def ssim_map(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    sigma: float = 1.5,
    kernel_size: int = 11,
) -> torch.Tensor:
    """Differentiable local SSIM values (the "valid" region) of batches ``(B, C, *spatial)``, 2D or 3D.

    The window is a separable Gaussian of ``sigma`` pixels, ``kernel_size`` clipped to the
    smallest spatial dimension. Used by :func:`ssim` and by the structural loss.
    """
    size = min(kernel_size, *prediction.shape[2:])
    size -= 1 - size % 2  # odd
    blur = lambda t: _gaussian_blur(t, sigma, size)  # noqa: E731
    x, y = prediction, target
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float,
    sigma: float = 1.5,
    kernel_size: int = 11,
) -> float:
    """Structural similarity (Wang et al. 2004) of 2D images or 3D volumes, Gaussian window.

    Args:
        prediction: ``(H, W)`` or ``(D, H, W)``; a leading batch of images ``(B, H, W)`` is not
            supported: call per image and average.
        target: same shape.
        data_range: dynamic range of the data (1 for normalized volumes).
        sigma: Gaussian window standard deviation, pixels.
        kernel_size: window size, pixels (clipped to the smallest dimension).
    """
    if prediction.shape != target.shape or prediction.ndim not in (2, 3):
        raise ValueError(f"ssim needs two 2D or 3D tensors of one shape, got {prediction.shape} and {target.shape}.")
    x, y = prediction.double()[None, None], target.double()[None, None]
    return ssim_map(x, y, data_range, sigma, kernel_size).mean().item()


def gmsd(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014) of 2D images; 0 is identical.

    Images are scaled to [0, 255] by ``data_range`` as in the original definition (constant
    c = 170), average-pooled by 2, and compared through Prewitt gradient magnitudes.
    """
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(f"gmsd needs two 2D images of one shape, got {prediction.shape} and {target.shape}.")
    scale = 255.0 / data_range
    x = F.avg_pool2d(prediction.double()[None, None] * scale, 2)
    y = F.avg_pool2d(target.double()[None, None] * scale, 2)
    prewitt = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=x.dtype, device=x.device) / 3.0
    kernels = torch.stack([prewitt, prewitt.T])[:, None]
    gx = F.conv2d(x, kernels).pow(2).sum(1).sqrt()
    gy = F.conv2d(y, kernels).pow(2).sum(1).sqrt()
    c = 170.0
    similarity = (2 * gx * gy + c) / (gx**2 + gy**2 + c)
    return similarity.std(unbiased=False).item()
