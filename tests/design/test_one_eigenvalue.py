"""The fused one-eigenvalue DDIM objective of the per-eigenvalue pool against the engine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.design import one_eigenvalue as F
from specdiff.design import problem as P

STEPS = 9


def _cfg(process, metric, mode, sampler=None):
    floor = None if metric == "w2" else 1e-3
    sampler = sampler or sd.samplers.DDIM()
    return P._Config(STEPS, process, sampler, metric, mode, "lbfgs_parallel", 0.0, floor,
                     1e-10, 5)  # fmt: skip


@pytest.mark.parametrize("process", ["vp", "ve", "flow"])
@pytest.mark.parametrize("metric", ["w2", "kl", "reverse_kl"])
@pytest.mark.parametrize("mode,ends", [("free", (0.0, 0.0)), ("first", (-5.0, 0.0)),
                                       ("both", (-6.0, 9.0))])  # fmt: skip
def test_fused_objective_equals_the_engine(process, metric, mode, ends):
    """Value and gradient in θ equal ``problem._loss`` (the engine's Möbius path) to
    round-off in float64, for λ from 0 to large, at random parameters."""
    cfg = _cfg(process, metric, mode)
    ends = jnp.asarray(ends)
    rng = np.random.default_rng(0)
    lams = (0.0, 1e-3, 0.7, 30.0) if metric == "w2" else (1e-3, 0.7, 30.0)
    for lam in lams:
        theta = jnp.asarray(rng.normal(size=P._n_params(STEPS, mode)))
        lam, m, scale = jnp.asarray(lam), jnp.asarray(0.3), jnp.asarray(2.0)
        engine = F.objective(lam, m, scale, ends, cfg, fused=False)
        fused = F.objective(lam, m, scale, ends, cfg, fused=True)
        v1, g1 = jax.value_and_grad(engine)(theta)
        v2, g2 = jax.value_and_grad(fused)(theta)
        assert np.isfinite(float(v2)) and np.all(np.isfinite(np.asarray(g2)))
        np.testing.assert_allclose(float(v2), float(v1), rtol=1e-11, atol=1e-300)
        np.testing.assert_allclose(g2, g1, rtol=1e-9, atol=1e-12 * float(jnp.abs(g1).max()))


def test_log_snr_equals_the_parameterisation():
    theta = jnp.asarray(np.random.default_rng(1).normal(size=STEPS) * 3)
    ends = jnp.zeros(2)
    np.testing.assert_allclose(
        F.log_snr(theta, ends, STEPS, "free"),
        P.theta_to_log_snr(theta, ends, STEPS, "free"),
        rtol=1e-14,
        atol=1e-13,
    )


def test_applies_only_where_it_is_exact_and_finite():
    ends = np.array([-5.0, 3.0])
    assert F.applies(_cfg("vp", "w2", "free"), ends)
    assert F.applies(_cfg("ve", "kl", "first"), ends)
    assert not F.applies(_cfg("vp", "w2", "last"), ends)  # ρ_0 unbounded below
    assert not F.applies(_cfg("vp", "w2", "first"), np.array([-100.0, 0.0]))
    assert not F.applies(_cfg("vp", "w2", "free", sd.samplers.DDPM()), ends)
    assert not F.applies(_cfg("vp", "w2", "free", sd.samplers.from_name("heun")), ends)
