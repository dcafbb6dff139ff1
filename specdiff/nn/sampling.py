"""Time-domain sampling: DDIM/DDPM with any ``Schedule`` on any denoiser (SPEC §3).

A denoiser is anything called as ``denoiser(x, log_snr) -> eps_hat`` with ``x`` in VP units
(``specdiff.denoisers.UNet``, ``specdiff.denoisers.GaussianDenoiser``; see
``specdiff.denoisers``). The step from level (α, σ, ρ) to (α', σ', ρ') is the generalised
DDIM step of SPEC §3 written in (α, σ) form:

    x̂0 = (x − σ·ε̂)/α
    x'  = α'·x̂0 + √(σ'² − σ_k²)·ε̂ + σ_k·z,      σ_k² = η²·σ'²·(1 − e^{ρ−ρ'})

with (α, σ) = (√ᾱ, √(1−ᾱ)) for VP schedules and (1, s) for VE schedules. VE schedules run
in VE units (start N(0, s_0²), as ``specdiff.output_moments`` assumes) and the VP-trained
denoiser sees x_VP = √ᾱ·x_VE = x_VE/√(1 + s²); ε is the same in both parametrisations. The
last step returns x̂0. The steps run in one ``lax.scan``; sample i uses only the key
``fold_in(key, i)`` (its start noise from ``fold_in(fold_in(key, i), 0)``, the noise of step
k from ``fold_in(fold_in(key, i), k)``), so the output does not depend on ``batch_size``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_int
from specdiff.core.schedule import Schedule, log_alpha_sigma

__all__ = ["sample", "snap_to_timesteps", "ddim_step"]


def snap_to_timesteps(schedule: Schedule, alphas_bar=None) -> tuple[Schedule, np.ndarray]:
    """Map continuous levels to the nearest discrete training timestep by log-SNR (SPEC §9).

    For a model that only accepts the timesteps t = 0..T−1 of a discrete schedule (by
    default the DDPM linear-β schedule, T = 1000), each level is replaced by the ᾱ_t whose
    log-SNR is nearest.

    Args:
      schedule: any ``Schedule`` (VP or VE; the result is VP).
      alphas_bar: (T,) ᾱ_t, decreasing in t; default ``schedules.ddpm_alphas_bar(1000)``.

    Returns:
      (the VP schedule of the snapped levels, the (S,) timesteps, noisiest first).

    Raises:
      ValueError: two levels snap to the same timestep (use fewer steps or a schedule whose
        levels are further apart).
    """
    from specdiff.core.schedule import ddpm_alphas_bar

    ab = np.asarray(ddpm_alphas_bar() if alphas_bar is None else alphas_bar, dtype=np.float64)
    if ab.ndim != 1 or ab.size < 2 or not ((ab > 0) & (ab < 1)).all():
        raise ValueError("alphas_bar must be a 1-D array of at least 2 values inside (0, 1)")
    if not (np.diff(ab) < 0).all():
        raise ValueError("alphas_bar must be strictly decreasing in t (ᾱ_0 is the cleanest)")
    rho_t = np.log(ab) - np.log1p(-ab)  # increasing in -t
    rho = np.asarray(schedule.log_snr, dtype=np.float64)
    t = np.abs(rho[:, None] - rho_t[None, :]).argmin(axis=1)
    if len(np.unique(t)) != len(t):
        dup = t[np.flatnonzero(np.diff(t) == 0)[0]]
        raise ValueError(
            f"two schedule levels snap to the same training timestep t={int(dup)}; the "
            "snapped schedule must be strictly monotone (use fewer steps)"
        )
    return Schedule(ab[t], "vp"), t


def ddim_step(eps_hat, x, rho, rho_next, process: str, eta: float, z):
    """One generalised DDIM step in the schedule's units (see the module docstring).

    Args:
      eps_hat: ε̂ at (x, ρ); x: the state; rho, rho_next: scalars ρ < ρ'; process: ``"vp"``
        or ``"ve"``; eta: η ∈ [0, 1]; z: standard normal noise of x's shape (ignored for η = 0).

    Returns:
      x' at level ρ'.
    """
    la, ls = log_alpha_sigma(rho, process)
    la2, ls2 = log_alpha_sigma(rho_next, process)
    alpha, sigma, alpha2, sigma2 = jnp.exp(la), jnp.exp(ls), jnp.exp(la2), jnp.exp(ls2)
    x0_hat = (x - sigma * eps_hat) / alpha
    if eta == 0.0:
        return alpha2 * x0_hat + sigma2 * eps_hat
    ratio = jnp.exp(rho - rho_next)  # e^{ρ−ρ'} ∈ (0, 1)
    sigma_k = eta * sigma2 * jnp.sqrt(-jnp.expm1(rho - rho_next))
    c = sigma2 * jnp.sqrt((1.0 - eta**2) + eta**2 * ratio)  # √(σ'² − σ_k²)
    return alpha2 * x0_hat + c * eps_hat + sigma_k * z


def _split_denoiser(denoiser):
    """(static, dynamic): a hashable part for ``jit`` and a pytree of arrays."""
    from flax import nnx

    if isinstance(denoiser, nnx.Module):
        graphdef, state = nnx.split(denoiser)
        return ("nnx", graphdef), state
    return ("pytree", None), denoiser


def _merge_denoiser(static, dynamic):
    if static[0] == "nnx":
        from flax import nnx

        return nnx.merge(static[1], dynamic)
    return dynamic


@functools.partial(jax.jit, static_argnames=("static", "process", "eta", "shape"))
def _sample_batch(static, dynamic, rho, keys, *, process: str, eta: float, shape):
    """Samples for a batch of per-sample keys; ``rho`` is the (S,) log-SNR grid."""
    den = _merge_denoiser(static, dynamic)
    dtype = rho.dtype
    normal = jax.vmap(
        lambda k, i: jax.random.normal(jax.random.fold_in(k, i), shape, dtype), in_axes=(0, None)
    )
    _, ls0 = log_alpha_sigma(rho[0], process)
    start_std = 1.0 if process == "vp" else jnp.exp(ls0)  # VP: N(0, 1); VE: N(0, s_0²)
    x = start_std * normal(keys, 0)

    def eps_at(x, r):
        # The denoiser takes x in VP units: x_VP = x·α_VP/α_process (α_VE = 1).
        la_vp, _ = log_alpha_sigma(r, "vp")
        la, _ = log_alpha_sigma(r, process)
        x_vp = x * jnp.exp(la_vp - la)
        return den(x_vp, jnp.full(x.shape[:1], r, dtype)).astype(dtype)

    def step(x, inp):
        k, r, r_next = inp
        z = normal(keys, k) if eta > 0 else jnp.zeros_like(x)
        return ddim_step(eps_at(x, r), x, r, r_next, process, eta, z), None

    S = rho.shape[0]
    ks = jnp.arange(1, S, dtype=jnp.uint32)
    x, _ = jax.lax.scan(step, x, (ks, rho[:-1], rho[1:]))
    # Last step lands on clean data: x̂0.
    la, ls = log_alpha_sigma(rho[-1], process)
    return (x - jnp.exp(ls) * eps_at(x, rho[-1])) / jnp.exp(la)


def sample(
    denoiser,
    schedule: Schedule,
    sampler,
    key: jax.Array,
    n: int,
    batch_size: int | None = None,
    *,
    shape: tuple[int, ...] | None = None,
    snap_timesteps: bool | np.ndarray = False,
    dtype=jnp.float32,
) -> jax.Array:
    """Draw ``n`` samples with a DDIM/DDPM sampler on ``schedule`` (jit-compiled, batched).

    Args:
      denoiser: ``denoiser(x, log_snr) -> eps_hat`` with x in VP units: a flax
        ``specdiff.denoisers.UNet`` (or any ``nnx.Module`` with that call), a
        ``GaussianDenoiser``, or any pytree callable of that signature.
      schedule: the ``Schedule``, S levels noisiest first (VP or VE; see module docstring).
      sampler: ``samplers.DDIM(eta)`` or ``samplers.DDPM()``.
      key: a typed ``jax.random.key``; sample i uses only ``fold_in(key, i)``.
      n: number of samples.
      batch_size: samples per compiled call (default all ``n``); the result does not depend
        on it.
      shape: the shape of one sample; default ``denoiser.config.shape`` (UNet) or
        ``denoiser.shape`` (GaussianDenoiser).
      snap_timesteps: map the levels to the nearest training timestep of the DDPM linear-β
        schedule (``True``) or of the given (T,) ᾱ array, by log-SNR, for models that only
        know discrete timesteps (``snap_to_timesteps``). The sampler then runs on the snapped
        VP schedule.
      dtype: computation dtype (float32 default; float64 needs ``jax_enable_x64``).

    Returns:
      (n, *shape) array of samples (clean level).

    Example:
      >>> import numpy as np, jax, specdiff as sd
      >>> den = sd.denoisers.GaussianDenoiser(np.zeros(2), np.diag([4.0, 0.25]))
      >>> x = sd.sample(den, sd.schedules.cosine(10), sd.samplers.DDIM(), jax.random.key(0), 5)
      >>> x.shape
      (5, 2)
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")
    eta = getattr(sampler, "eta", None)
    if not (hasattr(sampler, "step") and isinstance(eta, float)):
        raise ValueError(
            f"unknown sampler {sampler!r}; allowed: specdiff.samplers.DDIM(eta) or "
            "specdiff.samplers.DDPM()"
        )
    check_int("n", n)
    n = int(n)
    if batch_size is None:
        batch_size = n
    check_int("batch_size", batch_size)
    if not (hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError("key must be a typed key from jax.random.key(seed)")
    if not callable(denoiser):
        raise ValueError(f"denoiser must be callable as denoiser(x, log_snr), got {denoiser!r}")
    if shape is None:
        cfg = getattr(denoiser, "config", None)
        shape = getattr(cfg, "shape", None) or getattr(denoiser, "shape", None)
        if shape is None:
            raise ValueError("pass shape=: the denoiser does not tell the shape of one sample")
    shape = tuple(int(s) for s in shape)
    if snap_timesteps is not False:
        ab = None if snap_timesteps is True else snap_timesteps
        schedule, _ = snap_to_timesteps(schedule, ab)
    rho = jnp.asarray(np.asarray(schedule.log_snr, dtype=np.float64), dtype)
    static, dynamic = _split_denoiser(denoiser)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n, dtype=jnp.uint32))
    out = []
    bs = int(min(batch_size, n))
    for start in range(0, n, bs):
        kb = keys[start : start + bs]
        m = kb.shape[0]
        if m < bs:  # pad the last batch to the compiled size (results of padding dropped)
            kb = jnp.concatenate([kb, jnp.broadcast_to(kb[-1:], (bs - m,))])
        xb = _sample_batch(
            static, dynamic, rho, kb, process=schedule.process, eta=float(eta), shape=shape
        )
        out.append(xb[:m])
    return jnp.concatenate(out) if len(out) > 1 else out[0]
