"""Closed-form spectral transfer functions and output moments (SPEC §3–4).

For a schedule with levels L_0 … L_{S−1} (the final step to clean data implicit), step k
maps the centred state per eigenvalue as y_k = g_k(λ)·y_{k−1} + σ_k·z. Then

    H(λ)        = ∏_k g_k(λ)
    E[y_S]      = H·E[y_0]
    Var[y_S]    = H²·Var[y_0] + Σ_k σ_k²·∏_{j>k} g_j²

Everything is evaluated in log space over a (steps × eigenvalues) array: one fused pass,
no loop over steps or eigenvalues, no underflow for large S, and finite gradients with
respect to the log-SNR levels everywhere inside the domain. The final step (to clean)
has σ = 0 and is kept apart so that λ = 0 gives H = 0 exactly with finite gradients.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from specdiff._schedule import Schedule
from specdiff._spectrum import Spectrum
from specdiff.samplers import log_alpha_sigma


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Moments:
    """Per-eigenvalue Gaussian moments of the generated distribution.

    Attributes:
      mean: (d,) output mean in the eigenbasis (uncentred, compare with ``spectrum.mean``).
      var: (d,) output variance (compare with the eigenvalues).
      trajectory_mean: (S+1, d) or None; row 0 is the start distribution, row k the state
        after step k (at level L_k; row S is the output).
      trajectory_var: (S+1, d) or None, likewise.
    """

    mean: jax.Array
    var: jax.Array
    trajectory_mean: jax.Array | None = None
    trajectory_var: jax.Array | None = None


def _check_args(spectrum, schedule, sampler):
    if not isinstance(spectrum, Spectrum):
        raise ValueError(f"spectrum must be a specdiff.Spectrum, got {type(spectrum).__name__}")
    _check_schedule_sampler(schedule, sampler)


def _check_schedule_sampler(schedule, sampler):
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")
    if not (hasattr(sampler, "step") and getattr(sampler, "state_size", None) == 1):
        raise ValueError(
            f"unknown sampler {sampler!r}; allowed: specdiff.samplers.DDIM(eta) or "
            "specdiff.samplers.DDPM()"
        )


def _as_eigenvalues(eigenvalues):
    if isinstance(eigenvalues, Spectrum):
        return eigenvalues.eigenvalues
    return Spectrum(eigenvalues).eigenvalues


def _log_gains(lam, schedule: Schedule, sampler):
    """Per-step log-gains and the start variance.

    Returns (log_g_inner (S−1, d), log_noise_var (S−1,), log_g_final (d,), log_var0 (),
    log_alpha0 ()).
    """
    rho = schedule.log_snr
    dtype = jnp.result_type(rho.dtype, lam.dtype)
    rho, lam = rho.astype(dtype), lam.astype(dtype)
    la, ls = log_alpha_sigma(rho, schedule.process)
    st = sampler.step(rho[:-1], rho[1:], schedule.process)
    e = lambda v: jnp.exp(v)[:, None]  # noqa: E731  (per-step scalar, broadcast over λ)
    g = (e(st.log_p) * lam + e(st.log_q)) / (e(st.log_r) * lam + e(st.log_t))
    log_g_inner = jnp.log(g)
    # Final step to clean: x̂0, g = α λ / (α² λ + σ²); log λ = −inf at λ = 0 gives H = 0.
    log_g_final = la[-1] + jnp.log(lam) - jnp.log(jnp.exp(2 * la[-1]) * lam + jnp.exp(2 * ls[-1]))
    # Start: VP from N(0, 1); VE from N(0, σ_0²). Either way E[y_0] = −α_0·m.
    log_var0 = jnp.zeros((), dtype) if schedule.process == "vp" else 2 * ls[0]
    return log_g_inner, st.log_noise_var, log_g_final, log_var0, la[0]


def _log_output(lam, schedule, sampler):
    """(log H, log Var[y_S], log α_0) per eigenvalue."""
    log_g, log_nv, log_gf, log_var0, log_a0 = _log_gains(lam, schedule, sampler)
    total = jnp.sum(log_g, axis=0)
    log_v = 2 * total + log_var0  # variance reaching the final step, noise-free part
    if not sampler.deterministic and log_g.shape[0] > 0:
        two = 2 * log_g
        suffix = jnp.flip(jnp.cumsum(jnp.flip(two, 0), axis=0), 0) - two  # Σ_{j>k} 2 log g_j
        noise = jax.nn.logsumexp(log_nv[:, None] + suffix, axis=0)
        log_v = jnp.logaddexp(log_v, noise)
    return total + log_gf, 2 * log_gf + log_v, log_a0


@functools.partial(jax.jit, static_argnames=("sampler",))
def _transfer(lam, schedule, sampler):
    return jnp.exp(_log_output(lam, schedule, sampler)[0])


def transfer_function(eigenvalues, schedule: Schedule, sampler) -> jax.Array:
    """The spectral transfer function H(λ) = ∏_k g_k(λ) of a sampler on a schedule.

    Args:
      eigenvalues: (d,) array of λ ≥ 0 (or a ``Spectrum``).
      schedule: the ``Schedule`` (S levels).
      sampler: ``samplers.DDIM(eta)`` or ``samplers.DDPM()``.

    Returns:
      (d,) array H(λ): the output's centred mean is H·E[y_0].

    Example:
      >>> import specdiff as sd
      >>> sch = sd.schedules.cosine(10)
      >>> H = sd.transfer_function([0.0, 1.0], sch, sd.samplers.DDIM())
      >>> float(H[0])
      0.0
    """
    _check_schedule_sampler(schedule, sampler)
    return _transfer(_as_eigenvalues(eigenvalues), schedule, sampler)


def _alpha_trajectory(schedule):
    la, _ = log_alpha_sigma(schedule.log_snr, schedule.process)
    return jnp.concatenate([jnp.exp(la), jnp.ones((1,), la.dtype)])  # clean: α = 1


@functools.partial(jax.jit, static_argnames=("sampler", "trajectory"))
def _moments(spectrum, schedule, sampler, trajectory):
    lam, m = spectrum.eigenvalues, spectrum.mean
    log_h, log_var, log_a0 = _log_output(lam, schedule, sampler)
    ey0 = -jnp.exp(log_a0) * m
    mean = m + jnp.exp(log_h) * ey0
    var = jnp.exp(log_var)
    if not trajectory:
        return Moments(mean=mean, var=var)
    # Trajectory: the linear recurrence y_k = g_k y_{k−1} + σ_k z composed with an
    # associative scan over (gain, noise) pairs: (g1, n1) then (g2, n2) = (g1 g2, g2² n1 + n2).
    log_g, log_nv, log_gf, log_var0, _ = _log_gains(lam, schedule, sampler)
    gains = jnp.exp(jnp.concatenate([log_g, log_gf[None]], 0))
    nvar = jnp.concatenate([jnp.exp(log_nv), jnp.zeros((1,), log_nv.dtype)])
    nvar = jnp.broadcast_to(nvar[:, None], gains.shape)

    def compose(a, b):
        return a[0] * b[0], b[0] ** 2 * a[1] + b[1]

    cum_g, cum_n = jax.lax.associative_scan(compose, (gains, nvar), axis=0)
    var0 = jnp.exp(log_var0) * jnp.ones_like(lam)
    traj_var = jnp.concatenate([var0[None], cum_g**2 * var0 + cum_n], 0)
    traj_ey = jnp.concatenate([ey0[None], cum_g * ey0], 0)
    alpha = _alpha_trajectory(schedule)
    traj_mean = alpha[:, None] * m + traj_ey
    traj_mean = traj_mean.at[0].set(jnp.zeros_like(m))  # the start is N(0, Var0)
    return Moments(mean=mean, var=var, trajectory_mean=traj_mean, trajectory_var=traj_var)


def output_moments(
    spectrum: Spectrum, schedule: Schedule, sampler, trajectory: bool = False
) -> Moments:
    """Exact per-eigenvalue mean and variance of the generated distribution (SPEC §4).

    Args:
      spectrum: the data ``Spectrum`` (eigenvalues and mean in the eigenbasis).
      schedule: the ``Schedule``; S levels, noisiest first.
      sampler: ``samplers.DDIM(eta)`` or ``samplers.DDPM()``.
      trajectory: also return the moments after every step, shape (S+1, d).

    Returns:
      ``Moments`` with ``mean`` and ``var`` of shape (d,).

    Example:
      >>> import specdiff as sd
      >>> spec = sd.Spectrum([4.0, 1.0, 0.25])
      >>> mom = sd.output_moments(spec, sd.schedules.cosine(50), sd.samplers.DDIM())
      >>> mom.var.shape
      (3,)
    """
    _check_args(spectrum, schedule, sampler)
    return _moments(spectrum, schedule, sampler, bool(trajectory))


def forward_marginals(spectrum: Spectrum, schedule: Schedule) -> Moments:
    """True forward marginals N(α_k m, α_k² λ + σ_k²) at every level, clean data last.

    ``trajectory_mean``/``trajectory_var`` have shape (S+1, d), aligned with the rows of
    ``output_moments(..., trajectory=True)``; ``mean``/``var`` are the data moments.
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")
    lam, m = spectrum.eigenvalues, spectrum.mean
    la, ls = log_alpha_sigma(schedule.log_snr, schedule.process)
    a2 = jnp.concatenate([jnp.exp(2 * la), jnp.ones((1,), la.dtype)])
    s2 = jnp.concatenate([jnp.exp(2 * ls), jnp.zeros((1,), ls.dtype)])
    return Moments(
        mean=m,
        var=lam,
        trajectory_mean=jnp.sqrt(a2)[:, None] * m,
        trajectory_var=a2[:, None] * lam + s2[:, None],
    )
