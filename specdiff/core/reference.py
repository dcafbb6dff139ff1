"""Slow, obviously-correct references for the closed-form engine (SPEC §7).

Nothing here uses the eigen-decomposition, log-SNR or the log-space products of
``specdiff._engine``: the steps are written straight from SPEC §2–3 in the schedule's own
units (ᾱ for VP, σ for VE), with the matrix MMSE denoiser of a full covariance Σ0.

- ``propagate`` carries the mean vector and covariance matrix through every step
  (C' = G C Gᵀ + σ_k² I), in float64 NumPy.
- ``sample`` runs the sampler in the time domain on N samples (Monte Carlo).
- ``w2_gaussians`` is the general W2 between two Gaussians,
  tr(C1 + C2 − 2(C2^½ C1 C2^½)^½) + |μ1 − μ2|².
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["step_coefficients", "propagate", "sample", "w2_gaussians", "psd_sqrt"]


def psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (eigh, negatives clipped)."""
    w, u = np.linalg.eigh((c + c.T) / 2)
    return (u * np.sqrt(np.clip(w, 0, None))) @ u.T


def w2_gaussians(mu1, c1, mu2, c2) -> float:
    """W2 distance between N(mu1, c1) and N(mu2, c2) for general covariances."""
    r2 = psd_sqrt(c2)
    cross = psd_sqrt(r2 @ c1 @ r2)
    w2sq = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross)
    return float(np.sqrt(max(w2sq, 0.0)))


def step_coefficients(process: str, level, level_next, eta: float):
    """(x̂0 weight, ε̂ weight, injected noise std, signal scale at ``level``) of one step.

    VP (SPEC §3): x' = √a'·x̂0 + √(1 − a' − σ_k²)·ε̂ + σ_k·z,
                  σ_k² = η²(1 − a')/(1 − a)(1 − a/a'); ``level_next=None`` means a' = 1.
    VE:           x' = x̂0 + √(s'² − σ_k²)·ε̂ + σ_k·z, σ_k² = η² s'²(s² − s'²)/s²;
                  ``level_next=None`` means s' = 0.
    """
    if process == "vp":
        a = level
        if level_next is None:
            return 1.0, 0.0, 0.0, np.sqrt(a)
        a2 = level_next
        var_k = eta**2 * (1 - a2) / (1 - a) * (1 - a / a2)
        return np.sqrt(a2), np.sqrt(1 - a2 - var_k), np.sqrt(var_k), np.sqrt(a)
    s = level
    if level_next is None:
        return 1.0, 0.0, 0.0, 1.0
    s2 = level_next
    var_k = eta**2 * s2**2 * (s**2 - s2**2) / s**2
    return 1.0, np.sqrt(s2**2 - var_k), np.sqrt(var_k), 1.0


def _denoiser_matrices(process, level, mu0, cov0):
    """Matrix MMSE denoiser at a level: x̂0 = μ0 + A(x − α μ0), ε̂ = B(x − α μ0)."""
    d = len(mu0)
    eye = np.eye(d)
    if process == "vp":
        a = level
        v = a * cov0 + (1 - a) * eye
        vinv = np.linalg.inv(v)
        return np.sqrt(a) * cov0 @ vinv, np.sqrt(1 - a) * vinv, np.sqrt(a)
    s = level
    vinv = np.linalg.inv(cov0 + s**2 * eye)
    return cov0 @ vinv, s * vinv, 1.0


def _steps(schedule):
    lv = np.asarray(schedule.levels, dtype=np.float64)
    nxt = list(lv[1:]) + [None]
    return list(zip(lv, nxt))


def propagate(mean0, cov0, schedule, eta: float = 0.0, trajectory: bool = False):
    """Exact output mean vector and covariance matrix by full-covariance propagation.

    Args:
      mean0: (d,) data mean μ0; cov0: (d, d) data covariance Σ0 (any basis).
      schedule: a ``specdiff.Schedule``; eta: the DDIM η (0 DDIM, 1 DDPM).

    Returns:
      (mean, cov) of the generated distribution, or lists of them after every step
      (start included) when ``trajectory=True``.
    """
    mu0 = np.asarray(mean0, dtype=np.float64)
    cov0 = np.asarray(cov0, dtype=np.float64)
    d = len(mu0)
    proc = schedule.process
    lv0 = float(np.asarray(schedule.levels, dtype=np.float64)[0])
    mu = np.zeros(d)
    cov = np.eye(d) if proc == "vp" else lv0**2 * np.eye(d)
    means, covs = [mu], [cov]
    for level, nxt in _steps(schedule):
        wx, we, sk, alpha = step_coefficients(proc, level, nxt, eta)
        a_mat, b_mat, _ = _denoiser_matrices(proc, level, mu0, cov0)
        g = wx * a_mat + we * b_mat  # x' = G x + c + σ_k z
        c = wx * (mu0 - alpha * a_mat @ mu0) - we * alpha * b_mat @ mu0
        mu = g @ mu + c
        cov = g @ cov @ g.T + sk**2 * np.eye(d)
        means.append(mu)
        covs.append(cov)
    return (means, covs) if trajectory else (mu, cov)


def sample(mean0, cov0, schedule, eta: float, key: jax.Array, n: int) -> np.ndarray:
    """Monte-Carlo time-domain sampling with the matrix MMSE denoiser; returns (n, d).

    Randomness comes from ``key`` only: the start noise from ``fold_in(key, 0)``, the
    noise of step k from ``fold_in(key, k)``.
    """
    mu0 = np.asarray(mean0, dtype=np.float64)
    cov0 = np.asarray(cov0, dtype=np.float64)
    d = len(mu0)
    proc = schedule.process
    lv0 = float(np.asarray(schedule.levels, dtype=np.float64)[0])
    z0 = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), (n, d)), dtype=np.float64)
    x = z0 if proc == "vp" else lv0 * z0
    for k, (level, nxt) in enumerate(_steps(schedule), start=1):
        wx, we, sk, alpha = step_coefficients(proc, level, nxt, eta)
        a_mat, b_mat, _ = _denoiser_matrices(proc, level, mu0, cov0)
        y = x - alpha * mu0
        x0_hat = mu0 + y @ a_mat.T
        eps_hat = y @ b_mat.T
        x = wx * x0_hat + we * eps_hat
        if sk > 0:
            z = np.asarray(jax.random.normal(jax.random.fold_in(key, k), (n, d)), np.float64)
            x = x + sk * z
    return x
