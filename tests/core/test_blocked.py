"""The blocked engine: the same numbers as the unblocked one, without S×d temporaries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.core.engine import _moments, block_size, default_block
from tests.core._paths import assert_same_w2

# Möbius path, its noise path, the adjoint path (history and noise), the rational path
# (two gains); the eigenvalue-independent step data is computed once outside the blocks.
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

    for block in (16, 200):
        assert_same_w2(loss, sch.log_snr, 10**6, block, var_atol=1e-14, grad_rtol=1e-10)
    h0 = sd.transfer_function(spec, sch, sampler)
    assert h0.shape == (203,) and np.isfinite(np.asarray(h0)).all()


def test_block_size_bounds():
    assert block_size(10) == 16384 and block_size(10, cap=2**17) == 65536
    assert block_size(1000) == 1024 and block_size(10**4) == 256
    assert all(256 <= block_size(s) <= 16384 for s in (1, 7, 100, 10**5))
    for name in ("heun", "dpmpp_2m_sde", "lms"):  # one block while small, then powers of 2
        sampler = sd.samplers.from_name(name)
        assert default_block(10, sampler, 3072) == 3072
        blocks = [default_block(s, sampler, 10**7) for s in (1, 7, 100, 10**5)]
        assert all(256 <= b <= 16384 and b & (b - 1) == 0 for b in blocks)


def test_blocks_on_accelerators_fit_device_memory(monkeypatch):
    """On a GPU or TPU the rule sizes blocks for device memory: d = 3072, S = 1000 is one
    block for every path (on CPU the adjoint path of DPM++ 2M SDE takes 3), larger
    problems blocks of at most 2²⁶ kept numbers a block."""
    from specdiff.core import engine

    cpu = default_block(1000, sd.samplers.from_name("dpmpp_2m_sde"), 3072)
    monkeypatch.setattr(engine, "_on_accelerator", lambda: True)
    assert cpu < 3072
    for name in ("ddim", "heun", "ddpm", "dpmpp_2m_sde", "dpmpp_3m_sde"):
        sampler = sd.samplers.from_name(name)
        kept = 1 if name in ("ddim", "heun") else sampler.state_size + sampler.noise_dim
        assert default_block(1000, sampler, 3072) == 3072, name
        b = default_block(1000, sampler, 786432)
        assert 256 <= b < 786432 and b & (b - 1) == 0 and b * 1000 * kept <= 2**26, name


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmpp_2m", "heun"])
def test_temporaries_do_not_grow_with_d(name):
    """XLA's temporaries of value+grad do not grow with d: no S×d array is ever live.

    Between the smallest d the engine blocks (4 blocks or more) and 4× that d an S×d
    temporary would add S = 64 float32 per added eigenvalue; they add fewer than 16.
    """
    steps = 64
    sampler = sd.samplers.from_name(name)
    block = default_block(steps, sampler)  # the engine's own block for this sampler
    d = 4 * block
    while default_block(steps, sampler, d) >= d:  # small d run as one block
        d *= 2
    rho = jnp.asarray(sd.schedules.edm(steps, process="ve").log_snr, jnp.float32)

    def temp_bytes(d):
        spec = _spectrum(d, np.float32)

        def loss(r):
            mom = _moments(spec, sd.Schedule.from_log_snr(r, "ve"), sampler, False)
            return sd.divergence(spec, mom, "w2")

        compiled = jax.jit(jax.value_and_grad(loss)).lower(rho).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(d), temp_bytes(4 * d)
    # 3d more eigenvalues: an S×d temporary adds S = 64 float32 each; the (d,) vectors of
    # any implementation (outputs, cotangents) a few.
    assert large - small < 3 * d * 16 * 4, (small, large, d)
