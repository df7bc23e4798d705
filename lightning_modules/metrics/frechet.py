"""The Frechet distance between Gaussians fitted to two feature sets: FID and the shapes oracle's FD.

``d^2 = |mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, in float64. The trace of the matrix
square root is the sum of the square roots of the eigenvalues of ``C_a C_b`` (real and non-negative
in exact arithmetic; the real part of the complex square root is kept), as torch-fidelity and
torchmetrics compute it, so FID values compare with theirs.
"""

from __future__ import annotations

import torch


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, D]`` features -> (mean ``[D]``, unbiased covariance ``[D, D]``), float64."""
    features = features.double()
    return features.mean(0), torch.cov(features.T)


def frechet_from_stats(mu_a: torch.Tensor, cov_a: torch.Tensor, mu_b: torch.Tensor, cov_b: torch.Tensor) -> float:
    mu_a, cov_a, mu_b, cov_b = (t.double() for t in (mu_a, cov_a, mu_b, cov_b))
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, D]``."""
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))
