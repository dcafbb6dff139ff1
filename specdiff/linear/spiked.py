"""Spiked-covariance (BBP) theory for finite-sample denoisers (SPEC §8).

Model: noisy data at noise level s (VE σ; a VP level ᾱ has s² = (1−ᾱ)/ᾱ) has covariance

    Σ_s = (s² + b)·I + ℓ·u uᵀ,        b ≥ 0 an optional isotropic background of the clean data,

and a denoiser that estimates it from N samples sees the sample covariance Σ̂_s. With
γ = d/N and β = ℓ/(s² + b) (the spike in units of the isotropic level), as d, N → ∞
(Baik–Ben Arous–Péché 2005; Paul 2007):

    |⟨û, u⟩|²  →  (1 − γ/β²) / (1 + γ/β)           if β > √γ,  else 0
    λ̂_max      →  (s² + b)·(1 + β)(1 + γ/β)         if β > √γ,  else (s² + b)(1 + √γ)²

so the direction u emerges only once s² + b < ℓ/√γ (the BBP threshold). SPEC §8 states the
same formula with b = 0; its normalisation (β = ℓ/s², the spike over the *noise variance*,
not over the total variance s² + ℓ) was checked against simulation (``tests/test_spiked.py``,
``experiments.spiked_covariance``). Internally everything is written with t = (s² + b)/ℓ = 1/β:

    overlap = (1 − γ t²) / (1 + γ t),   t < 1/√γ

which is finite at s = 0 (t = 0: overlap 1, no noise) and at ℓ = 0 (no spike: overlap 0).
Every function broadcasts over its array arguments (noise level, γ, ℓ) with ``jnp`` rules.

Example:
  >>> import specdiff as sd
  >>> float(sd.spiked.overlap(0.0, 1.0, 0.5))  # no noise: the spike is found exactly
  1.0
  >>> float(sd.spiked.overlap(2.0, 1.0, 0.5))  # s² = 4 > ℓ/√γ ≈ 1.41: below threshold
  0.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_finite, is_concrete

__all__ = [
    "bbp_threshold",
    "overlap",
    "overlap_from_beta",
    "top_eigenvalue",
    "emergence_noise_var",
    "emergence_step",
    "top_eigenvalue_std",
]


def _check(name, x, *, positive=False, upper=None):
    if not is_concrete(x):
        return
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    check_finite(name, a)
    bad = (a <= 0) if positive else (a < 0)
    if bad.any():
        rel = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {rel}; got {a.ravel()[np.flatnonzero(bad)[0]]!r}")
    if upper is not None and (a >= upper).any():
        raise ValueError(f"{name} must be < {upper}; got {a.max()!r}")


def _float(*xs):
    dtype = jnp.result_type(*[jnp.asarray(x) for x in xs], float)
    return [jnp.asarray(x, dtype) for x in xs]


def bbp_threshold(gamma) -> jax.Array:
    """The BBP threshold β_c = √γ: a spike with ℓ/(s² + b) ≤ √γ is invisible to PCA.

    Args:
      gamma: aspect ratio γ = d/N > 0 (any shape).
    """
    _check("gamma", gamma, positive=True)
    (g,) = _float(gamma)
    return jnp.sqrt(g)


def overlap_from_beta(beta, gamma) -> jax.Array:
    """Limit of |⟨û, u⟩|² as a function of β = ℓ/(s² + b) and γ = d/N.

    (1 − γ/β²)/(1 + γ/β) for β > √γ, 0 otherwise; β = inf gives 1.

    Args:
      beta: spike strength over the isotropic variance, ≥ 0 (inf allowed).
      gamma: γ = d/N > 0. Shapes broadcast.
    """
    _check("gamma", gamma, positive=True)
    if is_concrete(beta) and (np.asarray(beta) < 0).any():
        raise ValueError("beta must be >= 0 (spike over noise variance)")
    b, g = _float(beta, gamma)
    t = jnp.where(b > 0, 1.0 / jnp.where(b > 0, b, 1.0), jnp.inf)
    return _overlap_t(t, g)


def _overlap_t(t, g):
    above = t * jnp.sqrt(g) < 1.0
    ts = jnp.where(above, t, 0.0)  # keeps the masked branch finite (and its gradient)
    val = (1.0 - g * ts**2) / (1.0 + g * ts)
    return jnp.where(above, val, 0.0)


def _t(noise, ell, background):
    """t = (s² + b)/ℓ, inf where ℓ = 0."""
    s, ell, b = _float(noise, ell, background)
    var = s**2 + b
    return jnp.where(ell > 0, var / jnp.where(ell > 0, ell, 1.0), jnp.inf), var


def overlap(noise, ell, gamma, background=0.0) -> jax.Array:
    """Limit of |⟨û_s, u⟩|² for the top eigenvector of the noisy sample covariance.

    β = ℓ/(s² + b);  overlap = (1 − γ/β²)/(1 + γ/β) if β > √γ else 0.

    Args:
      noise: noise level s ≥ 0 (VE σ, *not* the variance).
      ell: spike strength ℓ ≥ 0 (the eigenvalue of the clean covariance along u).
      gamma: γ = d/N > 0.
      background: isotropic variance b ≥ 0 of the clean data (0 in SPEC §8).

    Returns:
      The broadcast array of limiting squared overlaps in [0, 1].
    """
    _check("noise", noise)
    _check("ell", ell)
    _check("gamma", gamma, positive=True)
    _check("background", background)
    t, _ = _t(noise, ell, background)
    (g,) = _float(gamma)
    return _overlap_t(t, g)


def top_eigenvalue(noise, ell, gamma, background=0.0) -> jax.Array:
    """Limit of the largest eigenvalue of the noisy sample covariance.

    v = s² + b, β = ℓ/v:  v(1 + β)(1 + γ/β) = (v + ℓ)(1 + γ v/ℓ) if β > √γ, else v(1 + √γ)²
    (the right edge of the Marchenko–Pastur bulk). Arguments as for ``overlap``.
    """
    _check("noise", noise)
    _check("ell", ell)
    _check("gamma", gamma, positive=True)
    _check("background", background)
    t, var = _t(noise, ell, background)
    s_, ell_, g = _float(noise, ell, gamma)
    above = t * jnp.sqrt(g) < 1.0
    spike = (var + ell_) * (1.0 + g * jnp.where(above, t, 0.0))
    return jnp.where(above, spike, var * (1.0 + jnp.sqrt(g)) ** 2)


def top_eigenvalue_std(noise, ell, gamma, n, background=0.0) -> jax.Array:
    """Asymptotic standard deviation of the top sample eigenvalue above threshold.

    For real Gaussian data (Paul 2007, Thm. 3; Baik–Ben Arous–Péché 2005):
    √N (λ̂ − λ̄) → N(0, 2 v²(1 + β)²(1 − γ/β²)), with v = s² + b and β = ℓ/v.
    Below threshold the fluctuation is Tracy–Widom of order N^{-2/3}; this returns NaN-free
    zeros there (no Gaussian law applies).

    Args:
      n: the number of samples N (≥ 1). Other arguments as for ``overlap``.
    """
    _check("n", n, positive=True)
    t, var = _t(noise, ell, background)
    _, g, n_ = _float(noise, gamma, n)
    above = t * jnp.sqrt(g) < 1.0
    beta = 1.0 / jnp.where(above & (t > 0), t, 1.0)
    v2 = 2.0 * var**2 * (1.0 + beta) ** 2 * (1.0 - g / beta**2)
    return jnp.where(above & (t > 0), jnp.sqrt(jnp.maximum(v2, 0.0) / n_), 0.0)


def emergence_noise_var(ell, gamma, target=0.0, background=0.0) -> jax.Array:
    """Noise variance s² below which the limiting overlap exceeds ``target``.

    Solving (1 − γ/β²)/(1 + γ/β) = c for β:  (1 − c)β² − cγβ − γ = 0, so

        β_c = (cγ + √(c²γ² + 4(1 − c)γ)) / (2(1 − c)),    s²_c = ℓ/β_c − b

    (c = 0 gives the BBP threshold s² = ℓ/√γ − b). Negative values mean the direction
    never reaches the target at any noise level; they are returned as 0.

    Args:
      ell: spike strength ℓ ≥ 0; gamma: γ = d/N > 0; target: c in [0, 1);
      background: isotropic variance b ≥ 0.
    """
    _check("ell", ell)
    _check("gamma", gamma, positive=True)
    _check("target", target, upper=1.0)
    _check("background", background)
    ell_, g, c, b = _float(ell, gamma, target, background)
    beta = (c * g + jnp.sqrt((c * g) ** 2 + 4.0 * (1.0 - c) * g)) / (2.0 * (1.0 - c))
    return jnp.maximum(ell_ / beta - b, 0.0)


def emergence_step(sigmas, noise_var) -> jax.Array:
    """Index of the first sampler level whose noise variance is at or below ``noise_var``.

    Args:
      sigmas: (S,) VE noise levels of a schedule, noisiest first (``schedule.sigma``).
      noise_var: (...,) thresholds s²_* (e.g. ``emergence_noise_var``).

    Returns:
      (...,) integer steps in 0..S; S means "only at the final step to clean data".
    """
    s2 = jnp.asarray(sigmas) ** 2
    thr = jnp.asarray(noise_var)
    below = s2[..., :, None] <= thr.reshape(-1)[None, :]
    first = jnp.where(below.any(0), jnp.argmax(below, axis=0), s2.shape[-1])
    return first.reshape(thr.shape)
