"""Denoisers: a small flax (NNX) U-Net trained on the built-in datasets, and the exact
Gaussian MMSE denoiser, behind one call signature.

Every denoiser is called as ``denoiser(x, log_snr) -> eps_hat``:

- ``x``: (n, *shape) states in **VP units**, x = α·x0 + σ·ε with α² = sigmoid(ρ),
  σ² = sigmoid(−ρ);
- ``log_snr``: ρ = log(ᾱ/(1−ᾱ)), a scalar or shape (n,);
- returns the ε-prediction ε̂(x, ρ), shape (n, *shape).

``specdiff.sample`` runs DDIM/DDPM with any schedule on any such denoiser.

The U-Net (``UNet``) is trained with the DDPM linear-β schedule (β = linspace(1e-4, 0.02),
T = 1000): t ~ U{0..999}, ρ_t = log(ᾱ_t/(1 − ᾱ_t)), loss |ε − ε̂(√ᾱ_t x0 + √(1−ᾱ_t) ε, ρ_t)|².
It is conditioned on the continuous ρ, so it can be called at any level. Its output is the
ε-prediction, parametrised as ε̂ = σ·x + α·F(x, ρ) (F plays v = α·ε − σ·x0; EDM-style
preconditioning): with a plain ε̂ = F, the small ε-errors of the network at high noise are
multiplied by σ/α ≈ 160 in x̂0 and the 32×32 model's samples diverged. Outside the trained
range [ρ_999, ρ_0] ≈ [−10.1, 9.2] the network F is conditioned on the nearest end of the
range while α, σ follow the true ρ, so ε̂ → x as ᾱ → 0 and x̂0 → x as ᾱ → 1.

Shipped checkpoints live in ``specdiff/nn/weights/denoisers/<dataset>/`` (``load_denoiser``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from specdiff.core.io import write_json
from specdiff.core.schedule import ddpm_alphas_bar

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "UNet",
    "init_unet",
    "apply",
    "GaussianDenoiser",
    "DEFAULT_CONFIGS",
    "SHIPPED_DIR",
    "shipped_denoisers",
    "training_log_snr",
    "train",
    "save_denoiser",
    "load_denoiser",
]

SHIPPED_DIR = Path(__file__).parent / "weights" / "denoisers"
MODEL_FORMAT = "specdiff.denoiser/1"


def training_log_snr(num_train_steps: int = 1000) -> np.ndarray:
    """ρ_t = log(ᾱ_t/(1 − ᾱ_t)) of the DDPM linear-β schedule, t = 0..T−1 (float64).

    Index t = 0 is the cleanest level (ρ ≈ 9.2), t = 999 the noisiest (ρ ≈ −10.1).
    """
    ab = ddpm_alphas_bar(num_train_steps)
    return np.log(ab) - np.log1p(-ab)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the U-Net.

    Attributes:
      shape: (H, W) of one (single-channel) image.
      channels: feature channels at the two resolutions (full, half) after the stem.
      patch: space-to-depth factor of the stem (2: a 32×32 image is processed as 16×16×4,
        which makes the 32×32 model four times cheaper; 1: none).
      emb_dim: width of the log-SNR embedding.
      groups: GroupNorm groups.
      log_snr_range: (ρ_min, ρ_max) seen in training; outside it the model extrapolates as
        described in the module docstring.
      parametrization: ``"v"`` (default): the network output F is combined as
        ε̂ = σ·x + α·F (F ≈ v = α·ε − σ·x0, EDM-style preconditioning), which is exact in
        both limits; ``"eps"``: ε̂ = F (checkpoints without this field are ``"eps"``).
    """

    shape: tuple[int, int] = (8, 8)
    channels: tuple[int, int] = (32, 64)
    patch: int = 1
    emb_dim: int = 128
    groups: int = 8
    log_snr_range: tuple[float, float] = (
        float(training_log_snr()[-1]),
        float(training_log_snr()[0]),
    )
    parametrization: str = "v"

    def __post_init__(self):
        if self.parametrization not in ("v", "eps"):
            raise ValueError(
                f"unknown parametrization {self.parametrization!r}; allowed: 'v', 'eps'"
            )
        for f in ("shape", "channels", "log_snr_range"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        h, w = self.shape
        if len(self.shape) != 2 or h % (2 * self.patch) or w % (2 * self.patch):
            raise ValueError(
                f"shape {self.shape} must be (H, W) with H and W divisible by 2·patch "
                f"= {2 * self.patch} (the U-Net downsamples once after the stem)"
            )
        if len(self.channels) != 2 or any(c % self.groups for c in self.channels):
            raise ValueError(
                f"channels {self.channels} must be two numbers divisible by groups={self.groups}"
            )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown model config fields {sorted(unknown)}; allowed {sorted(names)}"
            )
        return cls(**{"parametrization": "eps", **d})  # records older than the field: "eps"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training run: data, optimisation and checkpointing.

    Attributes:
      dataset: name for ``specdiff.datasets.load_dataset`` (recorded; data can be passed in).
      model: the ``ModelConfig``.
      steps: optimiser steps.
      batch_size: examples per step.
      lr: peak Adam learning rate (linear warm-up, then cosine decay to 10 %).
      warmup: warm-up steps.
      ema_decay: decay of the parameter EMA (the EMA weights are the exported model).
      chunk: optimiser steps per compiled call (the progress bar advances per chunk).
      checkpoint_every: steps between orbax checkpoints (a multiple of ``chunk``).
    """

    dataset: str = "digits"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    steps: int = 4000
    batch_size: int = 128
    lr: float = 2e-3
    warmup: int = 200
    ema_decay: float = 0.999
    chunk: int = 50
    checkpoint_every: int = 500

    def __post_init__(self):
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        for f in ("steps", "batch_size", "chunk", "checkpoint_every"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be a positive integer, got {v!r}")
        if self.checkpoint_every % self.chunk:
            raise ValueError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of chunk "
                f"({self.chunk})"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {self.ema_decay!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d


DEFAULT_CONFIGS = {
    "digits": TrainConfig(
        dataset="digits",
        model=ModelConfig(shape=(8, 8), channels=(32, 64), patch=1),
        steps=3000,
    ),
    "patches_gray": TrainConfig(
        dataset="patches_gray",
        model=ModelConfig(shape=(32, 32), channels=(32, 64), patch=4),
        steps=3000,
    ),
}


# ---------------------------------------------------------------------------------------------
# The U-Net
# ---------------------------------------------------------------------------------------------


class _ResBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=groups, rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.emb = nnx.Linear(emb_dim, cout, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=groups, rngs=rngs)
        # Zero-initialised last conv: each block starts as the identity (stable early training).
        self.conv2 = nnx.Conv(cout, cout, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class UNet(nnx.Module):
    """ε-prediction U-Net on single-channel images, conditioned on the log-SNR ρ.

    Stem (optional space-to-depth by ``patch``) → residual block at full resolution →
    strided-conv downsample → two residual blocks at half resolution → nearest upsample +
    conv → concatenate the skip → residual block → output conv → depth-to-space. ρ enters
    through Fourier features and an MLP added inside every residual block.

    Args:
      config: the ``ModelConfig``.
      rngs: ``nnx.Rngs`` for the initial parameters.

    Example:
      >>> from flax import nnx
      >>> from specdiff.nn.denoisers import ModelConfig, UNet
      >>> net = UNet(ModelConfig(shape=(8, 8)), rngs=nnx.Rngs(0))
      >>> net(jnp.zeros((2, 8, 8)), jnp.zeros(2)).shape
      (2, 8, 8)
    """

    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.config = config
        c0, c1 = config.channels
        e, g, p = config.emb_dim, config.groups, config.patch
        self.emb1 = nnx.Linear(e // 2 + 1, e, rngs=rngs)
        self.emb2 = nnx.Linear(e, e, rngs=rngs)
        self.stem = nnx.Conv(p * p, c0, (3, 3), rngs=rngs)
        self.enc0 = _ResBlock(c0, c0, e, g, rngs)
        self.down = nnx.Conv(c0, c1, (3, 3), strides=(2, 2), rngs=rngs)
        self.mid1 = _ResBlock(c1, c1, e, g, rngs)
        self.mid2 = _ResBlock(c1, c1, e, g, rngs)
        self.up = nnx.Conv(c1, c0, (3, 3), rngs=rngs)
        self.dec0 = _ResBlock(2 * c0, c0, e, g, rngs)
        self.out_norm = nnx.GroupNorm(c0, num_groups=g, rngs=rngs)
        self.out = nnx.Conv(c0, p * p, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)

    def _embed(self, rho):
        e = self.config.emb_dim
        freqs = jnp.exp(jnp.linspace(jnp.log(0.05), jnp.log(4.0), e // 4, dtype=rho.dtype))
        f = rho[:, None] * freqs[None, :]
        feats = jnp.concatenate([jnp.sin(f), jnp.cos(f), rho[:, None] / 10.0], axis=-1)
        return self.emb2(jax.nn.silu(self.emb1(feats)))

    def _eps(self, x, rho):
        n, (h, w), p = x.shape[0], self.config.shape, self.config.patch
        z = (
            x.reshape(n, h // p, p, w // p, p)
            .transpose(0, 1, 3, 2, 4)
            .reshape(n, h // p, w // p, -1)
        )
        emb = self._embed(rho)
        h0 = self.enc0(self.stem(z), emb)
        h1 = self.mid2(self.mid1(self.down(h0), emb), emb)
        h1 = jnp.repeat(jnp.repeat(h1, 2, axis=1), 2, axis=2)
        out = self.dec0(jnp.concatenate([self.up(h1), h0], axis=-1), emb)
        out = self.out(jax.nn.silu(self.out_norm(out)))
        return out.reshape(n, h // p, w // p, p, p).transpose(0, 1, 3, 2, 4).reshape(n, h, w)

    def __call__(self, x, log_snr):
        """ε̂(x, ρ) for x of shape (n, H, W) in VP units and ρ scalar or (n,)."""
        x = jnp.asarray(x)
        rho = jnp.broadcast_to(jnp.asarray(log_snr, x.dtype), x.shape[:1])
        lo, hi = self.config.log_snr_range
        rho_c = jnp.clip(rho, lo, hi)  # the network is conditioned inside its trained range
        out = self._eps(x, rho_c)
        b = (slice(None),) + (None,) * (x.ndim - 1)
        a, s = jnp.exp(0.5 * jax.nn.log_sigmoid(rho)), jnp.exp(0.5 * jax.nn.log_sigmoid(-rho))
        if self.config.parametrization == "v":
            # ε̂ = σ·x + α·F with F ≈ v = α·ε − σ·x0: exact limits ε̂ → x (α → 0) and
            # x̂0 = α·x − σ·F → x (σ → 0), so network errors are never amplified by σ/α.
            return s[b] * x + a[b] * out
        # "eps": F is ε̂ itself. Below the trained range hold x̂0 (stable at high noise), i.e.
        # recompute ε̂ from the x̂0 predicted at ρ_min; above it hold ε̂ (stable near clean).
        a_c = jnp.exp(0.5 * jax.nn.log_sigmoid(rho_c))
        s_c = jnp.exp(0.5 * jax.nn.log_sigmoid(-rho_c))
        x0_c = (x - s_c[b] * out) / a_c[b]
        eps_low = (x - a[b] * x0_c) / s[b]
        return jnp.where((rho < lo)[b], eps_low, out)


# ---------------------------------------------------------------------------------------------
# The exact Gaussian MMSE denoiser
# ---------------------------------------------------------------------------------------------


@jax.tree_util.register_pytree_node_class
class GaussianDenoiser:
    """Exact MMSE ε-prediction for Gaussian data x0 ~ N(μ, Σ) (SPEC §2, in matrix form).

    With Σ = U diag(λ) Uᵀ, α² = sigmoid(ρ), σ² = sigmoid(−ρ) and y = x − α·μ:

        ε̂(x, ρ) = σ·U diag(1/(α²λ + σ²)) Uᵀ y.

    Data of any shape: ``mean`` has the shape of one sample, ``cov`` is (d, d) over the
    flattened sample, d = mean.size. A pytree, so it passes through ``jit``.

    Args:
      mean: array of the sample shape, e.g. (8, 8) or (d,).
      cov: (d, d) symmetric positive semi-definite covariance.

    Example:
      >>> import numpy as np
      >>> den = GaussianDenoiser(np.zeros(3), np.diag([4.0, 1.0, 0.25]))
      >>> den(np.ones((2, 3)), 0.0).shape
      (2, 3)
    """

    def __init__(self, mean, cov):
        mu = np.asarray(mean, dtype=np.float64)
        c = np.asarray(cov, dtype=np.float64)
        d = mu.size
        if c.shape != (d, d):
            raise ValueError(
                f"cov must have shape ({d}, {d}) for a mean of shape {mu.shape}, got {c.shape}"
            )
        if not (np.isfinite(mu).all() and np.isfinite(c).all()):
            raise ValueError("mean and cov must be finite")
        if not np.allclose(c, c.T, atol=1e-8 * max(1.0, np.abs(c).max())):
            raise ValueError("cov must be symmetric")
        lam, u = np.linalg.eigh(c)
        if lam.min() < -1e-8 * max(1.0, lam.max()):
            raise ValueError(
                f"cov must be positive semi-definite; smallest eigenvalue {lam.min()!r}"
            )
        self.mean = jnp.asarray(mu)
        self.eigenvalues = jnp.asarray(np.clip(lam, 0.0, None))
        self.eigenvectors = jnp.asarray(u)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def __call__(self, x, log_snr):
        x = jnp.asarray(x)
        dtype = x.dtype
        n = x.shape[0]
        rho = jnp.broadcast_to(jnp.asarray(log_snr, dtype), (n,))[:, None]
        a2, s2 = jax.nn.sigmoid(rho), jax.nn.sigmoid(-rho)
        u = self.eigenvectors.astype(dtype)
        y = x.reshape(n, -1) - jnp.sqrt(a2) * self.mean.reshape(1, -1).astype(dtype)
        coef = jnp.sqrt(s2) / (a2 * self.eigenvalues.astype(dtype) + s2)
        eps = ((y @ u) * coef) @ u.T
        return eps.reshape(x.shape)

    def tree_flatten(self):
        return (self.mean, self.eigenvalues, self.eigenvectors), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.mean, obj.eigenvalues, obj.eigenvectors = children
        return obj


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def _optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    warmup = min(cfg.warmup, cfg.steps // 2)
    sched = optax.warmup_cosine_decay_schedule(
        0.0, cfg.lr, warmup, max(cfg.steps, warmup + 1), end_value=0.1 * cfg.lr
    )
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))


def _loss(graphdef, params, x0, key, rho_table):
    kt, ke = jax.random.split(key)
    t = jax.random.randint(kt, x0.shape[:1], 0, rho_table.shape[0])
    rho = rho_table[t]
    eps = jax.random.normal(ke, x0.shape, x0.dtype)
    a = jnp.exp(0.5 * jax.nn.log_sigmoid(rho))[:, None, None]
    s = jnp.exp(0.5 * jax.nn.log_sigmoid(-rho))[:, None, None]
    model = nnx.merge(graphdef, params)
    pred = model(a * x0 + s * eps, rho)
    return jnp.mean((pred - eps) ** 2)


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"), donate_argnums=(1,))
def _train_step(graphdef, state, data, key, rho_table, *, cfg: TrainConfig):
    """One optimiser step; the batch and noise come from ``fold_in(key, step)``.

    (A ``lax.scan`` over several steps compiles to a loop that XLA:CPU runs ~30× slower
    than this step called from Python, so the training loop stays in Python.)
    """
    opt = _optimizer(cfg)
    params, ema, opt_state, step = state["params"], state["ema"], state["opt"], state["step"]
    k = jax.random.fold_in(key, step)
    kb, kl = jax.random.split(k)
    idx = jax.random.randint(kb, (cfg.batch_size,), 0, data.shape[0])
    loss, grads = jax.value_and_grad(_loss, argnums=1)(graphdef, params, data[idx], kl, rho_table)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    # EMA with the usual warm-up min(decay, (1 + step)/(10 + step)).
    d = jnp.minimum(cfg.ema_decay, (1.0 + step) / (10.0 + step))
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * p, ema, params)
    return {"params": params, "ema": ema, "opt": opt_state, "step": step + 1}, loss


@functools.partial(jax.jit, static_argnames=("config",))
def _init_params(config: ModelConfig, key):
    return nnx.split(UNet(config, rngs=nnx.Rngs(params=key)))[1]


def init_unet(config: ModelConfig, key: jax.Array) -> UNet:
    """A freshly initialised ``UNet`` (initialisation compiled: much faster than eager on CPU)."""
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0))))
    return nnx.merge(graphdef, _init_params(config, key))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _init_train_state(cfg: TrainConfig, key):
    params = nnx.split(UNet(cfg.model, rngs=nnx.Rngs(params=key)))[1]
    opt_state = _optimizer(cfg).init(params)
    ema = jax.tree.map(jnp.copy, params)
    return {"params": params, "ema": ema, "opt": opt_state, "step": jnp.zeros((), jnp.int32)}


def _init_state(cfg: TrainConfig, key):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: UNet(cfg.model, rngs=nnx.Rngs(0))))
    return graphdef, _init_train_state(cfg, key)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _apply(graphdef, state, x, log_snr):
    return nnx.merge(graphdef, state)(x, log_snr)


def apply(model: nnx.Module, x, log_snr) -> jax.Array:
    """``model(x, log_snr)`` compiled (eager NNX calls dispatch op by op; this is one call)."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, jnp.asarray(x), jnp.asarray(log_snr))


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def _latest_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.is_dir() and p.name.isdigit())
    return ckpt_dir / str(steps[-1]) if steps else None


def _save_train_state(ckpt_dir: Path, state, keep: int = 2) -> None:
    step = int(state["step"])
    with _checkpointer() as ckptr:
        ckptr.save((ckpt_dir / str(step)).absolute(), state, force=True)
        ckptr.wait_until_finished()
    old = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.is_dir() and p.name.isdigit())
    for s in old[:-keep]:
        shutil.rmtree(ckpt_dir / str(s), ignore_errors=True)


def train(
    config: TrainConfig,
    workdir,
    key: jax.Array,
    data=None,
    progress: bool = True,
) -> tuple[UNet, dict]:
    """Train a ``UNet`` with ε-prediction on the linear-β VP process; resumes from ``workdir``.

    Orbax checkpoints of the whole training state (parameters, EMA, optimiser state, step)
    are written to ``workdir/checkpoints/<step>/`` every ``config.checkpoint_every`` steps
    (the two newest are kept). If ``workdir`` already holds a checkpoint of the same config,
    training continues from it; the batch and noise of step k come from
    ``fold_in(key, k)``, so a resumed run follows the same path as an uninterrupted one.

    Args:
      config: the ``TrainConfig``.
      workdir: folder for ``config.json``, ``checkpoints/`` and ``losses.json``.
      key: a ``jax.random.key``; the model initialisation uses ``fold_in(key, -1)``...
        precisely ``fold_in(key, 2**31 - 1)``, the steps ``fold_in(key, step)``.
      data: float32 array (N, H, W); default ``specdiff.datasets.load_dataset(config.dataset,
        "train")``.
      progress: show a tqdm progress bar.

    Returns:
      (the EMA model, info dict with ``final_loss`` (mean of the last 200 step losses),
      ``steps``, ``wall_time_s`` (this call), ``resumed_from``).
    """
    from tqdm.auto import tqdm

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if data is None:
        from specdiff.data.datasets import load_dataset

        data = load_dataset(config.dataset, split="train")
    data = jnp.asarray(data, jnp.float32)
    if tuple(data.shape[1:]) != config.model.shape:
        raise ValueError(
            f"data samples have shape {tuple(data.shape[1:])} but the model expects "
            f"{config.model.shape}"
        )
    cfg_path = workdir / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != config.to_dict():
            raise ValueError(
                f"{str(workdir)!r} holds a training run with a different config; use a new "
                f"workdir or the same config (stored: {old}, given: {config.to_dict()})"
            )
    else:
        write_json(cfg_path, config.to_dict())

    graphdef, state = _init_state(config, jax.random.fold_in(key, 2**31 - 1))
    ckpt_dir = workdir / "checkpoints"
    latest = _latest_checkpoint(ckpt_dir)
    resumed_from = 0
    losses_path = workdir / "losses.json"
    losses: list[float] = []
    if latest is not None:
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
        with _checkpointer() as ckptr:
            state = ckptr.restore(latest.absolute(), abstract)
        resumed_from = int(state["step"])
        if losses_path.exists():
            losses = json.loads(losses_path.read_text())["losses"][:resumed_from]
    rho_table = jnp.asarray(training_log_snr(), jnp.float32)

    t0 = time.time()
    step = int(state["step"])
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc=config.dataset)
    while step < config.steps:
        num = min(config.chunk, config.steps - step)
        chunk_losses = []
        for _ in range(num):
            state, loss = _train_step(graphdef, state, data, key, rho_table, cfg=config)
            chunk_losses.append(loss)
        losses.extend(float(v) for v in jax.device_get(chunk_losses))
        step += num
        bar.update(num)
        bar.set_postfix(loss=f"{np.mean(losses[-200:]):.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            write_json(losses_path, {"losses": losses})
            _save_train_state(ckpt_dir, state)
    bar.close()
    model = nnx.merge(graphdef, state["ema"])
    info = {
        "steps": config.steps,
        "final_loss": float(np.mean(losses[-200:])) if losses else float("nan"),
        "wall_time_s": time.time() - t0,
        "resumed_from": resumed_from,
    }
    return model, info


# ---------------------------------------------------------------------------------------------
# Export and load
# ---------------------------------------------------------------------------------------------


def save_denoiser(model: UNet, path, metadata: dict | None = None) -> Path:
    """Write ``model`` to ``path/``: ``model.json`` (format, config, metadata) and the orbax
    parameter checkpoint ``path/params``. The folder is assembled beside ``path`` and moved
    into place, so an interrupted export leaves no half-written model.
    """
    path = Path(path).absolute()
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _, params = nnx.split(model)
    with _checkpointer() as ckptr:
        ckptr.save(tmp / "params", params, force=True)
        ckptr.wait_until_finished()
    rec = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "metadata": metadata or {}}
    write_json(tmp / "model.json", rec)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def shipped_denoisers() -> list[str]:
    """Names of the denoisers shipped with the package (folders under ``SHIPPED_DIR``)."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "model.json").is_file())


def load_denoiser(name_or_path) -> UNet:
    """Restore a saved ``UNet``: a shipped name (``shipped_denoisers()``) or a folder path.

    The parameters are restored with orbax into an abstract model built by
    ``nnx.eval_shape`` from the stored config.

    Raises:
      ValueError: the folder or its ``model.json``/``params`` is missing, or the stored
        parameters do not fit the stored architecture.
    """
    import orbax.checkpoint as ocp  # noqa: F401  (import errors surface here, not mid-restore)

    p = Path(name_or_path)
    if not p.exists() and (SHIPPED_DIR / str(name_or_path)).exists():
        p = SHIPPED_DIR / str(name_or_path)
    if not p.is_dir():
        raise ValueError(
            f"no denoiser checkpoint at {str(name_or_path)!r}: give a folder written by "
            f"save_denoiser or a shipped name ({', '.join(shipped_denoisers()) or 'none shipped'})"
        )
    meta_path, params_path = p / "model.json", p / "params"
    if not meta_path.is_file() or not params_path.is_dir():
        raise ValueError(
            f"{str(p)!r} is not a denoiser checkpoint: it needs model.json and a params/ folder"
        )
    try:
        rec = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(meta_path)!r} is not valid JSON: {e}") from None
    if not isinstance(rec, dict) or rec.get("format") != MODEL_FORMAT or "config" not in rec:
        raise ValueError(
            f"{str(meta_path)!r} is not a {MODEL_FORMAT!r} record (format: "
            f"{rec.get('format') if isinstance(rec, dict) else None!r})"
        )
    config = ModelConfig.from_dict(rec["config"])
    abstract_model = nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model)
    try:
        with _checkpointer() as ckptr:
            meta = ckptr.metadata(params_path.absolute())
            _check_compatible(abstract_state, meta, p)
            params = ckptr.restore(params_path.absolute(), abstract_state)
    except ValueError:
        raise
    except Exception as e:  # orbax raises several types for unreadable/mismatched trees
        raise ValueError(
            f"checkpoint {str(p)!r} does not match its stored architecture {config}: {e}"
        ) from None
    return nnx.merge(graphdef, params)


def _check_compatible(abstract_state, meta, path) -> None:
    """Compare stored array shapes with the abstract model's; ValueError on any difference."""
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    want = {
        _path_str(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(abstract_state)
    }
    try:
        have = {
            _path_str(k): tuple(v.shape)
            for k, v in jax.tree_util.tree_leaves_with_path(_plain(tree))
            if hasattr(v, "shape")
        }
    except Exception:  # metadata layout not understood: let restore decide
        return
    if not have:
        return
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    if missing or extra or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:3]}")
        if extra:
            detail.append(f"unexpected {extra[:3]}")
        if wrong:
            k = wrong[0]
            detail.append(f"shape of {k}: stored {have[k]}, expected {want[k]}")
        raise ValueError(
            f"checkpoint {str(path)!r} is incompatible with its stored architecture: "
            + "; ".join(detail)
        )


def _path_str(path) -> str:
    """'dec0/conv1/kernel' from a pytree key path (Variable ``.value`` entries dropped)."""
    parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    if parts and parts[-1] == "value":
        parts = parts[:-1]
    return "/".join(parts)


def _plain(tree: Any):
    """Metadata trees as nested dicts (orbax returns dicts for nnx.State leaves)."""
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    return tree
