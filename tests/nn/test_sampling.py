"""Time-domain sampler: Monte-Carlo agreement with the closed form, batch independence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdiff as sd
from specdiff.core.engine import start_variance
from specdiff.nn.denoisers import GaussianDenoiser, load_denoiser
from specdiff.nn.sampling import sample, snap_to_timesteps


def _gaussian(d=4, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    cov = a @ a.T / d + 0.05 * np.eye(d)  # non-diagonal: the eigenbasis is not the pixel basis
    mu = rng.normal(size=d)
    lam, u = np.linalg.eigh(cov)
    return mu, cov, lam, u


@pytest.mark.parametrize(
    "schedule, sampler",
    [
        (sd.schedules.cosine(8), sd.samplers.DDIM()),
        (sd.schedules.ddpm_linear(6), sd.samplers.DDPM()),
        (sd.schedules.edm(6, process="ve"), sd.samplers.DDIM(0.5)),
    ],
    ids=["vp-ddim", "vp-ddpm", "ve-eta0.5"],
)
def test_gaussian_denoiser_matches_output_moments(schedule, sampler):
    """sd.sample with the exact MMSE denoiser reproduces sd.output_moments (SPEC §4) within
    4 Monte-Carlo standard errors, per eigen-direction."""
    mu, cov, lam, u = _gaussian()
    n = 20000
    x = np.asarray(
        sample(
            GaussianDenoiser(mu, cov), schedule, sampler, jax.random.key(3), n, dtype=jnp.float64
        )
    )
    y = x @ u  # eigen-coordinates
    mom = sd.output_moments(sd.Spectrum(lam, u.T @ mu), schedule, sampler)
    m, v = np.asarray(mom.mean), np.asarray(mom.var)
    z_mean = (y.mean(0) - m) / np.sqrt(v / n)
    z_var = (y.var(0, ddof=1) - v) / (v * np.sqrt(2.0 / (n - 1)))
    assert np.abs(z_mean).max() < 4, z_mean
    assert np.abs(z_var).max() < 4, z_var
    # and the covariance is diagonal in the data eigenbasis (off-diagonal correlations ~ 0)
    corr = np.corrcoef(y, rowvar=False)
    assert np.abs(corr - np.eye(len(mu))).max() < 4 / np.sqrt(n)


# Every sampler of the registry (with its defaults) plus the non-default variants that change
# the step's structure; the three processes are spread over them (S <= 8 everywhere).
_ALL_SAMPLERS = [
    ("ddim", {}, "vp"),
    ("ddpm", {}, "ve"),
    ("euler", {}, "flow"),
    ("euler", {"s_churn": 2.0}, "vp"),
    ("euler_ancestral", {}, "vp"),
    ("heun", {}, "ve"),
    ("heun", {"s_churn": 4.0, "s_tmin": 0.05, "s_tmax": 5.0}, "vp"),
    ("dpm_2", {}, "vp"),
    ("dpm_2_ancestral", {"eta": 0.7}, "flow"),
    ("dpmpp_2s_ancestral", {}, "vp"),
    ("dpmpp_2m", {}, "vp"),
    ("dpmpp_2m_sde", {}, "ve"),
    ("dpmpp_2m_sde", {"solver_type": "heun", "eta": 0.5}, "vp"),
    ("dpmpp_3m_sde", {}, "vp"),
    ("lms", {}, "flow"),
]
_SCHEDULES = {
    "vp": sd.schedules.cosine(7, process="vp"),
    "ve": sd.schedules.edm(6, process="ve"),
    "flow": sd.schedules.log_snr_uniform(8, process="flow"),
}


def test_every_registry_sampler_is_covered():
    assert {name for name, _, _ in _ALL_SAMPLERS} == set(sd.samplers.SAMPLERS)


@pytest.mark.parametrize(
    "name, params, process",
    _ALL_SAMPLERS,
    ids=[
        f"{n}-{p}" + ("-" + "-".join(map(str, kw.values())) if kw else "")
        for n, kw, p in _ALL_SAMPLERS
    ],
)
def test_every_sampler_matches_output_moments(name, params, process):
    """Real-network sampling (the sampler's own step on the exact Gaussian ε-predictor, in σ
    coordinates) reproduces the exact per-eigenvalue moments of the affine analysis
    (``sd.output_moments``, SPEC §11) within 4.5 Monte-Carlo standard errors."""
    mu, cov, lam, u = _gaussian()
    sampler, sch, n = sd.samplers.from_name(name, **params), _SCHEDULES[process], 4000
    x = np.asarray(
        sample(GaussianDenoiser(mu, cov), sch, sampler, jax.random.key(11), n, dtype=jnp.float64)
    )
    y = x @ u
    mom = sd.output_moments(sd.Spectrum(lam, u.T @ mu), sch, sampler)
    m, v = np.asarray(mom.mean), np.asarray(mom.var)
    z_mean = (y.mean(0) - m) / np.sqrt(v / n)
    z_var = (y.var(0, ddof=1) - v) / (v * np.sqrt(2.0 / (n - 1)))
    assert np.abs(z_mean).max() < 4.5, z_mean
    assert np.abs(z_var).max() < 4.5, z_var


@pytest.mark.parametrize(
    "name, process",
    [
        ("ddim", "ve"),  # VE: the closed-form path's H is also in σ units (VP: H/√ᾱ_0)
        ("euler", "flow"),
        ("heun", "vp"),
        ("dpm_2", "ve"),
        ("dpmpp_2m", "ve"),
        ("lms", "vp"),
    ],
)
def test_deterministic_samplers_follow_the_transfer_function_per_sample(name, process):
    """Sample by sample: with the Gaussian denoiser a deterministic sampler maps its start
    point x_0 ~ N(0, v0) (σ coordinates, drawn from ``fold_in(fold_in(key, i), 0)``) to
    m + α_0·H(λ)·(x_0 − m) in the eigenbasis, H from ``sd.transfer_function`` (SPEC §4)."""
    mu, cov, lam, u = _gaussian()
    sampler, sch, key, n = sd.samplers.from_name(name), _SCHEDULES[process], jax.random.key(5), 6
    x = np.asarray(sample(GaussianDenoiser(mu, cov), sch, sampler, key, n, dtype=jnp.float64))
    v0 = float(start_variance(sch))
    start = np.stack(
        [
            np.sqrt(v0)
            * np.asarray(
                jax.random.normal(
                    jax.random.fold_in(jax.random.fold_in(key, i), 0), (len(mu),), jnp.float64
                )
            )
            for i in range(n)
        ]
    )
    # H is in the process's own coordinates (SPEC §4); the start here is in σ coordinates,
    # x_σ = x_process/α_0, so the response to it is α_0·H.
    alpha0 = np.exp(float(sd.samplers.log_alpha_sigma(sch.log_snr[0], sch.process)[0]))
    h = alpha0 * np.asarray(sd.transfer_function(lam, sch, sampler))
    m = u.T @ mu
    np.testing.assert_allclose(x @ u, m + h * (start @ u - m), rtol=1e-9, atol=1e-9)


def test_moment_test_detects_a_wrong_sampler():
    """The comparison above is sharp: DDIM samples do not pass as DDPM moments."""
    mu, cov, lam, u = _gaussian()
    n = 20000
    sch = sd.schedules.cosine(8)
    x = np.asarray(
        sample(
            GaussianDenoiser(mu, cov),
            sch,
            sd.samplers.DDIM(),
            jax.random.key(3),
            n,
            dtype=jnp.float64,
        )
    )
    v_wrong = np.asarray(sd.output_moments(sd.Spectrum(lam, u.T @ mu), sch, sd.samplers.DDPM()).var)
    z_var = ((x @ u).var(0, ddof=1) - v_wrong) / (v_wrong * np.sqrt(2.0 / (n - 1)))
    assert np.abs(z_var).max() > 4


@pytest.mark.parametrize("which", ["gaussian", "unet"])
def test_output_does_not_depend_on_batch_size(which):
    if which == "gaussian":
        mu, cov, _, _ = _gaussian()
        den, shape = GaussianDenoiser(mu, cov), None
    else:
        # A shipped denoiser: restoring it takes under a second, where compiling a fresh
        # U-Net's initialisation took 12.8 s under the suite's XLA flags (BUILD_NOTES).
        den, shape = load_denoiser("digits"), None
    sch, smp, key = sd.schedules.cosine(5), sd.samplers.DDPM(), jax.random.key(7)
    full = np.asarray(sample(den, sch, smp, key, 6, shape=shape))
    batched = np.asarray(sample(den, sch, smp, key, 6, batch_size=4, shape=shape))  # 4 + 2
    first = np.asarray(sample(den, sch, smp, key, 4, shape=shape))  # same compiled size
    np.testing.assert_allclose(batched, full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first, full[:4], rtol=1e-5, atol=1e-5)
    other = np.asarray(sample(den, sch, smp, jax.random.key(8), 6, shape=shape))
    assert np.abs(other - full).max() > 1e-2  # the key matters
    assert np.isfinite(full).all()


def test_ddpm_linear_snaps_to_its_own_timesteps():
    sch = sd.schedules.ddpm_linear(10)
    snapped, t = snap_to_timesteps(sch)
    np.testing.assert_array_equal(t, sd.schedules.ddpm_timesteps(10))
    np.testing.assert_allclose(np.asarray(snapped.levels), np.asarray(sch.levels), rtol=1e-12)
    # a continuous schedule lands on levels of the training grid, noisiest first
    snapped, t = snap_to_timesteps(sd.schedules.cosine(10))
    assert (np.diff(t) < 0).all()
    np.testing.assert_allclose(np.asarray(snapped.levels), sd.schedules.ddpm_alphas_bar()[t])


def test_snap_rejects_colliding_levels():
    sch = sd.Schedule([0.5, 0.5000001], "vp")
    with pytest.raises(ValueError, match="same training timestep"):
        snap_to_timesteps(sch)


def test_sample_rejects_bad_input():
    den = GaussianDenoiser(np.zeros(2), np.eye(2))
    sch, smp, key = sd.schedules.cosine(3), sd.samplers.DDIM(), jax.random.key(0)
    with pytest.raises(ValueError, match="Schedule"):
        sample(den, [0.1, 0.5], smp, key, 3)
    with pytest.raises(ValueError, match="n must be"):
        sample(den, sch, smp, key, 0)
    with pytest.raises(ValueError, match="typed key"):
        sample(den, sch, smp, jax.random.PRNGKey(0), 3)
    with pytest.raises(ValueError, match="sampler"):
        sample(den, sch, "ddim", key, 3)


def test_one_compilation_per_sampler_and_steps():
    """Schedules with the same S (any process, any levels) reuse the compiled sampler."""
    from specdiff.nn import sampling

    den = GaussianDenoiser(np.zeros(3), np.diag([2.0, 1.0, 0.1]))
    smp, key = sd.samplers.from_name("dpmpp_2m_sde"), jax.random.key(0)
    sample(den, sd.schedules.cosine(4), smp, key, 3)
    before = sampling._sample_batch._cache_size()
    sample(den, sd.schedules.edm(4, process="ve"), smp, key, 3)
    sample(den, sd.schedules.log_snr_uniform(4, process="flow"), smp, jax.random.key(1), 3)
    assert sampling._sample_batch._cache_size() == before
    sample(den, sd.schedules.cosine(5), smp, key, 3)
    assert sampling._sample_batch._cache_size() == before + 1
