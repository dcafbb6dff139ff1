"""Shared problems and sampler cases for the sampler tests.

Every test module uses the same dimension D, step count STEPS and sampler objects, so the
engine's compiled functions (static in the sampler, the process and the shapes) are shared
across the parametrised cases and modules.
"""

from __future__ import annotations

import numpy as np
import pytest

import specdiff as sd
from specdiff.design.heuristics import edm_sigmas

D = 5
STEPS = 8
PROCESSES = ("vp", "ve", "flow")
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0

CHURN = {"s_churn": 2.0, "s_tmin": 0.05, "s_tmax": 10.0, "s_noise": 1.007}
ANCESTRAL = {"eta": 0.5, "s_noise": 0.9}

# (name, parameters): every name in sd.samplers.SAMPLERS with its defaults (lms: order 4) ...
DEFAULTS = [(name, {}) for name in sd.samplers.SAMPLERS]
# ... and non-default settings.
VARIANTS = [
    ("ddim", {"eta": 0.5}),
    ("euler", CHURN),
    ("heun", CHURN),
    ("dpm_2", CHURN),
    ("euler_ancestral", ANCESTRAL),
    ("euler_ancestral", {"eta": 1.5}),
    ("dpm_2_ancestral", ANCESTRAL),
    # σ_down = 0 on the steps with σ'/σ ≤ √(1 − 1/η²) = 0.30 (the traced Euler branch, no
    # noise after it); at η = 1.2 every step of the Karras grid is one, and the output
    # variance collapses to round-off (~1e-25), which no Monte-Carlo test can resolve.
    ("dpm_2_ancestral", {"eta": 1.05}),
    ("dpmpp_2s_ancestral", ANCESTRAL),
    ("dpmpp_2s_ancestral", {"eta": 1.2}),
    ("dpmpp_2m_sde", {"solver_type": "heun"}),
    ("dpmpp_2m_sde", {"eta": 0.5, "s_noise": 0.9}),
    ("dpmpp_2m_sde", {"eta": 0.5, "solver_type": "heun"}),
    ("dpmpp_3m_sde", {"eta": 0.5, "s_noise": 0.9}),
    ("lms", {"order": 1}),
    ("lms", {"order": 2}),
    ("lms", {"order": 3}),
]
CASES = DEFAULTS + VARIANTS


def case_id(case) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


def sampler_of(case):
    name, params = case
    return sd.samplers.from_name(name, **params)


def case_params(cases=CASES, marks=None):
    """pytest params (ids from the settings) for a list of cases."""
    return [pytest.param(c, id=case_id(c), marks=marks or ()) for c in cases]


def one_process(case) -> str:
    """The process a case runs on when not all three are needed: the processes in turn along
    ``CASES`` (so tests that use this pairing share the engine's compiled functions)."""
    return PROCESSES[CASES.index(case) % len(PROCESSES)]


def case_process_params(cases=CASES):
    """(case, one_process(case)) pytest params."""
    return [pytest.param(c, one_process(c), id=f"{case_id(c)}-{one_process(c)}") for c in cases]


def product_params():
    """Every default sampler on every process, every variant on ``one_process``."""
    full = [pytest.param(c, p, id=f"{case_id(c)}-{p}") for c in DEFAULTS for p in PROCESSES]
    return full + case_process_params(VARIANTS)


def random_problem(d: int = D, seed: int = 0):
    """Σ0 = U diag(λ) Uᵀ with a random rotation U (non-diagonal), and a nonzero mean μ0."""
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.lognormal(0.0, 1.2, d))[::-1]
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mu0 = rng.normal(size=d)
    return lam, u, mu0, (u * lam) @ u.T


def levels_for(sigmas, process: str) -> np.ndarray:
    """A σ grid in the process's own levels: VE σ, VP ᾱ = 1/(1 + σ²), flow t = σ/(1 + σ)."""
    s = np.asarray(sigmas, dtype=np.float64)
    return {"ve": s, "vp": 1.0 / (1.0 + s**2), "flow": s / (1.0 + s)}[process]


def karras(steps: int, process: str = "ve", smin=SIGMA_MIN, smax=SIGMA_MAX) -> sd.Schedule:
    """The EDM/Karras σ grid (ρ = 7), built from explicit levels of ``process``."""
    u = np.arange(steps, dtype=np.float64) / max(steps - 1, 1)
    return sd.Schedule(levels_for(edm_sigmas(u, smin, smax, 7.0), process), process)


def alpha0(schedule) -> float:
    """Signal scale of the first level: x_process = α·x_σ (VE 1, VP √ᾱ, flow 1 − t)."""
    lv = float(np.asarray(schedule.levels, dtype=np.float64)[0])
    return {"ve": 1.0, "vp": np.sqrt(lv), "flow": 1.0 - lv}[schedule.process]


def start_var(schedule) -> float:
    """SPEC §11 start variance in σ coordinates: VE σ_0², VP 1 + σ_0², flow (1 + σ_0)²."""
    lv = float(np.asarray(schedule.levels, dtype=np.float64)[0])
    if schedule.process == "ve":
        return lv**2
    if schedule.process == "vp":
        return 1 + (1 - lv) / lv
    return (1 + lv / (1 - lv)) ** 2
