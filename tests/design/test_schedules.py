"""Heuristic schedules follow SPEC §10."""

import numpy as np
import pytest

import specdiff as sd
from specdiff import schedules as S


@pytest.mark.parametrize("name", sorted({**S.HEURISTICS, **S.OTHER_HEURISTICS}))
@pytest.mark.parametrize("steps", [1, 2, 10, 100])
@pytest.mark.parametrize("process", ["vp", "ve", "flow"])
def test_every_heuristic_is_a_valid_schedule(name, steps, process):
    try:
        sch = S.heuristic(name, steps, process=process)
    except ValueError as e:  # only spacings that cannot give S distinct timesteps may refuse
        assert "repeated" in str(e)
        return
    assert sch.num_steps == steps and sch.process == process
    assert np.all(np.diff(np.asarray(sch.log_snr)) > 0)


def test_ddpm_linear_spacings():
    ab = S.ddpm_alphas_bar()
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(ab[-1], np.prod(1 - betas), rtol=1e-12)
    np.testing.assert_array_equal(S.ddpm_timesteps(10, "uniform"), np.arange(10)[::-1] * 100)
    np.testing.assert_array_equal(S.ddpm_timesteps(10, "trailing"), np.arange(999, 0, -100))
    np.testing.assert_array_equal(
        S.ddpm_timesteps(10, "linspace"), np.round(np.linspace(0, 999, 10))[::-1]
    )
    np.testing.assert_array_equal(
        S.ddpm_timesteps(10, "leading", offset=1), np.arange(10)[::-1] * 100 + 1
    )
    q = S.ddpm_timesteps(10, "quadratic")
    np.testing.assert_array_equal(q, np.floor(np.linspace(0, np.sqrt(800), 10) ** 2)[::-1])
    sch = S.ddpm_linear(10, "trailing")
    np.testing.assert_array_equal(np.asarray(sch.levels), ab[np.arange(999, 0, -100)])
    with pytest.raises(ValueError, match="repeated"):
        S.ddpm_timesteps(900, "quadratic")


def test_continuous_families_match_their_formulas():
    sch = S.cosine(4)
    t = np.array([1.0, 0.75, 0.5, 0.25])
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(sch.levels, np.clip(f(t) / f(0), 1e-9, 1), rtol=1e-12)
    # Chen cosine with (0, 1, 1) is γ(t) = cos²(πt/2); the sigmoid family hits 0 at t = 1.
    np.testing.assert_allclose(
        S.chen_cosine(4).levels[1:], np.cos(t[1:] * np.pi / 2) ** 2, rtol=1e-12
    )
    sig = lambda u: 1 / (1 + np.exp(-u))
    g = (sig(3) - sig(t * 6 - 3)) / (sig(3) - sig(-3))
    np.testing.assert_allclose(S.chen_sigmoid(4).levels, np.clip(g, 1e-9, 1), rtol=1e-12)


def test_edm_and_arctan_endpoints_and_shape():
    e = S.edm(18)
    assert e.process == "ve"
    np.testing.assert_allclose([e.levels[0], e.levels[-1]], [80.0, 0.002], rtol=1e-12)
    r = e.levels ** (1 / 7)
    np.testing.assert_allclose(np.diff(r), np.diff(r)[0], rtol=1e-9)  # uniform in σ^{1/ρ}
    a = S.arctan(11, c=0.5)
    np.testing.assert_allclose([a.levels[0], a.levels[-1]], [80.0, 0.002], rtol=1e-12)
    ang = np.arctan(np.asarray(a.levels) / 0.5)
    np.testing.assert_allclose(np.diff(ang), np.diff(ang)[0], rtol=1e-9)  # uniform in atan


def test_log_snr_uniform_and_conversions():
    sch = S.log_snr_uniform(7)
    np.testing.assert_allclose(np.diff(sch.log_snr), np.diff(sch.log_snr)[0], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sch.to_ve().levels)[[0, -1]], [80.0, 0.002], rtol=1e-12)
    vp = sd.Schedule([0.2, 0.5, 0.8], "vp")
    ve = vp.to_ve()
    np.testing.assert_allclose(ve.levels, np.sqrt((1 - vp.levels) / vp.levels), rtol=1e-14)
    np.testing.assert_allclose(ve.to_vp().levels, vp.levels, rtol=1e-14)
    np.testing.assert_allclose(vp.log_snr, -2 * np.log(ve.levels), rtol=1e-14)
