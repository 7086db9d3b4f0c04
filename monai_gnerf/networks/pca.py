"""A linear (PCA) model of attenuation volumes: the yardstick a generative prior must beat.

:class:`PCAVolumeModel` is the mean of a population's volumes plus its leading principal
components, all on one grid with an affine. Fitting it to X-ray views is a linear least-squares
problem, because the projector is linear: with ``A`` the views of the components (rendered with
the differentiable Joseph projector) and ``r`` the views minus the views of the mean, the
coefficients are the maximum a posteriori estimate under the model's Gaussian prior,

    c = argmin ||A c - r||^2 / noise_variance + sum_i c_i^2 / lambda_i,

solved in closed form (``lambda_i`` the population variance of component ``i``). A member of the
population is recovered exactly from views that see all its components (noise variance -> 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.data import MetaTensor
from torch import nn

from monai_gnerf.errors import GnerfInputError
from monai_gnerf.geometry import ProjectionGeometry
from monai_gnerf.render import VolumeProjector

__all__ = ["PCAVolumeModel"]


class PCAVolumeModel(nn.Module):
    """Mean volume and principal components of a population of attenuation volumes (1/mm).

    Args:
        mean: ``(I, J, K)`` mean volume.
        components: ``(C, I, J, K)`` orthonormal principal directions (as flattened vectors).
        variances: ``(C,)`` population variance along each component.
        affine: 4x4 voxel index -> world mm of the grid (float64).
    """

    def __init__(
        self, mean: torch.Tensor, components: torch.Tensor, variances: torch.Tensor, affine: torch.Tensor
    ) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("components", components.float())
        self.register_buffer("variances", variances.float())
        self.register_buffer("affine", torch.as_tensor(affine, dtype=torch.float64))

    @classmethod
    def from_volumes(
        cls, volumes: torch.Tensor, affine: torch.Tensor, num_components: int | None = None
    ) -> PCAVolumeModel:
        """Principal components of volumes ``(N, I, J, K)`` on one grid (SVD of the centred data).

        Args:
            volumes: the population, attenuation in 1/mm.
            affine: the grid's voxel index -> world mm.
            num_components: components kept (default all ``N - 1`` with non-zero variance).
        """
        if volumes.ndim != 4 or volumes.shape[0] < 1:
            raise GnerfInputError(f"PCA needs volumes (N, I, J, K); got shape {tuple(volumes.shape)}.")
        data = volumes.double().flatten(1)
        mean = data.mean(0)
        _, singular, basis = torch.linalg.svd(data - mean, full_matrices=False)
        variances = singular**2 / max(1, data.shape[0] - 1)
        significant = int((variances > max(float(variances[0]), 1e-30) * 1e-10).sum())  # none for one volume
        keep = significant if num_components is None else int(num_components)
        shape = volumes.shape[1:]
        return cls(mean.view(shape), basis[:keep].reshape(keep, *shape), variances[:keep], affine)

    @property
    def num_components(self) -> int:
        """Number of principal components."""
        return int(self.components.shape[0])

    def decode(self, coefficients: torch.Tensor) -> MetaTensor:
        """The volume ``mean + sum_i c_i component_i`` with the grid's affine."""
        volume = self.mean + torch.tensordot(coefficients.to(self.mean), self.components, dims=1)
        return MetaTensor(volume, affine=self.affine)

    def encode(self, volume: torch.Tensor) -> torch.Tensor:
        """Coefficients of the orthogonal projection of a volume on the components."""
        return self.components.flatten(1) @ (volume.to(self.mean) - self.mean).flatten()

    def _views(self, volume: torch.Tensor, geometry: ProjectionGeometry, views: Sequence[int]) -> torch.Tensor:
        return VolumeProjector(volume, self.affine).project(geometry, views).flatten()

    def fit_views(
        self,
        geometry: ProjectionGeometry,
        views: torch.Tensor,
        view_indices: Sequence[int] = (0,),
        noise_variance: float = 1e-4,
    ) -> tuple[MetaTensor, torch.Tensor]:
        """MAP coefficients from line-integral views (see the module docstring).

        Args:
            geometry: the acquisition; an unset isocenter is the grid centre.
            views: ``(len(view_indices), rows, cols)`` line integrals.
            view_indices: which of the geometry's views ``views`` are.
            noise_variance: variance of the line-integral noise per pixel, relative to the prior.

        Returns:
            The fitted volume (with the grid's affine) and its coefficients ``(C,)``.
        """
        expected = (len(view_indices), *geometry.detector_shape)
        if tuple(views.shape) != expected:
            raise GnerfInputError(f"views of shape {tuple(views.shape)} do not match the geometry's {expected}.")
        with torch.no_grad():
            basis_views = torch.stack([self._views(c, geometry, view_indices) for c in self.components], 1).double()
            residual = views.to(self.mean).flatten().double() - self._views(self.mean, geometry, view_indices).double()
            normal = basis_views.T @ basis_views + noise_variance * torch.diag(1.0 / self.variances.double())
            coefficients = torch.linalg.solve(normal, basis_views.T @ residual).float()
        return self.decode(coefficients), coefficients
