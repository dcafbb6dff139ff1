"""Gradients of W2 with respect to the log-SNR levels through every sampler's affine maps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from tests.samplers.cases import (
    DEFAULTS,
    PROCESSES,
    case_id,
    karras,
    one_process,
    random_problem,
    sampler_of,
)

LAM, _, _, _ = random_problem(seed=1)
MEAN = np.array([0.7, -0.3, 1.1, 0.0, -2.0])


@functools.partial(jax.jit, static_argnames=("sampler", "process"))
def w2_and_grad(log_snr, lam, mean, sampler, process):
    """(W2, ∂W2/∂ρ) of a sampler on the schedule with log-SNR levels ρ."""

    def w2(rho):
        spec = sd.Spectrum(lam, mean)
        mom = sd.output_moments(spec, sd.Schedule.from_log_snr(rho, process), sampler)
        return sd.divergence(spec, mom, "w2")

    return jax.value_and_grad(w2)(log_snr)


FD_CASES = [
    ("heun", {}),
    ("dpmpp_2m", {}),
    ("dpmpp_2m_sde", {}),
    ("dpmpp_2m_sde", {"eta": 0.5, "solver_type": "heun"}),
    ("dpmpp_3m_sde", {}),
    ("lms", {}),
]


@pytest.mark.parametrize(
    ("case", "process"),
    [(c, PROCESSES[i % 3]) for i, c in enumerate(FD_CASES)],
    ids=[f"{case_id(c)}-{PROCESSES[i % 3]}" for i, c in enumerate(FD_CASES)],
)
def test_gradient_equals_central_differences_float64(case, process):
    """∂W2/∂ρ_k against (W2(ρ + h e_k) − W2(ρ − h e_k))/2h, h = 1e-5: truncation ~h² and
    round-off ~1e-16/h, both far below the 1e-6 tolerance."""
    sampler = sampler_of(case)
    rho = jnp.asarray(karras(6, process, smin=0.01, smax=30.0).log_snr)
    lam, mean = jnp.asarray(LAM), jnp.asarray(MEAN)
    value, grad = w2_and_grad(rho, lam, mean, sampler, process)
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    h = 1e-5
    fd = []
    for k in range(rho.shape[0]):
        e = jnp.zeros_like(rho).at[k].set(h)
        up = w2_and_grad(rho + e, lam, mean, sampler, process)[0]
        down = w2_and_grad(rho - e, lam, mean, sampler, process)[0]
        fd.append((float(up) - float(down)) / (2 * h))
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9 * float(np.max(np.abs(grad))))


@pytest.mark.parametrize("steps", [10, 100])
@pytest.mark.parametrize("case", DEFAULTS, ids=[f"{case_id(c)}-{one_process(c)}" for c in DEFAULTS])
def test_gradient_finite_float32(case, steps):
    """float32 end to end (σ from 80 down to 0.002: α down to 1.25e-2 at the start)."""
    process = one_process(case)
    rho = jnp.asarray(karras(steps, process).log_snr, jnp.float32)
    lam, mean = jnp.asarray(LAM, jnp.float32), jnp.asarray(MEAN, jnp.float32)
    value, grad = w2_and_grad(rho, lam, mean, sampler_of(case), process)
    assert grad.dtype == jnp.float32
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad)), (value, grad)


@pytest.mark.parametrize("case", [pytest.param(c, id=case_id(c)) for c in DEFAULTS])
def test_float32_is_preserved(case):
    """float32 in, float32 out, with x64 enabled (the same compiled call as above)."""
    process = one_process(case)
    rho = jnp.asarray(karras(10, process).log_snr, jnp.float32)
    lam, mean = jnp.asarray(LAM, jnp.float32), jnp.asarray(MEAN, jnp.float32)
    value, grad = w2_and_grad(rho, lam, mean, sampler_of(case), process)
    assert value.dtype == grad.dtype == jnp.float32
