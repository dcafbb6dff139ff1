"""The telescoped path (``core.telescoped``: DDPM's step): which samplers declare it and
whether their own steps have its form, its moments and gradients against the adjoint
path, its written-out reverse pass against autodiff and finite differences, and H's
independence of the levels between σ_0 and 0. The outputs are also checked against full
covariances (test_engine) and Monte Carlo (the samplers suite), which now run this path
for DDPM and ancestral Euler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.core import adjoint, engine, telescoped
from specdiff.core.engine import sigmas_with_zero
from tests.core._paths import assert_same_w2
from tests.samplers.cases import CASES, case_id, karras, sampler_of

EXTRA = [("euler_ancestral", {"s_noise": 1.3}), ("euler_ancestral", {"eta": 0.999})]


@pytest.mark.parametrize("case", CASES + EXTRA, ids=case_id)
def test_declaration_matches_the_step(case):
    """A sampler declares ``telescopes`` exactly when its own step (``step_corners``) has
    DDPM's form: one state, one call and one noise a step, a γ-independent noise column,
    gain 1 at γ = 1 (F(γ=1) = 1), the gain's numerator root F(γ=0)·σ_k² equal to σ_{k+1}²,
    and a last step to x̂0 (F(γ=0) = 0, no noise). Samplers with one state and one noise
    that do not declare it (DDIM at 0 < η < 1, ancestral Euler at η ≠ 1) must fail the
    form."""
    sampler = sampler_of(case)
    candidate = sampler.history == 0 and sampler.noise_dim == 1
    if not candidate:
        assert not telescoped.applies(sampler)
        return
    sig = sigmas_with_zero(karras(7, "ve"))
    f, s = adjoint.step_corners(sampler, sig)
    has_form = s.shape[1] == 1 and f.shape[1] == 2
    if has_form:
        s2 = s[:, 0] ** 2
        root = f[:-1, 0, 0, 0] * s2[:-1]
        has_form = (
            np.allclose(f[:, 0, 0, 1], f[:, 1, 0, 1], rtol=1e-13)
            and np.allclose(f[:, 1, 0, 0], 1.0, rtol=1e-13)
            and np.allclose(root, s2[1:], rtol=1e-12)
            and abs(float(f[-1, 0, 0, 0])) < 1e-15
            and abs(float(f[-1, 0, 0, 1])) < 1e-15
        )
    assert telescoped.applies(sampler) == has_form, case
    if case[0] in ("ddpm", "euler_ancestral") and case[1].get("eta", 1.0) == 1.0:
        assert has_form  # the two samplers the path is for


@pytest.mark.parametrize("process", ["vp", "ve", "flow"])
@pytest.mark.parametrize("case", [("ddpm", {}), ("euler_ancestral", {"s_noise": 1.3})], ids=case_id)
def test_moments_and_gradients_equal_the_adjoint_path(case, process):
    """Float64, λ = 0 and λ over 12 decades, blocks that do not divide d: mean, variance,
    W2 and its gradient against the adjoint path (``engine._adjoint_moments``)."""
    sampler = sampler_of(case)
    assert engine._telescoped(sampler)
    rng = np.random.default_rng(3)
    lam = np.logspace(-6, 6, 203)
    lam[3] = 0.0
    spec = sd.Spectrum(lam, rng.normal(size=203))
    rho = karras(9, process).log_snr

    def loss(r, adjoint_path):
        sch = sd.Schedule.from_log_snr(r, process)
        if adjoint_path:
            _, mean, var = engine._adjoint_moments(spec.eigenvalues, spec.mean, sch, sampler, False)
            mom = engine.Moments(mean, var)
        else:
            mom = engine._moments(spec, sch, sampler, False, 50)
        return sd.divergence(spec, mom, "w2"), mom

    assert_same_w2(loss, rho, True, False)


def test_transfer_function_depends_on_sigma_0_alone():
    """H = λ/(λ + σ_0²) in σ coordinates whatever the levels after σ_0 and their number:
    two schedules that share σ_0 give the same H, and it is that ratio."""
    lam = jnp.asarray([0.0, 1e-3, 0.5, 2.0, 1e3])
    a = karras(9, "ve")
    sig = np.asarray(a.sigma)
    b = sd.Schedule.from_log_snr(sd.schedules.cosine(4, process="ve").log_snr, "ve")
    b = sd.Schedule(np.concatenate([[sig[0]], np.asarray(b.sigma)[1:] * 0.3]), "ve")
    for sampler in (sd.samplers.DDPM(), sd.samplers.from_name("euler_ancestral")):
        ha = sd.transfer_function(lam, a, sampler)
        hb = sd.transfer_function(lam, b, sampler)
        np.testing.assert_allclose(ha, lam / (lam + sig[0] ** 2), rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(hb, ha, rtol=1e-13, atol=1e-300)
    # A sampler without the form (DDIM at η = 0.5) does depend on the later levels.
    ddim = sd.samplers.DDIM(0.5)
    assert not np.allclose(sd.transfer_function(lam, a, ddim), sd.transfer_function(lam, b, ddim))


# d = 8: per-eigenvalue problems (d ≤ 16, fused sums); 40: matrix products.
@pytest.mark.parametrize("d", [8, 40])
def test_reverse_pass_matches_autodiff_and_finite_differences(d):
    """``noise_sum``'s written-out reverse pass equals autodiff of the plain sum, λ = 0 and
    λ, c over 16 decades, and finite differences."""
    from jax.test_util import check_grads

    rng = np.random.default_rng(5)
    lam = jnp.asarray(np.concatenate([[0.0, 1e-8, 1e8], rng.lognormal(0, 2, d - 3)]))
    w = jnp.asarray(rng.lognormal(0, 2, 13))
    c = jnp.asarray(np.exp(rng.uniform(np.log(1e-8), np.log(1e8), 13)))

    def plain(lam, w, c):
        return jnp.sum(w[:, None] * (lam / (lam + c[:, None])) ** 2, axis=0)

    np.testing.assert_allclose(telescoped.noise_sum(lam, w, c), plain(lam, w, c), rtol=1e-13)
    ct = jnp.asarray(rng.normal(size=d))
    args = (lam, w, c)
    g_custom = jax.grad(lambda *a: jnp.dot(ct, telescoped.noise_sum(*a)), argnums=(0, 1, 2))(*args)
    g_plain = jax.grad(lambda *a: jnp.dot(ct, plain(*a)), argnums=(0, 1, 2))(*args)
    for gc, gp in zip(g_custom, g_plain):
        np.testing.assert_allclose(gc, gp, rtol=1e-11, atol=1e-14 * float(jnp.abs(gp).max()))
    check_grads(lambda *a: telescoped.noise_sum(lam + 0.1, *a), (w, c), order=1, modes=["rev"])
