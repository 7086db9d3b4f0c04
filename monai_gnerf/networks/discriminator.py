"""Multi-scale patch discriminator with spectral normalization (GRAF / MedNeRF style).

Each scale is a small strided convolution stack ending in a ``1 x 1`` logit map averaged to one
logit per patch; the scales see the patch at full resolution and downsampled by 2, 4, ... The
patch's sampling scale (the fraction of the view it covers) is appended as a constant input
channel, so the network can tell a strided whole-view patch from a zoomed-in one, as GRAF's
discriminator is conditioned. MedNeRF's self-supervised reconstruction heads are not included:
on CPU-sized patches they did not earn their place (see the README).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["PatchDiscriminator"]


def _conv(in_channels: int, out_channels: int, stride: int, normalize: bool) -> nn.Module:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=4 if stride == 2 else 3, stride=stride, padding=1)
    return spectral_norm(conv) if normalize else conv


class _ScaleBranch(nn.Module):
    def __init__(self, in_channels: int, channels: Sequence[int], normalize: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            layers += [_conv(width, out, 2, normalize), nn.LeakyReLU(0.2)]
            width = out
        layers.append(_conv(width, 1, 1, normalize))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean(dim=(1, 2, 3))


class PatchDiscriminator(nn.Module):
    """Real/fake logits for square patches.

    Args:
        in_channels: image channels (1 for X-rays).
        channels: feature widths of the strided layers (each halves the resolution).
        num_scales: number of input resolutions (1, 1/2, 1/4, ...).
        spectral_normalization: wrap every convolution in spectral normalization.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        num_scales: int = 2,
        spectral_normalization: bool = True,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            _ScaleBranch(in_channels + 1, channels[: max(1, len(channels) - s)], spectral_normalization)
            for s in range(num_scales)
        )

    def forward(self, patches: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Logits ``(B,)`` for patches ``(B, C, P, P)`` sampled at ``scale`` ``(B,)``."""
        x = torch.cat([patches, scale.view(-1, 1, 1, 1).expand(-1, 1, *patches.shape[-2:]).to(patches)], dim=1)
        logits = []
        for level, branch in enumerate(self.branches):
            logits.append(branch(x if level == 0 else F.avg_pool2d(x, 2**level)))
        return torch.stack(logits).mean(0)
