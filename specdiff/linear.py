"""Linear diffusion with finite-sample denoisers, and matrix-free Jacobian spectra (SPEC §8).

A Gaussian model (μ̂, Σ̂ = Û diag(λ̂) Ûᵀ) estimated from N samples defines the linear
(Wiener / PCA) denoiser. At VE noise level s (VP level ᾱ: α = √ᾱ, σ = √(1−ᾱ), s = σ/α)

    D_s(x) = μ̂ + Σ̂(Σ̂ + s²I)⁻¹(x − μ̂)                       (VE)
    x̂0(x)  = μ̂ + α Σ̂(α²Σ̂ + σ²I)⁻¹(x − α μ̂)                 (VP)

Two estimators of the model:

- ``fit(samples)``: Σ̂ is the sample covariance of N *clean* samples (SPEC §8's D_s). Its
  eigenvectors Û do not depend on s.
- ``fit_noisy(samples, noise, key)``: what a denoiser learns from N samples seen with one
  noise draw each at level s: the sample covariance Σ̂_s of x0 + s·z, turned into a
  denoiser by Tweedie's formula D_s(x) = x − s² Σ̂_s⁻¹(x − μ̂) with the eigenvalues
  μ_j of Σ̂_s shrunk to λ̂_j = max(μ_j − s², 0) (PCA form). Its eigenvectors are those of
  Σ̂_s and follow the spiked-covariance theory of ``specdiff.spiked`` as s varies.

The linear reverse process (DDIM/DDPM steps of SPEC §3 with these denoisers, one shared
model or one per level) is affine, so its exact output is Gaussian: ``reverse_moments``
propagates mean and covariance (through the closed-form engine for a shared model, by
C' = G C Gᵀ + σ_k² I in a ``lax.scan`` for per-level models), and ``reverse_sample`` runs
it in the time domain. ``top_singular_vectors`` gives the leading singular triplets of the
Jacobian of any map x ↦ D(x) (a trained denoiser) from jvp/vjp products only.

Example:
  >>> import jax, specdiff as sd
  >>> x = jax.random.normal(jax.random.key(0), (500, 8))
  >>> model = sd.linear.fit(x)
  >>> sd.linear.denoise(model, x[:2], 1.0).shape
  (2, 8)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from specdiff._checks import check_choice, check_finite, check_int, is_concrete
from specdiff._engine import _check_schedule_sampler, output_moments
from specdiff._schedule import PROCESSES, Schedule
from specdiff._spectrum import Spectrum
from specdiff.samplers import log_alpha_sigma

__all__ = [
    "LinearModel",
    "LinearMoments",
    "SampleTrajectory",
    "SingularTriplets",
    "fit",
    "fit_noisy",
    "denoise",
    "denoiser_gains",
    "denoiser_matrix",
    "eigenvector_overlaps",
    "reverse_moments",
    "reverse_sample",
    "power_iteration",
    "top_singular_vectors",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LinearModel:
    """A Gaussian data model N(μ̂, Û diag(λ̂) Ûᵀ): the linear denoiser's whole content.

    Attributes:
      mean: (..., d) μ̂.
      eigenvalues: (..., d) λ̂ ≥ 0, in decreasing order.
      eigenvectors: (..., d, d) Û, column j belongs to λ̂_j.

    Leading axes batch several models (e.g. one per noise level, as ``fit_noisy`` returns for
    an array of levels); ``reverse_moments``/``reverse_sample`` read a leading axis of size S
    as one model per schedule level.
    """

    mean: jax.Array
    eigenvalues: jax.Array
    eigenvectors: jax.Array

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    def covariance(self) -> jax.Array:
        """Σ̂ = Û diag(λ̂) Ûᵀ, shape (..., d, d)."""
        u = self.eigenvectors
        return (u * self.eigenvalues[..., None, :]) @ jnp.swapaxes(u, -1, -2)

    def spectrum(self, name: str | None = None) -> Spectrum:
        """The model as a ``Spectrum`` in its own eigenbasis (λ̂, Ûᵀμ̂)."""
        m = jnp.einsum("...ij,...i->...j", self.eigenvectors, self.mean)
        return Spectrum(self.eigenvalues, m, name=name)


def _samples(samples) -> jax.Array:
    x = samples
    if is_concrete(x):
        a = np.asarray(x)
        if a.ndim < 2 or a.shape[0] < 2:
            raise ValueError(f"samples must have shape (N >= 2, ...), got {a.shape}")
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise ValueError(f"samples must be real numbers, got dtype {a.dtype}")
        check_finite("samples", a)
        if not np.issubdtype(a.dtype, np.floating):
            a = a.astype(float)
        x = jnp.asarray(a)
    return x.reshape(x.shape[0], -1)


def _eig_model(mean, cov, shift) -> LinearModel:
    w, u = jnp.linalg.eigh((cov + jnp.swapaxes(cov, -1, -2)) / 2)
    w, u = w[..., ::-1], u[..., ::-1]
    # Fix the sign of each eigenvector (largest-|.| entry positive) so results are reproducible.
    idx = jnp.argmax(jnp.abs(u), axis=-2, keepdims=True)
    sign = jnp.sign(jnp.take_along_axis(u, idx, axis=-2))
    u = u * jnp.where(sign == 0, 1.0, sign)
    return LinearModel(mean=mean, eigenvalues=jnp.maximum(w - shift, 0.0), eigenvectors=u)


def _moments(x, center: bool):
    n = x.shape[0]
    if center:
        mean = jnp.mean(x, axis=0)
        xc = x - mean
        return mean, xc.T @ xc / (n - 1)
    return jnp.zeros(x.shape[1], x.dtype), x.T @ x / n


@functools.partial(jax.jit, static_argnames=("center",))
def _fit(x, center):
    mean, cov = _moments(x, center)
    return _eig_model(mean, cov, 0.0)


def fit(samples, center: bool = True) -> LinearModel:
    """Gaussian model from N clean samples: μ̂ and the sample covariance Σ̂.

    Σ̂ = (1/(N−1)) Σ_n (x_n − x̄)(x_n − x̄)ᵀ with ``center=True``; with ``center=False`` the
    mean is taken to be 0 and Σ̂ = (1/N) Σ_n x_n x_nᵀ (the convention of the spiked theory).

    Args:
      samples: (N, ...) array; trailing axes are flattened to d.
      center: estimate the mean (True) or take it as zero (False).

    Returns:
      ``LinearModel`` with eigenvalues in decreasing order.
    """
    return _fit(_samples(samples), bool(center))


SHRINKAGE = ("subtract", "spiked")


def _shrink(mu, s2, gamma, shrinkage):
    """Clean-eigenvalue estimates from noisy-sample eigenvalues μ at noise variance s²."""
    if shrinkage == "subtract":
        return jnp.maximum(mu - s2, 0.0)
    # "spiked": invert μ = s²(1 + β)(1 + γ/β) for β = ℓ/s² above the bulk edge
    # s²(1 + √γ)², zero below it: β = (m − 1 − γ + √((m − 1 − γ)² − 4γ))/2, m = μ/s².
    safe = jnp.where(s2 > 0, s2, 1.0)
    m = mu / safe
    b = m - 1.0 - gamma
    disc = b**2 - 4.0 * gamma
    above = (m > (1.0 + jnp.sqrt(gamma)) ** 2) & (disc >= 0)
    beta = 0.5 * (b + jnp.sqrt(jnp.where(above, disc, 0.0)))
    return jnp.where(s2 > 0, jnp.where(above, s2 * beta, 0.0), jnp.maximum(mu, 0.0))


@functools.partial(jax.jit, static_argnames=("center", "shrinkage"))
def _fit_noisy(x, noise, key, center, shrinkage):
    n, d = x.shape
    gamma = d / (n - 1 if center else n)

    def one(args):
        j, s = args
        z = jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype)
        mean, cov = _moments(x + s * z, center)
        model = _eig_model(mean, cov, 0.0)
        lam = _shrink(model.eigenvalues, s**2, gamma, shrinkage)
        return LinearModel(mean=mean, eigenvalues=lam, eigenvectors=model.eigenvectors)

    idx = jnp.arange(noise.shape[0])
    return jax.lax.map(one, (idx, noise))


def _noise_from_level(level, process):
    """VE noise s = σ/α of a level in the process's units (σ for VE, ᾱ for VP)."""
    check_choice("process", process, PROCESSES)
    lv = jnp.asarray(level)
    if is_concrete(level):
        a = np.asarray(level)
        check_finite("level", a)
        if process == "ve" and (a < 0).any():
            raise ValueError(f"VE levels are σ and must be >= 0; got {a.min()!r}")
        if process == "vp" and ((a <= 0) | (a > 1)).any():
            raise ValueError("VP levels are ᾱ and must lie in (0, 1]")
    if not jnp.issubdtype(lv.dtype, jnp.floating):
        lv = lv.astype(float)
    return lv if process == "ve" else jnp.sqrt((1.0 - lv) / lv)


def fit_noisy(
    samples,
    noise,
    key: jax.Array,
    process: str = "ve",
    center: bool = False,
    shrinkage: str = "subtract",
):
    """Models estimated from N samples seen with one noise draw each, at each noise level.

    At VE level s: draw x_n + s·z_n (z from ``fold_in(key, j)`` for the j-th level), take
    the sample covariance Σ̂_s (as ``fit``); Û are its eigenvectors and its eigenvalues μ_j
    are shrunk to clean estimates λ̂_j:

    - ``"subtract"``: λ̂_j = max(μ_j − s², 0) (Tweedie with the plain sample covariance;
      the Marchenko–Pastur bulk above s² is kept, so the denoiser fits noise directions);
    - ``"spiked"``: 0 inside the bulk μ_j ≤ s²(1 + √γ)², above it the spike ℓ that the
      spiked model maps to μ_j (``specdiff.spiked.top_eigenvalue`` inverted):
      λ̂ = s²β, β = (m − 1 − γ + √((m − 1 − γ)² − 4γ))/2, m = μ_j/s², γ = d/N.

    A VP level ᾱ is the same problem at s² = (1−ᾱ)/ᾱ (x_ᾱ/√ᾱ = x0 + s z).

    Args:
      samples: (N, ...) clean samples; trailing axes are flattened to d.
      noise: scalar or (L,) levels (σ for ``process="ve"``, ᾱ for ``"vp"``).
      key: typed PRNG key (``jax.random.key``).
      process: "ve" or "vp", the units of ``noise``.
      center: estimate the mean (True) or take it as zero (False, the spiked convention).
      shrinkage: ``"subtract"`` or ``"spiked"``.

    Returns:
      ``LinearModel`` with a leading axis of size L (none for a scalar level).
    """
    check_choice("shrinkage", shrinkage, SHRINKAGE)
    x = _samples(samples)
    s = _noise_from_level(noise, process)
    scalar = s.ndim == 0
    s = jnp.atleast_1d(s).astype(x.dtype)
    if s.ndim != 1:
        raise ValueError(f"noise must be a scalar or 1-D array of levels, got shape {s.shape}")
    _check_key(key)
    out = _fit_noisy(x, s, key, bool(center), shrinkage)
    return jax.tree.map(lambda a: a[0], out) if scalar else out


def _check_key(key):
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError("key must be a typed PRNG key from jax.random.key(seed)")


def _alpha_sigma(level, process):
    s = _noise_from_level(level, process)
    if process == "ve":
        return jnp.ones_like(s), s
    a = jnp.asarray(level, s.dtype)
    return jnp.sqrt(a), jnp.sqrt(1.0 - a)


def denoiser_gains(model: LinearModel, level, process: str = "ve") -> jax.Array:
    """Per-eigenvector gains of x̂0: α λ̂/(α² λ̂ + σ²) (VE: λ̂/(λ̂ + s²)), shape (..., d)."""
    al, sg = _alpha_sigma(level, process)
    al, sg = al[..., None], sg[..., None]
    lam = model.eigenvalues
    return al * lam / (al**2 * lam + sg**2)


def denoise(model: LinearModel, x, level, process: str = "ve") -> jax.Array:
    """The linear MMSE denoiser x̂0(x) = μ̂ + Û diag(α λ̂/(α²λ̂ + σ²)) Ûᵀ (x − α μ̂).

    Args:
      model: a single ``LinearModel`` (no batch axis).
      x: (..., d) noisy inputs at the level.
      level: σ (VE) or ᾱ (VP), a scalar.
      process: "ve" or "vp".
    """
    al, _ = _alpha_sigma(level, process)
    c = denoiser_gains(model, level, process)
    u = model.eigenvectors
    y = (jnp.asarray(x) - al * model.mean) @ u
    return model.mean + (y * c) @ u.T


def denoiser_matrix(model: LinearModel, level, process: str = "ve") -> jax.Array:
    """The Jacobian of ``denoise``: Û diag(α λ̂/(α²λ̂ + σ²)) Ûᵀ (VE: Σ̂(Σ̂ + s²I)⁻¹)."""
    c = denoiser_gains(model, level, process)
    u = model.eigenvectors
    return (u * c[..., None, :]) @ jnp.swapaxes(u, -1, -2)


def eigenvector_overlaps(model: LinearModel, true_eigenvectors, k: int | None = None):
    """Squared overlaps ⟨û_i, u_j⟩² between the model's and the true eigenvectors.

    Args:
      model: ``LinearModel`` (any leading batch axes, e.g. one per noise level).
      true_eigenvectors: (d, r) true directions u_j as columns.
      k: number of leading model eigenvectors (default r).

    Returns:
      (..., k, r) array; its diagonal is ⟨û_k(s), u_k⟩² for index-matched directions.
    """
    u = jnp.asarray(true_eigenvectors)
    if u.ndim != 2 or u.shape[0] != model.dim:
        raise ValueError(f"true_eigenvectors must have shape (d={model.dim}, r), got {u.shape}")
    k = u.shape[1] if k is None else int(k)
    if not 1 <= k <= model.dim:
        raise ValueError(f"k must lie in 1..{model.dim}, got {k}")
    return (jnp.swapaxes(model.eigenvectors[..., :k], -1, -2) @ u) ** 2


# --------------------------------------------------------------------------------------
# The linear reverse process
# --------------------------------------------------------------------------------------


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
    st = sampler.step(rho[:-1], rho[1:], schedule.process)
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


# --------------------------------------------------------------------------------------
# Matrix-free singular vectors of a Jacobian
# --------------------------------------------------------------------------------------


class SingularTriplets(NamedTuple):
    """Leading singular triplets of J = ∂f/∂x at a point: J ≈ U diag(S) Vᵀ.

    Attributes:
      left: (d_out, k) left singular vectors u_i (output space, flattened).
      values: (k,) singular values, decreasing.
      right: (d_in, k) right singular vectors v_i (input space, flattened).
      residual: (k,) |Jᵀ u_i − s_i v_i| / s_i (0 for exact triplets; |J v_i − s_i u_i| = 0
        by construction of the Rayleigh–Ritz step).
    """

    left: jax.Array
    values: jax.Array
    right: jax.Array
    residual: jax.Array


@functools.partial(jax.jit, static_argnames=("fn", "k", "oversample", "iters"))
def _subspace_svd(fn, x, args, key, k, oversample, iters):
    shape = x.shape
    flat = x.reshape(-1)

    def f(v):
        return fn(v.reshape(shape), *args).reshape(-1)

    _, jvp = jax.linearize(f, flat)
    _, vjp = jax.vjp(f, flat)
    jv = jax.vmap(jvp, in_axes=1, out_axes=1)  # J V, V (d_in, m)
    jtu = jax.vmap(lambda u: vjp(u)[0], in_axes=1, out_axes=1)  # Jᵀ U
    m = k + oversample
    v = jnp.linalg.qr(jax.random.normal(key, (flat.shape[0], m), flat.dtype))[0]

    def body(_, v):  # block power iteration on JᵀJ, re-orthonormalised every step
        return jnp.linalg.qr(jtu(jv(v)))[0]

    v = jax.lax.fori_loop(0, iters, body, v)
    b = jv(v)  # Rayleigh–Ritz: SVD of J restricted to span(V)
    ub, s, wt = jnp.linalg.svd(b, full_matrices=False)
    right = v @ wt.T
    u, s, right = ub[:, :k], s[:k], right[:, :k]
    res = jnp.linalg.norm(jtu(u) - right * s, axis=0) / jnp.where(s > 0, s, 1.0)
    return SingularTriplets(left=u, values=s, right=right, residual=res)


def top_singular_vectors(
    fn, x, *args, k: int, key: jax.Array, iters: int = 50, oversample: int = 4
) -> SingularTriplets:
    """Top-k singular triplets of the Jacobian ∂fn/∂x at x, from jvp/vjp products only.

    Block subspace iteration on JᵀJ with m = k + oversample vectors (V ← qr(Jᵀ J V), ``iters``
    times in a ``lax.fori_loop``), then a Rayleigh–Ritz step: the SVD of the d_out × m
    matrix J V. The error in the i-th singular vector decays as (s_{m+1}/s_i)^{2·iters}.
    No Jacobian is ever formed: each iteration costs m jvps and m vjps of ``fn``.

    ``fn`` is a static argument of a module-level ``jit``: pass the same function object
    across calls (e.g. a module-level function, with the model's parameters in ``args``)
    so the compilation is reused.

    Args:
      fn: callable ``fn(x, *args) -> y`` (e.g. a denoiser x ↦ D(x)); any input/output
        shapes (flattened internally).
      x: the point of linearisation.
      *args: further (traced) arguments of ``fn``: parameters, noise level.
      k: number of triplets; key: typed PRNG key for the random start block.
      iters: subspace iterations; oversample: extra vectors beyond k.

    Returns:
      ``SingularTriplets`` (flattened vectors).
    """
    _check_key(key)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    for name, v, lo in (("k", k, 1), ("iters", iters, 1), ("oversample", oversample, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    d_in = int(np.prod(x.shape))
    d_out = int(np.prod(jax.eval_shape(lambda v: fn(v, *args), x).shape))
    if k + oversample > min(d_in, d_out):
        raise ValueError(
            f"k + oversample = {k + oversample} must not exceed min(d_in, d_out) = "
            f"{min(d_in, d_out)}"
        )
    return _subspace_svd(fn, x, tuple(args), key, int(k), int(oversample), int(iters))
