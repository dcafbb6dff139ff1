"""Samplers as per-eigenvalue linear systems (SPEC §3).

Every sampler shares one interface: ``sampler.step(rho, rho_next, process)`` returns the
coefficients of one step's affine map per eigenvalue, and the engine (``specdiff._engine``)
composes them. A DDIM/DDPM step acting on the centred state y = x − α·m is

    y' = g(λ)·y + σ_k·z,        g(λ) = (p·λ + q) / (r·λ + t),

a scalar state (``state_size = 1``). Samplers whose step uses history (multistep
DPM-Solver++, Heun/EDM) have a state of a few components and a matrix gain; they declare
``state_size > 1`` and the engine composes their matrices instead (not implemented yet).

Samplers are frozen dataclasses: hashable, so they are static arguments under ``jit``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["DDIM", "DDPM", "LinearStep", "from_name", "log_alpha_sigma"]


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


def log_alpha_sigma(rho, process: str):
    """(log α, log σ) of x_t = α·x0 + σ·ε at log-SNR ρ.

    VP: α² = sigmoid(ρ), σ² = sigmoid(−ρ) (computed as log-sigmoids: exact near both ends).
    VE: α = 1, σ = exp(−ρ/2).
    """
    if process == "vp":
        return 0.5 * jax.nn.log_sigmoid(rho), 0.5 * jax.nn.log_sigmoid(-rho)
    return jnp.zeros_like(rho), -0.5 * rho


@dataclasses.dataclass(frozen=True)
class DDIM:
    """Generalised DDIM (Song et al. 2021); ``eta=0`` deterministic, ``eta=1`` DDPM ancestral.

    Step from level (α, σ, ρ) to (α', σ', ρ'), with x̂0 and ε̂ the MMSE predictions:

        x' = α'·x̂0 + √(σ'² − σ_k²)·ε̂ + σ_k·z,
        σ_k² = η²·σ'²·(1 − e^{ρ−ρ'})

    which is SPEC §3's σ_k² = η²(1−a')/(1−a)(1 − a/a') for VP and η²s'²(s²−s'²)/s² for VE.
    Per eigenvalue: g = (α α' λ + σ c)/(α² λ + σ²) with c = √(σ'² − σ_k²).
    """

    eta: float = 0.0
    state_size: ClassVar[int] = 1

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
    def deterministic(self) -> bool:
        return self.eta == 0.0

    def step(self, rho, rho_next, process: str) -> LinearStep:
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


def DDPM() -> DDIM:
    """DDPM ancestral sampling: generalised DDIM with ``eta=1``."""
    return DDIM(eta=1.0)


SAMPLERS = ("ddim", "ddpm")


def from_name(name: str, eta: float | None = None) -> DDIM:
    """``"ddim"`` (eta defaults to 0) or ``"ddpm"``; raises ``ValueError`` otherwise."""
    if name == "ddim":
        return DDIM(eta=0.0 if eta is None else eta)
    if name == "ddpm":
        if eta not in (None, 1.0):
            raise ValueError(f"ddpm means eta=1; got eta={eta!r} (use ddim with eta)")
        return DDPM()
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(map(repr, SAMPLERS))}")
