"""sd.spectra against independent references: numpy eigh of np.cov, scipy's PSDs, and data
generated from a known circulant covariance."""

import numpy as np
import pytest
import scipy.signal

import specdiff as sd
from specdiff import spectra


def _rng(seed=0):
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- PCA


def test_pca_matches_eigh_of_np_cov_for_arrays_and_batches():
    rng = _rng()
    mix = rng.normal(size=(6, 6))
    x = rng.normal(size=(701, 2, 3)) @ np.eye(3) + 0.0
    x = (x.reshape(701, 6) @ mix).reshape(701, 2, 3) + 1e3  # large offset: streaming stability
    ref_w, ref_u = np.linalg.eigh(np.cov(x.reshape(701, 6).T))
    ref_w, ref_u = ref_w[::-1], ref_u[:, ::-1]
    for res in (
        spectra.pca(x, batch_size=64),
        spectra.pca(x, batch_size=10_000),
        spectra.pca(iter([x[:5], x[5:300], x[300:]])),
        spectra.pca(iter([x[:5], x[5:300], x[300:]]), batch_size=50),  # batches cut
    ):
        assert res.estimator == "pca" and res.count == 701 and res.sample_shape == (2, 3)
        np.testing.assert_allclose(res.eigenvalues, ref_w, rtol=1e-9)
        np.testing.assert_allclose(res.mean, x.reshape(701, 6).mean(0), rtol=1e-12)
        # Same eigenvectors up to sign.
        np.testing.assert_allclose(np.abs(res.eigenvectors.T @ ref_u), np.eye(6), atol=1e-7)


def test_pca_spectrum_mean_is_projection_and_float32_input_ok():
    rng = _rng(1)
    x = (rng.normal(size=(400, 5)) * [3, 2, 1, 0.5, 0.1] + [1, 2, 3, 4, 5]).astype(np.float32)
    res = spectra.pca(x, batch_size=33)
    spec = res.spectrum(name="toy")
    assert isinstance(spec, sd.Spectrum) and spec.name == "toy" and spec.dim == 5
    np.testing.assert_allclose(
        np.asarray(spec.mean), res.eigenvectors.T @ x.astype(np.float64).mean(0), rtol=1e-6
    )
    assert np.all(np.diff(res.eigenvalues) <= 0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((1, 3)), "at least 2 samples"),
        (np.zeros(5), "at least 2 dims"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "finite"),
        ([np.zeros((2, 3)), np.zeros((2, 4))], "sample shape"),
        (42, "iterable"),
    ],
)
def test_pca_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        spectra.pca(bad)


def test_from_covariance():
    rng = _rng(2)
    b = rng.normal(size=(4, 4))
    c = b @ b.T
    res = spectra.from_covariance(c, mean=np.ones(4))
    assert res.estimator == "covariance"
    np.testing.assert_allclose(res.eigenvalues, np.linalg.eigvalsh(c)[::-1], rtol=1e-10)
    with pytest.raises(ValueError, match="symmetric"):
        spectra.from_covariance(b)


# ----------------------------------------------------------------------------- Fourier


def _circulant_samples(psd, n_samples, rng):
    """Samples N(μ, C) with C = F diag(psd) Fᴴ real circulant (psd symmetric: psd[k] = psd[−k])."""
    n = len(psd)
    f = np.fft.fft(np.eye(n)) / np.sqrt(n)  # unitary DFT matrix
    c = np.real(f.conj().T @ np.diag(psd) @ f)
    w, u = np.linalg.eigh(c)
    root = (u * np.sqrt(np.clip(w, 0, None))) @ u.T
    return rng.normal(size=(n_samples, n)) @ root + 0.3, c


def _symmetric_psd(n):
    k = np.minimum(np.arange(n), n - np.arange(n))  # |frequency index|
    return 2.0 / (1.0 + k) ** 1.5


def test_pca_and_periodogram_agree_on_circulant_data():
    rng = _rng(3)
    psd = _symmetric_psd(16)
    x, c = _circulant_samples(psd, 20_000, rng)
    pc = spectra.pca(x)
    fo = spectra.fourier_1d(x, method="periodogram")
    assert fo.estimator == "periodogram" and pc.estimator == "pca"
    tol = 5 * np.sqrt(2 / 20_000)  # a few standard errors of a variance estimate
    np.testing.assert_allclose(np.sort(pc.eigenvalues), np.sort(psd), rtol=tol)
    np.testing.assert_allclose(fo.psd, psd, rtol=tol)
    np.testing.assert_allclose(pc.eigenvalues, fo.eigenvalues, rtol=tol)
    # Exactly: the periodogram is the diagonal of PCA's sample covariance in the DFT basis.
    f = np.fft.fft(np.eye(16)) / 4.0
    np.testing.assert_allclose(fo.psd, np.real(np.diag(f @ np.cov(x.T) @ f.conj().T)), rtol=1e-10)
    # Mean: same energy as PCA's Uᵀx̄ (= ‖x̄‖²), concentrated at DC (the mean is 0.3·1).
    m = np.asarray(fo.spectrum("circ").mean, np.float64)
    np.testing.assert_allclose(np.sum(m**2), np.sum(x.mean(0) ** 2), rtol=1e-6)
    np.testing.assert_allclose(np.sum(m**2), np.sum((pc.eigenvectors.T @ pc.mean) ** 2))
    np.testing.assert_allclose(fo.mean[0], 4 * 0.3, rtol=0.02)


def test_periodogram_and_welch_match_scipy():
    rng = _rng(4)
    x = rng.normal(size=(7, 300)).cumsum(axis=1) * 0.1
    xc = x - x.mean(0)
    _, ref = scipy.signal.periodogram(
        xc, fs=1.0, window="boxcar", detrend=False, return_onesided=False, scaling="density"
    )
    res = spectra.fourier_1d(x, method="periodogram")
    np.testing.assert_allclose(res.psd, ref.mean(0) * 7 / 6, rtol=1e-10)
    _, ref = scipy.signal.welch(
        xc, fs=1.0, window="hann", nperseg=64, noverlap=32, detrend=False,
        return_onesided=False, scaling="density",
    )  # fmt: skip
    res = spectra.fourier_1d(x, method="welch", segment_length=64)
    assert res.estimator == "welch" and res.psd.shape == (64,)
    np.testing.assert_allclose(res.psd, ref.mean(0) * 7 / 6, rtol=1e-10)
    # One long signal with a stationary (constant) mean.
    one = spectra.fourier_1d(x[0], method="welch", segment_length=32, center="constant")
    _, ref1 = scipy.signal.welch(
        x[0] - x[0].mean(), fs=1.0, nperseg=32, detrend=False, return_onesided=False
    )
    np.testing.assert_allclose(one.psd, ref1, rtol=1e-10)


def test_fourier_2d_gray_is_block_circulant_projection_of_pca_covariance():
    rng = _rng(5)
    x = rng.normal(size=(60, 4, 5)).cumsum(axis=2)
    res = spectra.fourier_2d(x)
    assert res.estimator == "fourier_2d" and res.psd.shape == (4, 5)
    f = np.kron(np.fft.fft(np.eye(4)) / 2.0, np.fft.fft(np.eye(5)) / np.sqrt(5))  # 2-D DFT
    diag = np.real(np.diag(f @ np.cov(x.reshape(60, 20).T) @ f.conj().T)).reshape(4, 5)
    np.testing.assert_allclose(res.psd, diag, rtol=1e-10)


def test_fourier_2d_colour_agrees_with_pca_on_block_circulant_data():
    rng = _rng(6)
    h, w, c, n = 4, 4, 3, 6000
    filt = rng.normal(size=(h, w, c, c)) * np.exp(-np.arange(h)[:, None, None, None])
    z = rng.normal(size=(n, h, w, c))
    # Circular convolution x_c = Σ_c' h_cc' ⊛ z_c': stationary, block-circulant covariance.
    hk = np.fft.fft2(filt, axes=(0, 1))  # (H, W, C, C)
    x = np.real(np.fft.ifft2(np.einsum("hwab,nhwb->nhwa", hk, np.fft.fft2(z, axes=(1, 2))),
                             axes=(1, 2)))  # fmt: skip
    true = np.linalg.eigvalsh(np.einsum("hwab,hwcb->hwac", hk, hk.conj()))  # Ĥ Ĥᴴ per k
    res = spectra.fourier_2d(x, colour=True)
    assert res.estimator == "fourier_2d_colour" and res.psd.shape == (h, w, c)
    assert res.channel_eigenvectors.shape == (h, w, c, c)
    tol = 6 * np.sqrt(2 / n)
    np.testing.assert_allclose(np.sort(res.psd.ravel()), np.sort(true.ravel()), rtol=tol)
    pc = spectra.pca(x)
    np.testing.assert_allclose(pc.eigenvalues, res.eigenvalues, rtol=tol)
    # Exactly: Ŝ_k = (f_k ⊗ I)ᴴ Ĉ (f_k ⊗ I) with PCA's sample covariance (channels last).
    cov = np.cov(x.reshape(n, -1).T)
    f2 = np.kron(np.fft.fft(np.eye(h)) / 2.0, np.fft.fft(np.eye(w)) / 2.0)
    big = np.kron(f2, np.eye(c))
    blocks = (big @ cov @ big.conj().T).reshape(h * w, c, h * w, c)
    exact = np.stack([np.linalg.eigvalsh(blocks[k, :, k, :]) for k in range(h * w)])
    np.testing.assert_allclose(
        np.sort(res.psd.reshape(h * w, c), axis=1), exact, rtol=1e-8, atol=1e-12
    )
    # Per-channel mode is a different (valid) estimator of the same data.
    assert spectra.fourier_2d(x).estimator == "fourier_2d"


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spectra.fourier_1d(np.zeros((3, 8)), method="bartlett"), "method"),
        (lambda: spectra.fourier_1d(np.zeros((1, 8))), "at least 2 signals"),
        (lambda: spectra.fourier_1d(np.zeros((3, 8)), "welch", segment_length=9), "segment"),
        (lambda: spectra.fourier_1d(np.full((3, 8), np.inf)), "finite"),
        (lambda: spectra.fourier_2d(np.zeros((3, 4, 4)), colour=True), "C >= 2"),
        (lambda: spectra.fourier_2d(np.zeros((3, 4))), "ndim"),
    ],
)
def test_fourier_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_ata_is_the_documented_construction():
    d, ell = 50, 0.1
    t = np.linspace(0.0, 1.0, d)
    a = np.exp(-(np.subtract.outer(t, t) ** 2) / (2 * ell**2))
    sigma = a.T @ a
    mu, cov = spectra.synthetic_ata_matrix()
    np.testing.assert_allclose(cov, sigma, rtol=1e-12)
    np.testing.assert_allclose(mu, 0.05)
    spec = spectra.synthetic_ata()
    lam = np.asarray(spec.eigenvalues, np.float64)
    assert spec.dim == 50 and np.all(lam >= 0) and np.all(np.diff(lam) <= 0)
    ref = np.sort(np.linalg.eigvalsh(sigma))[::-1]
    np.testing.assert_allclose(lam[:15], ref[:15], rtol=1e-6)
    np.testing.assert_allclose(lam.sum(), np.trace(sigma), rtol=1e-5)
    np.testing.assert_allclose(np.sum(np.asarray(spec.mean, np.float64) ** 2), d * 0.05**2)


def test_power_law_formula():
    spec = spectra.power_law(10, 1.5, scale=2.0, mean=0.1)
    np.testing.assert_allclose(
        np.asarray(spec.eigenvalues, np.float64), 2.0 / np.arange(1, 11) ** 1.5, rtol=1e-6
    )
    np.testing.assert_allclose(np.asarray(spec.mean, np.float64), 0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="scale"):
        spectra.power_law(10, 1.0, scale=0.0)
