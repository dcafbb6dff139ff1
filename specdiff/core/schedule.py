"""Noise schedules: S levels in sampling order, noisiest first (SPEC §3, §9).

The engine works in log-SNR ρ (well conditioned at both ends in float32); a ``Schedule``
keeps the levels exactly as given (so files round-trip bit for bit) and ρ beside them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import check_choice, check_finite, is_concrete

PROCESSES = ("vp", "ve", "flow")


def log_alpha_sigma(rho, process: str):
    """(log α, log σ) of x_t = α·x0 + σ·ε at log-SNR ρ.

    VP: α² = sigmoid(ρ), σ² = sigmoid(−ρ) (computed as log-sigmoids: exact near both ends).
    VE: α = 1, σ = exp(−ρ/2).
    flow (x_t = (1 − t)·x0 + t·ε): α = 1 − t = sigmoid(ρ/2), σ = t = sigmoid(−ρ/2).
    """
    if process == "vp":
        return 0.5 * jax.nn.log_sigmoid(rho), 0.5 * jax.nn.log_sigmoid(-rho)
    if process == "flow":
        return jax.nn.log_sigmoid(0.5 * rho), jax.nn.log_sigmoid(-0.5 * rho)
    return jnp.zeros_like(rho), -0.5 * rho


def ddpm_alphas_bar(num_train_steps: int = 1000, beta_start=1e-4, beta_end=0.02):
    """ᾱ_t = ∏_{i≤t}(1 − β_i), β = linspace(beta_start, beta_end, T) (DDPM, Ho et al. 2020)."""
    if num_train_steps < 2:
        raise ValueError(f"num_train_steps must be >= 2, got {num_train_steps!r}")
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got {beta_start!r}, {beta_end!r}")
    betas = np.linspace(beta_start, beta_end, num_train_steps, dtype=np.float64)
    return np.cumprod(1.0 - betas)


def _log_snr_from_levels(levels, process, xp):
    if process == "vp":  # ρ = log a − log(1 − a)
        return xp.log(levels) - xp.log1p(-levels)
    if process == "flow":  # ρ = 2 log((1 − t)/t)
        return 2.0 * (xp.log1p(-levels) - xp.log(levels))
    return -2.0 * xp.log(levels)  # VE: ρ = −2 log σ


def _levels_from_log_snr(rho, process):
    if process == "vp":  # a = sigmoid(ρ)
        return jax.nn.sigmoid(rho)
    if process == "flow":  # t = sigmoid(−ρ/2)
        return jax.nn.sigmoid(-0.5 * rho)
    return jnp.exp(-0.5 * rho)  # VE: σ = exp(−ρ/2)


def _validate_levels(lv: np.ndarray, process: str) -> None:
    if lv.ndim != 1:
        raise ValueError(f"schedule levels must be a 1-D array, got shape {lv.shape}")
    if lv.size == 0:
        raise ValueError("schedule is empty: give at least one level (one sampler step)")
    check_finite("schedule levels", lv)
    if process == "flow":
        if (lv <= 0).any() or (lv >= 1).any():
            i = int(np.flatnonzero((lv <= 0) | (lv >= 1))[0])
            raise ValueError(
                "flow levels are t and must lie strictly inside (0, 1); "
                f"level {i} is {float(lv[i])!r}"
            )
        if lv.size > 1 and not (np.diff(lv) < 0).all():
            i = int(np.flatnonzero(np.diff(lv) >= 0)[0])
            raise ValueError(
                "flow levels (t) must be strictly decreasing, noisiest first; "
                f"level {i + 1} ({float(lv[i + 1])!r}) is not below level {i} ({float(lv[i])!r})"
            )
    elif process == "vp":
        if (lv <= 0).any() or (lv >= 1).any():
            i = int(np.flatnonzero((lv <= 0) | (lv >= 1))[0])
            raise ValueError(
                "VP levels are ᾱ and must lie strictly inside (0, 1); "
                f"level {i} is {float(lv[i])!r}"
            )
        if lv.size > 1 and not (np.diff(lv) > 0).all():
            i = int(np.flatnonzero(np.diff(lv) <= 0)[0])
            raise ValueError(
                "VP levels (ᾱ) must be strictly increasing, noisiest first; "
                f"level {i + 1} ({float(lv[i + 1])!r}) does not exceed level {i} ({float(lv[i])!r})"
            )
    else:
        if (lv <= 0).any():
            i = int(np.flatnonzero(lv <= 0)[0])
            raise ValueError(f"VE levels are σ and must be > 0; level {i} is {float(lv[i])!r}")
        if lv.size > 1 and not (np.diff(lv) < 0).all():
            i = int(np.flatnonzero(np.diff(lv) >= 0)[0])
            raise ValueError(
                "VE levels (σ) must be strictly decreasing, noisiest first; "
                f"level {i + 1} ({float(lv[i + 1])!r}) is not below level {i} ({float(lv[i])!r})"
            )


@jax.tree_util.register_pytree_node_class
class Schedule:
    """S noise levels of an S-step sampler, noisiest first; the step to clean data is implicit.

    ``process="vp"``: levels are ᾱ, strictly increasing inside (0, 1).
    ``process="ve"``: levels are σ, strictly decreasing, > 0.
    ``process="flow"``: levels are t of x_t = (1 − t)·x0 + t·ε, strictly decreasing inside
    (0, 1); σ = t/(1 − t).

    A pytree (``levels`` and ``log_snr`` are leaves, ``process`` is static), so schedules can
    be built from traced levels inside ``jit``/``grad`` and batched with ``vmap``.

    Example:
      >>> import specdiff as sd
      >>> sch = sd.Schedule([0.01, 0.5, 0.99], "vp")
      >>> sch.to_ve().process
      've'
    """

    def __init__(self, levels, process: str = "vp"):
        check_choice("process", process, PROCESSES)
        if is_concrete(levels):
            lv = np.asarray(levels)
            if not np.issubdtype(lv.dtype, np.number) or np.iscomplexobj(lv):
                raise ValueError(f"schedule levels must be real numbers, got dtype {lv.dtype}")
            if not np.issubdtype(lv.dtype, np.floating):
                lv = lv.astype(float)
            _validate_levels(lv, process)
            # ρ from the levels as given (float64 if they are), then stored beside them.
            rho = _log_snr_from_levels(lv.astype(np.float64), process, np)
            levels = jnp.asarray(lv)
            rho = jnp.asarray(rho, dtype=levels.dtype)
        else:
            rho = _log_snr_from_levels(levels, process, jnp)
        self.levels = levels
        self.log_snr = rho
        self.process = process

    @classmethod
    def from_log_snr(cls, log_snr, process: str = "vp") -> Schedule:
        """Build from log-SNR ρ = log(ᾱ/(1−ᾱ)) = −2 log σ, strictly increasing (noisiest first).

        ρ is kept as given, so a schedule designed in log-SNR loses nothing near ᾱ → 1.
        """
        check_choice("process", process, PROCESSES)
        if is_concrete(log_snr):
            r = np.asarray(log_snr)
            if r.ndim != 1 or r.size == 0:
                raise ValueError(f"log_snr must be a non-empty 1-D array, got shape {r.shape}")
            check_finite("log_snr", r)
            if r.size > 1 and not (np.diff(r) > 0).all():
                raise ValueError("log_snr must be strictly increasing (noisiest first)")
            log_snr = jnp.asarray(r if np.issubdtype(r.dtype, np.floating) else r.astype(float))
        obj = object.__new__(cls)
        obj.log_snr = log_snr
        obj.levels = _levels_from_log_snr(log_snr, process)
        obj.process = process
        return obj

    @property
    def num_steps(self) -> int:
        return int(np.shape(self.log_snr)[-1])

    @property
    def alpha_bar(self):
        """ᾱ = sigmoid(ρ) at each level (VP units), whatever the process."""
        return self.levels if self.process == "vp" else jax.nn.sigmoid(self.log_snr)

    @property
    def sigma(self):
        """σ = exp(−ρ/2) at each level (VE units), whatever the process."""
        return self.levels if self.process == "ve" else jnp.exp(-0.5 * self.log_snr)

    def to_vp(self) -> Schedule:
        """The same log-SNR grid as a VP schedule (ᾱ = 1/(1 + σ²))."""
        return self if self.process == "vp" else Schedule.from_log_snr(self.log_snr, "vp")

    def to_flow(self) -> Schedule:
        """The same log-SNR grid as a flow schedule (t = σ/(1 + σ))."""
        return self if self.process == "flow" else Schedule.from_log_snr(self.log_snr, "flow")

    def to_process(self, process: str) -> Schedule:
        """The same log-SNR grid in ``process`` ("vp", "ve" or "flow")."""
        check_choice("process", process, PROCESSES)
        return self if self.process == process else Schedule.from_log_snr(self.log_snr, process)

    def to_ve(self) -> Schedule:
        """The same log-SNR grid as a VE schedule (σ = √((1−ᾱ)/ᾱ))."""
        return self if self.process == "ve" else Schedule.from_log_snr(self.log_snr, "ve")

    def astype(self, dtype) -> Schedule:
        obj = object.__new__(Schedule)
        obj.levels = jnp.asarray(self.levels, dtype)
        obj.log_snr = jnp.asarray(self.log_snr, dtype)
        obj.process = self.process
        return obj

    def __repr__(self) -> str:
        return f"Schedule(process={self.process!r}, steps={np.shape(self.log_snr)})"

    def tree_flatten(self):
        return (self.levels, self.log_snr), self.process

    @classmethod
    def tree_unflatten(cls, process, children):
        obj = object.__new__(cls)
        obj.levels, obj.log_snr = children
        obj.process = process
        return obj
