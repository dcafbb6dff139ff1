"""sd.linear against independent references: NumPy formulas, full-covariance propagation,
time-domain sampling, Monte Carlo, and a dense SVD of the Jacobian."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import specdiff as sd
from specdiff import linear, reference


def _data(key, n=400, d=12):
    a = jax.random.normal(jax.random.fold_in(key, 1), (d, d)) / np.sqrt(d)
    scale = jnp.exp(-0.3 * jnp.arange(d))
    z = jax.random.normal(jax.random.fold_in(key, 2), (n, d))
    return (z * scale) @ a.T + jnp.linspace(-1.0, 1.0, d)


def test_fit_is_sample_covariance(key):
    x = _data(key)
    m = linear.fit(x)
    xn = np.asarray(x)
    np.testing.assert_allclose(m.mean, xn.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.covariance(), np.cov(xn.T), atol=1e-12)
    assert (np.diff(np.asarray(m.eigenvalues)) <= 0).all()
    m0 = linear.fit(x, center=False)
    np.testing.assert_allclose(m0.covariance(), xn.T @ xn / len(xn), atol=1e-12)
    np.testing.assert_array_equal(m0.mean, 0.0)


def test_denoise_matches_wiener_formula(key):
    x = _data(key)
    m = linear.fit(x)
    cov, mu = np.cov(np.asarray(x).T), np.asarray(m.mean)
    y = np.asarray(jax.random.normal(jax.random.fold_in(key, 3), (5, m.dim)))
    s = 0.7
    want = mu + np.linalg.solve(cov + s**2 * np.eye(m.dim), cov @ (y - mu).T).T
    np.testing.assert_allclose(linear.denoise(m, y, s), want, atol=1e-12)
    np.testing.assert_allclose(
        linear.denoiser_matrix(m, s), cov @ np.linalg.inv(cov + s**2 * np.eye(m.dim)), atol=1e-12
    )
    # VP at ᾱ is VE at s² = (1−ᾱ)/ᾱ on x/√ᾱ (SPEC §3).
    a = 1.0 / (1.0 + s**2)
    np.testing.assert_allclose(linear.denoise(m, np.sqrt(a) * y, a, "vp"), want, atol=1e-12)


def test_fit_noisy_matches_numpy(key):
    x = _data(key, n=300, d=10)
    levels = jnp.array([0.1, 0.8, 3.0])
    ms = linear.fit_noisy(x, levels, key)
    assert ms.eigenvalues.shape == (3, 10)
    for j, s in enumerate(np.asarray(levels)):
        z = np.asarray(jax.random.normal(jax.random.fold_in(key, j), x.shape))
        xs = np.asarray(x) + s * z
        w, v = np.linalg.eigh(xs.T @ xs / len(xs))
        np.testing.assert_allclose(ms.eigenvalues[j], np.maximum(w[::-1] - s**2, 0), atol=1e-12)
        ov = np.abs(np.sum(np.asarray(ms.eigenvectors[j]) * v[:, ::-1], axis=0))
        np.testing.assert_allclose(ov, 1.0, atol=1e-9)
    # VP units: the same draws at ᾱ = 1/(1 + s²).
    vp = linear.fit_noisy(x, 1.0 / (1.0 + levels**2), key, process="vp")
    np.testing.assert_allclose(vp.eigenvalues, ms.eigenvalues, atol=1e-10)


def test_eigenvector_overlaps(key):
    m = linear.fit(_data(key))
    ov = linear.eigenvector_overlaps(m, m.eigenvectors)
    np.testing.assert_allclose(ov, np.eye(m.dim), atol=1e-12)
    q = np.linalg.qr(np.asarray(jax.random.normal(key, (m.dim, m.dim))))[0]
    full = linear.eigenvector_overlaps(m, q)
    np.testing.assert_allclose(full.sum(0), 1.0, atol=1e-12)  # orthonormal bases
    assert linear.eigenvector_overlaps(m, q[:, :3], k=5).shape == (5, 3)


CASES = [
    (sd.schedules.cosine(12), sd.samplers.DDIM()),
    (sd.schedules.cosine(9), sd.samplers.DDPM()),
    (sd.schedules.edm(10), sd.samplers.DDIM(0.5)),
    (sd.schedules.edm(7), sd.samplers.DDPM()),
]


@pytest.mark.parametrize("schedule,sampler", CASES)
def test_reverse_moments_shared_against_reference(key, schedule, sampler):
    """Shared model (engine path) and the per-level scan both equal ``reference.propagate``."""
    m = linear.fit(_data(key))
    ref_mean, ref_cov = reference.propagate(m.mean, m.covariance(), schedule, sampler.eta)
    got = linear.reverse_moments(m, schedule, sampler)
    np.testing.assert_allclose(got.mean, ref_mean, atol=1e-10)
    np.testing.assert_allclose(got.cov, ref_cov, atol=1e-10)
    stacked = jax.tree.map(lambda a: jnp.stack([a] * schedule.num_steps), m)
    got2 = linear.reverse_moments(stacked, schedule, sampler, directions=m.eigenvectors)
    np.testing.assert_allclose(got2.mean, ref_mean, atol=1e-10)
    np.testing.assert_allclose(got2.cov, ref_cov, atol=1e-10)
    for f in ("state_mean", "state_var", "x0_mean", "x0_var"):
        np.testing.assert_allclose(getattr(got2, f), getattr(got, f), atol=1e-10, err_msg=f)


def _np_propagate(models, schedule, eta):
    """Per-level models, straight from SPEC §3 in the schedule's units (NumPy loop)."""
    lv = np.asarray(schedule.levels, np.float64)
    d = models.dim
    proc = schedule.process
    mu, cov = np.zeros(d), (np.eye(d) if proc == "vp" else lv[0] ** 2 * np.eye(d))
    for k in range(len(lv)):
        nxt = lv[k + 1] if k + 1 < len(lv) else None
        wx, we, sk, alpha = reference.step_coefficients(proc, lv[k], nxt, eta)
        c0 = np.asarray(models.covariance()[k])
        m0 = np.asarray(models.mean[k])
        if proc == "vp":
            vinv = np.linalg.inv(lv[k] * c0 + (1 - lv[k]) * np.eye(d))
            a_mat, b_mat = np.sqrt(lv[k]) * c0 @ vinv, np.sqrt(1 - lv[k]) * vinv
        else:
            vinv = np.linalg.inv(c0 + lv[k] ** 2 * np.eye(d))
            a_mat, b_mat = c0 @ vinv, lv[k] * vinv
        g = wx * a_mat + we * b_mat
        c = wx * (m0 - alpha * a_mat @ m0) - we * alpha * b_mat @ m0
        mu, cov = g @ mu + c, g @ cov @ g.T + sk**2 * np.eye(d)
    return mu, cov


@pytest.mark.parametrize("schedule,sampler", CASES[:2] + CASES[3:])
def test_reverse_moments_per_level_against_numpy(key, schedule, sampler):
    x = _data(key, d=8)
    models = linear.fit_noisy(x, schedule.sigma, key, center=True)
    want = _np_propagate(models, schedule, sampler.eta)
    got = linear.reverse_moments(models, schedule, sampler)
    np.testing.assert_allclose(got.mean, want[0], atol=1e-10)
    np.testing.assert_allclose(got.cov, want[1], atol=1e-10)


def test_reverse_sample_equals_reference_sample(key):
    m = linear.fit(_data(key))
    sch, smp = sd.schedules.cosine(8), sd.samplers.DDPM()
    got = linear.reverse_sample(m, sch, smp, key, 64)
    want = reference.sample(m.mean, m.covariance(), sch, smp.eta, key, 64)
    np.testing.assert_allclose(got.samples, want, atol=1e-10)
    assert got.states.shape == (9, 64, m.dim) and got.x0.shape == (8, 64, m.dim)
    np.testing.assert_allclose(
        got.states[-1], np.asarray(want) @ np.asarray(m.eigenvectors), atol=1e-10
    )


def test_reverse_sample_per_level_monte_carlo(key):
    """Per-level models: sample moments of the projections against the exact propagation,
    within 5 standard errors (mean: √(v/n); variance: v·√(2/(n−1)))."""
    x = _data(key, d=6)
    sch, smp = sd.schedules.edm(6, process="vp"), sd.samplers.DDPM()
    models = linear.fit_noisy(x, sch.alpha_bar, key, process="vp", center=True)
    n = 20000
    p = jnp.eye(6)
    tr = linear.reverse_sample(models, sch, smp, jax.random.fold_in(key, 9), n, directions=p)
    ex = linear.reverse_moments(models, sch, smp, directions=p)
    for emp, mean, var in (
        (tr.states, ex.state_mean, ex.state_var),
        (tr.x0, ex.x0_mean, ex.x0_var),
    ):
        emp = np.asarray(emp)
        assert np.all(np.abs(emp.mean(1) - mean) <= 5 * np.sqrt(var / n) + 1e-12)
        assert np.all(np.abs(emp.var(1, ddof=1) - var) <= 5 * var * np.sqrt(2 / (n - 1)) + 1e-12)


def test_power_iteration(key):
    a = np.asarray(jax.random.normal(key, (7, 7)))
    mat = a @ a.T
    v0 = np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (3, 7)))
    v, proj = linear.power_iteration(mat, v0, 5)
    want = (np.linalg.matrix_power(mat, 5) @ v0.T).T
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(v, want, atol=1e-12)
    np.testing.assert_allclose(proj[-1], want, atol=1e-12)


# --- matrix-free singular vectors --------------------------------------------------------


def _toy_fn(x, w1, w2):
    return w2 @ jnp.tanh(w1 @ x)


def _check_against_dense(trip, jac, k, m):
    u, s, vt = np.linalg.svd(np.asarray(jac))
    # Subspace iteration with m vectors: the error of the i-th vector decays as
    # (s_{m+1}/s_i)^{2·iters}; the tests use enough iterations for that to be < 1e-12,
    # so what is left is float64 round-off, scaled by the conditioning 1/gap.
    gap = np.min(np.abs(np.diff(s[: k + 1]))) / s[0]
    tol = 1e-10 / gap
    np.testing.assert_allclose(trip.values, s[:k], rtol=tol)
    np.testing.assert_allclose(np.abs(np.sum(trip.right * vt[:k].T, 0)), 1.0, atol=tol)
    np.testing.assert_allclose(np.abs(np.sum(trip.left * u[:, :k], 0)), 1.0, atol=tol)
    assert (np.asarray(trip.residual) < tol).all()


def test_top_singular_vectors_against_dense_svd(key):
    d_in, d_out, k, over = 24, 18, 4, 4
    w1 = jax.random.normal(jax.random.fold_in(key, 1), (30, d_in)) / np.sqrt(d_in)
    w2 = jax.random.normal(jax.random.fold_in(key, 2), (d_out, 30)) * jnp.exp(
        -0.15 * jnp.arange(30)
    )
    x = jax.random.normal(jax.random.fold_in(key, 3), (d_in,))
    jac = jax.jacfwd(_toy_fn)(x, w1, w2)
    s = np.linalg.svd(np.asarray(jac), compute_uv=False)
    # Iterations for (s_{m+1}/s_k)^{2·iters} < 1e-13.
    iters = int(np.ceil(np.log(1e-13) / (2 * np.log(s[k + over] / s[k - 1]))))
    trip = linear.top_singular_vectors(
        _toy_fn, x, w1, w2, k=k, key=key, iters=iters, oversample=over
    )
    _check_against_dense(trip, jac, k, k + over)


class _TinyDenoiser(nnx.Module):
    def __init__(self, d, rngs):
        self.l1 = nnx.Linear(d + 1, 32, rngs=rngs)
        self.l2 = nnx.Linear(32, d, rngs=rngs)

    def __call__(self, x, s):
        h = jnp.concatenate([x, jnp.log(s)[None]])
        return x - s * self.l2(nnx.gelu(self.l1(h)))


def _nnx_apply(graphdef, x, state, s):
    return nnx.merge(graphdef, state)(x, s)


def test_top_singular_vectors_on_flax_module(key):
    d = 10
    model = _TinyDenoiser(d, nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    fn = functools.partial(_nnx_apply, graphdef)
    x = jax.random.normal(key, (d,))
    s = jnp.asarray(0.5)
    jac = jax.jacfwd(lambda v: fn(v, state, s))(x)
    trip = linear.top_singular_vectors(fn, x, state, s, k=3, key=key, iters=300, oversample=3)
    _check_against_dense(trip, jac, 3, 6)


def test_bad_inputs(key):
    m = linear.fit(_data(key))
    with pytest.raises(ValueError, match="samples"):
        linear.fit(jnp.ones((1, 3)))
    with pytest.raises(ValueError, match="typed PRNG key"):
        linear.fit_noisy(_data(key), 1.0, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="σ"):
        linear.fit_noisy(_data(key), -1.0, key)
    with pytest.raises(ValueError, match="leading axis"):
        stacked = jax.tree.map(lambda a: jnp.stack([a] * 3), m)
        linear.reverse_moments(stacked, sd.schedules.cosine(5), sd.samplers.DDIM())
    with pytest.raises(ValueError, match="directions"):
        linear.reverse_moments(m, sd.schedules.cosine(5), sd.samplers.DDIM(), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="k \\+ oversample"):
        linear.top_singular_vectors(
            _toy_fn, jnp.ones(3), jnp.ones((4, 3)), jnp.ones((2, 4)), k=2, key=key
        )
    with pytest.raises(ValueError, match="true_eigenvectors"):
        linear.eigenvector_overlaps(m, jnp.ones((3, 1)))
