"""Time-domain sampling: any sampler, any ``Schedule``, any ε-prediction denoiser (SPEC §11).

A denoiser is anything called as ``denoiser(x, log_snr) -> eps_hat`` with ``x`` in VP units
(``specdiff.denoisers.UNet``, ``specdiff.denoisers.GaussianDenoiser``; see
``specdiff.denoisers``). ``sample`` runs the sampler's own ``step`` (the definition the exact
analysis differentiates, ``specdiff.samplers.base``) through ``specdiff.core.steps.step_loop``,
in k-diffusion's σ coordinates whatever the schedule's process:

- the σ grid is σ_0 > … > σ_{S−1} (``schedule.sigma``) followed by 0;
- the data prediction is D(x; σ) = x − σ·ε̂(x/√(1 + σ²), ρ = −2 log σ): a VP-trained
  network sees x_VP = √ᾱ·x_σ with ᾱ = 1/(1 + σ²), and ε is the same in both;
- the start is N(0, v0), v0 = ``start_variance(schedule)`` (VE σ_0², VP 1 + σ_0², flow
  (1 + σ_0)²: the process's own N(0, 1) or N(0, σ_0²) start, in σ units);
- the output is the state at σ = 0, where x_σ = x0.

DDIM/DDPM on a VP schedule are the same maps as the VP-unit DDIM update (x_σ = x_VP/√ᾱ;
SPEC §3), so their samples agree with an ᾱ-parametrised implementation in distribution (and,
for DDIM, sample by sample up to round-off).

All steps run inside one ``jax.jit`` (one compilation per sampler, S, sample shape and
batch size). Sample i uses only the key ``fold_in(key, i)``: its start noise comes from
``fold_in(fold_in(key, i), 0)`` and noise j of step k (k = 0 … S−1) from
``fold_in(fold_in(fold_in(key, i), k + 1), j)``, so the output does not depend on
``batch_size``. Noise is independent between steps (k-diffusion's default Brownian-tree
noise sampler has the same joint law for these samplers; ``specdiff.samplers.dpmpp``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_int
from specdiff.core.engine import start_variance
from specdiff.core.schedule import Schedule
from specdiff.core.steps import step_loop
from specdiff.samplers.base import Sampler

__all__ = ["sample", "snap_to_timesteps", "data_prediction"]


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


def data_prediction(eps_model, dtype):
    """k-diffusion's D(x; σ) from a VP ε-predictor ``eps_model(x_VP, log_snr)``.

    D(x; σ) = x − σ·ε̂(x/√(1 + σ²), ρ = −2 log σ): the VP-trained network sees
    x_VP = √ᾱ·x_σ = x_σ/√(1 + σ²), and ε is the same in both parametrisations.

    Args:
      eps_model: ``eps_model(x_VP, log_snr) -> eps_hat``, x_VP of shape (n, *shape) and
        log_snr of shape (n,).
      dtype: the dtype D computes and returns in.

    Returns:
      ``denoise(x, sigma)``: x (n, *shape) in σ coordinates, sigma a scalar σ > 0.
    """

    def denoise(x, sigma):
        sigma = jnp.asarray(sigma, dtype)
        rho = jnp.full(x.shape[:1], -2.0 * jnp.log(sigma), dtype)
        eps = eps_model(x * jax.lax.rsqrt(1.0 + sigma**2), rho).astype(dtype)
        return x - sigma * eps

    return denoise


def _normals(keys, index, shape, dtype):
    """One standard normal of ``shape`` per sample key, from ``fold_in(key_i, index)``."""
    draw = lambda k: jax.random.normal(jax.random.fold_in(k, index), shape, dtype)  # noqa: E731
    return jax.vmap(draw)(keys)


@functools.partial(jax.jit, static_argnames=("static", "sampler", "shape"))
def _sample_batch(static, dynamic, sigmas, start_std, keys, *, sampler, shape):
    """Samples for a batch of per-sample keys; ``sigmas`` is the (S+1,) σ grid ending in 0.

    Sample i starts from ``start_std·N(0, I)`` drawn with ``fold_in(key_i, 0)``; noise j of
    step k (0-based) is drawn with ``fold_in(fold_in(key_i, k + 1), j)``.
    """
    dtype = sigmas.dtype
    denoise = data_prediction(_merge_denoiser(static, dynamic), dtype)
    x = start_std * _normals(keys, 0, shape, dtype)
    hist = tuple(jnp.zeros_like(x) for _ in range(sampler.history))

    def body(carry, i, *, order, last):
        x, hist = carry
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, i + 1))(keys)
        z = tuple(_normals(step_keys, j, shape, dtype) for j in range(sampler.noise_dim))
        return sampler.step(denoise, x, hist, z, sigmas, i, order=order, last=last)

    num_steps = sigmas.shape[0] - 1
    x, _ = step_loop(num_steps, sampler.history, body, (x, hist))
    return x  # at σ = 0, x_σ = x0


def _check_args(denoiser, schedule, sampler, key, n, batch_size, shape):
    """Validate ``sample``'s arguments; returns (n, batch_size, shape)."""
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")
    if not isinstance(sampler, Sampler):
        raise ValueError(
            f"unknown sampler {sampler!r}; allowed: a specdiff.samplers object, e.g. "
            "specdiff.samplers.DDIM(eta) or specdiff.samplers.from_name('heun')"
        )
    check_int("n", n)
    check_int("batch_size", n if batch_size is None else batch_size)
    if not (hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise ValueError("key must be a typed key from jax.random.key(seed)")
    if not callable(denoiser):
        raise ValueError(f"denoiser must be callable as denoiser(x, log_snr), got {denoiser!r}")
    if shape is None:
        cfg = getattr(denoiser, "config", None)
        shape = getattr(cfg, "shape", None) or getattr(denoiser, "shape", None)
        if shape is None:
            raise ValueError("pass shape=: the denoiser does not tell the shape of one sample")
    n = int(n)
    return n, int(n if batch_size is None else batch_size), tuple(int(s) for s in shape)


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
    """Draw ``n`` samples with any sampler on ``schedule`` (jit-compiled, batched).

    The sampler runs its own ``step`` in σ coordinates on D(x; σ) = x − σ·ε̂(x/√(1+σ²), −2 log σ)
    from N(0, v0), v0 = ``start_variance(schedule)`` (module docstring).

    Args:
      denoiser: ``denoiser(x, log_snr) -> eps_hat`` with x in VP units: a flax
        ``specdiff.denoisers.UNet`` (or any ``nnx.Module`` with that call), a
        ``GaussianDenoiser``, or any pytree callable of that signature.
      schedule: the ``Schedule``, S levels noisiest first (VP, VE or flow).
      sampler: any ``specdiff.samplers`` object (``DDIM(eta)``, ``DDPM()``,
        ``from_name("heun")``, …).
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
      >>> heun = sd.samplers.from_name("heun")
      >>> x = sd.sample(den, sd.schedules.cosine(10), heun, jax.random.key(0), 5)
      >>> x.shape
      (5, 2)
    """
    n, bs, shape = _check_args(denoiser, schedule, sampler, key, n, batch_size, shape)
    if snap_timesteps is not False:
        ab = None if snap_timesteps is True else snap_timesteps
        schedule, _ = snap_to_timesteps(schedule, ab)
    sigma = np.exp(-0.5 * np.asarray(schedule.log_snr, dtype=np.float64))
    sigmas = jnp.asarray(np.concatenate([sigma, [0.0]]), dtype)
    start_std = jnp.asarray(np.sqrt(float(start_variance(schedule))), dtype)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n, dtype=jnp.uint32))
    run = functools.partial(_sample_batch, *_split_denoiser(denoiser), sigmas, start_std)
    return _in_batches(lambda kb: run(kb, sampler=sampler, shape=shape), keys, min(bs, n))


def _in_batches(fn, keys, bs: int):
    """``fn`` over batches of ``bs`` keys, the last one padded to the compiled size."""
    out = []
    for start in range(0, keys.shape[0], bs):
        kb = keys[start : start + bs]
        m = kb.shape[0]
        if m < bs:  # pad the last batch (the results of the padding are dropped)
            kb = jnp.concatenate([kb, jnp.broadcast_to(kb[-1:], (bs - m,))])
        out.append(fn(kb)[:m])
    return jnp.concatenate(out) if len(out) > 1 else out[0]
