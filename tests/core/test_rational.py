"""The closed-form path of one-state deterministic samplers (``core.rational``) against the
adjoint path's row recursion over the same steps (``core.adjoint``, itself checked against
the sequential loop in ``test_compose``), the gains
product's written-out VJP against autodiff of its plain definition, and the engine's
choice of path and block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.core import engine, rational
from tests.samplers.cases import karras

# One-state deterministic samplers: one denoiser call (Euler), two nested calls (Heun)
# and a sampler whose η = 0 makes it deterministic (DPM++ 2S ancestral, two calls at
# other levels). DPM-2 (two calls, one at a midpoint level) is in ``test_path_choice`` and
# in the samplers suite's references.
RATIONAL = {
    "euler": {},
    "heun": {},
    "dpmpp_2s_ancestral": {"eta": 0.0},
}


# The reference, compiled (the adjoint path's scans run op by op otherwise).
_adjoint = jax.jit(engine._adjoint_moments, static_argnums=(3, 4))


def _w2(lam, m, schedule, sampler, path):
    if path == "rational":  # the public (compiled) entry point: the engine picks the path
        mom = sd.output_moments(sd.Spectrum(lam, m), schedule, sampler)
        mean, var = mom.mean, mom.var
    else:  # the row recursion over the steps' affine maps (core.adjoint)
        _, mean, var = _adjoint(lam, m, schedule, sampler, False)
    return jnp.sqrt(jnp.sum((mean - m) ** 2 + (jnp.sqrt(var) - jnp.sqrt(lam)) ** 2))


@pytest.mark.parametrize("name", sorted(RATIONAL))
def test_rational_equals_composition(name):
    sampler = sd.samplers.from_name(name, **RATIONAL[name])
    assert engine._rational(sampler)
    lam = jnp.asarray(np.concatenate([[0.0], np.logspace(-3, 3, 40)]))
    m = jnp.linspace(-1.0, 1.0, 41)
    for steps, process in ((1, "ve"), (2, "vp"), (7, "flow"), (40, "ve")):
        sch = (
            karras(steps, process)
            if process == "ve"
            else sd.schedules.cosine(steps, process=process)
        )
        mom = sd.output_moments(sd.Spectrum(lam, m), sch, sampler)
        mean, var = mom.mean, mom.var
        _, mean_c, var_c = _adjoint(lam, m, sch, sampler, False)
        # The cosine grid starts at σ = 3·10⁴ (S = 2: one step to σ = 1): both ways lose
        # ~1e-9 of H on that first step (checked against exact rational arithmetic for
        # Heun: 0.9e-9 here, 2e-9 the step's own form).
        rtol = 1e-11 if process == "ve" else 1e-8
        np.testing.assert_allclose(mean, mean_c, rtol=rtol, atol=1e-12)
        # Standard deviations, to round-off of the start's: under jit the last step's gain
        # 1 − (1 − γ) (e.g. Euler to σ = 0) rounds differently (~1e-16 instead of 0).
        atol = 1e-13 * float(jnp.sqrt(engine.start_variance(sch)))
        np.testing.assert_allclose(jnp.sqrt(var), jnp.sqrt(var_c), rtol=rtol, atol=atol)
        h = sd.transfer_function(lam, sch, sampler)
        h_c = _adjoint(lam, m, sch, sampler, True)[0]  # σ coordinates
        h_c = h_c / jnp.exp(engine.log_alpha_sigma(sch.log_snr[0], process)[0])
        np.testing.assert_allclose(h, h_c, rtol=rtol, atol=1e-12)
        assert abs(float(h[0])) < 1e-15  # λ = 0: the last step's gain is 0
    # Gradients of W2 with respect to the log-SNR levels against the step-by-step path on
    # 7 flow levels (the reverse pass over several chunks: the VJP test below).
    rho = sd.schedules.cosine(7, process="flow").log_snr

    def w2(r, path):
        return _w2(lam, m, sd.Schedule.from_log_snr(r, "flow"), sampler, path)

    g = [jax.jit(jax.grad(w2), static_argnums=1)(rho, p) for p in ("rational", "composition")]
    assert np.all(np.isfinite(g[0]))
    np.testing.assert_allclose(g[0], g[1], rtol=1e-8, atol=1e-10 * np.abs(g[1]).max())


def _plain(lam, c, s2):
    """Σ_k log|N_k(λ)/∏_j (λ + s_kj²)|, element by element (autodiff's reference)."""
    powers = jnp.stack([lam**i for i in range(c.shape[1])])  # (E + 1, d)
    num = c @ powers
    den = jnp.prod(lam[None, None, :] + s2[:, :, None], axis=1)
    return jnp.sum(jnp.log(jnp.abs(num / den)), 0), jnp.prod(jnp.sign(num / den), 0)


@pytest.mark.parametrize("calls", [1, 2, 3])
@pytest.mark.parametrize("d", [5, 40])  # the per-step branch (d ≤ 16) and the chunked one
def test_gain_product_and_its_vjp_equal_the_plain_definition(calls, d):
    rng = np.random.default_rng(3 + calls)
    lam = jnp.asarray(np.concatenate([[0.0], rng.lognormal(0, 2, d - 1)]))
    steps = 45  # not a multiple of the chunk
    c = jnp.asarray(rng.uniform(0.5, 2.0, (steps, calls + 1)))
    c = c.at[3, 0].set(-0.7)  # a step whose gain changes sign in λ (negative at λ = 0)
    s2 = jnp.asarray(np.exp(rng.uniform(-9.0, 9.0, (steps, calls))))  # σ² over 8 decades
    got, want = rational.log_gain_product(lam, c, s2), _plain(lam, c, s2)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-11, atol=1e-11)
    np.testing.assert_array_equal(got[1], want[1])
    assert np.any(np.asarray(got[1]) < 0)  # the sign is carried, not lost in the log
    w = jnp.asarray(rng.normal(size=d))
    g_custom = jax.grad(lambda *a: jnp.dot(w, rational.log_gain_product(*a)[0]), (0, 1, 2))
    g_plain = jax.grad(lambda *a: jnp.dot(w, _plain(*a)[0]), (0, 1, 2))
    for gc, gp in zip(g_custom(lam + 0.1, c, s2), g_plain(lam + 0.1, c, s2)):
        np.testing.assert_allclose(gc, gp, rtol=1e-9, atol=1e-11)


def test_vjp_near_a_zero_of_a_gain():
    """An eigenvalue 1e-8 (relative) from a zero of N_k: the reverse pass takes every sum
    from 1/(N_k·P_k), so the ∂/∂s² sums are combinations whose terms cancel there. They
    stay as close to autodiff of the plain definition as the ∂/∂c sums (1/N_k itself is
    ~1e8 there), in float64."""
    rng = np.random.default_rng(0)
    c = jnp.asarray(rng.uniform(0.5, 2.0, (45, 3))).at[3, 0].set(-0.7)
    s2 = jnp.asarray(np.exp(rng.uniform(-9.0, 9.0, (45, 2))))
    root = max(r.real for r in np.roots(np.asarray(c[3])[::-1]) if abs(r.imag) < 1e-12)
    lam = jnp.asarray(np.concatenate([[root * (1 + 1e-8)], rng.lognormal(0, 2, 39)]))
    w = jnp.asarray(rng.normal(size=40))
    got = jax.grad(lambda *a: jnp.dot(w, rational.log_gain_product(*a)[0]), (0, 1, 2))
    want = jax.grad(lambda *a: jnp.dot(w, _plain(*a)[0]), (0, 1, 2))
    for g, r in zip(got(lam, c, s2), want(lam, c, s2)):
        np.testing.assert_allclose(g, r, rtol=1e-7)


def test_vjp_float32_at_tiny_levels_and_gains():
    """Levels s² = 1e-12 and gains ~1e-20 at eigenvalues down to 1e-10: N_k·P_k is ~1e-40
    there, under float32's smallest normal number (unscaled, the float32 gradients missed
    float64's); scaled by ∏_j min(1, s_kj²) it is ~1e-16. float32 gradients are finite and
    match float64."""
    lam = np.concatenate([[1e-10, 1e-8], np.logspace(-3, 1, 30)])
    c = np.full((5, 3), 1e-20)
    s2 = np.full((5, 2), 1e-12)
    s2[1:] = [[0.5, 2.0]] * 4
    c[1:] = 1.0
    w = np.random.default_rng(1).normal(size=lam.size)
    grads = [
        jax.grad(lambda *a: jnp.dot(a[3], rational.log_gain_product(*a[:3])[0]), (0, 1, 2))(
            *(jnp.asarray(x, dtype) for x in (lam, c, s2, w))
        )
        for dtype in (jnp.float32, jnp.float64)
    ]
    for g32, g64 in zip(*grads):
        assert np.all(np.isfinite(g32))
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5 * np.abs(g64).max())


def test_zero_gain_gives_a_finite_gradient():
    lam = jnp.asarray([0.5, 1.0, 2.0])
    c = jnp.asarray([[-0.5, 1.0], [1.0, 1.0]])  # step 0: N(λ) = λ − 0.5 is 0 at λ = 0.5
    s2 = jnp.asarray([[1.0], [2.0]])
    log_abs, _ = rational.log_gain_product(lam, c, s2)
    assert float(log_abs[0]) == -np.inf  # H = 0 exactly there
    g = jax.grad(lambda c: jnp.sum(jnp.exp(rational.log_gain_product(lam, c, s2)[0])))(c)
    assert np.all(np.isfinite(g))


def test_path_choice():
    on = [sd.samplers.from_name(n, **kw) for n, kw in RATIONAL.items()]
    on += [sd.samplers.from_name("dpm_2"), sd.samplers.from_name("euler_ancestral", eta=0.0)]
    off = [
        sd.samplers.DDIM(),  # the Möbius path
        sd.samplers.from_name("euler", s_churn=1.0),  # churn draws noise
        sd.samplers.from_name("euler_ancestral"),  # noise
        sd.samplers.from_name("dpmpp_2m"),  # history
        sd.samplers.from_name("lms"),
    ]
    assert all(engine._rational(s) for s in on)
    assert not any(engine._rational(s) for s in off)
    heun = sd.samplers.from_name("heun")
    assert engine.default_block(100, heun, 3072) == 3072  # small: no loop over blocks
    assert engine.default_block(1000, heun, 3072) == 3072  # d·(S + 16) ≤ 3·2²¹
    assert engine.default_block(1000, heun, 49152) == 256  # S·block ≈ 2¹⁸
    assert engine.default_block(10, heun, 786432) == 16384
    assert 256 <= engine.default_block(10**5, heun) <= engine.default_block(1, heun) <= 16384


def test_blocked_equals_unblocked_float32():
    """Blocks (d not a multiple of the block) change nothing beyond float32 round-off."""
    heun = sd.samplers.from_name("heun")
    lam = jnp.asarray(np.logspace(-3, 2, 1000), jnp.float32)
    m = jnp.linspace(-1.0, 1.0, 1000, dtype=jnp.float32)
    sch = sd.Schedule.from_log_snr(jnp.asarray(sd.schedules.cosine(30).log_snr, jnp.float32))

    def w2(rho, block):
        s = sd.Schedule.from_log_snr(rho)
        mean, var = engine._blocked_output(lam, m, s, heun, block)
        return jnp.sum((mean - m) ** 2 + (jnp.sqrt(var) - jnp.sqrt(lam)) ** 2)

    vg = jax.jit(jax.value_and_grad(w2), static_argnums=1)
    (v1, g1), (v2, g2) = vg(sch.log_snr, 256), vg(sch.log_snr, 4096)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-5 * float(jnp.abs(g2).max()))
