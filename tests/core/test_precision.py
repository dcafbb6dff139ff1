"""Every matrix product in the engine's value+grad asks for full float32 precision.

XLA's default precision for float32 matrix products is TF32 on NVIDIA GPUs and bfloat16
passes on TPUs. On an H200 it put the W2 gradients of DDIM and Heun 34–73 % off float64
(BUILD_NOTES, "Matrix-product precision"). A CPU computes float32 products in full either
way, so this test checks what the traced program asks for, not the numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd

_FULL = jax.lax.Precision.HIGHEST


def _dot_precisions(jaxpr):
    """The precision of every dot_general in ``jaxpr`` and the jaxprs inside it."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _dot_precisions(inner)
    return found


def _assert_full(found):
    assert found, "no matrix product traced: the check would pass vacuously"
    for precision in found:
        assert precision is not None and all(p == _FULL for p in precision), precision


@pytest.mark.parametrize(
    "name, trajectory",
    [("ddim", False), ("heun", False), ("dpmpp_2m_sde", False), ("lms", False), ("ddpm", True)],
)
def test_every_matrix_product_of_value_and_grad_is_full_precision(name, trajectory):
    sampler = sd.samplers.from_name(name)
    spec = sd.Spectrum(jnp.asarray(np.logspace(-2, 2, 40), jnp.float32))
    rho = jnp.asarray(sd.schedules.edm(6, process="ve").log_snr, jnp.float32)

    def w2(r):
        sch = sd.Schedule.from_log_snr(r, "ve")
        mom = sd.output_moments(spec, sch, sampler, trajectory=trajectory)
        return sd.divergence(spec, mom, "w2")

    _assert_full(_dot_precisions(jax.make_jaxpr(jax.value_and_grad(w2))(rho).jaxpr))


def test_the_corner_interpolation_reverse_pass_is_full_precision():
    """``compose._interpolate`` (the middle steps' maps of a trajectory) has its own
    written-out reverse pass."""
    from specdiff.core.compose import _interpolate

    f = jnp.ones((3, 2, 2, 3), jnp.float32)
    s = jnp.ones((3, 1), jnp.float32)
    lam = jnp.linspace(0.1, 2.0, 40, dtype=jnp.float32)
    grad = jax.grad(lambda f, s: jnp.sum(_interpolate(f, s, lam) ** 2), argnums=(0, 1))
    _assert_full(_dot_precisions(jax.make_jaxpr(grad)(f, s).jaxpr))


def test_the_linear_model_and_the_gaussian_denoiser_are_full_precision():
    """``specdiff.linear`` (moments, Monte Carlo, power iteration) and the Gaussian
    denoiser multiply d × d matrices with ``@`` under ``checks.full_precision``."""
    from specdiff import linear
    from specdiff.nn.denoisers import GaussianDenoiser

    x = jax.random.normal(jax.random.key(0), (50, 6), jnp.float32)
    model = linear.fit(x)
    schedule = sd.schedules.cosine(4)
    stacked = jax.tree.map(lambda a: jnp.stack([a] * schedule.num_steps), model)
    for traced in (
        lambda: linear.reverse_moments(model, schedule, sd.samplers.DDPM()),
        lambda: linear.reverse_moments(stacked, schedule, sd.samplers.DDIM()),
        lambda: linear.reverse_sample(model, schedule, sd.samplers.DDPM(), jax.random.key(1), 3),
        lambda: linear.power_iteration(jnp.eye(6, dtype=jnp.float32), x[:2], 3),
    ):
        _assert_full(_dot_precisions(jax.make_jaxpr(traced)().jaxpr))
    den = GaussianDenoiser(np.zeros(6), np.eye(6))
    _assert_full(_dot_precisions(jax.make_jaxpr(lambda y: den(y, 0.0))(x[:2]).jaxpr))
