"""Linear multistep (``sample_lms``): Adams–Bashforth in σ on the Karras ODE derivative.

With d_i = (x_i − D(x_i; σ_i))/σ_i and p = min(i + 1, order):

    x' = x + Σ_{j<p} c_j·d_{i−j},
    c_j = ∫_{σ_i}^{σ_{i+1}} ∏_{k<p, k≠j} (τ − σ_{i−k})/(σ_{i−j} − σ_{i−k}) dτ

k-diffusion integrates the Lagrange basis with ``scipy.integrate.quad`` (epsrel 1e-4);
here the integral is exact: τ = σ_i + u·(σ_{i+1} − σ_i) turns each basis polynomial into
a product of well-scaled linear factors in u ∈ [0, 1], integrated by Gauss–Legendre with
⌈p/2⌉ nodes, exact for its degree p − 1. The state carries the previous order − 1
derivatives.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_int
from specdiff.samplers.base import Sampler

__all__ = ["LMS", "lms_coefficients"]


def lms_coefficients(nodes, a, b):
    """∫_a^b ℓ_j(τ) dτ for the Lagrange basis ℓ_j on ``nodes`` (a tuple of p scalars).

    Exact for any p (Gauss–Legendre with ⌈p/2⌉ nodes on a polynomial of degree p − 1).
    """
    p = len(nodes)
    u, w = np.polynomial.legendre.leggauss(max(1, (p + 1) // 2))
    dtype = jnp.result_type(a, b, *nodes)  # keep float32 schedules float32
    u, w = jnp.asarray((u + 1) / 2, dtype), jnp.asarray(w / 2, dtype)  # on [0, 1]
    h = b - a
    coeffs = []
    for j in range(p):
        prod = 1.0
        for k in range(p):
            if k != j:
                prod = prod * (a + u * h - nodes[k]) / (nodes[j] - nodes[k])
        coeffs.append(h * (prod * w).sum())
    return coeffs


@dataclasses.dataclass(frozen=True)
class LMS(Sampler):
    """Linear multistep of ``order`` (k-diffusion's default 4)."""

    order: int = 4
    name: ClassVar[str] = "lms"

    def __post_init__(self):
        check_int("order", self.order, 1)

    @property
    def history(self) -> int:  # the previous order − 1 derivatives
        return self.order - 1

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        denoised = denoise(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        ds = (d, *hist)  # d_i, d_{i−1}, …
        cur_order = order + 1
        nodes = tuple(sigmas[i - k] for k in range(cur_order))
        coeffs = lms_coefficients(nodes, sigmas[i], sigmas[i + 1])
        x = x + sum(c * dj for c, dj in zip(coeffs, ds[:cur_order]))
        return x, ds[: self.history]
