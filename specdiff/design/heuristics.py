"""Heuristic noise schedules, the baselines every comparison includes (SPEC §10).

Each ``get``-style function takes the number of steps S and returns a ``Schedule`` of S
levels, noisiest first (the final step to clean data is implicit). Grids are computed in
float64 NumPy; pass ``process="vp"``/``"ve"`` to convert (same log-SNR grid).
"""

from __future__ import annotations

import math

import numpy as np

from specdiff.core.checks import check_choice
from specdiff.core.schedule import PROCESSES, Schedule, ddpm_alphas_bar

__all__ = [
    "ddpm_alphas_bar",
    "ddpm_linear",
    "cosine",
    "chen_cosine",
    "chen_sigmoid",
    "edm",
    "edm_sigmas",
    "chen_cosine_gamma",
    "chen_sigmoid_gamma",
    "log_snr_uniform",
    "arctan",
    "HEURISTICS",
    "heuristic",
    "heuristics",
]

SPACINGS = ("uniform", "quadratic", "linspace", "leading", "trailing")
# Continuous families are clipped to [A_MIN, A_MAX] in ᾱ (log-SNR ±20.7), as in Chen 2023.
A_MIN, A_MAX = 1e-9, 1.0 - 1e-9


def _steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def _finish(levels, natural: str, process: str | None) -> Schedule:
    sch = Schedule(np.asarray(levels, dtype=np.float64), natural)
    if process is None or process == natural:
        return sch
    check_choice("process", process, PROCESSES)
    return sch.to_vp() if process == "vp" else sch.to_ve()


def ddpm_timesteps(
    steps: int, spacing: str = "uniform", num_train_steps: int = 1000, offset: int = 1
) -> np.ndarray:
    """Indices into a T-step discrete schedule, noisiest first, for S sampler steps.

    DDIM (Song et al.): ``"uniform"`` every ⌊T/S⌋-th index from 0; ``"quadratic"``
    ⌊linspace(0, √(0.8 T), S)²⌋. diffusers: ``"linspace"`` round(linspace(0, T−1, S));
    ``"leading"`` arange(S)·⌊T/S⌋ + offset (default 1, as Stable Diffusion configs set
    ``steps_offset=1``; with 0 it equals ``"uniform"``); ``"trailing"``
    round(arange(T, 0, −T/S)) − 1.
    """
    S, T = _steps(steps), int(num_train_steps)
    check_choice("spacing", spacing, SPACINGS)
    if S > T:
        raise ValueError(f"steps ({S}) cannot exceed the {T} training timesteps")
    if spacing == "uniform":
        t = np.arange(S) * (T // S)
    elif spacing == "quadratic":
        t = np.floor(np.linspace(0, math.sqrt(0.8 * T), S) ** 2).astype(int)
    elif spacing == "linspace":
        t = np.round(np.linspace(0, T - 1, S)).astype(int)
    elif spacing == "leading":
        t = np.arange(S) * (T // S) + offset
    else:
        t = np.round(np.arange(T, 0, -T / S)).astype(int)[::-1] - 1
    t = np.sort(t)[::-1]
    if len(np.unique(t)) != S or t.min() < 0 or t.max() >= T:
        raise ValueError(
            f"spacing {spacing!r} gives repeated or out-of-range timesteps for steps={S}, "
            f"T={T}; use fewer steps or another spacing"
        )
    return t


def ddpm_linear(
    steps: int,
    spacing: str = "uniform",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    num_train_steps: int = 1000,
    offset: int = 1,
    process: str | None = None,
) -> Schedule:
    """DDPM linear-β schedule (T = 1000) subsampled to S steps; see ``ddpm_timesteps``."""
    ab = ddpm_alphas_bar(num_train_steps, beta_start, beta_end)
    t = ddpm_timesteps(steps, spacing, num_train_steps, offset)
    return _finish(ab[t], "vp", process)


def _t_grid(S: int) -> np.ndarray:
    """Continuous times t_i = 1 − i/S, i = 0..S−1 (t = 1 noisiest; t = 0, clean, implicit)."""
    return 1.0 - np.arange(S, dtype=np.float64) / S


def _clip(a):
    return np.clip(a, A_MIN, A_MAX)


def cosine(steps: int, s: float = 0.008, process: str | None = None) -> Schedule:
    """Improved-DDPM cosine: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t + s)/(1 + s))·π/2)."""
    t = _t_grid(_steps(steps))
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    return _finish(_clip(f(t) / f(0.0)), "vp", process)


def chen_cosine_gamma(t, start=0.0, end=1.0, tau=1.0, xp=np):
    """γ(t) = (v(end) − v(t(end−start)+start)) / (v(end) − v(start)), v(u) = cos(uπ/2)^{2τ}.

    ``xp`` is ``numpy`` or ``jax.numpy`` (the parametric fits differentiate through it).
    """
    v = lambda u: xp.cos(u * np.pi / 2) ** (2 * tau)  # noqa: E731
    return (v(end) - v(t * (end - start) + start)) / (v(end) - v(start))


def chen_sigmoid_gamma(t, start=-3.0, end=3.0, tau=1.0, xp=np):
    """γ(t) as for ``chen_cosine_gamma`` with v(u) = sigmoid(u/τ)."""
    v = lambda u: 1.0 / (1.0 + xp.exp(-u / tau))  # noqa: E731
    return (v(end) - v(t * (end - start) + start)) / (v(end) - v(start))


def chen_cosine(
    steps: int, start: float = 0.0, end: float = 1.0, tau: float = 1.0, process: str | None = None
) -> Schedule:
    """Chen 2023 cosine family: v(u) = cos(u·π/2)^{2τ}, γ(t) = (v(end) − v(t(end−start)+start))
    / (v(end) − v(start))."""
    t = _t_grid(_steps(steps))
    v = lambda u: np.cos(u * np.pi / 2) ** (2 * tau)  # noqa: E731
    if not v(end) != v(start) or not tau > 0:
        raise ValueError(
            f"chen_cosine needs v(start) != v(end) and tau > 0, got start={start}, "
            f"end={end}, tau={tau}"
        )
    return _finish(_clip(chen_cosine_gamma(t, start, end, tau)), "vp", process)


def chen_sigmoid(
    steps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0, process: str | None = None
) -> Schedule:
    """Chen 2023 sigmoid family: v(u) = sigmoid(u/τ), γ as for ``chen_cosine``."""
    t = _t_grid(_steps(steps))
    if not end > start or not tau > 0:
        raise ValueError(f"chen_sigmoid needs end > start and tau > 0, got {start}, {end}, {tau}")
    return _finish(_clip(chen_sigmoid_gamma(t, start, end, tau)), "vp", process)


def _frac(S: int) -> np.ndarray:
    return np.arange(S, dtype=np.float64) / (S - 1) if S > 1 else np.zeros(1)


def edm_sigmas(u, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    """σ(u) = (σ_max^{1/ρ} + u·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ for u ∈ [0, 1] (NumPy or JAX)."""
    return (sigma_max ** (1 / rho) + u * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def edm(
    steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    process: str | None = None,
) -> Schedule:
    """EDM/Karras: σ_i = (σ_max^{1/ρ} + i/(S−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ."""
    S = _steps(steps)
    if not 0 < sigma_min < sigma_max or not rho > 0:
        raise ValueError(
            f"edm needs 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}"
        )
    return _finish(edm_sigmas(_frac(S), sigma_min, sigma_max, rho), "ve", process)


def log_snr_uniform(
    steps: int,
    log_snr_min: float = -2 * math.log(80.0),
    log_snr_max: float = -2 * math.log(0.002),
    process: str | None = None,
) -> Schedule:
    """ρ_i equally spaced from ``log_snr_min`` (noisiest) to ``log_snr_max``.

    Defaults are the EDM end levels σ ∈ [0.002, 80].
    """
    S = _steps(steps)
    if not log_snr_min < log_snr_max:
        raise ValueError(f"need log_snr_min < log_snr_max, got {log_snr_min}, {log_snr_max}")
    rho = log_snr_min + _frac(S) * (log_snr_max - log_snr_min)
    sch = Schedule.from_log_snr(rho, "vp")
    return sch if process in (None, "vp") else sch.to_ve()


def arctan(
    steps: int,
    c: float = 1.0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    process: str | None = None,
) -> Schedule:
    """Arctan-uniform schedule, KL-optimal for isotropic data N(0, c²I) under VE DDIM:
    σ_i = c·tan((1 − i/(S−1))·atan(σ_max/c) + (i/(S−1))·atan(σ_min/c))."""
    S = _steps(steps)
    if not c > 0 or not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"arctan needs c > 0 and 0 < sigma_min < sigma_max, got {c}, {sigma_min}, {sigma_max}"
        )
    i = _frac(S)
    sig = c * np.tan((1 - i) * np.arctan(sigma_max / c) + i * np.arctan(sigma_min / c))
    return _finish(sig, "ve", process)


# The heuristic baselines by name (default parameters), used by comparisons and the CLI.
HEURISTICS = {
    "linear": lambda S, process=None: ddpm_linear(S, "uniform", process=process),
    "linear_quadratic": lambda S, process=None: ddpm_linear(S, "quadratic", process=process),
    "linear_linspace": lambda S, process=None: ddpm_linear(S, "linspace", process=process),
    "linear_leading": lambda S, process=None: ddpm_linear(S, "leading", process=process),
    "linear_trailing": lambda S, process=None: ddpm_linear(S, "trailing", process=process),
    "cosine": lambda S, process=None: cosine(S, process=process),
    "chen_cosine": lambda S, process=None: chen_cosine(S, process=process),
    "chen_sigmoid": lambda S, process=None: chen_sigmoid(S, process=process),
    "edm": lambda S, process=None: edm(S, process=process),
    "log_snr_uniform": lambda S, process=None: log_snr_uniform(S, process=process),
    "arctan": lambda S, process=None: arctan(S, process=process),
}


def heuristic(name: str, steps: int, process: str | None = None) -> Schedule:
    """The heuristic schedule ``name`` (a key of ``HEURISTICS``) with S steps."""
    check_choice("schedule", name, tuple(HEURISTICS))
    return HEURISTICS[name](steps, process=process)


def heuristics(steps: int, process: str = "vp") -> dict[str, Schedule]:
    """Every heuristic that is defined at this S, as a dict name → Schedule.

    Spacings that cannot give S distinct timesteps (e.g. ``quadratic`` at large S) are
    left out.
    """
    out = {}
    for name, fn in HEURISTICS.items():
        try:
            out[name] = fn(steps, process=process)
        except ValueError:
            if name.startswith("linear_") or name == "linear":
                continue
            raise
    return out
