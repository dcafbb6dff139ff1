"""Closed-form divergences between the generated and the data Gaussians (SPEC §5).

Both covariances are diagonal in the same eigenbasis, so every divergence is a sum of
per-eigenvalue terms.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_choice, is_concrete

METRICS = ("w2", "kl", "reverse_kl")


def divergence_terms(spectrum, moments, metric: str = "w2", floor=None):
    """Per-eigenvalue terms whose sum is the divergence (W2²'s terms for ``"w2"``).

    ``"w2"``: Δ² + (√v − √λ)²;  ``"kl"``: ½[λ/v − 1 − ln(λ/v) + Δ²/v] (KL(data‖model));
    ``"reverse_kl"``: ½[v/λ − 1 − ln(v/λ) + Δ²/λ] (KL(model‖data)).
    """
    check_choice("metric", metric, METRICS)
    lam = spectrum.eigenvalues
    v = moments.var
    delta = moments.mean - spectrum.mean
    if metric == "w2":
        pos = lam > 0
        # (√v − √λ)², and v itself when λ = 0 (double where: no inf·0 in the gradient).
        vs = jnp.where(pos, v, 1.0)
        ls = jnp.where(pos, lam, 1.0)
        return delta**2 + jnp.where(pos, (jnp.sqrt(vs) - jnp.sqrt(ls)) ** 2, v)
    if floor is None:
        if is_concrete(lam) and (np.asarray(lam) == 0).any():
            raise ValueError(
                f"metric {metric!r} is infinite for a zero eigenvalue (low-rank data); "
                "pass floor=<small positive number> to clip eigenvalues and variances, "
                "or use metric='w2'"
            )
    else:
        if is_concrete(floor) and not float(floor) > 0:
            raise ValueError(f"floor must be a positive number, got {floor!r}")
        lam = jnp.maximum(lam, floor)
        v = jnp.maximum(v, floor)
    if metric == "kl":
        a, b = lam, v
    else:
        a, b = v, lam
    safe_b = jnp.where(b > 0, b, 1.0)
    r = a / safe_b
    term = 0.5 * (r - 1 - jnp.log(jnp.where(r > 0, r, 1.0)) + delta**2 / safe_b)
    # Under jit the zero-eigenvalue check cannot run: return +inf there, never NaN.
    return jnp.where((b > 0) & (a > 0), term, jnp.inf)


def divergence(spectrum, moments, metric: str = "w2", floor=None, weights=None):
    """Exact divergence between N(mean, var) of ``moments`` and the data ``spectrum``.

    Args:
      spectrum: the data ``Spectrum``.
      moments: ``Moments`` from ``output_moments``.
      metric: ``"w2"`` (W2 distance, not squared), ``"kl"`` (KL(data‖model)) or
        ``"reverse_kl"`` (KL(model‖data)).
      floor: for the KLs, a positive lower bound applied to eigenvalues and variances;
        required when an eigenvalue is zero (otherwise ``ValueError``).
      weights: optional (d,) non-negative per-eigenvalue weights on the terms.

    Returns:
      A scalar.

    Example:
      >>> import specdiff as sd
      >>> spec = sd.Spectrum([4.0, 1.0, 0.25])
      >>> mom = sd.output_moments(spec, sd.schedules.cosine(50), sd.samplers.DDIM())
      >>> float(sd.divergence(spec, mom, "w2")) < 0.1
      True
    """
    terms = divergence_terms(spectrum, moments, metric, floor)
    if weights is not None:
        if is_concrete(weights):
            w = np.asarray(weights)
            if w.shape != tuple(np.shape(terms)):
                raise ValueError(f"weights must have shape {np.shape(terms)}, got {w.shape}")
            if not np.isfinite(w).all() or (w < 0).any():
                raise ValueError("weights must be finite and >= 0")
        terms = terms * weights
    total = jnp.sum(terms)
    return jnp.sqrt(total) if metric == "w2" else total
