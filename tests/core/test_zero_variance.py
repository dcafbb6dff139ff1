"""An output variance that is 0 in exact arithmetic never comes out negative (no NaN)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_lms_on_vanishing_eigenvalues_is_finite(dtype):
    """LMS on eigenvalues down to 1e-30 once gave a variance of −1.4e-23 and a NaN W2."""
    spec = sd.spectra.synthetic_ata()
    lam = jnp.asarray(spec.eigenvalues, dtype)
    sp = sd.Spectrum(lam)
    rho = jnp.asarray(sd.schedules.edm(10, process="vp").log_snr, dtype)
    sampler = sd.samplers.from_name("lms")

    def w2(r):
        return sd.divergence(sp, sd.output_moments(sp, sd.Schedule.from_log_snr(r, "vp"), sampler))

    mom = sd.output_moments(sp, sd.Schedule.from_log_snr(rho, "vp"), sampler, trajectory=True)
    assert float(jnp.min(mom.var)) > 0 and float(jnp.min(mom.trajectory_var)) > 0
    assert np.isfinite(float(w2(rho))) and np.isfinite(np.asarray(jax.grad(w2)(rho))).all()
