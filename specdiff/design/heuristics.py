"""Heuristic noise schedules, the baselines every comparison includes (SPEC §10).

Each ``get``-style function takes the number of steps S and returns a ``Schedule`` of S
levels, noisiest first (the final step to clean data is implicit). Grids are computed in
float64 NumPy; pass ``process="vp"``/``"ve"``/``"flow"`` to convert (same log-SNR grid).

Beside SPEC §10's families this module holds the schedules of the sampling ecosystems:
k-diffusion's ``get_sigmas_*`` (``karras``, ``exponential``, ``polyexponential``,
``vp_sde``), Align Your Steps (``ays``) and the flow-matching time shift of SD3
(``flow_shift``).

Why this module is long: every published baseline shares the registry at its end; one
table of them is easier to audit than several.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from specdiff.core.checks import check_choice, check_int
from specdiff.core.schedule import (
    PROCESSES,
    Schedule,
    _log_snr_from_levels,
    _validate_levels,
    ddpm_alphas_bar,
)

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
    "karras",
    "exponential",
    "polyexponential",
    "vp_sde",
    "ays",
    "AYS_SIGMAS",
    "loglinear_interp",
    "flow_shift",
    "SD_SIGMA_MIN",
    "SD_SIGMA_MAX",
    "HEURISTICS",
    "OTHER_HEURISTICS",
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


class _Grid(NamedTuple):
    """A heuristic's float64 log-SNR grid, on the host: what ``process=_GRID`` returns."""

    log_snr: np.ndarray


# The ``process`` that asks a heuristic for its ``_Grid`` instead of a ``Schedule``: the
# designer's candidates, built without device arrays or JAX operations.
_GRID = object()  # private: no public ``process`` argument can equal it


def _finish(levels, natural: str, process: str | None) -> Schedule:
    if process is _GRID:
        lv = np.asarray(levels, dtype=np.float64)
        _validate_levels(lv, natural)
        return _Grid(_log_snr_from_levels(lv, natural, np))
    sch = Schedule(np.asarray(levels, dtype=np.float64), natural)
    if process is None or process == natural:
        return sch
    check_choice("process", process, PROCESSES)
    return sch.to_process(process)


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
    if process is _GRID:
        return _Grid(rho)
    sch = Schedule.from_log_snr(rho, "vp")
    return sch if process is None else sch.to_process(process)


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


# --------------------------------------------------------------------------------------
# The ecosystems' own schedules: k-diffusion, Align Your Steps, SD3's flow shift
# --------------------------------------------------------------------------------------


def _sd_sigmas() -> np.ndarray:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) of Stable Diffusion's training schedule ("scaled_linear":
    β = linspace(√0.00085, √0.012, 1000)², the LDM/SD 1.x/SDXL configs), t = 0 … 999."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    ab = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - ab) / ab)


# The σ range k-diffusion's wrappers (and ComfyUI/A1111) give SD 1.x/SDXL models:
# 0.0291675… (t = 0) and 14.6146… (t = 999); the k-diffusion defaults below use it.
SD_SIGMA_MIN, SD_SIGMA_MAX = float(_sd_sigmas()[0]), float(_sd_sigmas()[-1])


def _check_range(fn: str, sigma_min, sigma_max) -> None:
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(
            f"{fn} needs 0 < sigma_min < sigma_max < inf, got {sigma_min!r}, {sigma_max!r}"
        )


def karras(
    steps: int,
    sigma_min: float = SD_SIGMA_MIN,
    sigma_max: float = SD_SIGMA_MAX,
    rho: float = 7.0,
    process: str | None = None,
) -> Schedule:
    """k-diffusion ``get_sigmas_karras`` without its appended 0:
    σ_i = (σ_max^{1/ρ} + ramp_i·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ramp = linspace(0, 1, S).

    The same formula as ``edm``; the defaults are the SD σ range (``SD_SIGMA_MIN``,
    ``SD_SIGMA_MAX``), what "Karras" means in the SD tools, where ``edm`` uses 0.002…80.
    """
    S = _steps(steps)
    _check_range("karras", sigma_min, sigma_max)
    if not rho > 0:
        raise ValueError(f"karras needs rho > 0, got {rho!r}")
    ramp = np.linspace(0.0, 1.0, S)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _finish((hi + ramp * (lo - hi)) ** rho, "ve", process)


def exponential(
    steps: int,
    sigma_min: float = SD_SIGMA_MIN,
    sigma_max: float = SD_SIGMA_MAX,
    process: str | None = None,
) -> Schedule:
    """k-diffusion ``get_sigmas_exponential``: σ = exp(linspace(log σ_max, log σ_min, S))."""
    S = _steps(steps)
    _check_range("exponential", sigma_min, sigma_max)
    return _finish(np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), S)), "ve", process)


def polyexponential(
    steps: int,
    sigma_min: float = SD_SIGMA_MIN,
    sigma_max: float = SD_SIGMA_MAX,
    rho: float = 1.0,
    process: str | None = None,
) -> Schedule:
    """k-diffusion ``get_sigmas_polyexponential``: with ramp = linspace(1, 0, S)^ρ,
    σ = exp(ramp·(log σ_max − log σ_min) + log σ_min). ρ = 1 is ``exponential``."""
    S = _steps(steps)
    _check_range("polyexponential", sigma_min, sigma_max)
    if not rho > 0:
        raise ValueError(f"polyexponential needs rho > 0, got {rho!r}")
    ramp = np.linspace(1.0, 0.0, S) ** rho
    lmin, lmax = math.log(sigma_min), math.log(sigma_max)
    return _finish(np.exp(ramp * (lmax - lmin) + lmin), "ve", process)


def vp_sde(
    steps: int,
    beta_d: float = 19.9,
    beta_min: float = 0.1,
    eps_s: float = 1e-3,
    process: str | None = None,
) -> Schedule:
    """k-diffusion ``get_sigmas_vp`` (the continuous VP-SDE of Song et al. 2021):
    t = linspace(1, ε_s, S), σ = √(exp(β_d t²/2 + β_min t) − 1) (``expm1``: the same value,
    exact at small t)."""
    S = _steps(steps)
    if not (beta_d > 0 and beta_min >= 0 and 0 < eps_s < 1):
        raise ValueError(
            "vp_sde needs beta_d > 0, beta_min >= 0 and 0 < eps_s < 1, got "
            f"{beta_d!r}, {beta_min!r}, {eps_s!r}"
        )
    t = np.linspace(1.0, eps_s, S)
    return _finish(np.sqrt(np.expm1(beta_d * t**2 / 2 + beta_min * t)), "ve", process)


# Align Your Steps (Sabour, Fidler & Kreis 2024), the published 10-step σ lists, noisiest
# first, with the final σ_min the recipe interpolates through (the sampler's last step goes
# to 0 instead). Values as printed on the project's "how to" page and copied into diffusers'
# ``AysSchedules`` (src/diffusers/schedulers/scheduling_utils.py: "StableDiffusionSigmas",
# "StableDiffusionXLSigmas", "StableDiffusionVideoSigmas", where σ_min is replaced by 0.0).
# ComfyUI's nodes_align_your_steps.py carries a variant with more digits that differs in
# the third decimal for some levels; we follow the published/diffusers list.
AYS_SIGMAS = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def loglinear_interp(sigmas, num: int) -> np.ndarray:
    """The AYS recipe: ``num`` values, log σ interpolated linearly in the normalised index.

    With x = linspace(0, 1, n) on the n given values (descending) and x' = linspace(0, 1,
    num): log σ'(x') = interp(x', x, log σ); both ends are kept.
    """
    s = np.asarray(sigmas, np.float64)
    check_int("num", num, 2)
    xs, new = np.linspace(0, 1, s.size), np.linspace(0, 1, num)
    return np.exp(np.interp(new, xs, np.log(s[::-1])))[::-1].copy()


def ays(steps: int, model: str = "sd15", process: str | None = None) -> Schedule:
    """Align Your Steps for ``model`` ("sd15", "sdxl", "svd"): the 11 published levels
    (``AYS_SIGMAS``) log-linearly interpolated to S + 1 (``loglinear_interp``), the first S
    kept (the last becomes the step to 0). At S = 10 these are the published σ's."""
    S = _steps(steps)
    check_choice("model", model, tuple(AYS_SIGMAS))
    table = np.asarray(AYS_SIGMAS[model], np.float64)
    levels = table if S + 1 == table.size else loglinear_interp(table, S + 1)
    return _finish(levels[:S], "ve", process)


# The noisiest flow level the module uses in place of t = 1 (σ = ∞): ᾱ = A_MIN, as for
# the continuous families; t = sigmoid(−ρ/2) = 1 − 3.2e-5.
T_MAX = float(1.0 / (1.0 + math.sqrt(A_MIN / (1.0 - A_MIN))))


def flow_shift(
    steps: int, shift: float = 3.0, num_train_steps: int = 1000, process: str | None = None
) -> Schedule:
    """SD3's time shift on diffusers' ``FlowMatchEulerDiscreteScheduler`` default grid.

    With s(u) = shift·u/(1 + (shift − 1)·u) and T = ``num_train_steps``, the scheduler's
    ``set_timesteps(S)`` takes u = linspace(1, s(1/T), S) (its shifted ``sigma_min``) and
    runs t = s(u) (diffusers 0.42.1). Flow levels, noisiest first; t_0 = 1 (σ = ∞) is
    replaced by ``T_MAX`` = 1 − 3.2e-5 (ᾱ = 1e-9, the clip of the continuous families).
    """
    S = _steps(steps)
    check_int("num_train_steps", num_train_steps, 2)
    if not 0 < shift < math.inf:
        raise ValueError(f"flow_shift needs a finite shift > 0, got {shift!r}")

    def s(u):
        return shift * u / (1.0 + (shift - 1.0) * u)

    t = s(np.linspace(1.0, s(1.0 / num_train_steps), S))
    return _finish(np.minimum(t, T_MAX), "flow", process)


# The heuristic baselines by name (default parameters): the default candidate set that
# ``heuristics`` returns, which every comparison includes and the designer starts from.
# SPEC §10's families plus the ecosystems' defaults (k-diffusion's Karras and exponential
# on the SD σ range, its VP-SDE grid, Align Your Steps for SD 1.5/SDXL/SVD, SD3's flow
# shift 3): each is a different grid, all apply to every process (they are σ grids), and
# one more candidate costs one loss evaluation, so the designer's start can only improve.
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
    "karras": lambda S, process=None: karras(S, process=process),
    "exponential": lambda S, process=None: exponential(S, process=process),
    "vp_sde": lambda S, process=None: vp_sde(S, process=process),
    "ays_sd15": lambda S, process=None: ays(S, "sd15", process=process),
    "ays_sdxl": lambda S, process=None: ays(S, "sdxl", process=process),
    "ays_svd": lambda S, process=None: ays(S, "svd", process=process),
    "flow_shift": lambda S, process=None: flow_shift(S, process=process),
}

# Registered by name but left out of the default set: at their default parameters they
# repeat a default member (polyexponential with ρ = 1 is ``exponential``).
OTHER_HEURISTICS = {
    "polyexponential": lambda S, process=None: polyexponential(S, process=process),
}


def heuristic(name: str, steps: int, process: str | None = None) -> Schedule:
    """The heuristic schedule ``name`` (a key of ``HEURISTICS`` or ``OTHER_HEURISTICS``)."""
    table = {**HEURISTICS, **OTHER_HEURISTICS}
    check_choice("schedule", name, tuple(table))
    return table[name](steps, process=process)


def heuristics(steps: int, process: str = "vp") -> dict[str, Schedule]:
    """The default candidate set (``HEURISTICS``) at this S, as a dict name → Schedule.

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


def _log_snr_grids(steps: int) -> dict[str, np.ndarray]:
    """``heuristics(steps)``'s float64 log-SNR grids (the same for every process), built on
    the host: no ``Schedule``, no JAX operation (the designer's candidates)."""
    return {name: g.log_snr for name, g in heuristics(steps, _GRID).items()}
