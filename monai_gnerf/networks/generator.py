"""Generative radiance fields (GRAF / MedNeRF): a field conditioned on shape and appearance codes.

Two field architectures map normalized points and two latent codes to a non-negative density
``sigma`` (from the shape code) and a positive appearance factor ``c``:

* ``"graf"``: :class:`ConditionalRadianceField`, GRAF's and MedNeRF's MLP evaluated at every
  sample (the papers' model; its cost grows with an MLP per sample);
* ``"grid"``: :class:`LatentGridField`, the shape code decoded once per subject into a
  ``grid_size^3`` density grid (a linear path, the population's PCA model when started from it,
  plus a 3D convolutional decoder of ``decoder_size^3`` upsampled to it, as VoxGRAF decodes a
  latent into a voxel grid), sampled trilinearly along the rays; the appearance code sets one
  attenuation gain.
  Its cost per ray sample is a trilinear lookup, so it trains on a CPU in minutes.

:class:`RadianceFieldGenerator` places the field in a cube of half-size ``extent_mm`` around the
isocenter and renders rays with one of two image models, named explicitly:

* ``"line_integral"`` (X-ray physics, default): attenuation ``mu = scale_per_mm * sigma * c``
  (1/mm) and pixel ``p = sum_i mu_i * delta_i`` (dimensionless, as in DRRs). The shape code says
  where matter is, the appearance code how strongly it attenuates.
* ``"alpha"`` (RGB NeRF, as GRAF and MedNeRF render): ``alpha_i = 1 - exp(-sigma_i delta_i)``
  with ``sigma`` in 1/mm, pixel ``sum_i T_i alpha_i c_i`` with ``T`` the transmittance.

Rendered pixels are in *display units*: line integrals divided by ``value_scale`` (the line
integral shown as 1.0), or the composited value for ``"alpha"``. Training images use the same
units, so a discriminator sees both alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from monai_gnerf.config import Config, NonNegativeInt, PositiveFloat, PositiveInt
from monai_gnerf.data.phantoms import centered_grid
from monai_gnerf.data.population import SCENE_HALF_SIZE_MM
from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.networks.encodings import FrequencyEncoding
from monai_gnerf.physics import MU_WATER_PER_MM
from monai_gnerf.render.sampling import clip_rays_to_box, sample_rays

__all__ = [
    "Architecture",
    "RenderMode",
    "GeneratorConfig",
    "ConditionalRadianceField",
    "LatentGridField",
    "RadianceFieldGenerator",
]

RenderMode = Literal["line_integral", "alpha"]
Architecture = Literal["graf", "grid"]
_SOFTPLUS_BETA = 10.0
_GRID_START = 4  # side of the grid the decoder starts from, voxels


@dataclass(frozen=True)
class GeneratorConfig(Config):
    """Size and rendering options of a :class:`RadianceFieldGenerator` (serializable).

    Args:
        architecture: ``"graf"`` (MLP field) or ``"grid"`` (decoded density grid); see the
            module docstring.
        shape_dim: shape code size; for a PCA-started ``"grid"`` generator, the principal
            components it keeps (all of up to ``shape_dim + 1`` training subjects).
        appearance_dim: appearance code size.
        hidden_features: MLP width (``"graf"``).
        hidden_layers: MLP depth before the heads (``"graf"``).
        num_frequencies: octaves of the positional encoding (``"graf"``).
        grid_size: voxels per side of the density grid, a power of two >= 8 (``"grid"``).
        decoder_size: voxels per side of the convolutional decoder's output, a power of two >= 8
            (capped at ``grid_size``), upsampled trilinearly to ``grid_size`` (``"grid"``): the
            linear path carries the fine detail at no convolution cost.
        grid_channels: channels of the decoder's first (coarsest) level (``"grid"``).
        extent_mm: half-size of the scene cube around the isocenter, mm.
        num_samples: stratified samples per ray.
        render_mode: ``"line_integral"`` or ``"alpha"`` (see the module docstring).
        scale_per_mm: attenuation of one density unit, 1/mm.
        value_scale: line integral displayed as 1.0.
    """

    architecture: Architecture = "grid"
    shape_dim: PositiveInt = 64
    appearance_dim: NonNegativeInt = 16
    hidden_features: PositiveInt = 64
    hidden_layers: PositiveInt = 3
    num_frequencies: NonNegativeInt = 6
    grid_size: PositiveInt = 32
    decoder_size: PositiveInt = 32
    grid_channels: PositiveInt = 32
    extent_mm: PositiveFloat = SCENE_HALF_SIZE_MM
    num_samples: PositiveInt = 24
    render_mode: RenderMode = "line_integral"
    scale_per_mm: PositiveFloat = MU_WATER_PER_MM
    value_scale: PositiveFloat = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.architecture != "grid":
            return
        for name in ("grid_size", "decoder_size"):
            levels = math.log2(getattr(self, name) / _GRID_START)
            if levels < 1 or levels != int(levels):
                raise GnerfInputError(f"{name} must be a power of two >= 8, got {getattr(self, name)}.")


class ConditionalRadianceField(nn.Module):
    """MLP field ``(points, z_shape, z_appearance) -> (sigma, c)``.

    The codes enter the first layer of their branch by addition of a per-sample linear term
    (equivalent to concatenation, computed once per code instead of once per point).

    Args:
        shape_dim: shape code size.
        appearance_dim: appearance code size.
        hidden_features: width.
        hidden_layers: depth of the shape branch.
        num_frequencies: positional-encoding octaves.
    """

    def __init__(
        self,
        shape_dim: int,
        appearance_dim: int,
        hidden_features: int,
        hidden_layers: int,
        num_frequencies: int,
    ) -> None:
        super().__init__()
        self.encoding = FrequencyEncoding(num_frequencies)
        self.point_in = nn.Linear(self.encoding.output_size, hidden_features)
        self.shape_in = nn.Linear(shape_dim, hidden_features, bias=False)
        self.trunk = nn.Sequential(
            *[m for _ in range(hidden_layers - 1) for m in (nn.Linear(hidden_features, hidden_features), nn.ReLU())]
        )
        self.density_head = nn.Linear(hidden_features, 1)
        self.appearance_in = nn.Linear(appearance_dim, hidden_features // 2, bias=False)
        self.appearance_features = nn.Linear(hidden_features, hidden_features // 2)
        self.appearance_head = nn.Linear(hidden_features // 2, 1)

    def forward(
        self, points: torch.Tensor, z_shape: torch.Tensor, z_appearance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and appearance at points.

        Args:
            points: ``(B, N, 3)`` in [-1, 1] (the scene cube).
            z_shape: ``(B, shape_dim)``.
            z_appearance: ``(B, appearance_dim)``.

        Returns:
            ``sigma >= 0`` and ``c`` in (0, 2), each ``(B, N)``.
        """
        h = torch.relu(self.point_in(self.encoding(points)) + self.shape_in(z_shape)[:, None])
        h = self.trunk(h)
        sigma = F.softplus(self.density_head(h), beta=_SOFTPLUS_BETA).squeeze(-1)
        a = torch.relu(self.appearance_features(h) + self.appearance_in(z_appearance)[:, None])
        c = 2.0 * torch.sigmoid(self.appearance_head(a)).squeeze(-1)
        return sigma, c


class LatentGridField(nn.Module):
    """Shape code -> density grid (linear path + 3D conv decoder), sampled trilinearly; appearance -> gain.

    The grid before the final clamp at zero is ``base + linear(z) + decoder(z)``:

    * ``base`` and the linear path form a linear statistical model of the population's volumes
      (zero until :meth:`initialize_from_pca` sets them to the mean and principal components);
    * the decoder starts from a ``4^3`` grid of ``channels`` features (a linear map of the code)
      and doubles the resolution per level (trilinear upsampling, 3x3x3 convolution, LeakyReLU),
      halving the channels down to 8, up to ``decoder_size^3``, then is upsampled trilinearly to
      ``grid_size^3``: the non-linear part. Its last layer starts at zero, so a PCA-initialized
      field starts as the PCA model.

    Args:
        shape_dim: shape code size.
        appearance_dim: appearance code size.
        grid_size: voxels per side of the output grid (a power of two >= 8).
        channels: feature channels of the coarsest level.
        decoder_size: voxels per side of the decoder's output (a power of two >= 8, capped at
            ``grid_size``); default ``grid_size``.
    """

    def __init__(
        self, shape_dim: int, appearance_dim: int, grid_size: int, channels: int, decoder_size: int | None = None
    ) -> None:
        super().__init__()
        self.channels, self.grid_size = channels, grid_size
        self.seed = nn.Linear(shape_dim, channels * _GRID_START**3)
        layers: list[nn.Module] = []
        width = channels
        decoder_size = min(decoder_size or grid_size, grid_size)
        for _ in range(int(math.log2(decoder_size // _GRID_START))):
            narrower = max(8, width // 2)
            layers += [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                       nn.Conv3d(width, narrower, 3, padding=1), nn.LeakyReLU(0.2)]  # fmt: skip
            width = narrower
        last = nn.Conv3d(width, 1, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, 0.05)  # a faint uniform density to start from
        upsampled = decoder_size < grid_size
        to_grid = [nn.Upsample(size=(grid_size,) * 3, mode="trilinear", align_corners=False)] if upsampled else []
        self.decoder = nn.Sequential(*layers, last, *to_grid)
        self.base = nn.Parameter(torch.zeros(1, 1, grid_size, grid_size, grid_size))
        self.linear = nn.Linear(shape_dim, grid_size**3, bias=False)
        nn.init.zeros_(self.linear.weight)
        self.gain = nn.Linear(appearance_dim, 1)

    def initialize_from_pca(self, mean: torch.Tensor, components: torch.Tensor, stddevs: torch.Tensor) -> None:
        """Start as a PCA model: ``base = mean``, linear path = components scaled by their stddevs.

        Args:
            mean: ``(G, G, G)`` mean density (units of the generator's ``scale_per_mm``), indexed
                ``[x, y, z]`` like the generator's volumes.
            components: ``(C, G, G, G)`` principal directions, same indexing; the first
                ``min(C, shape_dim)`` are used.
            stddevs: ``(C,)`` their standard deviations, so a standard-normal code is a PCA draw.
        """
        g = self.grid_size
        if tuple(mean.shape) != (g, g, g):
            raise GnerfInputError(f"PCA grid {tuple(mean.shape)} does not match the field's {g}^3 grid.")
        used = min(components.shape[0], self.linear.in_features)
        with torch.no_grad():
            self.base.copy_(mean.permute(2, 1, 0)[None, None])  # [x, y, z] -> grid_sample's [z, y, x]
            self.linear.weight.zero_()
            scaled = components[:used] * stddevs[:used, None, None, None]
            self.linear.weight[:, :used] = scaled.permute(0, 3, 2, 1).reshape(used, -1).T
            self._output_layer().bias.zero_()
            self.gain.weight.zero_()  # appearance gain 1 until training says otherwise
            self.gain.bias.zero_()

    def _output_layer(self) -> nn.Conv3d:
        """The decoder's last convolution (before any upsampling to the grid)."""
        return next(m for m in reversed(self.decoder) if isinstance(m, nn.Conv3d))

    def grids(self, z_shape: torch.Tensor) -> torch.Tensor:
        """Density grids ``(B, 1, G, G, G)`` (``>= 0``), indexed ``[z, y, x]`` of the scene cube."""
        g = self.grid_size
        seed = self.seed(z_shape).view(-1, self.channels, _GRID_START, _GRID_START, _GRID_START)
        linear = self.linear(z_shape).view(-1, 1, g, g, g)
        return (self.base + linear + self.decoder(seed)).clamp(min=0.0)

    def forward(
        self, points: torch.Tensor, z_shape: torch.Tensor, z_appearance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and appearance at points, as :meth:`ConditionalRadianceField.forward`."""
        grid = self.grids(z_shape)
        sigma = F.grid_sample(grid, points[:, :, None, None, :], align_corners=False, padding_mode="zeros")
        c = 2.0 * torch.sigmoid(self.gain(z_appearance))
        return sigma.view(points.shape[:2]), c.expand(-1, points.shape[1])


def _field_module(c: GeneratorConfig) -> nn.Module:
    """The field of a generator config's architecture."""
    if c.architecture == "grid":
        return LatentGridField(c.shape_dim, c.appearance_dim, c.grid_size, c.grid_channels, c.decoder_size)
    return ConditionalRadianceField(c.shape_dim, c.appearance_dim, c.hidden_features, c.hidden_layers, c.num_frequencies)


class RadianceFieldGenerator(nn.Module):
    """Latent codes + rays -> rendered pixels (display units); see the module docstring.

    Args:
        config: sizes and rendering options.
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeneratorConfig()
        self.field = _field_module(self.config)

    def sample_latents(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Standard-normal shape and appearance codes ``(B, shape_dim)``, ``(B, appearance_dim)``."""
        z = torch.randn(batch_size, self.config.shape_dim + self.config.appearance_dim, generator=generator)
        z = z.to(device)
        return z[:, : self.config.shape_dim], z[:, self.config.shape_dim :]

    def _field(
        self, points_mm: torch.Tensor, z_shape: torch.Tensor, z_appearance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density (1/mm, zero outside the cube) and appearance at points ``(B, N, 3)``."""
        normalized = points_mm / self.config.extent_mm
        sigma, c = self.field(normalized.clamp(-1.0, 1.0), z_shape, z_appearance)
        inside = (normalized.abs() <= 1.0).all(-1)
        return self.config.scale_per_mm * sigma * inside, c

    def attenuation(self, points_mm: torch.Tensor, z_shape: torch.Tensor, z_appearance: torch.Tensor) -> torch.Tensor:
        """Attenuation (1/mm) at points ``(B, N, 3)`` relative to the isocenter; zero outside the cube.

        For ``"alpha"`` rendering this is the density ``sigma`` (1/mm) that drives the opacity.
        """
        density, c = self._field(points_mm, z_shape, z_appearance)
        return density if self.config.render_mode == "alpha" else density * c

    def forward(
        self,
        z_shape: torch.Tensor,
        z_appearance: torch.Tensor,
        origins_mm: torch.Tensor,
        directions: torch.Tensor,
        jitter: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Render rays ``(B, R, 3)`` (origins relative to the isocenter, unit directions) -> ``(B, R)``.

        Args:
            z_shape: ``(B, shape_dim)``.
            z_appearance: ``(B, appearance_dim)``.
            origins_mm: ray origins, mm, in the isocenter frame.
            directions: unit ray directions.
            jitter: random generator for stratified sample positions (training); midpoints if None.
        """
        c = self.config
        batch, rays = origins_mm.shape[:2]
        o, d = origins_mm.reshape(-1, 3), directions.reshape(-1, 3)
        bound = torch.full((3,), c.extent_mm, dtype=o.dtype, device=o.device)
        t_near, t_far = clip_rays_to_box(o, d, -bound, bound)
        samples = sample_rays(o, d, t_near, t_far, num_samples=c.num_samples, jitter=jitter)
        density, value = self._field(samples.points.view(batch, -1, 3), z_shape, z_appearance)
        density, value = density.reshape(-1), value.reshape(-1)
        if c.render_mode == "line_integral":
            return samples.line_integral(density * value).view(batch, rays) / c.value_scale
        return samples.alpha_composite(density, value).view(batch, rays)

    def render_views(
        self,
        z_shape: torch.Tensor,
        z_appearance: torch.Tensor,
        geometry: ProjectionGeometry,
        angles_deg: torch.Tensor | None = None,
        rays_per_chunk: int = 8192,
    ) -> torch.Tensor:
        """Full views ``(V, H, W)`` in display units of one latent pair.

        Args:
            z_shape: ``(1, shape_dim)``.
            z_appearance: ``(1, appearance_dim)``.
            geometry: detector and orbit (isocenter at the generator's origin).
            angles_deg: view angles ``(V,)``; default the geometry's.
            rays_per_chunk: rays rendered at once.
        """
        device = z_shape.device
        angles = torch.tensor(geometry.angles_deg, device=device) if angles_deg is None else angles_deg.to(device)
        rows, cols = geometry.pixel_grid(device)
        views = []
        for angle in angles:
            parts = []
            for i in range(0, rows.shape[0], rays_per_chunk):
                chunk = slice(i, i + rays_per_chunk)
                o, d = geometry.rays_at(angle[None], rows[None, chunk], cols[None, chunk])
                parts.append(self(z_shape, z_appearance, o, d)[0])
            views.append(torch.cat(parts).view(*geometry.detector_shape))
        return torch.stack(views)

    def volume(
        self,
        z_shape: torch.Tensor,
        z_appearance: torch.Tensor,
        shape: tuple[int, int, int],
        chunk: int = 1 << 16,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attenuation (1/mm) on a grid filling the scene cube, and its affine (isocenter at 0).

        Args:
            z_shape: ``(1, shape_dim)``.
            z_appearance: ``(1, appearance_dim)``.
            shape: grid ``(I, J, K)`` along world x, y, z (RAS).
            chunk: points per evaluation.

        Returns:
            ``(I, J, K)`` attenuation and its float64 4x4 affine (voxel index -> mm).
        """
        points, affine = centered_grid(shape, [2.0 * self.config.extent_mm / n for n in shape])
        points = points.reshape(1, -1, 3).to(device=z_shape.device, dtype=torch.float32)
        values = [
            self.attenuation(points[:, i : i + chunk], z_shape, z_appearance) for i in range(0, points.shape[1], chunk)
        ]
        return torch.cat(values, dim=1).view(*shape), affine
