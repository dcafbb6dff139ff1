"""The ecosystems' schedules: k-diffusion grids, Align Your Steps, SD3's flow shift.

k-diffusion's own source and diffusers' constants are compared in ``test_interop.py`` (they
need torch/diffusers); here the grids are checked against their defining properties.
"""

import numpy as np
import pytest

import specdiff as sd
from specdiff import schedules as S

NEW = ("karras", "exponential", "vp_sde", "ays_sd15", "ays_sdxl", "ays_svd", "flow_shift")


def test_sd_sigma_range_is_the_scaled_linear_training_schedule():
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    ab = np.cumprod(1 - betas)
    np.testing.assert_allclose(
        [S.SD_SIGMA_MIN, S.SD_SIGMA_MAX], np.sqrt((1 - ab[[0, -1]]) / ab[[0, -1]]), rtol=1e-14
    )
    # The AYS SD lists start and end on that range (3 decimals as published).
    np.testing.assert_allclose(S.AYS_SIGMAS["sd15"][0], S.SD_SIGMA_MAX, atol=5e-4)
    np.testing.assert_allclose(S.AYS_SIGMAS["sdxl"][-1], S.SD_SIGMA_MIN, atol=5e-4)


def test_karras_is_edm_on_other_defaults():
    np.testing.assert_allclose(S.karras(12, 0.002, 80.0).levels, S.edm(12).levels, rtol=1e-12)
    k = np.asarray(S.karras(9).levels)
    np.testing.assert_allclose(k[[0, -1]], [S.SD_SIGMA_MAX, S.SD_SIGMA_MIN], rtol=1e-12)
    r = k ** (1 / 7)
    np.testing.assert_allclose(np.diff(r), np.diff(r)[0], rtol=1e-9)


def test_exponential_families():
    e = np.asarray(S.exponential(7).levels)
    np.testing.assert_allclose(np.diff(np.log(e)), np.diff(np.log(e))[0], rtol=1e-12)
    np.testing.assert_allclose(e[[0, -1]], [S.SD_SIGMA_MAX, S.SD_SIGMA_MIN], rtol=1e-12)
    np.testing.assert_allclose(S.polyexponential(7).levels, e, rtol=1e-12)  # ρ = 1
    # ρ = 2: log σ − log σ_min is quadratic in the reversed ramp.
    p = np.asarray(S.polyexponential(7, rho=2.0).levels)
    frac = np.log(p / S.SD_SIGMA_MIN) / np.log(S.SD_SIGMA_MAX / S.SD_SIGMA_MIN)
    np.testing.assert_allclose(np.sqrt(frac), np.linspace(1, 0, 7), atol=1e-12)


def test_vp_sde_is_the_continuous_vp_marginal():
    """σ(t)² = 1/ᾱ(t) − 1 with log ᾱ(t) = −β_d t²/2 − β_min t (Song et al. 2021)."""
    sch = S.vp_sde(5, process="vp")
    t = np.linspace(1, 1e-3, 5)
    np.testing.assert_allclose(sch.levels, np.exp(-19.9 * t**2 / 2 - 0.1 * t), rtol=1e-12)


def test_ays_published_and_interpolated():
    for model, table in S.AYS_SIGMAS.items():
        np.testing.assert_array_equal(np.asarray(S.ays(10, model).levels), table[:10])
        fine = S.loglinear_interp(table, 21)
        np.testing.assert_allclose(fine[::2], table, rtol=1e-12)  # every other is published
        geo = np.sqrt(np.asarray(table[:-1]) * np.asarray(table[1:]))
        np.testing.assert_allclose(fine[1::2], geo, rtol=1e-12)
        np.testing.assert_allclose(S.ays(20, model).levels, fine[:20], rtol=1e-12)
    np.testing.assert_allclose(S.ays(1, "svd").levels, [700.0], rtol=1e-12)
    with pytest.raises(ValueError, match="model"):
        S.ays(10, "sd3")


def test_flow_shift_scales_sigma_by_the_shift():
    """t' = s·t/(1 + (s − 1)t) is σ' = s·σ for σ = t/(1 − t); the grid is diffusers'
    u = linspace(1, s(1/T), S)."""
    shift, steps, T = 3.0, 9, 1000
    sch = S.flow_shift(steps, shift)
    assert sch.process == "flow" and sch.levels[0] == S.T_MAX
    u_min = shift / T / (1 + (shift - 1) / T)
    u = np.linspace(1, u_min, steps)[1:]
    np.testing.assert_allclose(np.asarray(sch.sigma)[1:], shift * u / (1 - u), rtol=1e-12)
    unshifted = S.flow_shift(steps, 1.0).levels[1:]
    np.testing.assert_allclose(unshifted, np.linspace(1, 1 / T, steps)[1:], rtol=1e-12)
    with pytest.raises(ValueError, match="shift"):
        S.flow_shift(4, 0.0)


@pytest.mark.parametrize("process", ["vp", "ve", "flow"])
def test_default_candidates_include_the_ecosystems(process):
    cands = S.heuristics(10, process)
    assert set(NEW) <= set(cands) and "polyexponential" not in cands
    for name in NEW:
        assert cands[name].process == process
        np.testing.assert_allclose(
            cands[name].log_snr, S.heuristic(name, 10).log_snr, rtol=1e-9, atol=1e-9
        )
    assert S.heuristic("polyexponential", 10).num_steps == 10


def test_designer_compares_the_new_candidates():
    spec = sd.Spectrum(4.0 / np.arange(1, 9) ** 1.5)
    res = sd.design_schedule(spec, 6, sd.samplers.DDIM(), max_iter=5)
    assert set(NEW) <= set(res.heuristics)
    assert res.loss <= min(res.heuristics.values()) + 1e-12
