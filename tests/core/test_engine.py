"""The closed-form engine against independent references (SPEC §7) and known limits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import specdiff as sd
from specdiff import reference

SAMPLERS = [sd.samplers.DDIM(0.0), sd.samplers.DDIM(0.5), sd.samplers.DDPM()]


def random_problem(d, seed, zero_eigenvalue=False):
    """A non-diagonal covariance Σ0 = U diag(λ) Uᵀ with a random rotation, and a mean."""
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.lognormal(0.0, 1.5, d))[::-1]
    if zero_eigenvalue:
        lam[-1] = 0.0
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mu0 = rng.normal(size=d)
    cov0 = (u * lam) @ u.T
    return lam, u, mu0, cov0


def schedule_for(process, steps):
    return sd.schedules.cosine(steps) if process == "vp" else sd.schedules.edm(steps)


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b) / (np.abs(b) + 1e-300))


@pytest.mark.parametrize("process", ["vp", "ve"])
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: f"eta{s.eta}")
def test_matches_full_covariance_propagation(process, sampler):
    lam, u, mu0, cov0 = random_problem(8, seed=1)
    sch = schedule_for(process, 12)
    spec = sd.Spectrum(lam, mean=u.T @ mu0)
    mom = sd.output_moments(spec, sch, sampler)
    mean_ref, cov_ref = reference.propagate(mu0, cov0, sch, eta=sampler.eta)
    # The reference covariance is diagonal in the data eigenbasis with the spectral variances.
    cov_eig = u.T @ cov_ref @ u
    assert rel_err(np.diag(cov_eig), mom.var) < 1e-10
    off = cov_eig - np.diag(np.diag(cov_eig))
    assert np.max(np.abs(off)) < 1e-10 * np.max(np.abs(cov_eig))
    assert np.max(np.abs(u.T @ mean_ref - mom.mean)) < 1e-10 * np.max(np.abs(mom.mean))
    w2_ref = reference.w2_gaussians(mean_ref, cov_ref, mu0, cov0)
    w2 = float(sd.divergence(spec, mom, "w2"))
    assert abs(w2 - w2_ref) < 1e-9 * w2_ref


@pytest.mark.parametrize("process", ["vp", "ve"])
def test_trajectory_matches_full_covariance_propagation(process):
    lam, u, mu0, cov0 = random_problem(6, seed=2)
    sch = schedule_for(process, 9)
    sampler = sd.samplers.DDIM(0.7)
    mom = sd.output_moments(sd.Spectrum(lam, u.T @ mu0), sch, sampler, trajectory=True)
    means, covs = reference.propagate(mu0, cov0, sch, eta=0.7, trajectory=True)
    assert mom.trajectory_var.shape == (10, 6)
    for k in range(10):
        assert rel_err(np.diag(u.T @ covs[k] @ u), mom.trajectory_var[k]) < 1e-10
        np.testing.assert_allclose(u.T @ means[k], mom.trajectory_mean[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mom.trajectory_var[-1], mom.var, rtol=1e-12)
    np.testing.assert_allclose(mom.trajectory_mean[-1], mom.mean, rtol=1e-12)


@pytest.mark.parametrize("process", ["vp", "ve"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_monte_carlo_time_domain(process, eta, key):
    lam, u, mu0, cov0 = random_problem(5, seed=3)
    sch = schedule_for(process, 6)
    n = 40_000
    x = reference.sample(mu0, cov0, sch, eta, key, n)
    y = x @ u  # eigenbasis coordinates
    mom = sd.output_moments(sd.Spectrum(lam, u.T @ mu0), sch, sd.samplers.DDIM(eta))
    mean_se = np.sqrt(mom.var / n)
    var_se = mom.var * np.sqrt(2.0 / (n - 1))
    assert np.all(np.abs(y.mean(0) - mom.mean) < 4 * mean_se)
    assert np.all(np.abs(y.var(0, ddof=1) - mom.var) < 4 * var_se)


def test_vp_ve_ddim_equivalence():
    """A VP DDIM run equals a VE DDIM run on the same log-SNR grid: H_VP = H_VE / √ᾱ_0."""
    lam = np.logspace(-4, 3, 40)
    vp = sd.schedules.chen_sigmoid(15)
    ve = vp.to_ve()
    np.testing.assert_allclose(ve.levels, np.sqrt((1 - vp.levels) / vp.levels), rtol=1e-12)
    ddim = sd.samplers.DDIM()
    h_vp = sd.transfer_function(lam, vp, ddim)
    h_ve = sd.transfer_function(lam, ve, ddim)
    np.testing.assert_allclose(h_vp, h_ve / np.sqrt(vp.levels[0]), rtol=1e-12)
    # Output variances: VP from N(0, 1); VE started from N(0, s0² + 1) has H_VE²(s0² + 1).
    var_vp = sd.output_moments(sd.Spectrum(lam), vp, ddim).var
    np.testing.assert_allclose(var_vp, h_ve**2 * (ve.levels[0] ** 2 + 1), rtol=1e-12)


def test_transfer_function_limits():
    """λ = 0 → H = 0 (the final step returns the mean); λ → ∞ → H = 1/√ᾱ_0 for DDIM."""
    sch = sd.schedules.cosine(20)
    h = sd.transfer_function([0.0, 1e22], sch, sd.samplers.DDIM())
    assert float(h[0]) == 0.0
    np.testing.assert_allclose(h[1], 1 / np.sqrt(sch.levels[0]), rtol=1e-6)


def test_single_step_is_one_mmse_denoise():
    """S = 1: the output is x̂0 of the start: var = (√a λ/(aλ + 1 − a))² for VP."""
    lam = np.array([0.1, 1.0, 10.0])
    a = 0.3
    mom = sd.output_moments(sd.Spectrum(lam), sd.Schedule([a], "vp"), sd.samplers.DDPM())
    np.testing.assert_allclose(mom.var, (np.sqrt(a) * lam / (a * lam + 1 - a)) ** 2, rtol=1e-13)


def test_w2_decays_first_order_for_ddim_cosine():
    """W2 → 0 as S grows, at the first-order rate of DDIM (slope −1 in log-log)."""
    lam, u, mu0, _ = random_problem(30, seed=4)
    spec = sd.Spectrum(lam, u.T @ mu0)
    steps = np.array([25, 50, 100, 200, 400, 800])
    w2 = np.array(
        [
            float(
                sd.divergence(
                    spec,
                    sd.output_moments(spec, sd.schedules.cosine(int(s)), sd.samplers.DDIM()),
                    "w2",
                )
            )
            for s in steps
        ]
    )
    assert np.all(np.diff(w2) < 0)
    slope = np.polyfit(np.log(steps), np.log(w2), 1)[0]
    assert -1.15 < slope < -0.85, slope


def test_trajectory_approaches_true_marginals_as_steps_grow():
    lam, u, mu0, _ = random_problem(10, seed=5)
    spec = sd.Spectrum(lam, u.T @ mu0)
    errs = []
    for s in (50, 200, 800):
        sch = sd.schedules.cosine(s)
        mom = sd.output_moments(spec, sch, sd.samplers.DDIM(), trajectory=True)
        true = sd.forward_marginals(spec, sch)
        assert true.trajectory_var.shape == mom.trajectory_var.shape == (s + 1, 10)
        errs.append(float(jnp.max(jnp.abs(mom.trajectory_var[1:] / true.trajectory_var[1:] - 1))))
    assert errs[0] > errs[1] > errs[2]
    assert errs[1] / errs[2] > 3  # first order: ×4 steps → ≈ ×4 smaller


def test_vmap_over_schedules_matches_loop():
    spec = sd.Spectrum(np.logspace(-3, 2, 16), mean=np.linspace(-1, 1, 16))
    rhos = jnp.stack(
        [
            sd.schedules.cosine(10).log_snr,
            sd.schedules.edm(10).log_snr,
            sd.schedules.ddpm_linear(10).log_snr,
        ]
    )
    f = lambda r: sd.divergence(
        spec, sd.output_moments(spec, sd.Schedule.from_log_snr(r, "vp"), sd.samplers.DDPM()), "kl"
    )
    batched = jax.vmap(f)(rhos)
    looped = jnp.array([f(r) for r in rhos])
    np.testing.assert_allclose(batched, looped, rtol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_dtype_is_preserved(dtype):
    spec = sd.Spectrum(jnp.asarray([2.0, 0.5], dtype))
    sch = sd.Schedule(jnp.asarray([0.1, 0.6, 0.95], dtype), "vp")
    assert sch.log_snr.dtype == dtype
    mom = sd.output_moments(spec, sch, sd.samplers.DDPM(), trajectory=True)
    for x in (
        mom.mean,
        mom.var,
        mom.trajectory_var,
        sd.divergence(spec, mom, "kl"),
        sd.transfer_function(spec.eigenvalues, sch, sd.samplers.DDIM()),
    ):
        assert x.dtype == dtype


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("process", ["vp", "ve"])
@pytest.mark.parametrize("metric", ["w2", "kl", "reverse_kl"])
@pytest.mark.parametrize("sampler", [sd.samplers.DDIM(), sd.samplers.DDPM()], ids=["ddim", "ddpm"])
def test_gradients_finite_near_the_ends(dtype, process, metric, sampler):
    """Levels within 1e-6 of the ends of the domain still give finite gradients."""
    lam = jnp.asarray([0.0, 1e-4, 1e-2, 1.0, 1e2], dtype)
    spec = sd.Spectrum(lam, mean=jnp.asarray([0.3, -0.2, 0.1, 0.0, 1.0], dtype))
    if process == "vp":
        levels = jnp.asarray([1e-6, 1e-3, 0.5, 0.999, 1 - 1e-6], dtype)
    else:
        levels = jnp.asarray([1e6, 1e2, 1.0, 1e-3, 1e-6], dtype)

    def loss(lv):
        mom = sd.output_moments(spec, sd.Schedule(lv, process), sampler)
        return sd.divergence(spec, mom, metric, floor=1e-8 if metric != "w2" else None)

    val, grad = jax.value_and_grad(loss)(levels)
    assert np.isfinite(val) and np.all(np.isfinite(grad)), (val, grad)
    g_rho = jax.grad(
        lambda r: sd.divergence(
            spec,
            sd.output_moments(spec, sd.Schedule.from_log_snr(r, process), sampler),
            metric,
            floor=1e-8 if metric != "w2" else None,
        )
    )(sd.Schedule(levels, process).log_snr)
    assert np.all(np.isfinite(g_rho))


def test_float32_agrees_with_float64():
    lam = np.logspace(-4, 2, 200)
    sch64 = sd.schedules.cosine(1000)
    spec64 = sd.Spectrum(lam)
    w64 = float(sd.divergence(spec64, sd.output_moments(spec64, sch64, sd.samplers.DDPM()), "w2"))
    spec32 = sd.Spectrum(lam.astype(np.float32))
    sch32 = sch64.astype(jnp.float32)
    w32 = float(sd.divergence(spec32, sd.output_moments(spec32, sch32, sd.samplers.DDPM()), "w2"))
    assert abs(w32 - w64) < 1e-3 * w64


def test_divergences_match_closed_forms():
    lam = np.array([2.0, 0.5, 0.1])
    spec = sd.Spectrum(lam, mean=[0.1, 0.0, -0.2])
    mom = sd.Moments(mean=jnp.array([0.2, 0.1, -0.2]), var=jnp.array([1.5, 0.7, 0.1]))
    d = np.array([0.1, 0.1, 0.0])
    v = np.array([1.5, 0.7, 0.1])
    w2 = np.sqrt(np.sum(d**2 + (np.sqrt(v) - np.sqrt(lam)) ** 2))
    kl = 0.5 * np.sum(lam / v - 1 - np.log(lam / v) + d**2 / v)
    rkl = 0.5 * np.sum(v / lam - 1 - np.log(v / lam) + d**2 / lam)
    np.testing.assert_allclose(sd.divergence(spec, mom, "w2"), w2, rtol=1e-13)
    np.testing.assert_allclose(sd.divergence(spec, mom, "kl"), kl, rtol=1e-13)
    np.testing.assert_allclose(sd.divergence(spec, mom, "reverse_kl"), rkl, rtol=1e-13)
    # W2 agrees with the general Gaussian formula on diagonal covariances.
    ref = reference.w2_gaussians(
        np.asarray(mom.mean), np.diag(v), np.asarray(spec.mean), np.diag(lam)
    )
    np.testing.assert_allclose(sd.divergence(spec, mom, "w2"), ref, rtol=1e-12)


def test_kl_with_zero_eigenvalue_needs_a_floor():
    spec = sd.Spectrum([1.0, 0.0])
    mom = sd.output_moments(spec, sd.schedules.cosine(10), sd.samplers.DDIM())
    assert float(mom.var[1]) == 0.0
    for metric in ("kl", "reverse_kl"):
        with pytest.raises(ValueError, match="floor"):
            sd.divergence(spec, mom, metric)
        assert np.isfinite(float(sd.divergence(spec, mom, metric, floor=1e-6)))
    assert np.isfinite(float(sd.divergence(spec, mom, "w2")))
    # Under jit the check cannot run: the answer is +inf, never NaN.
    jitted = jax.jit(lambda s, m: sd.divergence(s, m, "kl"))
    assert float(jitted(spec, mom)) == np.inf


# d = 8: per-eigenvalue problems (d ≤ 16); 40: the reciprocal arrays; 1500: one array
# (1500 × 45 steps ≥ engine._ONE_ARRAY_MIN).
@pytest.mark.parametrize("d", [8, 40, 1500])
def test_custom_vjp_matches_autodiff_and_finite_differences(d):
    """The hand-written backward pass of the product over steps equals plain autodiff."""
    from jax.test_util import check_grads

    from specdiff.core.engine import _ONE_ARRAY_MIN, _sum_log_mobius

    assert (d * 45 >= _ONE_ARRAY_MIN) == (d == 1500)

    rng = np.random.default_rng(6)
    # λ = 0, and λ over 16 decades; log p … log t with standard deviation 3.
    lam = jnp.asarray(np.concatenate([[0.0, 1e-8, 1e8], rng.lognormal(0, 2, d - 3)]))
    args = [jnp.asarray(rng.normal(size=45) * 3) for _ in range(4)]  # 45: not a chunk multiple

    def plain(lam, lp, lq, lr, lt):
        e = lambda v: jnp.exp(v)[:, None]
        return jnp.sum(jnp.log(e(lp) * lam + e(lq)) - jnp.log(e(lr) * lam + e(lt)), 0)

    np.testing.assert_allclose(_sum_log_mobius(lam, *args), plain(lam, *args), rtol=1e-12)
    w = jnp.asarray(rng.normal(size=d))
    g_custom = jax.grad(lambda *a: jnp.dot(w, _sum_log_mobius(*a)), argnums=range(5))(lam, *args)
    g_plain = jax.grad(lambda *a: jnp.dot(w, plain(*a)), argnums=range(5))(lam, *args)
    for gc, gp in zip(g_custom, g_plain):
        np.testing.assert_allclose(gc, gp, rtol=1e-10, atol=1e-12)
    check_grads(lambda *a: _sum_log_mobius(lam + 0.1, *a), args, order=1, modes=["rev"])


@settings(max_examples=25, deadline=None)
@given(
    lam=st.lists(st.floats(1e-4, 1e3), min_size=1, max_size=5),
    gaps=st.lists(st.floats(0.05, 4.0), min_size=1, max_size=6),
    start=st.floats(-12.0, 4.0),
    eta=st.sampled_from([0.0, 0.3, 1.0]),
    process=st.sampled_from(["vp", "ve"]),
)
def test_random_problems_match_full_covariance(lam, gaps, start, eta, process):
    """Property: any spectrum, any monotone schedule, any η, both processes."""
    lam = np.asarray(lam)
    mu = np.linspace(-1.0, 1.0, lam.size)
    rho = start + np.concatenate([[0.0], np.cumsum(gaps)])[: len(gaps)]
    sch = sd.Schedule.from_log_snr(rho, "vp")
    sch = sd.Schedule(np.asarray(sch.levels if process == "vp" else sch.to_ve().levels), process)
    mom = sd.output_moments(sd.Spectrum(lam, mu), sch, sd.samplers.DDIM(eta))
    m_ref, c_ref = reference.propagate(mu, np.diag(lam), sch, eta=eta)
    np.testing.assert_allclose(mom.var, np.diag(c_ref), rtol=1e-9)
    np.testing.assert_allclose(mom.mean, m_ref, rtol=1e-9, atol=1e-12)


class _GenericDDIM(sd.samplers.DDIM):
    """DDIM with the closed form switched off: the engine composes the affine maps that
    ``Sampler.affine`` derives from ``DDIM.step`` (SPEC §11) instead."""

    @property
    def mobius(self) -> bool:
        return False


@pytest.mark.parametrize("process", ["vp", "ve", "flow"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_closed_form_equals_composed_affine_maps_of_the_step(process, eta):
    """The Möbius fast path and the generic path agree on DDIM/DDPM: moments and every row
    of the trajectory (both in the process's coordinates)."""
    lam, u, mu0, _ = random_problem(6, seed=7)
    sch = sd.schedules.edm(9).to_process(process)
    spec = sd.Spectrum(lam, u.T @ mu0)
    fast = sd.output_moments(spec, sch, sd.samplers.DDIM(eta), trajectory=True)
    slow = sd.output_moments(spec, sch, _GenericDDIM(eta), trajectory=True)
    for a, b in [
        (fast.mean, slow.mean),
        (fast.var, slow.var),
        (fast.trajectory_mean, slow.trajectory_mean),
        (fast.trajectory_var, slow.trajectory_var),
    ]:
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13 * float(np.max(np.abs(a))))
