"""The adjoint path (``core.adjoint``: samplers with history or noise): its written-out
reverse pass against autodiff of the plain recursion, its per-step corners against the
sampler's own affine maps (warm-up, steady and last steps, padded call counts), its
float32 round-off against float64, and DDPM's outputs against the Möbius closed form.
The outputs themselves are checked against the sequential loop in ``test_compose`` and
against Monte Carlo and full covariances in the samplers suite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.core import adjoint, engine
from specdiff.core.engine import sigmas_with_zero
from specdiff.core.steps import step_plan
from tests.core._paths import assert_same_w2
from tests.samplers.cases import karras


def _plain(f, s, lam):
    """(H, noise) by the definition: [A | B] interpolated per step, u ← u·A, Σ |u·B|²."""
    steps, count, n, m = f.shape
    calls = s.shape[1]
    u = jnp.zeros((lam.shape[0], n)).at[:, 0].set(1.0)
    noise = jnp.zeros_like(lam)
    for k in reversed(range(steps)):
        gam = lam[:, None] / (lam[:, None] + s[k] ** 2)  # (d, E)
        ab = 0.0
        for t in range(count):
            w = jnp.ones_like(lam)
            for j in range(calls):
                w = w * (gam[:, j] if (t >> j) & 1 else 1.0 - gam[:, j])
            ab = ab + w[:, None, None] * f[k, t]
        noise = noise + jnp.sum(jnp.einsum("da,dab->db", u, ab[:, :, n:]) ** 2, axis=1)
        u = jnp.einsum("da,dab->db", u, ab[:, :, :n])
    return u[:, 0], noise


@pytest.mark.parametrize("calls,n,m", [(0, 1, 2), (1, 2, 2), (1, 2, 3), (2, 3, 4)])
def test_reverse_pass_equals_autodiff(calls, n, m):
    """The written-out VJP against autodiff of the plain recursion, for a loss that weighs
    H and the noise differently; λ = 0 included, 20 eigenvalues (the matrix products)."""
    key = jax.random.key(10 * calls + n)
    k1, k2, k3 = jax.random.split(key, 3)
    f = 0.6 * jax.random.normal(k1, (5, 2**calls, n, m))
    s = 0.5 + jax.random.uniform(k2, (5, calls))
    lam = jnp.concatenate([jnp.zeros(1), jnp.logspace(-2, 1, 19)])
    wts = jax.random.normal(k3, (2, 20))

    def loss(fn, f, s, lam):
        h, noise = fn(f, s, lam)
        return jnp.sum(wts[0] * h + wts[1] * noise + h**2 * noise)

    def fast(f, s, lam):
        return adjoint.output_row((f, s), lam)

    np.testing.assert_allclose(fast(f, s, lam), _plain(f, s, lam), rtol=1e-12, atol=1e-14)
    got = jax.grad(loss, argnums=(1, 2, 3))(fast, f, s, lam)
    want = jax.grad(loss, argnums=(1, 2, 3))(_plain, f, s, lam)
    for g, w in zip(got, want):
        scale = float(jnp.abs(w).max()) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12 * scale)


@pytest.mark.parametrize("name", ["dpm_2_ancestral", "dpmpp_3m_sde"])
def test_step_corners_equal_affine_maps(name):
    """Every step's interpolated corners are the sampler's [A | B]: warm-up steps (3M SDE's
    orders 0 and 1), steady steps, and a last step with fewer calls (DPM-2 ancestral: two
    calls, then one), padded to the most calls."""
    sampler = sd.samplers.from_name(name)
    sig = sigmas_with_zero(karras(5, "ve"))
    lam = jnp.asarray([0.0, 1e-3, 0.3, 1.0, 40.0])
    f, s = adjoint.step_corners(sampler, sig)
    head, middle, tail = step_plan(5, sampler.history)
    plan = head + [(i, middle[2], False) for i in range(*middle[:2])] + [tail]
    assert f.shape[0] == 5 and [p[0] for p in plan] == list(range(5))
    n = sampler.state_size
    for k, (i, order, last) in enumerate(plan):
        gam = lam[:, None] / (lam[:, None] + s[k] ** 2)
        ab = 0.0
        for t in range(f.shape[1]):
            w = jnp.ones_like(lam)
            for j in range(s.shape[1]):
                w = w * (gam[:, j] if (t >> j) & 1 else 1.0 - gam[:, j])
            ab = ab + w[:, None, None] * f[k, t]
        a, b = sampler.affine(lam, sig, i, order=order, last=last)
        np.testing.assert_allclose(ab[:, :, :n], a, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ab[:, :, n:], b, rtol=1e-12, atol=1e-14)


def test_float32_round_off():
    """float32 against float64 at S = 200 (DPM++ 2M SDE): moments and W2's gradient."""
    sampler = sd.samplers.from_name("dpmpp_2m_sde")
    lam = np.logspace(-3, 2, 64)
    m = np.linspace(-1.0, 1.0, 64)
    rho = sd.schedules.edm(200, process="ve").log_snr

    def run(dtype):
        spec = sd.Spectrum(jnp.asarray(lam, dtype), jnp.asarray(m, dtype))

        def w2(r):
            mom = sd.output_moments(spec, sd.Schedule.from_log_snr(r, "ve"), sampler)
            return sd.divergence(spec, mom, "w2"), mom

        (v, mom), g = jax.value_and_grad(w2, has_aux=True)(jnp.asarray(rho, dtype))
        return v, mom, g

    v32, m32, g32 = run(jnp.float32)
    v64, m64, g64 = run(jnp.float64)
    np.testing.assert_allclose(m32.var, m64.var, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(v32, v64, rtol=1e-3)
    np.testing.assert_allclose(g32, g64, rtol=0, atol=1e-3 * float(jnp.abs(g64).max()))


def test_noisy_ddim_equals_the_mobius_closed_form():
    """DDPM (DDIM with η = 1): the outputs (``core.telescoped``, held to this path in
    test_telescoped) against the Möbius closed form with its log-space noise sum (the
    trajectory's path), VP and flow, values, H and gradients in float64."""
    sampler = sd.samplers.DDPM()
    lam = jnp.asarray(np.logspace(-3, 3, 41))
    spec = sd.Spectrum(lam, jnp.linspace(-1.0, 1.0, 41))
    for process, steps in (("vp", 7), ("flow", 2)):
        rho = sd.schedules.cosine(steps, process=process).log_snr

        def loss(r, trajectory, process=process):
            sch = sd.Schedule.from_log_snr(r, process)
            mom = sd.output_moments(spec, sch, sampler, trajectory=trajectory)
            return sd.divergence(spec, mom, "w2"), mom

        _, mom, _ = assert_same_w2(loss, rho, True, False)
        sch = sd.Schedule.from_log_snr(rho, process)
        h_ref = jnp.exp(engine._log_output(lam, sch, sampler)[0])  # the closed form's H
        np.testing.assert_allclose(sd.transfer_function(lam, sch, sampler), h_ref, rtol=1e-12)
