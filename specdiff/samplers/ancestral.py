"""Ancestral samplers: a deterministic step down to σ_down, then fresh noise of std σ_up.

As k-diffusion's ``get_ancestral_step``:

    σ_up   = min(σ', η·√(σ'²(σ² − σ'²)/σ²)),      σ_down = √(σ'² − σ_up²)

- ``euler_ancestral``: x' = x + d·(σ_down − σ) + s_noise·σ_up·z, d = (x − D(x; σ))/σ.
  With s_noise = 1 this is VE DDIM(η) (a test).
- ``dpm_2_ancestral``: the DPM-2 midpoint step (in log σ) to σ_down, then the noise.
- ``dpmpp_2s_ancestral``: the DPM-Solver++(2S) step (r = ½, in t = −log σ) to σ_down.

On the last step σ' = 0, so σ_up = σ_down = 0 and the step is Euler to 0 (one evaluation).
For η > 1, σ_down can reach 0 before the end; k-diffusion then takes an Euler step, and so
do these (a traced branch with safe arguments, so gradients stay finite). After that Euler
step ``euler_ancestral`` and ``dpmpp_2s_ancestral`` still add the noise σ_up·z, while
``dpm_2_ancestral`` adds none (k-diffusion adds it inside its DPM-Solver-2 branch only).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from specdiff.samplers.base import Stochastic, safe_sqrt

__all__ = ["DPM2Ancestral", "DPMPP2SAncestral", "EulerAncestral", "ancestral_step"]


def ancestral_step(sigma_from, sigma_to, eta: float):
    """(σ_down, σ_up) of k-diffusion's ``get_ancestral_step``."""
    if not eta:
        return sigma_to, jnp.zeros_like(sigma_to)
    sigma_up = jnp.minimum(
        sigma_to, eta * safe_sqrt(sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2)
    )
    # σ_up = σ_to (clipped, η > 1) must give σ_down = 0 exactly, as in k-diffusion; a fused
    # σ_to² − σ_up² under jit can leave a rounding residue and switch the step's branch.
    sigma_down = jnp.where(sigma_up < sigma_to, safe_sqrt(sigma_to**2 - sigma_up**2), 0.0)
    return sigma_down, sigma_up


@dataclasses.dataclass(frozen=True)
class _Ancestral(Stochastic):
    def noise(self, x, z, sigma_up, last):
        """k-diffusion's ``if sigmas[i + 1] > 0: x = x + noise * s_noise * sigma_up``."""
        if last or not self.eta:
            return x
        return x + z[0] * self.s_noise * sigma_up

    def down_or_euler(self, second_order, x, d, sigma, sigma_down, last):
        """The step to σ_down: ``second_order(σ_down)`` unless σ_down = 0 (then Euler)."""
        euler = x + d * (sigma_down - sigma)
        if last:
            return euler
        if self.eta <= 1.0:  # σ_down > 0 before the last step
            return second_order(sigma_down)
        pos = sigma_down > 0
        return jnp.where(pos, second_order(jnp.where(pos, sigma_down, sigma)), euler)


@dataclasses.dataclass(frozen=True)
class EulerAncestral(_Ancestral):
    """Ancestral sampling with Euler steps (``sample_euler_ancestral``)."""

    name: ClassVar[str] = "euler_ancestral"

    @property
    def telescopes(self) -> bool:
        """η = 1: σ_down = σ'²/σ, DDPM's step (``core.telescoped``)."""
        return self.eta == 1.0

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], self.eta)
        d = (x - denoised) / sigmas[i]
        dt = sigma_down - sigmas[i]
        x = x + d * dt
        return self.noise(x, z, sigma_up, last), hist


@dataclasses.dataclass(frozen=True)
class DPM2Ancestral(_Ancestral):
    """Ancestral sampling with DPM-Solver-2 steps (``sample_dpm_2_ancestral``)."""

    name: ClassVar[str] = "dpm_2_ancestral"
    evals: ClassVar[int] = 2

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        sigma = sigmas[i]
        denoised = denoise(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigmas[i + 1], self.eta)
        d = (x - denoised) / sigma

        def dpm_solver_2(sigma_down):
            sigma_mid = jnp.exp(0.5 * (jnp.log(sigma) + jnp.log(sigma_down)))
            dt_1 = sigma_mid - sigma
            dt_2 = sigma_down - sigma
            x_2 = x + d * dt_1
            denoised_2 = denoise(x_2, sigma_mid)
            d_2 = (x_2 - denoised_2) / sigma_mid
            return x + d_2 * dt_2

        x = self.down_or_euler(dpm_solver_2, x, d, sigma, sigma_down, last)
        if self.eta > 1:  # k-diffusion adds this noise in its DPM-Solver-2 branch only
            sigma_up = jnp.where(sigma_down > 0, sigma_up, 0.0)
        return self.noise(x, z, sigma_up, last), hist


@dataclasses.dataclass(frozen=True)
class DPMPP2SAncestral(_Ancestral):
    """Ancestral sampling with DPM-Solver++(2S) steps (``sample_dpmpp_2s_ancestral``)."""

    name: ClassVar[str] = "dpmpp_2s_ancestral"
    evals: ClassVar[int] = 2

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        sigma = sigmas[i]
        denoised = denoise(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigmas[i + 1], self.eta)
        d = (x - denoised) / sigma

        def dpm_solver_pp_2s(sigma_down):
            t, t_next = -jnp.log(sigma), -jnp.log(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (jnp.exp(-s) / jnp.exp(-t)) * x - jnp.expm1(-h * r) * denoised
            denoised_2 = denoise(x_2, jnp.exp(-s))
            return (jnp.exp(-t_next) / jnp.exp(-t)) * x - jnp.expm1(-h) * denoised_2

        x = self.down_or_euler(dpm_solver_pp_2s, x, d, sigma, sigma_down, last)
        return self.noise(x, z, sigma_up, last), hist
