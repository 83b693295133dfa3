"""Fréchet distance between Gaussians fitted to feature sets (FID, FVD).

    d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

computed as pytorch-fid's `calculate_frechet_distance` (mseitzer/pytorch-fid
src/pytorch_fid/fid_score.py) and clean-fid's `frechet_distance`, which share the formula
and its numerics: `scipy.linalg.sqrtm` of the product S_1 S_2; if that square root is not
finite (a singular product), both covariances get `eps` added to their diagonals and the
root is taken again; a complex root is accepted only when the imaginary parts of its
diagonal are within 1e-3 of zero, and its real part is used. Statistics are the sample
mean and the unbiased sample covariance (`np.cov(features, rowvar=False)`), in float64.

`RunningFeatureStatistics` gives the same statistics from features added in batches (Chan,
Golub and LeVeque's pairwise update of the mean and the centred sum of outer products), so a
long evaluation keeps one D x D matrix per side instead of every feature vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import warnings

import numpy as np
import scipy.linalg

__all__ = [
    "FeatureStatistics",
    "RunningFeatureStatistics",
    "feature_statistics",
    "frechet_distance",
    "frechet_distance_of_features",
    "frechet_distance_of_statistics",
]

_IMAGINARY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FeatureStatistics:
    """Gaussian fitted to N feature vectors of dimension D.

    Attributes:
        mu: (D,) float64 sample mean.
        sigma: (D, D) float64 unbiased sample covariance.
        count: N, the number of feature vectors.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def feature_statistics(features: np.ndarray) -> FeatureStatistics:
    """Mean and unbiased covariance of (N, D) features, N >= 2 (as pytorch-fid)."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features must be an (N, D) array, got shape {features.shape}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or inf")
    features = features.astype(np.float64)
    return FeatureStatistics(features.mean(axis=0), np.cov(features, rowvar=False), int(features.shape[0]))


class RunningFeatureStatistics:
    """Mean and unbiased covariance of feature vectors added in batches, in float64.

    After adding batches X_1, ..., X_n, `statistics()` equals `feature_statistics` of their
    concatenation up to rounding: each batch's mean m_b and centred sum M_b = (X_b - m_b)^T (X_b - m_b)
    merge into the running (n, m, M) as delta = m_b - m, m += delta n_b / (n + n_b),
    M += M_b + delta delta^T n n_b / (n + n_b) (no cancellation of large raw moments).
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._centred: np.ndarray | None = None

    def add(self, features: np.ndarray) -> None:
        """Add (N, D) features, N >= 1, D the same for every batch."""
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[0] < 1:
            raise ValueError(f"features must be an (N, D) array with N >= 1, got shape {features.shape}")
        if self._mean is not None and features.shape[1] != self._mean.shape[0]:
            raise ValueError(f"feature dimension {features.shape[1]} differs from the earlier {self._mean.shape[0]}")
        if not np.isfinite(features).all():
            raise ValueError("features contain NaN or inf")
        n_batch = features.shape[0]
        mean_batch = features.mean(axis=0)
        centred = features - mean_batch
        scatter = centred.T @ centred
        if self._mean is None:
            self.count, self._mean, self._centred = n_batch, mean_batch, scatter
            return
        total = self.count + n_batch
        delta = mean_batch - self._mean
        self._mean = self._mean + delta * (n_batch / total)
        self._centred = self._centred + scatter + np.outer(delta, delta) * (self.count * n_batch / total)
        self.count = total

    @property
    def dim(self) -> int | None:
        """Feature dimension D, None before the first batch."""
        return None if self._mean is None else int(self._mean.shape[0])

    def statistics(self) -> FeatureStatistics:
        """The Gaussian of everything added so far (needs >= 2 vectors)."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.count}")
        return FeatureStatistics(self._mean.copy(), self._centred / (self.count - 1), self.count)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    # pytorch-fid calls sqrtm(..., disp=False), which returns instead of warning about a
    # singular matrix; `disp` is deprecated since scipy 1.16, so the warning is silenced
    # here (the non-finite case is retried with the eps offset, the complex case checked).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(matrix)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.
        eps: diagonal offset used only when sqrtm(sigma1 @ sigma2) is not finite.

    Raises:
        ValueError: on mismatched shapes, or when the square root keeps an imaginary
            diagonal component larger than 1e-3 (the references raise there too).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be (D,) vectors of one length, got {mu1.shape} and {mu2.shape}")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(f"covariances must be ({dim}, {dim}), got {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(dim) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAGINARY_TOLERANCE):
            worst = float(np.max(np.abs(covmean.imag)))
            raise ValueError(f"sqrt of the covariance product has an imaginary component of {worst:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance_of_statistics(feature_statistics(features1), feature_statistics(features2), eps)


def frechet_distance_of_statistics(stats1: FeatureStatistics, stats2: FeatureStatistics, eps: float = 1e-6) -> float:
    """Fréchet distance between two fitted Gaussians of one feature dimension."""
    if stats1.mu.shape != stats2.mu.shape:
        raise ValueError(f"feature dimensions differ: {stats1.mu.shape[0]} and {stats2.mu.shape[0]}")
    return frechet_distance(stats1.mu, stats1.sigma, stats2.mu, stats2.sigma, eps=eps)
