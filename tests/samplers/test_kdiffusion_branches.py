"""Branches of k-diffusion's samplers that Gaussian moments alone do not pin down.

The steps were compared with k-diffusion's own ``sample_*`` functions (exact Gaussian
denoiser, fixed noise, float64) to ≤ 2e-15 relative, except the case tested here.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd


def step_once(sampler, x, z, sigmas, i):
    def denoise(x, sigma):
        return 0.5 * x / (1.0 + sigma)

    return sampler.step(denoise, x, (), (z,), sigmas, i, order=0, last=i == len(sigmas) - 2)[0]


SIGMAS = jnp.asarray([1.0, 0.5, 0.1, 0.0])  # η = 1.5: σ_up = σ' (σ_down = 0) at step 0


def test_sigma_down_zero_case_is_reached():
    from specdiff.samplers.ancestral import ancestral_step

    down, up = ancestral_step(SIGMAS[0], SIGMAS[1], 1.5)
    assert float(down) == 0.0 and float(up) == float(SIGMAS[1])


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2s_ancestral"])
def test_sigma_down_zero_adds_noise(name):
    """``sample_euler_ancestral``/``sample_dpmpp_2s_ancestral`` add s_noise·σ_up·z whenever
    σ' > 0, also after the Euler step that σ_down = 0 forces."""
    s = sd.samplers.from_name(name, eta=1.5, s_noise=0.9)
    x = jnp.asarray([0.3, -1.2])
    a = step_once(s, x, jnp.zeros(2), SIGMAS, 0)
    b = step_once(s, x, jnp.ones(2), SIGMAS, 0)
    np.testing.assert_allclose(b - a, 0.9 * 0.5, rtol=1e-12)
    np.testing.assert_allclose(a, 0.5 * x / 2.0, rtol=1e-12)  # Euler to 0 = D(x; σ)


def test_dpm_2_ancestral_sigma_down_zero_adds_no_noise():
    """``sample_dpm_2_ancestral`` adds the noise inside its DPM-Solver-2 branch only: when
    σ_down = 0 it takes the Euler step x + d·(0 − σ) = D(x; σ) and adds nothing."""
    s = sd.samplers.from_name("dpm_2_ancestral", eta=1.5)
    x = jnp.asarray([0.3, -1.2])
    out = step_once(s, x, jnp.ones(2), SIGMAS, 0)
    np.testing.assert_allclose(out, 0.5 * x / 2.0, rtol=1e-12)
