"""Parametric fits recover known parameters; exports follow the conventions of SPEC §9."""

import numpy as np
import pytest

import specdiff as sd
from specdiff import export


@pytest.mark.parametrize(
    "family, make, truth",
    [
        (
            "edm",
            lambda: sd.schedules.edm(12, 0.01, 50.0, 5.0),
            {"sigma_min": 0.01, "sigma_max": 50.0, "rho": 5.0},
        ),
        (
            "chen_cosine",
            lambda: sd.schedules.chen_cosine(12, 0.2, 0.9, 1.5),
            {"start": 0.2, "end": 0.9, "tau": 1.5},
        ),
    ],
)
def test_fit_recovers_known_parameters(family, make, truth):
    fit = sd.fit_family(make(), family)
    for k, v in truth.items():
        np.testing.assert_allclose(fit.params[k], v, rtol=1e-6)
    assert fit.rmse_log_snr < 1e-6


def test_sigmoid_fit_recovers_the_schedule():
    """(start, end, τ) of the sigmoid family matter only through start/τ and end/τ."""
    fit = sd.fit_family(sd.schedules.chen_sigmoid(12, -2.0, 4.0, 0.7), "chen_sigmoid")
    p = fit.params
    np.testing.assert_allclose(
        [p["start"] / p["tau"], p["end"] / p["tau"]], [-2.0 / 0.7, 4.0 / 0.7], rtol=1e-6
    )
    np.testing.assert_allclose(
        fit.schedule.log_snr, sd.schedules.chen_sigmoid(12, -2.0, 4.0, 0.7).log_snr, atol=1e-6
    )


def test_fit_reports_the_loss_of_the_fitted_schedule():
    spec = sd.Spectrum(5.0 / np.arange(1, 21) ** 1.5)
    ddim = sd.samplers.DDIM()
    sch = sd.schedules.edm(10, process="vp")
    fit = sd.fit_family(sch, "edm", spectrum=spec, sampler=ddim)
    direct = float(sd.divergence(spec, sd.output_moments(spec, sch, ddim), "w2"))
    np.testing.assert_allclose(fit.loss, direct, rtol=1e-6)
    assert fit.schedule.process == "vp"
    with pytest.raises(ValueError, match="family"):
        sd.fit_family(sch, "linear")


def test_k_diffusion_and_diffusers_sigmas():
    sch = sd.schedules.cosine(8)
    sig = export.to_k_diffusion(sch)
    a = np.asarray(sch.levels)
    np.testing.assert_allclose(sig[:-1], np.sqrt((1 - a) / a), rtol=1e-12)
    assert sig[-1] == 0.0 and np.all(np.diff(sig) < 0)
    np.testing.assert_array_equal(export.to_diffusers(sch)["sigmas"], sig)


@pytest.mark.parametrize("spacing", ["uniform", "trailing", "linspace"])
def test_diffusers_timesteps_recover_discrete_schedules(spacing):
    sch = sd.schedules.ddpm_linear(20, spacing)
    out = export.to_diffusers(sch)
    np.testing.assert_array_equal(out["timesteps"], sd.schedules.ddpm_timesteps(20, spacing))
    assert out["max_log_snr_error"] < 1e-12 and out["timesteps_distinct"]


def test_diffusers_timesteps_nearest_in_log_snr():
    sch = sd.schedules.edm(15, process="vp")
    out = export.to_diffusers(sch)
    ab = sd.schedules.ddpm_alphas_bar()
    train = np.log(ab) - np.log1p(-ab)
    for rho, t in zip(np.asarray(sch.log_snr), out["timesteps"]):
        assert np.abs(train[t] - rho) <= np.min(np.abs(train - rho)) + 1e-12
    assert np.all(np.diff(out["timesteps"]) <= 0)


def test_interpolation_is_log_linear_and_keeps_ends():
    sch = sd.schedules.edm(10)
    same = export.interpolate(sch, 10)
    np.testing.assert_allclose(same.levels, sch.levels, rtol=1e-12)
    fine = export.interpolate(sch, 19)  # every other level is an original one
    np.testing.assert_allclose(np.asarray(fine.levels)[::2], sch.levels, rtol=1e-12)
    mid = np.sqrt(np.asarray(sch.levels)[:-1] * np.asarray(sch.levels)[1:])  # geometric mean
    np.testing.assert_allclose(np.asarray(fine.levels)[1::2], mid, rtol=1e-12)
    assert fine.process == "ve"
    with pytest.raises(ValueError, match="steps"):
        export.interpolate(sch, 0)
