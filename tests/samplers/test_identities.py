"""Identities between samplers and closed forms (SPEC §11), exact to float64 round-off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.core.steps import step_loop
from tests.samplers.cases import (
    CASES,
    CHURN,
    PROCESSES,
    STEPS,
    alpha0,
    case_id,
    case_process_params,
    karras,
    random_problem,
    sampler_of,
    start_var,
)

LAM, _, _, _ = random_problem(seed=1)
MEAN = np.array([0.7, -0.3, 1.1, 0.0, -2.0])
SPEC = sd.Spectrum(LAM, MEAN)


def assert_same_moments(a, b, rtol=1e-12):
    np.testing.assert_allclose(a.var, b.var, rtol=rtol)
    np.testing.assert_allclose(a.mean, b.mean, rtol=rtol, atol=rtol * np.max(np.abs(MEAN)))


def run_steps(sampler, denoise, x0, sigmas, z=None):
    """The sampler's step through ``step_loop`` from x0 (σ coordinates); z: (S, q, …) noise."""

    def body(carry, i, *, order, last):
        x, hist = carry
        zi = tuple(z[i]) if z is not None else ()
        return sampler.step(denoise, x, hist, zi, sigmas, i, order=order, last=last)

    hist = tuple(jnp.zeros_like(x0) for _ in range(sampler.history))
    return step_loop(len(sigmas) - 1, sampler.history, body, (x0, hist))[0]


def nonlinear_denoiser(x, sigma):
    """Any function of (x, σ) works for the step-level identities below."""
    return jnp.tanh(x) * (1.0 + 0.3 * jnp.cos(sigma)) + 0.1 * sigma * x


# ----------------------------------------------------------------------------------------
# Samplers that are the same map
# ----------------------------------------------------------------------------------------

SAME_STEPS = [
    (("euler", {}), ("ddim", {})),  # Euler ≡ DDIM (SPEC §11)
    (("euler_ancestral", {"eta": 0.5}), ("ddim", {"eta": 0.5})),  # ancestral(η) ≡ DDIM(η)
    (("euler_ancestral", {}), ("ddpm", {})),
    (("euler_ancestral", {"eta": 0.0}), ("euler", {})),
    (("dpm_2_ancestral", {"eta": 0.0}), ("dpm_2", {})),
    (("lms", {"order": 1}), ("euler", {})),
    (("dpmpp_2m_sde", {"eta": 0.0}), ("dpmpp_2m", {})),  # midpoint 2M SDE at η = 0 is 2M
]


@pytest.mark.parametrize(
    ("a", "b"), SAME_STEPS, ids=[f"{case_id(a)}={case_id(b)}" for a, b in SAME_STEPS]
)
def test_same_steps_pointwise(a, b):
    """Equal outputs for the same start and noise, with a non-linear denoiser."""
    sa, sb = sampler_of(a), sampler_of(b)
    assert sa.noise_dim == sb.noise_dim
    rng = np.random.default_rng(3)
    sigmas = jnp.asarray(np.concatenate([np.geomspace(30.0, 0.05, 7), [0.0]]))
    x0 = jnp.asarray(30.0 * rng.normal(size=(4, 3)))
    z = jnp.asarray(rng.normal(size=(7, sa.noise_dim, 4, 3)))
    xa = run_steps(sa, nonlinear_denoiser, x0, sigmas, z)
    xb = run_steps(sb, nonlinear_denoiser, x0, sigmas, z)
    np.testing.assert_allclose(xa, xb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize(
    ("a", "b"), SAME_STEPS[:3], ids=[f"{case_id(a)}={case_id(b)}" for a, b in SAME_STEPS[:3]]
)
def test_generic_path_equals_ddim_closed_form(a, b, process):
    """Euler (generic affine path) ≡ DDIM (closed-form Möbius path) on every process, the
    flow schedule included; likewise Euler ancestral(η, s_noise = 1) ≡ DDIM(η)."""
    sch = karras(STEPS, process)
    assert_same_moments(
        sd.output_moments(SPEC, sch, sampler_of(a)), sd.output_moments(SPEC, sch, sampler_of(b))
    )


def test_euler_in_flow_coordinates_is_ddim():
    """Euler on the velocity in flow coordinates (x_t = (1 − t)x0 + tε, v = (x_t − x̂0)/t,
    x' = x_t + (t' − t)v), written here per eigenvalue, equals the engine's Euler and DDIM on
    the flow schedule. Start N(0, 1) in flow coordinates."""
    sch = karras(STEPS, "flow")
    t = np.concatenate([np.asarray(sch.levels, np.float64), [0.0]])
    lam, m = LAM, MEAN
    mean, var = np.zeros_like(lam), np.ones_like(lam)  # x_t = a·x_start + b, affine
    for k in range(STEPS):
        sigma = t[k] / (1 - t[k])
        g = lam / (lam + sigma**2)  # x̂0 = m + g·(x_t/(1 − t) − m)
        a0, b0 = g / (1 - t[k]), m - g * m  # x̂0 = a0·x_t + b0
        step = t[k + 1] - t[k]
        mean = mean + step * (mean - (a0 * mean + b0)) / t[k]
        var = var * (1 + step * (1 - a0) / t[k]) ** 2
    for name in ("euler", "ddim"):
        mom = sd.output_moments(SPEC, sch, sd.samplers.from_name(name))
        np.testing.assert_allclose(mom.var, var, rtol=1e-12)
        np.testing.assert_allclose(mom.mean, mean, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------
# One step returns D(x; σ_0)
# ----------------------------------------------------------------------------------------

NO_CHURN = [c for c in CASES if "s_churn" not in c[1]]


@pytest.mark.parametrize(("case", "process"), case_process_params(NO_CHURN))
def test_single_step_is_one_denoise(case, process):
    """S = 1: x ~ N(0, v0) in σ coordinates, output D(x; σ_0) = m + γ(x − m), γ = λ/(λ + σ_0²):
    mean (1 − γ)·m, variance γ²·v0."""
    sch = karras(1, process, smax=3.0)
    gamma = LAM / (LAM + 3.0**2)
    mom = sd.output_moments(SPEC, sch, sampler_of(case))
    np.testing.assert_allclose(mom.var, gamma**2 * start_var(sch), rtol=1e-12)
    np.testing.assert_allclose(mom.mean, (1 - gamma) * MEAN, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2"])
def test_single_churned_step(name):
    """S = 1 with churn at σ_0 = 2 ∈ [s_tmin, s_tmax]: σ̂ = σ_0(1 + γc), γc = min(s_churn, √2 − 1),
    x̂ = x + √(σ̂² − σ_0²)·s_noise·z, output D(x̂; σ̂) (the last step is Euler to 0)."""
    sch = sd.Schedule([2.0], "ve")
    s_hat = 2.0 * (1 + min(CHURN["s_churn"], 2**0.5 - 1))
    gamma = LAM / (LAM + s_hat**2)
    var_in = 2.0**2 + (s_hat**2 - 2.0**2) * CHURN["s_noise"] ** 2
    mom = sd.output_moments(SPEC, sch, sd.samplers.from_name(name, **CHURN))
    np.testing.assert_allclose(mom.var, gamma**2 * var_in, rtol=1e-12)
    np.testing.assert_allclose(mom.mean, (1 - gamma) * MEAN, rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------------------
# Transfer function = coefficient of the start noise
# ----------------------------------------------------------------------------------------

TRANSFER = [
    ("ddim", {}),
    ("euler", {}),
    ("heun", {}),
    ("dpm_2", {}),
    ("dpmpp_2m", {}),
    ("lms", {}),
    ("heun", CHURN),  # stochastic: the coefficient of the start does not depend on the noise
    ("euler_ancestral", {}),
    ("dpmpp_2m_sde", {"solver_type": "heun"}),
]
# H is reported in the process's own coordinates (SPEC §4, H_VP = H_VE/√ᾱ_0) by both the
# closed-form path (DDIM/DDPM) and the composed affine maps (every other sampler).


def transfer_params():
    params = [pytest.param(c, "ve", id=f"{case_id(c)}-ve") for c in TRANSFER]
    for process in ("vp", "flow"):
        params.append(pytest.param(("ddim", {}), process, id=f"ddim-{process}"))
        for c in (("euler", {}), ("dpmpp_2m", {})):
            params.append(pytest.param(c, process, id=f"{case_id(c)}-{process}"))
    return params


@pytest.mark.parametrize(("case", "process"), transfer_params())
def test_transfer_function_is_the_coefficient_of_the_start(case, process):
    """H = ∂x_S/∂x_start with the start in the process's coordinates (x_σ = x_start/α_0),
    by a central difference of the step run (affine in the start, so the difference is
    exact to round-off), and output mean = m + H·E[y_0] with E[y_0] = −α_0·m (SPEC §4)."""
    sampler = sampler_of(case)
    sch = karras(STEPS, process)
    sigmas = jnp.asarray(np.concatenate([np.asarray(sch.sigma, np.float64), [0.0]]))
    lam, m = jnp.asarray(LAM), jnp.asarray(MEAN)

    def denoise(x, sigma):
        return m + lam / (lam + sigma**2) * (x - m)

    z = jax.random.normal(jax.random.key(5), (STEPS, sampler.noise_dim, len(LAM)), jnp.float64)
    a0, h = alpha0(sch), 0.25
    x0 = jnp.asarray(np.linspace(-1.0, 1.0, len(LAM)))  # start in process coordinates
    plus, minus = run_steps(sampler, denoise, jnp.stack([x0 + h, x0 - h]) / a0, sigmas, z)
    fd = (plus - minus) / (2 * h)
    H = sd.transfer_function(LAM, sch, sampler)
    np.testing.assert_allclose(H, fd, rtol=1e-10)
    mom = sd.output_moments(SPEC, sch, sampler)
    np.testing.assert_allclose(mom.mean, MEAN - H * a0 * MEAN, rtol=1e-10, atol=1e-14)
