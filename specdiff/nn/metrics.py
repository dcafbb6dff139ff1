"""Sample-quality metrics: Fréchet distance, KID, feature statistics and in-project features.

Names are kept honest: **FD-pixel** is the Fréchet distance between Gaussian fits of the
raw pixels, **FD-classifier** the same in the feature space of a small classifier trained in
this project (see below), **KID-classifier** the kernel inception distance formula (Bińkowski et
al. 2018) in that feature space. "FID" means Inception-v3 pool features only; specdiff cannot
download them, but ``save_feature_stats``/``load_feature_stats`` read and write the usual
``.npz`` with ``mu`` and ``sigma``, so statistics from any external feature extractor plug
into ``frechet_distance``.

Fréchet distance between N(μ1, C1) and N(μ2, C2):

    FD = |μ1 − μ2|² + tr(C1 + C2 − 2·(C1^½ C2 C1^½)^½)

computed in float64 with symmetric eigendecompositions (negative round-off eigenvalues
clipped), which is stable for the singular covariances that few samples give and never
returns the complex values that a general ``sqrtm`` can.

Feature extractors: the in-project classifiers of module ``classifier`` (``digits``: an
MLP's last hidden layer; ``patches_gray``: a CNN trained to tell the source photograph of a
patch; why that task is explained there), re-exported here with their training, feature
extraction and checkpoints.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from specdiff.core.io import atomic_write
from specdiff.nn.classifier import (
    CLASSIFIER_CONFIGS,
    CLASSIFIER_DIR,
    CLASSIFIER_FORMAT,
    Classifier,
    ClassifierConfig,
    classifier_data,
    extract_features,
    load_classifier,
    save_classifier,
    train_classifier,
)

__all__ = [
    "FeatureStats",
    "feature_stats",
    "frechet_distance",
    "kid",
    "save_feature_stats",
    "load_feature_stats",
    "ClassifierConfig",
    "Classifier",
    "CLASSIFIER_CONFIGS",
    "CLASSIFIER_DIR",
    "CLASSIFIER_FORMAT",
    "classifier_data",
    "train_classifier",
    "save_classifier",
    "load_classifier",
    "extract_features",
]


# ---------------------------------------------------------------------------------------------
# Fréchet distance and feature statistics
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set: ``mu`` (d,), ``sigma`` (d, d), ``n`` samples (or None)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None = None

    def __post_init__(self):
        mu = np.asarray(self.mu, dtype=np.float64)
        sigma = np.asarray(self.sigma, dtype=np.float64)
        if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
            raise ValueError(
                f"feature statistics need mu of shape (d,) and sigma of shape (d, d); got "
                f"{mu.shape} and {sigma.shape}"
            )
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError("feature statistics mu and sigma must be finite")
        if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-10 * max(1.0, np.abs(sigma).max())):
            raise ValueError("sigma must be a symmetric covariance matrix")
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)


def feature_stats(features) -> FeatureStats:
    """Mean and (unbiased, ddof=1) covariance of an (n, d) feature array, in float64.

    Samples of any shape (n, ...) are flattened to (n, d).
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim < 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (n >= 2, d, ...), got {f.shape}")
    f = f.reshape(f.shape[0], -1)
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf (did sampling diverge?)")
    return FeatureStats(f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], -1), len(f))


def _as_stats(x, name: str) -> FeatureStats:
    if isinstance(x, FeatureStats):
        return x
    if isinstance(x, (str, Path)):
        return load_feature_stats(x)
    if isinstance(x, tuple) and len(x) == 2:
        return FeatureStats(*x)
    try:
        return feature_stats(x)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from None


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh((c + c.T) / 2)
    return (u * np.sqrt(np.clip(w, 0.0, None))) @ u.T


def frechet_distance(a, b) -> float:
    """FD = |μ1 − μ2|² + tr(C1 + C2 − 2(C1^½ C2 C1^½)^½), the squared W2 of the Gaussian fits.

    Args:
      a, b: each a ``FeatureStats``, a ``(mu, sigma)`` tuple, a path to a ``.npz`` with
        ``mu`` and ``sigma``, or an (n, d, ...) array of samples/features.

    Returns:
      The Fréchet distance (a float ≥ 0; tiny negative round-off is clipped to 0).

    Example:
      >>> import numpy as np
      >>> float(round(frechet_distance((np.zeros(2), np.eye(2)), (np.ones(2), 4 * np.eye(2))), 6))
      4.0
    """
    s1, s2 = _as_stats(a, "a"), _as_stats(b, "b")
    if s1.mu.shape != s2.mu.shape:
        raise ValueError(f"feature dimensions differ: {s1.mu.size} vs {s2.mu.size}")
    r1 = _psd_sqrt(s1.sigma)
    cross = np.linalg.eigvalsh(r1 @ s2.sigma @ r1)
    tr_cross = np.sqrt(np.clip(cross, 0.0, None)).sum()
    fd = np.sum((s1.mu - s2.mu) ** 2) + np.trace(s1.sigma) + np.trace(s2.sigma) - 2 * tr_cross
    return float(max(fd, 0.0))


def save_feature_stats(path, stats: FeatureStats) -> None:
    """Write ``mu`` and ``sigma`` (and ``n``) to an ``.npz`` file, atomically."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma}
    if stats.n is not None:
        arrays["n"] = np.asarray(stats.n)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def load_feature_stats(path) -> FeatureStats:
    """Read precomputed statistics from an ``.npz`` with arrays ``mu`` (d,) and ``sigma`` (d, d)
    (the format of pytorch-fid/clean-fid statistics files)."""
    from specdiff.core.io import read_npz

    path = Path(path)
    data = read_npz(path, "feature statistics file", required=("mu", "sigma"))
    n = int(data["n"]) if "n" in data else None
    try:
        return FeatureStats(data["mu"], data["sigma"], n)
    except ValueError as e:
        raise ValueError(f"{str(path)!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    m, n = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(
    x, y, key: jax.Array, num_subsets: int = 100, subset_size: int = 1000
) -> tuple[float, float]:
    """Kernel inception distance formula: unbiased MMD² with k(a, b) = (aᵀb/d + 1)³.

    Averaged over ``num_subsets`` random subsets of ``min(subset_size, n_x, n_y)`` rows
    drawn without replacement from each set (subset j from ``fold_in(key, j)``), as in
    Bińkowski et al. (2018).

    Args:
      x, y: (n, d, ...) feature arrays (flattened per row).
      key: typed ``jax.random.key``.
      num_subsets, subset_size: as above.

    Returns:
      (mean, std) of the subset estimates. The estimator is unbiased: for two sets from one
      distribution the mean is 0 up to its standard error std/√num_subsets.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features contain NaN or inf (did sampling diverge?)")
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    vals = []
    for j in range(num_subsets):
        kx, ky = jax.random.split(jax.random.fold_in(key, j))
        ix = np.asarray(jax.random.permutation(kx, len(x)))[:m]
        iy = np.asarray(jax.random.permutation(ky, len(y)))[:m]
        vals.append(_mmd2_unbiased(x[ix], y[iy]))
    vals = np.asarray(vals)
    return float(vals.mean()), float(vals.std(ddof=1) if len(vals) > 1 else 0.0)
