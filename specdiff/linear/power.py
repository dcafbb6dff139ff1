"""The linear reverse process: exact moments and time-domain samples (SPEC §8).

DDIM/DDPM steps with the finite-sample linear denoisers of ``finite_sample`` (one shared
model or one per level) form an affine process, so its output is Gaussian:
``reverse_moments`` propagates mean and covariance (through the closed-form engine for a
shared model, by C' = G C Gᵀ + σ_k² I in a ``lax.scan`` for per-level models) and
``reverse_sample`` runs it in the time domain. ``power_iteration`` is the plain power
method the reverse process is compared with.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from specdiff.core.checks import check_int, full_precision
from specdiff.core.engine import _check_schedule_sampler, output_moments
from specdiff.core.schedule import Schedule, log_alpha_sigma
from specdiff.linear.finite_sample import LinearModel, _check_key

__all__ = [
    "LinearMoments",
    "SampleTrajectory",
    "reverse_moments",
    "reverse_sample",
    "power_iteration",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LinearMoments:
    """Exact moments of the linear reverse process.

    Attributes:
      mean: (d,) output mean.
      cov: (d, d) output covariance.
      state_mean, state_var: (S+1, r) or None: mean and variance of ⟨x_k, p_j⟩ for the
        ``directions`` p_j, row 0 the start, row k after step k (row S the output).
      x0_mean, x0_var: (S, r) or None: the same for the denoiser's prediction x̂0(x_k) at
        level L_k (k = 0..S−1), the quantity whose variance shows a direction emerging.
    """

    mean: jax.Array
    cov: jax.Array
    state_mean: jax.Array | None = None
    state_var: jax.Array | None = None
    x0_mean: jax.Array | None = None
    x0_var: jax.Array | None = None


class _Coef(NamedTuple):
    log_alpha: jax.Array  # (S,)
    log_sigma: jax.Array  # (S,)
    p: jax.Array  # (S−1,) gain g = (pλ + q)/(rλ + t)
    q: jax.Array
    r: jax.Array
    t: jax.Array
    noise_var: jax.Array  # (S−1,)


def _coefficients(schedule: Schedule, sampler, dtype) -> _Coef:
    rho = schedule.log_snr.astype(dtype)
    la, ls = log_alpha_sigma(rho, schedule.process)
    st = sampler.mobius_step(rho[:-1], rho[1:], schedule.process)
    e = jnp.exp
    return _Coef(la, ls, e(st.log_p), e(st.log_q), e(st.log_r), e(st.log_t), e(st.log_noise_var))


def _per_level(model: LinearModel, S: int) -> LinearModel:
    """Broadcast a shared model to one per level; check a per-level one has S of them."""
    if model.mean.ndim == 1:
        return jax.tree.map(lambda a: jnp.broadcast_to(a, (S, *a.shape)), model)
    if model.mean.ndim == 2 and model.mean.shape[0] == S:
        return model
    raise ValueError(
        f"model must be one LinearModel (mean shape (d,)) or one per schedule level "
        f"(leading axis S={S}); got mean shape {tuple(model.mean.shape)}"
    )


def _check_directions(directions, d):
    if directions is None:
        return None
    p = jnp.asarray(directions)
    if p.ndim != 2 or p.shape[0] != d:
        raise ValueError(f"directions must have shape (d={d}, r), got {tuple(p.shape)}")
    return p


@functools.partial(jax.jit, static_argnames=("sampler",))
@full_precision
def _moments_shared(model, schedule, sampler, directions):
    spec = model.spectrum()
    mom = output_moments(spec, schedule, sampler, trajectory=True)
    u = model.eigenvectors
    mean = u @ mom.mean
    cov = (u * mom.var) @ u.T
    w = directions.T @ u  # (r, d): directions in the model's eigenbasis
    la, ls = log_alpha_sigma(schedule.log_snr.astype(spec.eigenvalues.dtype), schedule.process)
    al, sg = jnp.exp(la)[:, None], jnp.exp(ls)[:, None]
    lam, m = spec.eigenvalues, spec.mean
    c = al * lam / (al**2 * lam + sg**2)  # (S, d) denoiser gains at each level
    ey = mom.trajectory_mean[:-1] - al * m  # centred state before each step
    x0_mean = m + c * ey
    x0_var = c**2 * mom.trajectory_var[:-1]
    return LinearMoments(
        mean=mean,
        cov=cov,
        state_mean=mom.trajectory_mean @ w.T,
        state_var=mom.trajectory_var @ (w**2).T,
        x0_mean=x0_mean @ w.T,
        x0_var=x0_var @ (w**2).T,
    )


@functools.partial(jax.jit, static_argnames=("sampler",))
@full_precision
def _moments_per_level(models, schedule, sampler, directions):
    dtype = models.eigenvalues.dtype
    co = _coefficients(schedule, sampler, dtype)
    S, d = models.mean.shape
    al, sg = jnp.exp(co.log_alpha), jnp.exp(co.log_sigma)
    var0 = 1.0 if schedule.process == "vp" else sg[0] ** 2
    mean0 = jnp.zeros((d,), dtype)
    cov0 = var0 * jnp.eye(d, dtype=dtype)
    p = directions

    def x0_stats(mean, cov, k):
        u, lam, mu = models.eigenvectors[k], models.eigenvalues[k], models.mean[k]
        c = al[k] * lam / (al[k] ** 2 * lam + sg[k] ** 2)
        a_mat = (u * c) @ u.T
        m0 = mu + a_mat @ (mean - al[k] * mu)
        c0 = a_mat @ cov @ a_mat.T
        return m0, c0

    def proj(mean, cov):
        return p.T @ mean, jnp.einsum("ir,ij,jr->r", p, cov, p)

    def step(carry, k):
        mean, cov = carry
        u, lam, mu = models.eigenvectors[k], models.eigenvalues[k], models.mean[k]
        g = (co.p[k] * lam + co.q[k]) / (co.r[k] * lam + co.t[k])
        G = (u * g) @ u.T
        new_mean = al[k + 1] * mu + G @ (mean - al[k] * mu)
        new_cov = G @ cov @ G.T + co.noise_var[k] * jnp.eye(d, dtype=dtype)
        xm, xc = x0_stats(mean, cov, k)
        return (new_mean, new_cov), (*proj(new_mean, new_cov), *proj(xm, xc))

    (mean, cov), (sm, sv, xm, xv) = jax.lax.scan(step, (mean0, cov0), jnp.arange(S - 1))
    out_mean, out_cov = x0_stats(mean, cov, S - 1)  # final step: x̂0 at the last level
    pm0, pv0 = proj(mean0, cov0)
    pmo, pvo = proj(out_mean, out_cov)
    return LinearMoments(
        mean=out_mean,
        cov=out_cov,
        state_mean=jnp.concatenate([pm0[None], sm, pmo[None]]),
        state_var=jnp.concatenate([pv0[None], sv, pvo[None]]),
        x0_mean=jnp.concatenate([xm, pmo[None]]),
        x0_var=jnp.concatenate([xv, pvo[None]]),
    )


def reverse_moments(model: LinearModel, schedule: Schedule, sampler, directions=None):
    """Exact output (and trajectory) moments of the linear reverse process.

    Step k from level L_{k−1} to L_k with the model of level L_{k−1} (SPEC §3):
    x' = α' μ̂ + G (x − α μ̂) + σ_k z with G = Û diag(g(λ̂)) Ûᵀ,
    g(λ) = (α α' λ + σ √(σ'² − σ_k²))/(α² λ + σ²); the last step returns x̂0. The start is
    N(0, I) (VP) or N(0, σ_0² I) (VE). So the output is N(mean, cov) with

        mean' = α' μ̂ + G (mean − α μ̂),      C' = G C Gᵀ + σ_k² I.

    A shared model keeps everything diagonal in Û and goes through the closed-form engine
    (``output_moments`` on the spectrum (λ̂, Ûᵀμ̂)); per-level models are propagated as full
    matrices in a ``lax.scan`` (O(S d³)).

    Args:
      model: one ``LinearModel``, or S of them stacked (one per schedule level).
      schedule: the ``Schedule`` (S levels, noisiest first).
      sampler: ``samplers.DDIM(eta)`` or ``samplers.DDPM()``.
      directions: (d, r) unit directions p_j whose trajectory moments to return (default:
        the model's eigenvectors for a shared model, the identity for per-level models).

    Returns:
      ``LinearMoments``.
    """
    _check_schedule_sampler(schedule, sampler)
    if not isinstance(model, LinearModel):
        raise ValueError(f"model must be a specdiff.linear.LinearModel, got {type(model)}")
    S, d = schedule.num_steps, model.dim
    p = _check_directions(directions, d)
    if model.mean.ndim == 1:
        p = model.eigenvectors if p is None else p
        return _moments_shared(model, schedule, sampler, p.astype(model.eigenvalues.dtype))
    models = _per_level(model, S)
    p = jnp.eye(d, dtype=model.eigenvalues.dtype) if p is None else p
    return _moments_per_level(models, schedule, sampler, p.astype(model.eigenvalues.dtype))


class SampleTrajectory(NamedTuple):
    """Time-domain samples of the linear reverse process.

    Attributes:
      samples: (n, d) outputs.
      states: (S+1, n, r) projections ⟨x_k, p_j⟩ (row 0 the start, row S the output).
      x0: (S, n, r) projections ⟨x̂0(x_k), p_j⟩ at level L_k.
      sq_norm: (S+1, n) squared norms |x_k|².
      x0_sq_norm: (S, n) squared norms |x̂0(x_k)|².
    """

    samples: jax.Array
    states: jax.Array
    x0: jax.Array
    sq_norm: jax.Array
    x0_sq_norm: jax.Array


@functools.partial(jax.jit, static_argnames=("sampler", "n"))
@full_precision
def _sample(models, schedule, sampler, key, n, directions):
    dtype = models.eigenvalues.dtype
    co = _coefficients(schedule, sampler, dtype)
    S, d = models.mean.shape
    al, sg = jnp.exp(co.log_alpha), jnp.exp(co.log_sigma)
    z0 = jax.random.normal(jax.random.fold_in(key, 0), (n, d), dtype)
    x = z0 if schedule.process == "vp" else sg[0] * z0
    p = directions

    def x0_hat(x, k):
        u, lam, mu = models.eigenvectors[k], models.eigenvalues[k], models.mean[k]
        c = al[k] * lam / (al[k] ** 2 * lam + sg[k] ** 2)
        return mu + (((x - al[k] * mu) @ u) * c) @ u.T

    def step(x, k):
        u, lam, mu = models.eigenvectors[k], models.eigenvalues[k], models.mean[k]
        g = (co.p[k] * lam + co.q[k]) / (co.r[k] * lam + co.t[k])
        z = jax.random.normal(jax.random.fold_in(key, k + 1), (n, d), dtype)
        x_new = al[k + 1] * mu + (((x - al[k] * mu) @ u) * g) @ u.T + jnp.sqrt(co.noise_var[k]) * z
        x0 = x0_hat(x, k)
        return x_new, (x_new @ p, x0 @ p, jnp.sum(x_new**2, -1), jnp.sum(x0**2, -1))

    x_start = x
    x, (states, x0s, norms, x0n) = jax.lax.scan(step, x, jnp.arange(S - 1))
    out = x0_hat(x, S - 1)
    return SampleTrajectory(
        samples=out,
        states=jnp.concatenate([(x_start @ p)[None], states, (out @ p)[None]]),
        x0=jnp.concatenate([x0s, (out @ p)[None]]),
        sq_norm=jnp.concatenate([jnp.sum(x_start**2, -1)[None], norms, jnp.sum(out**2, -1)[None]]),
        x0_sq_norm=jnp.concatenate([x0n, jnp.sum(out**2, -1)[None]]),
    )


def reverse_sample(
    model: LinearModel, schedule: Schedule, sampler, key: jax.Array, n: int, directions=None
) -> SampleTrajectory:
    """Run the linear reverse process on n samples in the time domain (Monte Carlo).

    The same steps as ``reverse_moments``. Randomness comes from ``key`` only: the start
    noise from ``fold_in(key, 0)`` and the noise of step k from ``fold_in(key, k)`` (the
    convention of ``specdiff.reference.sample``, so the two agree draw for draw).

    Args:
      model: one ``LinearModel`` or S of them (one per level).
      schedule, sampler: as for ``reverse_moments``.
      key: typed PRNG key; n: number of samples.
      directions: (d, r) directions whose projections are recorded (default: the first
        model's eigenvectors).

    Returns:
      ``SampleTrajectory``.
    """
    _check_schedule_sampler(schedule, sampler)
    if not isinstance(model, LinearModel):
        raise ValueError(f"model must be a specdiff.linear.LinearModel, got {type(model)}")
    _check_key(key)
    check_int("n", n)
    models = _per_level(model, schedule.num_steps)
    p = _check_directions(directions, model.dim)
    p = models.eigenvectors[0] if p is None else p
    return _sample(models, schedule, sampler, key, int(n), p.astype(models.eigenvalues.dtype))


@functools.partial(jax.jit, static_argnames=("steps",))
@full_precision
def _power_iteration(matrix, v0, steps, directions):
    def step(v, _):
        w = v @ matrix.T
        w = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
        return w, w @ directions

    v0 = v0 / jnp.linalg.norm(v0, axis=-1, keepdims=True)
    v, proj = jax.lax.scan(step, v0, None, length=steps)
    return v, jnp.concatenate([(v0 @ directions)[None], proj])


def power_iteration(matrix, v0, steps: int, directions=None):
    """Normalised power iteration v_{k+1} = M v_k / |M v_k| on a batch of start vectors.

    Args:
      matrix: (d, d) matrix M.
      v0: (n, d) start vectors (normalised first).
      steps: number of iterations K.
      directions: (d, r) directions to record ⟨v_k, p_j⟩ for (default: the identity).

    Returns:
      (v_K (n, d), projections (K+1, n, r)); row 0 holds the normalised start.
    """
    m = jnp.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be square (d, d), got shape {m.shape}")
    v = jnp.atleast_2d(jnp.asarray(v0, m.dtype))
    if v.shape[-1] != m.shape[0]:
        raise ValueError(f"v0 must have shape (n, d={m.shape[0]}), got {v.shape}")
    check_int("steps", steps, 0)
    p = jnp.eye(m.shape[0], dtype=m.dtype) if directions is None else jnp.asarray(directions)
    p = _check_directions(p, m.shape[0])
    return _power_iteration(m, v, int(steps), p.astype(m.dtype))
