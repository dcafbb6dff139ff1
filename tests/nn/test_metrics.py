"""Fréchet distance, KID and feature statistics against closed forms and direct formulas."""

import jax
import numpy as np
import pytest

from specdiff import metrics, reference


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_fd_closed_form_for_commuting_gaussians():
    """Diagonal covariances: FD = |Δμ|² + Σ(√a_i − √b_i)²."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance((m1, np.diag(a)), (m2, np.diag(b)))
    assert got == pytest.approx(want, rel=1e-10)


def test_fd_general_covariances_matches_w2_reference():
    """Non-commuting covariances: equals the squared W2 of specdiff.reference, which uses the
    other ordering (C2^½ C1 C2^½)^½; FD is symmetric and zero for identical inputs."""
    rng = np.random.default_rng(1)
    c1, c2 = _random_cov(rng, 6), _random_cov(rng, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    fd = metrics.frechet_distance((m1, c1), (m2, c2))
    assert fd == pytest.approx(reference.w2_gaussians(m1, c1, m2, c2) ** 2, rel=1e-9)
    assert metrics.frechet_distance((m2, c2), (m1, c1)) == pytest.approx(fd, rel=1e-9)
    assert metrics.frechet_distance((m1, c1), (m1, c1)) == pytest.approx(0.0, abs=1e-9)


def test_fd_singular_covariance_is_finite_and_exact():
    """Rank-deficient covariances (fewer samples than dimensions) give a real, exact value."""
    u = np.linalg.qr(np.random.default_rng(2).normal(size=(4, 4)))[0]
    c1 = u @ np.diag([2.0, 1.0, 0.0, 0.0]) @ u.T
    c2 = u @ np.diag([0.5, 0.0, 3.0, 0.0]) @ u.T
    want = (np.sqrt(2) - np.sqrt(0.5)) ** 2 + 1.0 + 3.0
    assert metrics.frechet_distance((np.zeros(4), c1), (np.zeros(4), c2)) == pytest.approx(want)


def test_fd_from_samples_converges_to_population_value():
    rng = np.random.default_rng(3)
    c = _random_cov(rng, 3)
    x = rng.multivariate_normal(np.ones(3), c, size=200_000)
    fd = metrics.frechet_distance(x, (np.ones(3), c))
    assert fd < 1e-3  # O(d/n) estimation bias


def test_feature_stats_npz_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    st = metrics.feature_stats(rng.normal(size=(50, 3)))
    metrics.save_feature_stats(tmp_path / "s.npz", st)
    back = metrics.load_feature_stats(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.mu, st.mu)
    np.testing.assert_array_equal(back.sigma, st.sigma)
    assert back.n == 50
    assert metrics.frechet_distance(tmp_path / "s.npz", st) == pytest.approx(0.0, abs=1e-12)
    # the usual external format: only mu and sigma
    np.savez(tmp_path / "ext.npz", mu=st.mu, sigma=st.sigma)
    assert metrics.load_feature_stats(tmp_path / "ext.npz").n is None


def test_feature_stats_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        metrics.load_feature_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", mean=np.zeros(2))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        metrics.load_feature_stats(tmp_path / "bad.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(2), sigma=np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        metrics.load_feature_stats(tmp_path / "shape.npz")
    with pytest.raises(ValueError, match="NaN"):
        metrics.frechet_distance(np.full((4, 2), np.nan), np.zeros((4, 2)))


def test_mmd_estimator_matches_direct_double_sum():
    """The vectorised unbiased MMD² equals the textbook double sum over i ≠ j."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(6, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    syy = sum(k(y[i], y[j]) for i in range(6) for j in range(6) if i != j) / (6 * 5)
    sxy = sum(k(x[i], y[j]) for i in range(7) for j in range(6)) / (7 * 6)
    assert metrics._mmd2_unbiased(x, y) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-12)
    # with a subset as large as the sets, KID is that one estimate (std 0 after permutation)
    m, s = metrics.kid(x[:6], y, jax.random.key(0), num_subsets=3, subset_size=6)
    assert m == pytest.approx(metrics._mmd2_unbiased(x[:6], y), rel=1e-10)
    assert s == pytest.approx(0.0, abs=1e-12)


def test_kid_zero_for_identical_distributions_and_positive_otherwise():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    m, s = metrics.kid(x, y, jax.random.key(1), num_subsets=30, subset_size=200)
    assert abs(m) < 3 * s / np.sqrt(30) * 3  # within its standard error (subsets overlap: ×3)
    z = rng.normal(size=(2000, 8)) * 1.3 + 0.2
    m2, s2 = metrics.kid(x, z, jax.random.key(1), num_subsets=30, subset_size=200)
    assert m2 > 5 * s2 / np.sqrt(30)


def test_classifier_smoke_and_round_trip(tmp_path):
    """Training on a separable toy problem reaches high accuracy; save/load keeps features."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 10, 400).astype(np.int32)
    x = (
        rng.normal(size=(400, 8, 8)) * 0.3 + (np.arange(64).reshape(8, 8) % 10 == y[:, None, None])
    ).astype(np.float32)
    clf, info = metrics.train_classifier(
        "digits", jax.random.key(0), steps=150, data=((x[:300], y[:300]), (x[300:], y[300:]))
    )
    assert info["test_accuracy"] > 0.9
    metrics.save_classifier(clf, tmp_path / "clf", metadata=info)
    back = metrics.load_classifier(tmp_path / "clf")
    np.testing.assert_allclose(
        metrics.extract_features(back, x[:5]), metrics.extract_features(clf, x[:5]), rtol=1e-6
    )
    with pytest.raises(ValueError, match="no classifier checkpoint"):
        metrics.load_classifier(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["digits", "patches_gray"])
def test_shipped_classifiers(name):
    import json

    clf = metrics.load_classifier(name)
    rec = json.loads((metrics.CLASSIFIER_DIR / name / "training.json").read_text())
    assert rec["test_accuracy"] > (0.9 if name == "digits" else 0.5)
    f = metrics.extract_features(clf, np.zeros((2, *clf.config.shape), np.float32))
    assert f.shape == (2, clf.config.features) and np.isfinite(f).all()
