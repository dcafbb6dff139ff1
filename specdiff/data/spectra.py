"""Estimating data spectra: PCA, shift-invariant Fourier spectra, synthetic spectra (SPEC §1).

Every estimator returns a frozen result that says which ``estimator`` produced it and turns
into a ``specdiff.Spectrum`` with ``.spectrum(name=...)`` (eigenvalues descending, the mean
in the same eigenbasis).

Normalisation, shared by all estimators so that they agree on shift-invariant data:

- PCA: the unbiased sample covariance Ĉ = Σ_j (x_j − x̄)(x_j − x̄)ᵀ / (N − 1), eigenvalues
  of Ĉ.
- Fourier: with the unitary DFT f_k (‖f_k‖ = 1), the eigenvalue at frequency k is
  P_k = Σ_j |DFT(x_j − x̄)_k|² / (n·(N − 1)) = f_kᴴ Ĉ f_k, where DFT is ``numpy.fft.fft``
  (unnormalised) and n the number of positions. For circulant Σ0 (stationary signals with a
  circular boundary) these are exactly Σ0's eigenvalues, the power spectral density at the
  DFT frequencies with sampling rate 1 (``scipy.signal.periodogram(..., fs=1,
  return_onesided=False)``); for any data they are the diagonal of Ĉ in the Fourier basis.

The mean in the eigenbasis: PCA gives Uᵀx̄. For Fourier spectra an eigenvalue at k and
its mirror −k (equal for real data) share a 2-D real eigenspace; the result reports
m_k = |f_kᴴ x̄|, which has the right energy in each such eigenspace. The divergences depend
on the mean only through m_k² (SPEC §4–5: Δ = m·(1 − H·√a_0)), so this is exact for them.

The Fourier estimators are in ``fourier`` (re-exported here); this module holds PCA
(``pca``, ``from_covariance``) and the synthetic spectra (``synthetic_ata``,
``power_law``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from specdiff.core.checks import check_finite, check_int
from specdiff.core.spectrum import Spectrum
from specdiff.data.fourier import (
    CENTERS,
    METHODS,
    WINDOWS,
    FourierResult,
    fourier_1d,
    fourier_2d,
)

__all__ = [
    "PCAResult",
    "FourierResult",
    "pca",
    "from_covariance",
    "fourier_1d",
    "fourier_2d",
    "synthetic_ata",
    "synthetic_ata_matrix",
    "power_law",
    "CENTERS",
    "WINDOWS",
    "METHODS",
]

# --------------------------------------------------------------------------- PCA


@dataclasses.dataclass(frozen=True)
class PCAResult:
    """Eigen-decomposition of a covariance.

    Attributes:
      eigenvalues: (d,) descending, ≥ 0 (round-off negatives from ``eigh`` clipped to 0).
      eigenvectors: (d, d), column i belongs to eigenvalue i.
      mean: (d,) data mean x̄ in the original (flattened) coordinates.
      count: number of samples N (0 when built from a given covariance).
      sample_shape: the shape of one sample before flattening.
      estimator: ``"pca"`` (sample covariance) or ``"covariance"`` (a given Σ0).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    mean: np.ndarray
    count: int
    sample_shape: tuple[int, ...]
    estimator: str = "pca"

    @property
    def dim(self) -> int:
        return int(self.eigenvalues.shape[0])

    def spectrum(self, name: str | None = None) -> Spectrum:
        """``Spectrum(eigenvalues, mean=Uᵀx̄, name)``."""
        return Spectrum(self.eigenvalues, self.eigenvectors.T @ self.mean, name=name)


def _eigh_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, u = np.linalg.eigh((cov + cov.T) / 2)
    w, u = w[::-1], u[:, ::-1]
    # Deterministic signs: the largest-magnitude entry of each eigenvector is positive.
    idx = np.argmax(np.abs(u), axis=0)
    u = u * np.where(u[idx, np.arange(u.shape[1])] < 0, -1.0, 1.0)
    return np.clip(w, 0.0, None), np.ascontiguousarray(u)


def _batches(samples, batch_size: int):
    if hasattr(samples, "shape") and hasattr(samples, "__getitem__"):
        n = int(samples.shape[0]) if len(samples.shape) else 0
        if len(samples.shape) < 2:
            raise ValueError(
                f"samples must have shape (N, ...) with at least 2 dims, got {samples.shape}"
            )
        for i in range(0, n, batch_size):
            yield samples[i : i + batch_size]
    elif isinstance(samples, Iterable):
        for batch in samples:  # large batches are cut to batch_size rows too
            b = np.asarray(batch)
            if b.ndim < 2 or b.shape[0] <= batch_size:
                yield b
            else:
                yield from (b[i : i + batch_size] for i in range(0, b.shape[0], batch_size))
    else:
        raise ValueError(
            f"samples must be an array (N, ...) or an iterable of batches, got "
            f"{type(samples).__name__}"
        )


def pca(samples, batch_size: int = 1024) -> PCAResult:
    """PCA by streaming covariance accumulation in float64.

    Batches are merged with the pairwise update of Chan et al. (count n, mean x̄, scatter M):
    M = M_a + M_b + δδᵀ·n_a·n_b/n with δ = x̄_b − x̄_a, which stays accurate when the mean
    is large against the spread. Memory: one d×d float64 scatter (75 MB at d = 3072) plus
    one batch; 50,000 CIFAR images are never held in float64 at once. Ĉ = M/(N − 1).

    Args:
      samples: an array (N, ...) (sliced into batches of ``batch_size``) or an iterable of
        arrays (b, ...) with the same sample shape. Each sample is flattened.
      batch_size: rows per accumulation step (larger incoming batches are cut).

    Returns:
      ``PCAResult`` with ``estimator="pca"``.

    Example:
      >>> import numpy as np, specdiff.spectra as sp
      >>> x = np.random.default_rng(0).normal(size=(500, 4)) * [3.0, 2.0, 1.0, 0.5]
      >>> res = sp.pca(x, batch_size=128)
      >>> res.eigenvalues.shape, res.estimator
      ((4,), 'pca')
    """
    check_int("batch_size", batch_size)
    n, mean, scatter, shape = 0, None, None, None
    for k, batch in enumerate(_batches(samples, batch_size)):
        b = np.asarray(batch)
        if b.ndim < 2 or not np.issubdtype(b.dtype, np.number) or np.iscomplexobj(b):
            raise ValueError(
                f"batch {k} must be a real array (b, ...) with ndim >= 2, got shape {b.shape} "
                f"dtype {b.dtype}"
            )
        if shape is None:
            shape = b.shape[1:]
        elif b.shape[1:] != shape:
            raise ValueError(f"batch {k} has sample shape {b.shape[1:]}, earlier ones {shape}")
        if b.shape[0] == 0:
            continue
        b = b.reshape(b.shape[0], -1).astype(np.float64)
        check_finite(f"samples (batch {k})", b)
        nb = b.shape[0]
        mb = b.mean(axis=0)
        c = b - mb
        sb = c.T @ c
        if mean is None:
            n, mean, scatter = nb, mb, sb
            continue
        delta = mb - mean
        tot = n + nb
        scatter += sb + np.outer(delta, delta) * (n * nb / tot)
        mean = mean + delta * (nb / tot)
        n = tot
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {n}")
    w, u = _eigh_descending(scatter / (n - 1))
    return PCAResult(w, u, mean, n, tuple(int(s) for s in shape), "pca")


def from_covariance(cov, mean=None) -> PCAResult:
    """Eigen-decomposition of a given covariance Σ0 (d, d) and mean μ0.

    Returns a ``PCAResult`` with ``estimator="covariance"`` and ``count=0``.
    """
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cov must be a square (d, d) matrix, got shape {c.shape}")
    check_finite("cov", c)
    if not np.allclose(c, c.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(c).max())):
        raise ValueError("cov must be symmetric")
    mu = np.zeros(c.shape[0]) if mean is None else np.asarray(mean, dtype=np.float64)
    if mu.shape != (c.shape[0],):
        raise ValueError(f"mean must have shape ({c.shape[0]},), got {mu.shape}")
    w, u = _eigh_descending(c)
    return PCAResult(w, u, mu, 0, (c.shape[0],), "covariance")


# --------------------------------------------------------------------------- synthetic


def synthetic_ata_matrix(
    d: int = 50, length_scale: float = 0.1, mean: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """(μ0, Σ0) of the published synthetic data: Σ0 = AᵀA, μ0 = mean·1.

    Construction (exact): the grid t_i = i/(d − 1), i = 0..d−1 (uniform on [0, 1], both
    ends included), and the unnormalised Gaussian kernel
    A_ij = exp(−(t_i − t_j)² / (2·l²)), l = ``length_scale`` (A_ii = 1, no row or
    amplitude normalisation). Σ0 = AᵀA = A² (A is symmetric), float64.
    """
    check_int("d", d, 2)
    if not length_scale > 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale!r}")
    a = _gaussian_kernel(d, length_scale)
    return np.full(d, float(mean)), a.T @ a


def _gaussian_kernel(d: int, length_scale: float) -> np.ndarray:
    t = np.arange(d, dtype=np.float64) / (d - 1)
    return np.exp(-((t[:, None] - t[None, :]) ** 2) / (2.0 * length_scale**2))


def synthetic_ata(
    d: int = 50, length_scale: float = 0.1, mean: float = 0.05, name: str | None = None
) -> Spectrum:
    """Spectrum of ``synthetic_ata_matrix``: λ_i = w_i² with w the eigenvalues of A.

    Squaring A's eigenvalues (A symmetric, Σ0 = A²) keeps the tiny eigenvalues of this very
    ill-conditioned Σ0 non-negative and accurate; the mean components are Uᵀμ0 with U the
    eigenvectors of A. Sorted descending.

    Example:
      >>> import specdiff.data.spectra as sp
      >>> spec = sp.synthetic_ata()
      >>> spec.dim, spec.name
      (50, 'synthetic_ata')
    """
    mu, _ = synthetic_ata_matrix(d, length_scale, mean)
    w, u = np.linalg.eigh(_gaussian_kernel(d, length_scale))
    lam = w**2
    order = np.argsort(-lam, kind="stable")
    lam, u = lam[order], u[:, order]
    return Spectrum(lam, u.T @ mu, name=name or "synthetic_ata")


def power_law(
    d: int, alpha: float, scale: float = 1.0, mean: float = 0.0, name: str | None = None
) -> Spectrum:
    """Power-law spectrum λ_i = scale · i^(−α), i = 1..d (descending for α > 0).

    The mean is ``mean`` in every eigen-direction (m_i = mean). α = 2 is the classic 1/f²
    of natural images along one frequency axis.
    """
    check_int("d", d)
    if not np.isfinite(alpha) or not scale > 0:
        raise ValueError(f"alpha must be finite and scale > 0, got {alpha!r}, {scale!r}")
    i = np.arange(1, d + 1, dtype=np.float64)
    lam = float(scale) * i ** (-float(alpha))
    return Spectrum(lam, np.full(d, float(mean)), name=name or f"power_law_{alpha:g}")
