"""The blocked engine: the same numbers as the unblocked one, without S×d temporaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.core.engine import _moments, block_size, default_block

# Möbius path, its noise path, the general path (one gain a step; two gains, the
# eigenvalue-independent step data computed once outside the blocks).
SAMPLERS = ["ddim", "ddpm", "dpmpp_2m_sde", "heun"]


def _spectrum(d, dtype=np.float64):
    rng = np.random.default_rng(1)
    lam = np.logspace(-4, 2, d).astype(dtype)
    lam[3] = 0.0  # a zero eigenvalue in a padded block
    return sd.Spectrum(lam, rng.normal(size=d).astype(dtype))


@pytest.mark.parametrize("name", SAMPLERS)
def test_blocked_equals_unblocked(name):
    spec = _spectrum(203)  # 203 = not a multiple of any block below
    sampler = sd.samplers.from_name(name)
    sch = sd.schedules.edm(6, process="vp")

    def loss(rho, block):
        mom = _moments(spec, sd.Schedule.from_log_snr(rho, "vp"), sampler, False, block)
        return sd.divergence(spec, mom, "w2"), mom

    (v0, m0), g0 = jax.value_and_grad(loss, has_aux=True)(sch.log_snr, 10**6)
    for block in (16, 200):
        (v, m), g = jax.value_and_grad(loss, has_aux=True)(sch.log_snr, block)
        np.testing.assert_allclose(m.mean, m0.mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(m.var, m0.var, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(v, v0, rtol=1e-12)
        np.testing.assert_allclose(g, g0, rtol=1e-10, atol=1e-12 * float(jnp.abs(g0).max()))
    h0 = sd.transfer_function(spec, sch, sampler)
    assert h0.shape == (203,) and np.isfinite(np.asarray(h0)).all()


def test_block_size_bounds():
    assert block_size(10) == 16384 and block_size(10, cap=2**17) == 65536
    assert block_size(1000) == 1024
    assert block_size(1000, 3) == 256
    assert all(256 <= block_size(s, n) <= 16384 for s in (1, 7, 100, 10**5) for n in (1, 2, 4))
    assert block_size(1000, 1, general=True) == 64
    assert block_size(100, 2, general=True) == 128
    sizes = [block_size(s, n, True) for s in (1, 7, 100, 10**5) for n in (1, 2, 4)]
    assert all(64 <= b <= 16384 for b in sizes)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmpp_2m", "heun"])
def test_temporaries_do_not_grow_with_d(name):
    """XLA's temporaries of value+grad do not grow with d: no S×d array is ever live.

    At 4 and 16 blocks of eigenvalues an S×d temporary would make them 4× larger.
    """
    steps = 64
    sampler = sd.samplers.from_name(name)
    block = default_block(steps, sampler)  # the engine's own block for this sampler
    rho = jnp.asarray(sd.schedules.edm(steps, process="ve").log_snr, jnp.float32)

    def temp_bytes(d):
        spec = _spectrum(d, np.float32)

        def loss(r):
            mom = _moments(spec, sd.Schedule.from_log_snr(r, "ve"), sampler, False)
            return sd.divergence(spec, mom, "w2")

        compiled = jax.jit(jax.value_and_grad(loss)).lower(rho).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(4 * block), temp_bytes(16 * block)
    assert large < 1.5 * small + 16 * block * 4 * 8, (small, large)
