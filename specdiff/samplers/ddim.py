"""DDIM and DDPM (generalised DDIM, Song et al. 2021; SPEC §3).

DDIM is defined, like every sampler, by its ``step`` in σ coordinates (``base``). Its step
gain is also known in closed form: acting on the centred state y = x − α·m,

    y' = g(λ)·y + σ_k·z,        g(λ) = (p·λ + q) / (r·λ + t),

and ``mobius_step``/``steps_along`` give the four coefficients in log form. The engine
uses them for its fast scalar path (products of Möbius gains, one log per block of
steps); the tests hold that path equal to the affine maps derived from ``step``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from specdiff.core.schedule import log_alpha_sigma
from specdiff.samplers.base import Sampler

__all__ = ["DDIM", "DDPM", "LinearStep"]


class LinearStep(NamedTuple):
    """Coefficients of y' = (p·λ + q)/(r·λ + t)·y + √noise_var·z, all in log form.

    Each field has the shape of the step axis (S−1 for the steps between noisy levels).
    ``log_noise_var`` is −inf for a deterministic step.
    """

    log_p: jax.Array
    log_q: jax.Array
    log_r: jax.Array
    log_t: jax.Array
    log_noise_var: jax.Array


@dataclasses.dataclass(frozen=True)
class DDIM(Sampler):
    """Generalised DDIM (Song et al. 2021); ``eta=0`` deterministic, ``eta=1`` DDPM ancestral.

    Step from level (α, σ, ρ) to (α', σ', ρ'), with x̂0 and ε̂ the MMSE predictions:

        x' = α'·x̂0 + √(σ'² − σ_k²)·ε̂ + σ_k·z,
        σ_k² = η²·σ'²·(1 − e^{ρ−ρ'})

    which is SPEC §3's σ_k² = η²(1−a')/(1−a)(1 − a/a') for VP and η²s'²(s²−s'²)/s² for VE.
    Per eigenvalue: g = (α α' λ + σ c)/(α² λ + σ²) with c = √(σ'² − σ_k²).
    """

    eta: float = 0.0

    def __post_init__(self):
        eta = self.eta
        if isinstance(eta, bool) or not isinstance(eta, (int, float)):
            raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM ancestral), got {eta!r}")
        object.__setattr__(self, "eta", float(eta))

    @property
    def name(self) -> str:
        return "ddpm" if self.eta == 1.0 else "ddim"

    @property
    def noise_dim(self) -> int:
        return 0 if self.eta == 0.0 else 1

    def step(self, denoise, x, hist, z, sigmas, i, *, order, last):
        """The generalised DDIM step in σ coordinates (SPEC §3, VE form; any process).

        x̂0 = D(x; σ), ε̂ = (x − x̂0)/σ, x' = x̂0 + √(σ'² − σ_k²)·ε̂ + σ_k·z with
        σ_k² = η²σ'²(σ² − σ'²)/σ²; the last step returns x̂0.
        """
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x0_hat = denoise(x, sigma)
        if last:
            return x0_hat, hist
        eps_hat = (x - x0_hat) / sigma
        if self.eta == 0.0:
            return x0_hat + sigma_next * eps_hat, hist
        sigma_k = self.eta * sigma_next * jnp.sqrt(1.0 - (sigma_next / sigma) ** 2)
        c = sigma_next * jnp.sqrt((1.0 - self.eta**2) + self.eta**2 * (sigma_next / sigma) ** 2)
        return x0_hat + c * eps_hat + sigma_k * z[0], hist

    def mobius_step(self, rho, rho_next, process: str) -> LinearStep:
        """Coefficients of the steps ρ[k] → ρ_next[k] (arrays of the same shape)."""
        la, ls = log_alpha_sigma(rho, process)
        la2, ls2 = log_alpha_sigma(rho_next, process)
        return self._step(rho, rho_next, la, ls, la2, ls2)

    def steps_along(self, rho, process: str) -> LinearStep:
        """Coefficients of the S−1 steps between consecutive levels of a grid ρ (S,);
        (α, σ) are computed once per level and shared by the two steps that touch it."""
        la, ls = log_alpha_sigma(rho, process)
        return self._step(rho[:-1], rho[1:], la[:-1], ls[:-1], la[1:], ls[1:])

    def _step(self, rho, rho_next, la, ls, la2, ls2) -> LinearStep:
        if self.deterministic:
            log_noise_var = jnp.full_like(rho, -jnp.inf)
            log_c = ls2
        else:
            # 1 − e^{ρ−ρ'} ∈ (0, 1) for ρ' > ρ; −expm1 keeps it exact for small steps.
            frac = -jnp.expm1(rho - rho_next)
            eta2 = self.eta**2
            log_noise_var = jnp.log(eta2) + 2.0 * ls2 + jnp.log(frac)
            # c² = σ'²(1 − η² + η² e^{ρ−ρ'}), as a log-sum so that η = 1 stays exact.
            log_keep = jnp.log1p(-eta2) if eta2 < 1 else -jnp.inf
            log_c = ls2 + 0.5 * jnp.logaddexp(log_keep, jnp.log(eta2) + rho - rho_next)
        return LinearStep(
            log_p=la + la2,
            log_q=ls + log_c,
            log_r=2.0 * la,
            log_t=2.0 * ls,
            log_noise_var=log_noise_var,
        )

    def to_dict(self) -> dict:
        return {"name": self.name, "eta": self.eta}

    @property
    def telescopes(self) -> bool:
        """η = 1 (DDPM): c = σ'²/σ, the step of ``core.telescoped``."""
        return self.eta == 1.0

    @property
    def mobius(self) -> bool:
        """The engine's closed-form path: each step's gain is (pλ + q)/(rλ + t)."""
        return True


def DDPM() -> DDIM:
    """DDPM ancestral sampling: generalised DDIM with ``eta=1``."""
    return DDIM(eta=1.0)
