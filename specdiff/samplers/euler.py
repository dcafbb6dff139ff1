"""Karras et al. (2022) Algorithm 2 family: Euler, Heun (EDM) and DPM-2, with churn.

Each step, as k-diffusion's ``sample_euler`` / ``sample_heun`` / ``sample_dpm_2``:

    γ = min(s_churn / S, √2 − 1) if s_tmin ≤ σ_i ≤ s_tmax else 0
    σ̂ = σ_i (1 + γ);  x ← x + √(σ̂² − σ_i²)·s_noise·z          (churn: fresh noise)
    d = (x − D(x; σ̂)) / σ̂
    Euler: x' = x + d (σ_{i+1} − σ̂)
    Heun:  x₂ = x + d (σ_{i+1} − σ̂), d₂ = (x₂ − D(x₂; σ_{i+1}))/σ_{i+1},
           x' = x + (d + d₂)/2 · (σ_{i+1} − σ̂)          (Euler on the last step, to σ = 0)
    DPM-2: σ_mid = exp(½(log σ̂ + log σ_{i+1})), x₂ = x + d (σ_mid − σ̂),
           x' = x + d₂ (σ_{i+1} − σ̂) with d₂ at (x₂, σ_mid)   (Euler on the last step)

Per eigenvalue the state is y alone (history 0); with churn B ≠ 0 (one fresh normal).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax.numpy as jnp

from specdiff.samplers.base import Sampler, check_churn, check_s_noise, safe_sqrt

__all__ = ["DPM2", "Euler", "Heun"]


@dataclasses.dataclass(frozen=True)
class _Churned(Sampler):
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0

    def __post_init__(self):
        c, lo, hi = check_churn(self.s_churn, self.s_tmin, self.s_tmax)
        object.__setattr__(self, "s_churn", c)
        object.__setattr__(self, "s_tmin", lo)
        object.__setattr__(self, "s_tmax", hi)
        object.__setattr__(self, "s_noise", check_s_noise(self.s_noise))

    @property
    def noise_dim(self) -> int:
        return 1 if self.s_churn > 0 else 0

    def churn(self, x, z, sigmas, i):
        """(x after churn, σ̂): Karras Alg. 2 lines 4–6."""
        sigma = sigmas[i]
        if self.s_churn == 0:
            return x, sigma
        steps = sigmas.shape[0] - 1
        inside = (self.s_tmin <= sigma) & (sigma <= self.s_tmax)
        gamma = jnp.where(inside, min(self.s_churn / steps, 2**0.5 - 1), 0.0)
        sigma_hat = sigma * (gamma + 1)
        eps = z[0] * self.s_noise
        return x + eps * safe_sqrt(sigma_hat**2 - sigma**2), sigma_hat

    def to_dict(self) -> dict:
        d = super().to_dict()
        if math.isinf(d["s_tmax"]):
            d["s_tmax"] = "inf"
        return d


@dataclasses.dataclass(frozen=True)
class Euler(_Churned):
    """Euler steps of the probability-flow ODE (``sample_euler``); s_churn = 0 is VE DDIM."""

    name: ClassVar[str] = "euler"

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        x, sigma_hat = self.churn(x, z, sigmas, i)
        denoised = denoise(x, sigma_hat)
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        return x + d * dt, hist


@dataclasses.dataclass(frozen=True)
class Heun(_Churned):
    """Heun's second-order steps (``sample_heun``; EDM's stochastic sampler when s_churn > 0)."""

    name: ClassVar[str] = "heun"
    evals: ClassVar[int] = 2

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        x, sigma_hat = self.churn(x, z, sigmas, i)
        denoised = denoise(x, sigma_hat)
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if last:  # Euler method
            return x + d * dt, hist
        x_2 = x + d * dt
        denoised_2 = denoise(x_2, sigmas[i + 1])
        d_2 = (x_2 - denoised_2) / sigmas[i + 1]
        d_prime = (d + d_2) / 2
        return x + d_prime * dt, hist


@dataclasses.dataclass(frozen=True)
class DPM2(_Churned):
    """DPM-Solver-2 steps, midpoint in log σ (``sample_dpm_2``)."""

    name: ClassVar[str] = "dpm_2"
    evals: ClassVar[int] = 2

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        x, sigma_hat = self.churn(x, z, sigmas, i)
        denoised = denoise(x, sigma_hat)
        d = (x - denoised) / sigma_hat
        if last:  # Euler method
            dt = sigmas[i + 1] - sigma_hat
            return x + d * dt, hist
        sigma_mid = jnp.exp(0.5 * (jnp.log(sigma_hat) + jnp.log(sigmas[i + 1])))
        dt_1 = sigma_mid - sigma_hat
        dt_2 = sigmas[i + 1] - sigma_hat
        x_2 = x + d * dt_1
        denoised_2 = denoise(x_2, sigma_mid)
        d_2 = (x_2 - denoised_2) / sigma_mid
        return x + d_2 * dt_2, hist
