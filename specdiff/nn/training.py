"""Training the U-Net: ``TrainConfig``, the per-dataset defaults, the optimiser, the compiled
train step and ``train`` (resumable, with orbax checkpoints of the whole training state).

The U-Net is trained with ε-prediction on the DDPM linear-β schedule (β = linspace(1e-4,
0.02), T = 1000): t ~ U{0..999}, ρ_t = log(ᾱ_t/(1 − ᾱ_t)), loss
|ε − ε̂(√ᾱ_t x0 + √(1−ᾱ_t) ε, ρ_t)|². The batch and noise of step k come from
``fold_in(key, k)``, so a resumed run follows the same path as an uninterrupted one.
Re-exported by ``denoisers``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from specdiff.core.io import write_json
from specdiff.nn.unet import ModelConfig, UNet, init_unet, training_log_snr

__all__ = ["TrainConfig", "DEFAULT_CONFIGS", "train"]


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


@functools.partial(jax.jit, static_argnames=("cfg",))
def _init_train_state(cfg: TrainConfig, params):
    opt_state = _optimizer(cfg).init(params)
    ema = jax.tree.map(jnp.copy, params)
    return {"params": params, "ema": ema, "opt": opt_state, "step": jnp.zeros((), jnp.int32)}


def _init_state(cfg: TrainConfig, key):
    """(graphdef, initial training state) from ``init_unet(cfg.model, key)``: training
    starts from the weights that function gives, through the same compiled program (one
    compilation of the initialisation serves both)."""
    graphdef, params = nnx.split(init_unet(cfg.model, key))
    return graphdef, _init_train_state(cfg, params)


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
      key: a ``jax.random.key``; the model starts from
        ``init_unet(config.model, fold_in(key, 2**31 - 1))``, step k uses ``fold_in(key, k)``.
      data: float32 array (N, H, W); default ``specdiff.datasets.load_dataset(config.dataset,
        "train")``.
      progress: show a tqdm progress bar.

    Returns:
      (the EMA model, info dict with ``final_loss`` (mean of the last 200 step losses),
      ``steps``, ``wall_time_s`` (this call), ``resumed_from``).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = _training_data(config, data)
    _claim_workdir(workdir, config)
    graphdef, state = _init_state(config, jax.random.fold_in(key, 2**31 - 1))
    state, losses, resumed_from = _resume(workdir, state)
    t0 = time.time()
    state = _run_steps(graphdef, state, data, key, config, workdir, losses, progress)
    model = nnx.merge(graphdef, state["ema"])
    info = {
        "steps": config.steps,
        "final_loss": float(np.mean(losses[-200:])) if losses else float("nan"),
        "wall_time_s": time.time() - t0,
        "resumed_from": resumed_from,
    }
    return model, info


def _training_data(config: TrainConfig, data) -> jax.Array:
    """The training images as float32, checked against the model's shape."""
    if data is None:
        from specdiff.data.datasets import load_dataset

        data = load_dataset(config.dataset, split="train")
    data = jnp.asarray(data, jnp.float32)
    if tuple(data.shape[1:]) != config.model.shape:
        raise ValueError(
            f"data samples have shape {tuple(data.shape[1:])} but the model expects "
            f"{config.model.shape}"
        )
    return data


def _claim_workdir(workdir: Path, config: TrainConfig) -> None:
    """Record the config in ``workdir/config.json``, or refuse a workdir of another config."""
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


def _resume(workdir: Path, state):
    """(state, losses so far, step resumed from): the newest checkpoint, if any."""
    latest = _latest_checkpoint(workdir / "checkpoints")
    if latest is None:
        return state, [], 0
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    with _checkpointer() as ckptr:
        state = ckptr.restore(latest.absolute(), abstract)
    resumed_from = int(state["step"])
    losses_path = workdir / "losses.json"
    losses: list[float] = []
    if losses_path.exists():
        losses = json.loads(losses_path.read_text())["losses"][:resumed_from]
    return state, losses, resumed_from


def _run_steps(graphdef, state, data, key, config: TrainConfig, workdir: Path, losses, progress):
    """Train to ``config.steps`` in chunks; after each, losses (appended to ``losses``) and
    a progress bar update, and every ``checkpoint_every`` steps a checkpoint."""
    from tqdm.auto import tqdm

    rho_table = jnp.asarray(training_log_snr(), jnp.float32)
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
            write_json(workdir / "losses.json", {"losses": losses})
            _save_train_state(workdir / "checkpoints", state)
    bar.close()
    return state
