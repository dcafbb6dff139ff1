"""A free first level stays above the log-SNR floor, so designs stay finite in float32."""

import jax.numpy as jnp
import numpy as np

import specdiff as sd
from specdiff.design.problem import RHO_FLOOR, log_snr_to_theta, theta_to_log_snr


def test_theta_rho_round_trip_with_the_floor():
    rho = jnp.asarray([-29.0, -10.0, 0.0, 3.0, 12.0])
    theta = log_snr_to_theta(rho, jnp.zeros(2), "free")
    np.testing.assert_allclose(theta_to_log_snr(theta, jnp.zeros(2), 5, "free"), rho, rtol=1e-12)
    low = theta_to_log_snr(jnp.asarray([-1e4, 0.0, 0.0]), jnp.zeros(2), 3, "free")
    assert float(low[0]) >= RHO_FLOOR


def test_vp_dpmpp_design_is_finite_in_float32():
    """DPM-Solver++ on a VP start pushes the first level towards ᾱ = 0 (the start mismatch
    vanishes there); the floor keeps σ_0 finite, so the schedule evaluates in float32."""
    spec = sd.spectra.synthetic_ata(12)
    sampler = sd.samplers.from_name("dpmpp_2m")
    res = sd.design_schedule(spec, 4, sampler, progress=False)
    rho = np.asarray(res.schedule.log_snr)
    assert rho[0] >= RHO_FLOOR - 1e-9
    sch32 = sd.Schedule.from_log_snr(jnp.asarray(rho, jnp.float32), "vp")
    spec32 = sd.Spectrum(np.asarray(spec.eigenvalues, np.float32))
    w2 = sd.divergence(spec32, sd.output_moments(spec32, sch32, sampler), "w2")
    assert np.isfinite(float(w2)) and np.isfinite(np.asarray(sch32.sigma)).all()
