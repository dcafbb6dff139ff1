"""DDPM's step and its kin: output moments in closed form (SPEC §11).

Some one-state samplers with noise step, in σ coordinates, to the exact posterior mean
given x̂0: x' = x̂0 + (σ'²/σ)·ε̂ plus fresh noise B_k·z. DDPM (generalised DDIM at η = 1)
and ancestral Euler at η = 1 (``sample_euler_ancestral``: σ_down = σ'²/σ) are this step
(their ``telescopes`` is True). Under Gaussian data, per eigenvalue, step k's gain is

    g_k(λ) = (λ + σ_{k+1}²)/(λ + σ_k²)

(1 at γ = 1, where x̂0 = x) and the last step's is λ/(λ + σ_{S−1}²) (x̂0). So every
product of gains telescopes: ∏_{j>k} g_j = λ/(λ + σ_{k+1}²), and

    H          = λ/(λ + σ_0²),
    Σ noise    = Σ_{k<S−1} B_k²·r_k²,          r_k = λ/(λ + σ_{k+1}²) ∈ [0, 1].

H does not depend on the levels between σ_0 and 0; the noise is one weighted sum over
steps of a bounded term, with no product over steps and no log. B_k comes from the
sampler's own step (``adjoint.step_corners``: the step run at the corners of its gain),
not from a second copy of it; the sampler only declares that its gain has this form, and
tests/core/test_telescoped.py holds the derived gains to it (gain 1 at γ = 1, the
numerator's root F_k(γ=0)·σ_k² equal to σ_{k+1}²) and the moments to the adjoint path.

The sum's reverse pass is written out: with q = 1/(λ + c_k) (c_k = σ_{k+1}²), r = λq,

    ∂/∂w_k = Σ_λ ct·r²,     ∂/∂c_k = −2 w_k Σ_λ ct·r²q,     ∂/∂λ = 2 ct Σ_k w_k c_k r q²,

two (steps × d) @ (d,) products (and a third for ∂/∂λ, which XLA drops when λ is not
differentiated); autodiff of the forward kept more (steps × d) arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdiff.core import adjoint
from specdiff.core.checks import matmul

__all__ = ["applies", "coefficients", "noise_sum", "output"]


def applies(sampler) -> bool:
    """Whether the sampler's step is DDPM's (one state, one noise, its ``telescopes``)."""
    return (
        bool(getattr(sampler, "telescopes", False))
        and sampler.history == 0
        and sampler.noise_dim == 1
    )


def coefficients(sampler, sigmas):
    """(s0² (), w (S − 1,), c (S − 1,)) from the sampler's step: σ_0², the noise weights
    B_k² and the levels σ_{k+1}². Independent of λ; differentiable in ``sigmas``
    ((S + 1,), trailing 0)."""
    f, s = adjoint.step_corners(sampler, sigmas)  # f (S, 2, 1, 2), s (S, 1)
    noise = f[:-1, 0, 0, 1]  # B_k (one noise, independent of γ)
    s2 = s[:, 0] ** 2
    return s2[0], noise**2, s2[1:]


@jax.custom_vjp
def noise_sum(lam, w, c):
    """Σ_k w_k·(λ/(λ + c_k))² per eigenvalue; w ≥ 0, c > 0 (steps,), λ ≥ 0 (d,)."""
    r2 = jnp.square(lam / (lam + c[:, None]))  # (steps, d), in [0, 1]
    if lam.shape[-1] <= 16:  # few eigenvalues (per-eigenvalue problems): a fused sum
        return jnp.sum(w[:, None] * r2, axis=0)
    return matmul(w, r2)


def _noise_sum_fwd(lam, w, c):
    return noise_sum(lam, w, c), (lam, w, c)


def _noise_sum_bwd(res, ct):
    lam, w, c = res
    q = 1.0 / (lam + c[:, None])  # (steps, d)
    r = lam * q
    r2 = r * r
    if lam.shape[-1] <= 16:
        d_w, d_c = jnp.sum(r2 * ct, axis=1), jnp.sum(r2 * q * ct, axis=1)
        d_lam = 2.0 * ct * jnp.sum((w * c)[:, None] * r * q * q, axis=0)
    else:
        d_w, d_c = matmul(r2, ct), matmul(r2 * q, ct)
        d_lam = 2.0 * ct * matmul(w * c, r * q * q)
    return d_lam, d_w, -2.0 * w * d_c


noise_sum.defvjp(_noise_sum_fwd, _noise_sum_bwd)


def output(coeffs, lam):
    """(H, Σ noise) per eigenvalue in σ coordinates (module docstring); ``coeffs`` from
    ``coefficients`` (the same call as ``adjoint.output_row``)."""
    s0_sq, w, c = coeffs
    return lam / (lam + s0_sq), noise_sum(lam, w, c)
