"""Spiked-covariance theory: known limits, inverses, broadcasting, and one simulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chi2

import specdiff.linear.spiked as spiked
from specdiff import linear


def test_known_limits():
    gam = jnp.array([0.1, 0.5, 1.0, 2.0])
    ell = 1.0
    # No noise: the rank-one spike is found exactly, top eigenvalue ℓ.
    np.testing.assert_array_equal(spiked.overlap(0.0, ell, gam), 1.0)
    np.testing.assert_allclose(spiked.top_eigenvalue(0.0, ell, gam), ell, rtol=1e-15)
    # No spike, or noise above the BBP threshold s² > ℓ/√γ: overlap 0, top eigenvalue at
    # the Marchenko–Pastur edge s²(1 + √γ)².
    np.testing.assert_array_equal(spiked.overlap(1.0, 0.0, gam), 0.0)
    s_above = jnp.sqrt(1.01 * ell / jnp.sqrt(gam))
    np.testing.assert_array_equal(spiked.overlap(s_above, ell, gam), 0.0)
    np.testing.assert_allclose(
        spiked.top_eigenvalue(s_above, ell, gam), s_above**2 * (1 + jnp.sqrt(gam)) ** 2
    )
    # Continuity at the threshold: overlap → 0 and the spike eigenvalue meets the bulk edge.
    s_c = jnp.sqrt(ell / jnp.sqrt(gam)) * (1 - 1e-9)
    np.testing.assert_allclose(spiked.overlap(s_c, ell, gam), 0.0, atol=1e-8)
    np.testing.assert_allclose(
        spiked.top_eigenvalue(s_c, ell, gam), s_c**2 * (1 + jnp.sqrt(gam)) ** 2, rtol=1e-8
    )
    # γ → 0 (infinite data): the overlap is 1 at any finite noise level.
    np.testing.assert_allclose(spiked.overlap(3.0, ell, 1e-12), 1.0, atol=1e-10)


def test_overlap_matches_beta_form_and_background():
    s = jnp.linspace(0.0, 2.0, 9)[:, None]
    gam = jnp.array([0.25, 1.0])[None, :]
    got = spiked.overlap(s, 2.0, gam, background=0.3)
    want = spiked.overlap_from_beta(2.0 / (s**2 + 0.3), gam)
    assert got.shape == (9, 2)
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # Above threshold the formula is (1 − γ/β²)/(1 + γ/β) written out.
    b = 2.0 / (s**2 + 0.3)
    formula = (1 - gam / b**2) / (1 + gam / b)
    np.testing.assert_allclose(got, jnp.where(b > jnp.sqrt(gam), formula, 0.0), rtol=1e-14)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 1.0, 4.0])
def test_emergence_noise_var_inverts_overlap(gamma):
    ell = jnp.array([0.5, 1.0, 3.0])
    assert np.allclose(spiked.emergence_noise_var(ell, gamma), ell / np.sqrt(gamma))
    for c in [0.1, 0.5, 0.9]:
        s2 = spiked.emergence_noise_var(ell, gamma, target=c)
        np.testing.assert_allclose(spiked.overlap(jnp.sqrt(s2), ell, gamma), c, rtol=1e-10)
        # Monotone: below the emergence level the overlap exceeds the target.
        assert (spiked.overlap(jnp.sqrt(0.9 * s2), ell, gamma) > c).all()


def test_emergence_step():
    sig = jnp.array([4.0, 2.0, 1.0, 0.5])
    np.testing.assert_array_equal(
        spiked.emergence_step(sig, jnp.array([20.0, 4.0, 3.0, 0.1])), [0, 1, 2, 4]
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="gamma"):
        spiked.overlap(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="noise"):
        spiked.overlap(-1.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="ell"):
        spiked.top_eigenvalue(1.0, jnp.array([1.0, -1.0]), 0.5)
    with pytest.raises(ValueError, match="target"):
        spiked.emergence_noise_var(1.0, 0.5, target=1.0)
    with pytest.raises(ValueError, match="finite"):
        spiked.overlap(jnp.nan, 1.0, 0.5)


def test_simulation_matches_theory():
    """Overlap and top eigenvalue of N noisy samples against the d, N → ∞ limits.

    d = 200, γ = 1/2, β = 2√γ (well above threshold, where fluctuations are Gaussian of
    order N^{-1/2} and the finite-size bias is O(1/N) ≈ 0.002, far below the tolerance).
    Tolerances: 4 standard errors of the mean over M seeds; for the top eigenvalue the
    standard deviation is the theoretical one (Paul 2007), for the overlap the seeds'
    sample standard deviation.
    """
    d, gamma, ell, M = 200, 0.5, 1.0, 24
    n = int(d / gamma)
    s = float(np.sqrt(ell / (2 * np.sqrt(gamma))))  # β = ℓ/s² = 2√γ
    u = jnp.zeros(d).at[0].set(1.0)
    key = jax.random.key(7)
    ov, top, ell_hat = [], [], []
    for m in range(M):
        km = jax.random.fold_in(key, m)
        g = jax.random.normal(jax.random.fold_in(km, 0), (n, 1))
        model = linear.fit_noisy(np.sqrt(ell) * g * u, s, jax.random.fold_in(km, 1), center=False)
        ov.append(float(linear.eigenvector_overlaps(model, u[:, None])[0, 0]))
        top.append(float(model.eigenvalues[0]) + s**2)
        shrunk = linear.fit_noisy(
            np.sqrt(ell) * g * u, s, jax.random.fold_in(km, 1), center=False, shrinkage="spiked"
        )
        ell_hat.append(float(shrunk.eigenvalues[0]))
    ov, top = np.array(ov), np.array(top)
    th_ov = float(spiked.overlap(s, ell, gamma))
    th_top = float(spiked.top_eigenvalue(s, ell, gamma))
    se_ov = ov.std(ddof=1) / np.sqrt(M)
    se_top = float(spiked.top_eigenvalue_std(s, ell, gamma, n)) / np.sqrt(M)
    assert abs(ov.mean() - th_ov) < 4 * se_ov, (ov.mean(), th_ov, se_ov)
    assert abs(top.mean() - th_top) < 4 * se_top, (top.mean(), th_top, se_top)
    # "spiked" shrinkage inverts the top-eigenvalue map: it recovers ℓ. By the delta method
    # its standard error is SE(λ̂_top)/|dλ_top/dℓ|, dλ_top/dℓ = 1 − γ s⁴/ℓ² (from
    # (s² + ℓ)(1 + γ s²/ℓ)).
    slope = 1 - gamma * s**4 / ell**2
    assert abs(np.mean(ell_hat) - ell) < 4 * se_top / slope, (np.mean(ell_hat), ell)
    # The measured spread agrees with the asymptotic standard deviation: (M−1)·ratio² is
    # χ² with M−1 degrees of freedom; two-sided bounds at probability 1e-4.
    ratio2 = top.var(ddof=1) / float(spiked.top_eigenvalue_std(s, ell, gamma, n)) ** 2
    lo, hi = chi2.ppf([5e-5, 1 - 5e-5], M - 1) / (M - 1)
    assert lo < ratio2 < hi, (ratio2, lo, hi)
