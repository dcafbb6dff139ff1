"""Fourier spectra of shift-invariant data: 1-D periodogram and Welch, 2-D per channel and
per-frequency colour (SPEC §1).

Holds ``FourierResult``, ``fourier_1d`` and ``fourier_2d`` (re-exported by ``spectra``,
whose docstring gives the normalisation they share with PCA): with the unitary DFT f_k the
eigenvalue at frequency k is P_k = Σ_j |DFT(x_j − x̄)_k|² / (n·D) = f_kᴴ Ĉ f_k, and the mean
component is m_k = |f_kᴴ x̄|.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from specdiff.core.checks import check_choice, check_finite
from specdiff.core.spectrum import Spectrum

__all__ = ["FourierResult", "fourier_1d", "fourier_2d", "CENTERS", "WINDOWS", "METHODS"]


@dataclasses.dataclass(frozen=True)
class FourierResult:
    """A Fourier (shift-invariant) spectrum, laid out by frequency.

    Attributes:
      estimator: ``"periodogram"``, ``"welch"``, ``"fourier_2d"`` (per channel) or
        ``"fourier_2d_colour"`` (per-frequency 3×3 channel covariance).
      psd: eigenvalues by frequency: (n,) in 1-D (``numpy.fft.fftfreq`` order); (H, W) or
        (H, W, C) in 2-D per channel; (H, W, C) descending per frequency for colour.
      mean: m ≥ 0 in the same layout (see the module docstring).
      frequencies: (n,) cycles per sample in 1-D; a pair ((H,), (W,)) in 2-D.
      count: number of signals/images N.
      channel_eigenvectors: colour only, (H, W, C, C): column i of [k] belongs to psd[k, i].
    """

    estimator: str
    psd: np.ndarray
    mean: np.ndarray
    frequencies: object
    count: int
    channel_eigenvectors: np.ndarray | None = None

    @property
    def eigenvalues(self) -> np.ndarray:
        """All eigenvalues, flattened and sorted descending."""
        return np.sort(self.psd.ravel())[::-1]

    def spectrum(self, name: str | None = None) -> Spectrum:
        """``Spectrum`` of the flattened eigenvalues (descending) and their mean components."""
        lam, m = self.psd.ravel(), self.mean.ravel()
        order = np.argsort(-lam, kind="stable")
        return Spectrum(lam[order], m[order], name=name)


CENTERS = ("sample_mean", "constant")
WINDOWS = ("hann", "boxcar")
METHODS = ("periodogram", "welch")


def _as_real(name: str, x, min_ndim: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < min_ndim or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"{name} must be a real array with ndim >= {min_ndim}, got {x.shape}")
    return x


def _window(kind: str, length: int) -> np.ndarray:
    if kind == "boxcar":
        return np.ones(length)
    # Periodic Hann, as scipy.signal.get_window("hann", L).
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)


def _center(x: np.ndarray, center: str, axes_positions: tuple[int, ...]):
    """(centred data, mean image/vector, variance divisor) for the chosen centring."""
    n = x.shape[0]
    if center == "sample_mean":
        if n < 2:
            raise ValueError("center='sample_mean' needs at least 2 signals; use 'constant'")
        mu = x.mean(axis=0)
        return x - mu, mu, n - 1
    # constant (stationary) mean: one number per channel, over samples and positions.
    mu = x.mean(axis=(0, *axes_positions), keepdims=True)[0]
    return x - mu, np.broadcast_to(mu, x.shape[1:]), n


def fourier_1d(
    signals,
    method: str = "periodogram",
    segment_length: int | None = None,
    window: str = "hann",
    center: str = "sample_mean",
    batch_size: int = 4096,
) -> FourierResult:
    """Power spectral density of stationary 1-D signals (circulant Σ0).

    Periodogram (d = n): P_k = Σ_j |FFT(x_j − x̄)_k|² / (n·D).
    Welch (d = L): segments of length L with 50% overlap (hop L − ⌊L/2⌋, as scipy's
    default ``noverlap``) and window w: P_k = Σ_{j,s} |FFT(w·seg_{j,s})_k|² / (Σw²·S·D),
    S segments per signal; equal to ``scipy.signal.welch(..., fs=1, detrend=False,
    return_onesided=False, scaling="density")`` averaged over signals, times N/D.

    ``center="sample_mean"``: x̄ is the per-position mean over the N signals and D = N − 1
    (so the periodogram equals diag(FᴴĈF) of PCA's Ĉ exactly); ``"constant"``: x̄ is the
    grand mean (a stationary mean, works for N = 1) and D = N.

    Args:
      signals: (N, n) real signals, or (n,) for one.
      method: ``"periodogram"`` or ``"welch"``.
      segment_length: Welch segment length L (default min(n, 256)).
      window: Welch window, ``"hann"`` (periodic) or ``"boxcar"``.
      center: ``"sample_mean"`` or ``"constant"``.
      batch_size: signals per FFT batch (float64 accumulators).

    Returns:
      ``FourierResult`` with ``estimator=method`` and psd of shape (n,) or (L,).
    """
    check_choice("method", method, METHODS)
    check_choice("center", center, CENTERS)
    check_choice("window", window, WINDOWS)
    x = _signals(signals)
    x, mu, denom = _center(x, center, (1,))
    if method == "periodogram":
        psd, mean, freqs = _periodogram(x, mu, denom, batch_size)
    else:
        seg = _segment_length(segment_length, x.shape[1])
        psd, mean, freqs = _welch(x, mu, denom, seg, window, batch_size)
    return FourierResult(method, psd, mean, freqs, int(x.shape[0]))


def _signals(signals) -> np.ndarray:
    """(N, n) float64 finite signals from (N, n) or one (n,)."""
    x = _as_real("signals", signals, 1)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"signals must have shape (N, n) or (n,), got {x.shape}")
    x = x.astype(np.float64)
    check_finite("signals", x)
    return x


def _segment_length(segment_length, n: int) -> int:
    seg = min(n, 256) if segment_length is None else int(segment_length)
    if not 2 <= seg <= n:
        raise ValueError(f"segment_length must be in [2, {n}], got {segment_length!r}")
    return seg


def _periodogram(x, mu, denom, batch_size):
    """(psd, mean, frequencies): P_k = Σ_j |FFT(x_j)_k|² / (n·D), m_k = |FFT(x̄)_k| / √n."""
    n = x.shape[1]
    acc = np.zeros(n)
    for i in range(0, x.shape[0], batch_size):
        acc += (np.abs(np.fft.fft(x[i : i + batch_size], axis=1)) ** 2).sum(0)
    psd = acc / (n * denom)
    mean = np.abs(np.fft.fft(mu)) / np.sqrt(n)
    return psd, mean, np.fft.fftfreq(n)


def _welch(x, mu, denom, seg, window, batch_size):
    """(psd, mean, frequencies): P_k = Σ_{j,s} |FFT(w·seg_{j,s})_k|² / (Σw²·S·D), segments
    of length L = ``seg`` with hop L − ⌊L/2⌋; the stationary mean is a DC component only."""
    n = x.shape[1]
    hop = seg - seg // 2
    starts = np.arange(0, n - seg + 1, hop)
    w = _window(window, seg)
    acc = np.zeros(seg)
    for i in range(0, x.shape[0], batch_size):
        segs = np.stack([x[i : i + batch_size, s : s + seg] for s in starts], 1)  # (b, S, L)
        acc += (np.abs(np.fft.fft(segs * w, axis=-1)) ** 2).sum((0, 1))
    psd = acc / ((w**2).sum() * len(starts) * denom)
    mean = np.zeros(seg)
    mean[0] = abs(float(np.mean(mu))) * np.sqrt(seg)
    return psd, mean, np.fft.fftfreq(seg)


def fourier_2d(
    images,
    colour: bool = False,
    center: str = "sample_mean",
    batch_size: int = 1024,
) -> FourierResult:
    """2-D Fourier spectrum of shift-invariant images (block-circulant Σ0).

    Per channel (``colour=False``): P_{k,c} = Σ_j |FFT2(x_jc − x̄_c)_k|² / (H·W·D), d = H·W·C
    eigenvalues (channels treated as independent).
    Colour (``colour=True``, C ≥ 2 channels): the per-frequency C×C cross-spectral matrix
    Ŝ_k = Σ_j X_j(k) X_j(k)ᴴ / (H·W·D), X_j(k) the C-vector of FFT2 coefficients, is
    Hermitian and is eigen-decomposed per frequency; its eigenvalues (descending) are the
    d = H·W·C eigenvalues. Ŝ_k = (f_k ⊗ I)ᴴ Ĉ (f_k ⊗ I) exactly with PCA's Ĉ over all
    pixels (channels last). D and x̄ as in ``fourier_1d``.

    Args:
      images: (N, H, W) or (N, H, W, C), channels last.
      colour: use the per-frequency channel covariance (needs C ≥ 2).
      center: ``"sample_mean"`` or ``"constant"`` (per-channel grand mean).
      batch_size: images per FFT batch (float64/complex128 accumulators).

    Returns:
      ``FourierResult`` with ``estimator`` ``"fourier_2d"`` or ``"fourier_2d_colour"``.
    """
    check_choice("center", center, CENTERS)
    x, gray = _images(images, colour)
    x, mu, denom = _center(x, center, (1, 2))
    n_img, h, w, c = x.shape
    freqs = (np.fft.fftfreq(h), np.fft.fftfreq(w))
    m_hat = np.fft.fft2(mu, axes=(0, 1)) / np.sqrt(h * w)  # (H, W, C) unitary DFT of the mean
    if colour:
        ev, mean, vec = _colour_spectrum(x, denom, m_hat, batch_size)
        return FourierResult("fourier_2d_colour", ev, mean, freqs, n_img, vec)
    psd, mean = _channel_spectrum(x, denom, m_hat, batch_size)
    if gray:
        psd, mean = psd[..., 0], mean[..., 0]
    return FourierResult("fourier_2d", psd, mean, freqs, n_img)


def _images(images, colour: bool):
    """((N, H, W, C) float64 finite images, whether they came without a channel axis)."""
    x = _as_real("images", images, 3)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    gray = x.ndim == 3
    x = x[..., None] if gray else x
    if colour and x.shape[-1] < 2:
        raise ValueError(f"colour=True needs images with C >= 2 channels, got shape {x.shape}")
    x = x.astype(np.float64)
    check_finite("images", x)
    return x, gray


def _channel_spectrum(x, denom, m_hat, batch_size):
    """(psd (H, W, C), mean): channels as independent, P_{k,c} = Σ_j |FFT2(x_jc)_k|² / (H·W·D)."""
    n_img, h, w, c = x.shape
    acc = np.zeros((h, w, c))
    for i in range(0, n_img, batch_size):
        acc += (np.abs(np.fft.fft2(x[i : i + batch_size], axes=(1, 2))) ** 2).sum(0)
    return acc / (h * w * denom), np.abs(m_hat)


def _colour_spectrum(x, denom, m_hat, batch_size):
    """(eigenvalues (H, W, C) descending, mean, eigenvectors (H, W, C, C)) of the Hermitian
    per-frequency cross-spectral matrices Ŝ_k = Σ_j X_j(k) X_j(k)ᴴ / (H·W·D)."""
    n_img, h, w, c = x.shape
    acc = np.zeros((h, w, c, c), dtype=np.complex128)
    for i in range(0, n_img, batch_size):
        f = np.fft.fft2(x[i : i + batch_size], axes=(1, 2))
        acc += np.einsum("nhwa,nhwb->hwab", f, f.conj())
    cross = acc / (h * w * denom)
    cross = (cross + np.conj(np.swapaxes(cross, -1, -2))) / 2
    ev, vec = np.linalg.eigh(cross)  # ascending per frequency
    ev, vec = np.clip(ev[..., ::-1], 0.0, None), vec[..., ::-1]
    mean = np.abs(np.einsum("hwab,hwa->hwb", vec.conj(), m_hat))
    return ev, mean, vec
