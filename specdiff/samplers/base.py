"""What a sampler is: one step, written once, and the affine map derived from it (SPEC §11).

A sampler is a frozen dataclass (hashable: a static argument under ``jit``) whose
``step`` is written in k-diffusion's variables: VE noise levels σ, the data prediction
``denoise(x, σ) = D(x; σ)``, and a state of ``x`` plus ``history`` carried values
(previous denoised outputs, derivatives). The same ``step`` serves two uses:

- real sampling (``specdiff.sampling``): ``denoise`` is a network, ``x`` a batch;
- exact analysis: under Gaussian data ``D(x; σ) − m = γ(σ)·(x − m)`` with
  γ = λ/(λ + σ²) per eigenvalue, so one step is linear in the centred state s = (y, hist)
  and the fresh noise z: s' = A·s + B·z. ``affine`` obtains A and B from ``step`` itself,
  by running it on the linear denoiser with unit states and unit noises; no second,
  hand-derived copy of a sampler exists. (The centred form needs no constant term: every
  step's weights on x and the denoised values sum to one, so the mean m passes through;
  the Monte-Carlo tests, run with m ≠ 0, check it.)

The step's signature is ``step(denoise, x, hist, z, sigmas, i, *, order, last)``:

- ``sigmas``: (S+1,) σ_0 > … > σ_{S−1} > 0 = σ_S, what k-diffusion's loop receives;
- ``i``: the step index, a Python int or a traced integer (use ``jnp.where`` on it);
- ``order``: static, the number of valid history entries, ``min(i, history)``; k-diffusion's
  ``if old_denoised is None`` is ``if order == 0``;
- ``last``: static, ``i == S − 1`` (k-diffusion's ``if sigmas[i + 1] == 0``);
- ``hist``: a tuple of ``history`` arrays shaped like x (zeros where not yet valid);
- ``z``: a tuple of ``noise_dim`` independent standard normals shaped like x.

It returns ``(x', hist')``. ``specdiff.core.steps.step_loop`` runs the steps in order
(warm-up steps with their own ``order`` unrolled, the steady middle in one ``lax.scan``,
the last step apart), for the engine and for real sampling alike.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

__all__ = ["Sampler", "Stochastic", "check_eta", "check_s_noise", "check_churn", "safe_sqrt"]


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(value)


def check_eta(value, upper: float | None = None) -> float:
    v = _number("eta", value)
    if not v >= 0.0 or (upper is not None and v > upper):
        allowed = f"[0, {upper:g}]" if upper is not None else ">= 0"
        raise ValueError(f"eta must be {allowed} (0: deterministic), got {value!r}")
    return v


def check_s_noise(value) -> float:
    v = _number("s_noise", value)
    if not v > 0.0 or v == float("inf"):
        raise ValueError(f"s_noise must be a finite number > 0, got {value!r}")
    return v


def check_churn(s_churn, s_tmin, s_tmax) -> tuple[float, float, float]:
    c = _number("s_churn", s_churn)
    lo, hi = _number("s_tmin", s_tmin), _number("s_tmax", s_tmax)
    if not c >= 0.0 or c == float("inf"):
        raise ValueError(f"s_churn must be a finite number >= 0, got {s_churn!r}")
    if not (0.0 <= lo <= hi):
        raise ValueError(f"need 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin!r}, s_tmax={s_tmax!r}")
    return c, lo, hi


def safe_sqrt(x):
    """√x with a finite gradient at x = 0 (the branch is then unused: gradient 0, not NaN)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Base class: subclasses set ``name``, ``history``, ``evals`` and write ``step``.

    Class attributes:
      name: the k-diffusion name (``sample_<name>``), used by ``from_name`` and in files.
      history: values carried between steps besides x (0 for one-step samplers).
      evals: denoiser evaluations of a step before the last; ``last_evals`` of the last.
    """

    name: ClassVar[str] = "sampler"
    history: ClassVar[int] = 0
    evals: ClassVar[int] = 1
    last_evals: ClassVar[int] = 1

    @property
    def noise_dim(self) -> int:
        """Fresh standard normals a step draws (0: deterministic)."""
        return 0

    @property
    def deterministic(self) -> bool:
        return self.noise_dim == 0

    @property
    def state_size(self) -> int:
        return 1 + self.history

    @property
    def telescopes(self) -> bool:
        """Whether the step is DDPM's, x' = x̂0 + (σ'²/σ)·ε̂ + noise (``core.telescoped``:
        its gains' products telescope and the engine takes a closed form)."""
        return False

    def nfe(self, steps: int) -> int:
        """Denoiser evaluations of an S-step run (k-diffusion's count)."""
        return self.evals * (steps - 1) + self.last_evals

    def steps_for_nfe(self, nfe: int) -> int:
        """The most steps S whose run costs at most ``nfe`` evaluations (equal-NFE comparisons)."""
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < self.nfe(1):
            raise ValueError(
                f"nfe must be an integer >= {self.nfe(1)} for {self.name}, got {nfe!r}"
            )
        return max(1, (nfe - self.last_evals) // self.evals + 1)

    def to_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}

    def step(self, denoise, x, hist, z, sigmas, i, *, order: int, last: bool):
        raise NotImplementedError

    def affine_columns(self, lam, sigmas, i, *, order: int, last: bool):
        """(A, B) of step i, eigenvalues last: A (n, n, d), B (n, noise_dim, d).

        The step is linear in (state, noise) once D(x; σ) = γ(σ)·x, so its columns are the
        step applied to the unit states e_c (z = 0) and to the unit noises e_k (state 0):
        n + noise_dim evaluations of ``step`` on (d,)-vectors, batched in one ``vmap``.
        """
        n, q = self.state_size, self.noise_dim
        dtype = jnp.result_type(lam.dtype, sigmas.dtype)
        lam = lam.astype(dtype)

        def denoise(x, sigma):
            return lam / (lam + sigma**2) * x

        def apply(unit):  # unit: (n + q,) one-hot over (state components, noises)
            s = [jnp.broadcast_to(unit[c], lam.shape) for c in range(n)]
            z = tuple(jnp.broadcast_to(unit[n + k], lam.shape) for k in range(q))
            x, hist = self.step(denoise, s[0], tuple(s[1:]), z, sigmas, i, order=order, last=last)
            return jnp.stack([x, *hist])  # (n, d)

        cols = jax.vmap(apply)(jnp.eye(n + q, dtype=dtype))  # (n + q, n, d)
        cols = jnp.swapaxes(cols, 0, 1)  # (n, n + q, d): column c of [A | B]
        return cols[:, :n], cols[:, n:]

    def affine(self, lam, sigmas, i, *, order: int, last: bool):
        """(A, B) of step i for each eigenvalue, in centred coordinates (SPEC §11).

        Args:
          lam: (d,) eigenvalues; sigmas: (S+1,) levels with the final 0; i, order, last:
            as for ``step``.

        Returns:
          A: (d, n, n) with n = ``state_size``; B: (d, n, noise_dim). The centred state
          s = (y, hist) maps as s' = A·s + B·z.
        """
        a, b = self.affine_columns(lam, sigmas, i, order=order, last=last)
        return jnp.moveaxis(a, -1, 0), jnp.moveaxis(b, -1, 0)


@dataclasses.dataclass(frozen=True)
class Stochastic(Sampler):
    """Base of k-diffusion's ancestral and SDE samplers: ``eta`` (0: deterministic, one
    fresh normal per step otherwise) and ``s_noise`` (scale of that normal)."""

    eta: float = 1.0
    s_noise: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "eta", check_eta(self.eta))
        object.__setattr__(self, "s_noise", check_s_noise(self.s_noise))

    @property
    def noise_dim(self) -> int:
        return 1 if self.eta > 0 else 0
