"""Convergence order of the deterministic samplers as the number of steps S grows.

VE Karras schedule (σ from 80 to 0.002, ρ = 7), S ∈ {8, 16, 32, 64}, an isotropic-ish
spectrum (λ ∈ [0.5, 2]) with a nonzero mean. The discretisation error is measured as W2 to
the exact probability-flow solution from the same start: per eigenvalue
y(σ) = y_0·√((λ + σ²)/(λ + σ_0²)) down to σ_min, then the exact final denoise
γ(σ_min)·y (every sampler's last step), so the output is
N(m − c·m, c²σ_0²) with c = λ/√((λ + σ_min²)(λ + σ_0²)). (W2 to the data has a floor from
the start mismatch N(0, σ_0²) ≠ N(m, λ + σ_0²); it must still decrease with S.)

Measured slopes of log W2 vs log S (least squares over the four S): Euler/DDIM −0.98
(local −0.97, −0.99, −0.99); Heun −2.22, DPM-2 −2.20, DPM++(2M) −2.01, 2M SDE at η = 0 with
the Heun correction −2.27 (local slopes tend to −2 from below: −2.37 … −2.09 for Heun; S = 8
is pre-asymptotic). Bands: first order [−1.1, −0.9], second order [−2.45, −1.8]: a sampler
that dropped to first order (a slope near −1) or a step that was off by a constant factor
(no convergence) fails, and the band is wide enough for the pre-asymptotic S = 8.
"""

import numpy as np
import pytest

import specdiff as sd
from tests.samplers.cases import SIGMA_MAX, SIGMA_MIN, case_id, karras, sampler_of

STEPS = (8, 16, 32, 64)
LAM = np.array([0.5, 0.8, 1.0, 1.25, 2.0])
MEAN = np.array([0.3, -0.2, 0.5, 0.1, -0.4])
FIRST, SECOND = (-1.1, -0.9), (-2.45, -1.8)
ORDERS = [
    (("euler", {}), FIRST),
    (("ddim", {}), FIRST),
    (("lms", {"order": 1}), FIRST),
    (("heun", {}), SECOND),
    (("dpm_2", {}), SECOND),
    (("dpmpp_2m", {}), SECOND),
    (("dpmpp_2m_sde", {"eta": 0.0, "solver_type": "heun"}), SECOND),
]


def exact_flow_endpoint():
    c = LAM / np.sqrt((LAM + SIGMA_MIN**2) * (LAM + SIGMA_MAX**2))
    return sd.Spectrum(c**2 * SIGMA_MAX**2, MEAN - c * MEAN)


def w2_series(sampler):
    spec, exact = sd.Spectrum(LAM, MEAN), exact_flow_endpoint()
    to_exact, to_data = [], []
    for steps in STEPS:
        mom = sd.output_moments(spec, karras(steps, "ve"), sampler)
        to_exact.append(float(sd.divergence(exact, mom, "w2")))
        to_data.append(float(sd.divergence(spec, mom, "w2")))
    return np.array(to_exact), np.array(to_data)


@pytest.mark.parametrize(("case", "band"), ORDERS, ids=[case_id(c) for c, _ in ORDERS])
def test_w2_slope_matches_the_order(case, band):
    to_exact, to_data = w2_series(sampler_of(case))
    assert np.all(np.diff(to_data) < 0), to_data
    assert np.all(np.diff(to_exact) < 0), to_exact
    slope = np.polyfit(np.log(STEPS), np.log(to_exact), 1)[0]
    assert band[0] < slope < band[1], slope


@pytest.mark.parametrize("order", [2, 3, 4])
def test_lms_is_at_least_second_order(order):
    """Adams–Bashforth of order p starts with lower-order steps at σ_max (where the flow is
    almost linear in σ); measured slopes over S = 8 … 64: p = 2 −1.75 (local −1.57, −1.78,
    −1.89 → −2), p = 3 −2.40, p = 4 −2.94; the error at S = 64 falls with the order."""
    to_exact, to_data = w2_series(sampler_of(("lms", {"order": order})))
    assert np.all(np.diff(to_data) < 0) and np.all(np.diff(to_exact) < 0)
    slopes = np.diff(np.log(to_exact)) / np.diff(np.log(STEPS))
    assert slopes[-1] < -1.8 if order == 2 else slopes[-1] < -2.5, slopes
    lower = w2_series(sampler_of(("lms", {"order": order - 1})))[0][-1]
    assert to_exact[-1] < lower
