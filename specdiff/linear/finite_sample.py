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

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_choice, check_finite, is_concrete
from specdiff.core.schedule import PROCESSES
from specdiff.core.spectrum import Spectrum

__all__ = [
    "LinearModel",
    "fit",
    "fit_noisy",
    "denoise",
    "denoiser_gains",
    "denoiser_matrix",
    "eigenvector_overlaps",
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
