"""Bad sampler settings raise ValueError naming what is allowed."""

import pytest

import specdiff as sd


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("euler_pp", {}, r"unknown sampler 'euler_pp'; allowed: ddim, ddpm, euler, .*lms"),
        ("euler", {"eta": 0.5}, r"no parameter 'eta'.*allowed: s_churn, s_tmin, s_tmax, s_noise"),
        ("dpmpp_2m", {"s_noise": 1.0}, r"no parameter 's_noise'.*allowed: none"),
        ("ddpm", {"eta": 0.5}, r"no parameter 'eta'.*ddim with eta"),
        ("euler_ancestral", {"eta": -0.1}, r"eta must be >= 0"),
        ("dpmpp_2m_sde", {"eta": -1.0}, r"eta must be >= 0"),
        ("ddim", {"eta": 1.5}, r"eta must lie in \[0, 1\]"),
        ("ddim", {"eta": -0.5}, r"eta must lie in \[0, 1\]"),
        ("dpm_2_ancestral", {"s_noise": 0.0}, r"s_noise must be a finite number > 0"),
        ("dpmpp_3m_sde", {"s_noise": -1.0}, r"s_noise must be a finite number > 0"),
        ("heun", {"s_noise": 0.0}, r"s_noise must be a finite number > 0"),
        ("euler", {"s_noise": float("inf")}, r"s_noise must be a finite number > 0"),
        ("dpmpp_2m_sde", {"solver_type": "rk4"}, r"solver_type must be one of 'midpoint', 'heun'"),
        ("lms", {"order": 0}, r"order must be an integer >= 1"),
        ("lms", {"order": 2.5}, r"order must be an integer >= 1"),
        ("euler", {"s_tmin": 2.0, "s_tmax": 1.0}, r"need 0 <= s_tmin <= s_tmax"),
        ("dpm_2", {"s_tmin": -1.0}, r"need 0 <= s_tmin <= s_tmax"),
        ("heun", {"s_churn": -1.0}, r"s_churn must be a finite number >= 0"),
        ("euler", {"s_churn": "1"}, r"s_churn must be a real number"),
    ],
)
def test_bad_sampler_settings(name, params, match):
    with pytest.raises(ValueError, match=match):
        sd.samplers.from_name(name, **params)


def test_settings_round_trip_through_records():
    """to_dict/from_dict keep every setting (s_tmax = inf is written as "inf")."""
    for name, params in [
        ("heun", {"s_churn": 2.0, "s_tmin": 0.05, "s_noise": 1.007}),
        ("dpmpp_2m_sde", {"eta": 0.5, "solver_type": "heun"}),
        ("lms", {"order": 2}),
        ("ddpm", {}),
    ]:
        s = sd.samplers.from_name(name, **params)
        assert sd.samplers.from_dict(s.to_dict()) == s
