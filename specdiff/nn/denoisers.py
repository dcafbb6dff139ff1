"""Denoisers: a small flax (NNX) U-Net trained on the built-in datasets, and the exact
Gaussian MMSE denoiser, behind one call signature.

Every denoiser is called as ``denoiser(x, log_snr) -> eps_hat``:

- ``x``: (n, *shape) states in **VP units**, x = α·x0 + σ·ε with α² = sigmoid(ρ),
  σ² = sigmoid(−ρ);
- ``log_snr``: ρ = log(ᾱ/(1−ᾱ)), a scalar or shape (n,);
- returns the ε-prediction ε̂(x, ρ), shape (n, *shape).

``specdiff.sample`` runs any sampler (``specdiff.samplers``) with any schedule on any such
denoiser.

This module is the public face (``specdiff.denoisers``). It holds the exact Gaussian
denoiser (``GaussianDenoiser``) and the checkpoints of trained U-Nets (``save_denoiser``,
``load_denoiser``, ``shipped_denoisers``; shipped ones live in
``specdiff/nn/weights/denoisers/<dataset>/``), and re-exports the U-Net (``ModelConfig``,
``UNet``, ``init_unet``, ``apply``, ``training_log_snr``: module ``unet``, which also
describes its ε-parametrisation) and its training (``TrainConfig``, ``DEFAULT_CONFIGS``,
``train``: module ``training``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from specdiff.core.checks import full_precision
from specdiff.core.io import write_json
from specdiff.nn.training import DEFAULT_CONFIGS, TrainConfig, _checkpointer, train
from specdiff.nn.unet import ModelConfig, UNet, apply, init_unet, training_log_snr

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

    @full_precision
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

    p = _checkpoint_folder(name_or_path)
    config = ModelConfig.from_dict(_read_model_record(p / "model.json")["config"])
    abstract_model = nnx.eval_shape(lambda: UNet(config, rngs=nnx.Rngs(0)))
    graphdef, abstract_state = nnx.split(abstract_model)
    params_path = p / "params"
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


def _checkpoint_folder(name_or_path) -> Path:
    """The folder of a shipped name or a path; ValueError unless it holds a checkpoint."""
    p = Path(name_or_path)
    if not p.exists() and (SHIPPED_DIR / str(name_or_path)).exists():
        p = SHIPPED_DIR / str(name_or_path)
    if not p.is_dir():
        raise ValueError(
            f"no denoiser checkpoint at {str(name_or_path)!r}: give a folder written by "
            f"save_denoiser or a shipped name ({', '.join(shipped_denoisers()) or 'none shipped'})"
        )
    if not (p / "model.json").is_file() or not (p / "params").is_dir():
        raise ValueError(
            f"{str(p)!r} is not a denoiser checkpoint: it needs model.json and a params/ folder"
        )
    return p


def _read_model_record(meta_path: Path) -> dict:
    """The ``model.json`` record (format, config, metadata); ValueError if it is not one."""
    try:
        rec = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(meta_path)!r} is not valid JSON: {e}") from None
    if not isinstance(rec, dict) or rec.get("format") != MODEL_FORMAT or "config" not in rec:
        raise ValueError(
            f"{str(meta_path)!r} is not a {MODEL_FORMAT!r} record (format: "
            f"{rec.get('format') if isinstance(rec, dict) else None!r})"
        )
    return rec


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
