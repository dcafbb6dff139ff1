"""Parametric fits of a designed schedule to the published families (least squares in ρ).

The families are evaluated on their own step grids (``schedules``): Chen 2023 cosine and
sigmoid (start, end, τ) at t_i = 1 − i/S, clipped as the heuristics are; EDM (ρ, σ_min,
σ_max) at u_i = i/(S−1). Parameters are mapped to unconstrained variables so that every
fit stays valid (cosine: 0 ≤ start < end ≤ 1; sigmoid: start < end; τ, ρ > 0;
0 < σ_min < σ_max), the sum of squared log-SNR residuals is minimised with optax L-BFGS
from several starts, and the best fit is reported with the divergence it achieves.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdiff.core.checks import check_choice
from specdiff.core.divergence import divergence
from specdiff.core.engine import output_moments
from specdiff.core.schedule import Schedule
from specdiff.design import heuristics as _s

FAMILIES = ("chen_cosine", "chen_sigmoid", "edm")
_LOGIT_CLIP = float(np.log(_s.A_MAX) - np.log1p(-_s.A_MAX))


def _bounded_tau(u):
    """τ = exp(u) kept inside [1e-2, 1e2]: beyond that the families degenerate (the cosine
    family with τ → ∞ and start ≈ end fits anything with meaningless parameters)."""
    return jnp.exp(4.6 * jnp.tanh(u / 4.6))


def _params(family, u):
    """Unconstrained u (3,) → the family's parameters (as a dict of scalars)."""
    if family == "chen_cosine":
        start = 0.999 * jax.nn.sigmoid(u[0])
        end = start + (1 - start) * jax.nn.sigmoid(u[1])
        return {"start": start, "end": end, "tau": _bounded_tau(u[2])}
    if family == "chen_sigmoid":
        return {"start": u[0], "end": u[0] + jnp.exp(u[1]), "tau": _bounded_tau(u[2])}
    return {
        "sigma_min": jnp.exp(u[0]),
        "sigma_max": jnp.exp(u[0] + jnp.exp(u[1])),
        "rho": jnp.exp(u[2]),
    }


def _inits(family):
    """Starting points in u: the published defaults and a few others."""
    if family == "chen_cosine":
        return [[-6.0, 6.0, 0.0], [-1.0, 1.0, 0.0], [-3.0, 2.0, 0.7], [-3.0, 2.0, -0.7]]
    if family == "chen_sigmoid":
        return [
            [-3.0, np.log(6.0), 0.0],
            [0.0, np.log(3.0), 0.0],
            [-5.0, np.log(10.0), 0.7],
            [-1.0, np.log(2.0), -0.7],
        ]
    return [
        [np.log(0.002), np.log(np.log(4e4)), np.log(7.0)],
        [np.log(0.02), np.log(np.log(1e3)), np.log(3.0)],
        [np.log(0.005), np.log(np.log(2e3)), np.log(12.0)],
    ]


def family_log_snr(family: str, params: dict, steps: int, xp=jnp):
    """Log-SNR grid (S,) of a family with the given parameters, noisiest first."""
    if family == "edm":
        u = xp.arange(steps) / max(steps - 1, 1)
        return -2.0 * xp.log(
            _s.edm_sigmas(u, params["sigma_min"], params["sigma_max"], params["rho"])
        )
    t = 1.0 - xp.arange(steps) / steps
    fn = _s.chen_cosine_gamma if family == "chen_cosine" else _s.chen_sigmoid_gamma
    g = fn(t, params["start"], params["end"], params["tau"], xp=xp)
    g = xp.clip(g, _s.A_MIN, _s.A_MAX)
    return xp.log(g) - xp.log1p(-g)


def _sse(u, target, family):
    rho = family_log_snr(family, _params(family, u), target.shape[0])
    return jnp.sum((rho - target) ** 2)


@functools.partial(jax.jit, static_argnames=("family", "iters"))
def _fit_one(u0, target, family, iters=300):
    opt = optax.lbfgs()
    fun = lambda u: _sse(u, target, family)  # noqa: E731
    vg = optax.value_and_grad_from_state(fun)

    def body(_, carry):
        u, st = carry
        value, grad = vg(u, state=st)
        upd, st = opt.update(grad, st, u, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(u, upd), st

    u, _ = jax.lax.fori_loop(0, iters, body, (u0, opt.init(u0)))
    return u, fun(u)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """A family fitted to a schedule.

    Attributes:
      family: "chen_cosine", "chen_sigmoid" or "edm".
      params: the fitted parameters (start, end, tau) or (sigma_min, sigma_max, rho).
      schedule: the fitted family's schedule at the same S, in the target's process.
      rmse_log_snr: root-mean-square log-SNR residual of the fit.
      loss: the divergence the fitted schedule achieves (None without a spectrum).
    """

    family: str
    params: dict
    schedule: Schedule
    rmse_log_snr: float
    loss: float | None


def fit_family(
    schedule: Schedule, family: str, spectrum=None, sampler=None, metric: str = "w2"
) -> FitResult:
    """Least-squares fit (in log-SNR) of a published schedule family to ``schedule``.

    Args:
      schedule: the target, typically ``design_schedule(...).schedule``.
      family: ``"chen_cosine"``, ``"chen_sigmoid"`` or ``"edm"``.
      spectrum, sampler, metric: if given, the fitted schedule's divergence is reported.

    Example:
      >>> import specdiff as sd
      >>> fit = sd.fit_family(sd.schedules.edm(12, rho=5.0), "edm")
      >>> round(fit.params["rho"], 3)
      5.0
    """
    check_choice("family", family, FAMILIES)
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")
    steps = schedule.num_steps
    if steps < 3:
        raise ValueError(f"fitting a 3-parameter family needs steps >= 3, got {steps}")
    dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    target = jnp.asarray(np.asarray(schedule.log_snr, np.float64), dt)
    best = None
    for u0 in _inits(family):
        u, sse = _fit_one(jnp.asarray(u0, dt), target, family)
        if np.isfinite(float(sse)) and (best is None or float(sse) < best[1]):
            best = (u, float(sse))
    if best is None:
        raise ValueError(f"the {family} fit did not converge for this schedule")
    params = {k: float(v) for k, v in _params(family, best[0]).items()}
    rho = np.asarray(family_log_snr(family, params, steps, xp=np), np.float64)
    # Clipping can make neighbouring levels equal; nudge them apart so the grid is valid.
    rho = np.maximum.accumulate(rho + 1e-9 * np.arange(steps))
    fitted = Schedule.from_log_snr(rho, "vp")
    fitted = fitted.to_ve() if schedule.process == "ve" else fitted
    loss = None
    if spectrum is not None and sampler is not None:
        loss = float(divergence(spectrum, output_moments(spectrum, fitted, sampler), metric))
    return FitResult(family, params, fitted, float(np.sqrt(best[1] / steps)), loss)
