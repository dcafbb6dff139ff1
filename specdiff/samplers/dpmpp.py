"""DPM-Solver++ multistep samplers: 2M, 2M SDE and 3M SDE (Lu et al. 2022), as k-diffusion.

In t = −log σ, with h = t_{i+1} − t_i and D_i = D(x_i; σ_i):

- ``dpmpp_2m``: x' = (σ'/σ)·x − (e^{−h} − 1)·D̃,  D̃ = (1 + 1/2r)·D_i − (1/2r)·D_{i−1},
  r = h_{i−1}/h (first-order D̃ = D_i on the first and the last step);
- ``dpmpp_2m_sde``: x' = (σ'/σ)e^{−ηh}·x + (1 − e^{−h−ηh})·D_i + a second-order correction
  (``solver_type`` 'midpoint' or 'heun') + σ'·√(1 − e^{−2ηh})·s_noise·z;
- ``dpmpp_3m_sde``: the third-order version with two previous denoised values.

The SDE samplers' last step returns D(x; σ_{S−1}). The state carries the previous denoised
values (history 1 or 2); h_{i−1}, h_{i−2} come from the σ grid. Noise is independent
between steps: k-diffusion's default Brownian-tree noise sampler draws the increments of
one Brownian motion over the disjoint intervals (σ_{i+1}, σ_i), which are independent
standard normals after its normalisation, so the output distribution is the same.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from specdiff.samplers.base import Sampler, Stochastic

__all__ = ["DPMPP2M", "DPMPP2MSDE", "DPMPP3MSDE"]

SOLVER_TYPES = ("midpoint", "heun")


def _t(sigma):
    return -jnp.log(sigma)


@dataclasses.dataclass(frozen=True)
class DPMPP2M(Sampler):
    """DPM-Solver++(2M) (``sample_dpmpp_2m``)."""

    name: ClassVar[str] = "dpmpp_2m"
    history: ClassVar[int] = 1

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        denoised = denoise(x, sigmas[i])
        if last:  # t_next = ∞: σ'/σ = 0 and −(e^{−h} − 1) = 1
            return denoised, (denoised,)
        t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
        h = t_next - t
        if order == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - jnp.expm1(-h) * denoised
        else:
            (old_denoised,) = hist
            h_last = t - _t(sigmas[i - 1])
            r = h_last / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigmas[i + 1] / sigmas[i]) * x - jnp.expm1(-h) * denoised_d
        return x, (denoised,)


@dataclasses.dataclass(frozen=True)
class _SDE(Stochastic):
    def noise(self, x, z, sigma_next, h):
        if not self.eta:
            return x
        return x + z[0] * sigma_next * jnp.sqrt(-jnp.expm1(-2 * h * self.eta)) * self.s_noise


@dataclasses.dataclass(frozen=True)
class DPMPP2MSDE(_SDE):
    """DPM-Solver++(2M) SDE (``sample_dpmpp_2m_sde``)."""

    solver_type: str = "midpoint"
    name: ClassVar[str] = "dpmpp_2m_sde"
    history: ClassVar[int] = 1

    def __post_init__(self):
        super().__post_init__()
        if self.solver_type not in SOLVER_TYPES:
            raise ValueError(
                f"solver_type must be one of {', '.join(map(repr, SOLVER_TYPES))}, "
                f"got {self.solver_type!r}"
            )

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        denoised = denoise(x, sigmas[i])
        if last:  # denoising step
            return denoised, (denoised,)
        t, s = _t(sigmas[i]), _t(sigmas[i + 1])
        h = s - t
        eta_h = self.eta * h
        x = sigmas[i + 1] / sigmas[i] * jnp.exp(-eta_h) * x - jnp.expm1(-h - eta_h) * denoised
        if order > 0:
            (old_denoised,) = hist
            h_last = t - _t(sigmas[i - 1])
            r = h_last / h
            if self.solver_type == "heun":
                c = -jnp.expm1(-h - eta_h) / (-h - eta_h) + 1
                x = x + c * (1 / r) * (denoised - old_denoised)
            else:
                x = x + 0.5 * -jnp.expm1(-h - eta_h) * (1 / r) * (denoised - old_denoised)
        return self.noise(x, z, sigmas[i + 1], h), (denoised,)


@dataclasses.dataclass(frozen=True)
class DPMPP3MSDE(_SDE):
    """DPM-Solver++(3M) SDE (``sample_dpmpp_3m_sde``)."""

    name: ClassVar[str] = "dpmpp_3m_sde"
    history: ClassVar[int] = 2

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        denoised = denoise(x, sigmas[i])
        denoised_1, denoised_2 = hist
        if last:  # denoising step
            return denoised, (denoised, denoised_1)
        t, s = _t(sigmas[i]), _t(sigmas[i + 1])
        h = s - t
        h_eta = h * (self.eta + 1)
        x = jnp.exp(-h_eta) * x - jnp.expm1(-h_eta) * denoised
        phi_2 = jnp.expm1(-h_eta) / h_eta + 1
        if order >= 2:
            h_1 = t - _t(sigmas[i - 1])
            h_2 = _t(sigmas[i - 1]) - _t(sigmas[i - 2])
            r0 = h_1 / h
            r1 = h_2 / h
            d1_0 = (denoised - denoised_1) / r0
            d1_1 = (denoised_1 - denoised_2) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + phi_2 * d1 - phi_3 * d2
        elif order == 1:
            h_1 = t - _t(sigmas[i - 1])
            r = h_1 / h
            d = (denoised - denoised_1) / r
            x = x + phi_2 * d
        return self.noise(x, z, sigmas[i + 1], h), (denoised, denoised_1)
