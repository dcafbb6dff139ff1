"""The composition of the steps' affine maps (``core.compose``: trajectories) and the
engine's outputs (``core.adjoint`` for samplers with history or noise, ``core.rational``
for the others) against the plain sequential loop of the same steps: every sampler, S = 1,
2 and odd S, outputs, trajectories and transfer functions; the scanned composition, the
interpolation in the denoiser gains and its written-out VJP each against their direct
definitions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import specdiff as sd
from specdiff.core import compose, engine
from specdiff.core.engine import _trajectory_moments, sigmas_with_zero, start_variance
from specdiff.core.steps import step_loop
from tests.samplers.cases import DEFAULTS, case_id, karras, sampler_of

GENERAL = [c for c in DEFAULTS if c[0] not in ("ddim", "ddpm")]


def _sequential(lam, m, schedule, sampler):
    """Mean, variance, trajectory variance and H by one step after the other (step_loop)."""
    sig = sigmas_with_zero(schedule, lam.dtype)
    d, n = lam.shape[0], sampler.state_size
    e0 = jnp.zeros((d, n)).at[:, 0].set(-m)
    p0 = jnp.zeros((d, n, n)).at[:, 0, 0].set(start_variance(schedule))
    h0 = jnp.zeros((d, n)).at[:, 0].set(1.0)

    def body(carry, i, *, order, last):
        e, p, h = carry
        a, b = sampler.affine(lam, sig, i, order=order, last=last)
        p = jnp.einsum("dij,djk,dlk->dil", a, p, a) + jnp.einsum("dij,dkj->dik", b, b)
        return jnp.einsum("dij,dj->di", a, e), p, jnp.einsum("dij,dj->di", a, h)

    (e, p, h), (_, ps, _) = step_loop(
        schedule.num_steps, sampler.history, body, (e0, p0, h0), collect=True
    )
    return m + e[:, 0], p[:, 0, 0], ps[:, :, 0, 0], h[:, 0]


@functools.partial(jax.jit, static_argnums=0)
def _all_ways(sampler, lam, m, schedule):
    """The sequential loop, the trajectory's composition and the engine's outputs and H
    (its own path: ``core.adjoint`` or ``core.rational``), compiled together."""
    out = engine._output(lam, m, schedule, sampler)
    h = engine._output(lam, m, schedule, sampler, transfer=True)[0]
    seq = _sequential(lam, m, schedule, sampler)
    return seq, _trajectory_moments(lam, m, schedule, sampler), out, h


@pytest.mark.parametrize("case", GENERAL, ids=case_id)
def test_composed_equals_sequential(case):
    sampler = sampler_of(case)
    lam = jnp.asarray(np.logspace(-3, 2, 7))
    m = jnp.linspace(-1.0, 1.0, 7)
    # Trajectories from the associative scan; outputs and H (VE: σ coordinates) from the
    # engine's own path. S = 20 for one sampler of each structure (several denoiser calls,
    # a stochastic two-value state, a three-value state): several levels of the scan.
    scan_cases = ("heun", "dpmpp_2m_sde", "lms")
    for steps in (1, 2, 7, 20) if case[0] in scan_cases else (1, 2, 7):
        seq, (mean_c, var_c, traj), out, h_c = _all_ways(sampler, lam, m, karras(steps, "ve"))
        mean, var, traj_var, h = seq
        pairs = [(mean_c, mean), (var_c, var), (traj[1][1:], traj_var)]
        pairs += [(out[0], mean), (out[1], var), (h_c, h)]
        for got, want in pairs:
            # VE: α = 1, so the trajectory rows are σ-coordinate variances. Round-off is
            # relative to the largest entry or 1 (the scale of m and of H), as in
            # test_reference; S = 2 (one step 80 → 0.002) of DPM-2 ancestral, whose gain
            # maps nearly cancel, gives H ≈ 0.99 to ~1e-10.
            scale = max(float(jnp.abs(want).max()), 1.0)
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * scale)


def _maps(rng, count, n, noisy):
    a = jnp.asarray(rng.normal(size=(count, n, n, 3)))
    q = None
    if noisy:
        b = jnp.asarray(rng.normal(size=(count, n, 2, 3)))
        q = jnp.einsum("kiqd,kjqd->kijd", b, b)
    return a, q


@pytest.mark.parametrize("count", [1, 2, 5, 8, 13])
@pytest.mark.parametrize("noisy", [False, True])
def test_scanned_composition_equals_sequential(count, noisy):
    """(A₁, Q₁) then (A₂, Q₂) = (A₂A₁, A₂Q₁A₂ᵀ + Q₂), by the associative scan or in order."""
    a, q = _maps(np.random.default_rng(count), count, 3, noisy)
    a_seq, q_seq = a[0], None if q is None else q[0]
    for k in range(1, count):
        a_k = np.moveaxis(a[k], -1, 0)
        a_seq = np.einsum("dij,jkd->ikd", a_k, a_seq)
        if q is not None:
            q_seq = np.einsum("dij,jkd,dlk->ild", a_k, q_seq, a_k) + q[k]
    a_scan, q_scan = jax.tree.map(
        lambda x: x[-1], jax.lax.associative_scan(compose.compose, (a, q))
    )
    np.testing.assert_allclose(a_scan, a_seq, rtol=1e-12, atol=1e-12)
    if noisy:
        np.testing.assert_allclose(q_scan, q_seq, rtol=1e-12, atol=1e-12)
    else:
        assert q_scan is None


@pytest.mark.parametrize("case", GENERAL, ids=case_id)
def test_gain_interpolation_equals_affine_columns(case):
    """Σ_T F_T ∏_{j∈T} γ_j ∏_{j∉T} (1 − γ_j), γ_j = λ/(λ + s_j²), F_T the step at the
    corners of its gains, is the step's [A | B] for every λ."""
    sampler = sampler_of(case)
    sch = karras(6, "vp")
    sig = sigmas_with_zero(sch)
    lam = jnp.asarray([0.0, 1e-3, 0.3, 1.0, 40.0])
    n = sampler.state_size
    i, order = 4, min(4, sampler.history)
    calls = compose.count_calls(sampler, sig, i, order, False)
    c, s = compose.corner_columns(sampler, sig, i, order=order, last=False, calls=calls)
    ab = compose._interpolate(c[None], s[None], lam)[0]
    a, b = sampler.affine_columns(lam, sig, i, order=order, last=False)
    np.testing.assert_allclose(ab[:, :n], a, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ab[:, n:], b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("calls", [0, 1, 2, 3])
def test_interpolation_vjp_equals_numerical(calls):
    """The written-out backward pass against finite differences (λ = 0 included)."""
    key = jax.random.key(calls)
    c = jax.random.normal(key, (4, 2**calls, 2, 3))
    s = 0.5 + jax.random.uniform(jax.random.fold_in(key, 1), (4, calls))
    lam = jnp.concatenate([jnp.zeros(1), jnp.logspace(-2, 1, 4)])
    check_grads(compose._interpolate, (c, s, lam), order=1, modes=["rev"])


def test_general_output_gradients_match_sequential():
    """Gradients in the log-SNR levels through the adjoint path (the outputs') against the
    sequential loop's: churned Heun, two gains and a noise per step. (The trajectory's scan
    differentiates through ``_interpolate``, whose VJP is checked above.)"""
    sampler = sd.samplers.from_name("heun", s_churn=2.0, s_tmin=0.05, s_tmax=10.0)
    lam, m = jnp.asarray(np.logspace(-3, 2, 37)), jnp.linspace(-1.0, 1.0, 37)
    sch = karras(20, "vp")

    def loss(rho, sequential):
        schedule = sd.Schedule.from_log_snr(rho, "vp")
        if sequential:
            mean, var = _sequential(lam, m, schedule, sampler)[:2]
        else:
            mom = sd.output_moments(sd.Spectrum(lam, m), schedule, sampler)
            mean, var = mom.mean, mom.var
        return jnp.sum(mean**2 + var)

    g = jax.grad(loss)(sch.log_snr, False)
    g_ref = jax.grad(loss)(sch.log_snr, True)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12 * float(jnp.abs(g_ref).max()))
