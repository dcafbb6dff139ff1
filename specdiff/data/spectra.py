"""Estimating data spectra: PCA, shift-invariant Fourier spectra, synthetic spectra (SPEC §1).

Every estimator returns a frozen result that says which ``estimator`` produced it and turns
into a ``specdiff.Spectrum`` with ``.spectrum(name=...)`` (eigenvalues descending, the mean
in the same eigenbasis).

Normalisation, shared by all estimators so that they agree on shift-invariant data:

- PCA: the unbiased sample covariance Ĉ = Σ_j (x_j − x̄)(x_j − x̄)ᵀ / (N − 1), eigenvalues
  of Ĉ.
- Fourier: with the unitary DFT f_k (‖f_k‖ = 1), the eigenvalue at frequency k is
  P_k = Σ_j |DFT(x_j − x̄)_k|² / (n·(N − 1)) = f_kᴴ Ĉ f_k, where DFT is ``numpy.fft.fft``
  (unnormalised) and n the number of positions. For circulant Σ0 (stationary signals with a
  circular boundary) these are exactly Σ0's eigenvalues, the power spectral density at the
  DFT frequencies with sampling rate 1 (``scipy.signal.periodogram(..., fs=1,
  return_onesided=False)``); for any data they are the diagonal of Ĉ in the Fourier basis.

The mean in the eigenbasis: PCA gives Uᵀx̄. For Fourier spectra an eigenvalue at k and
its mirror −k (equal for real data) share a 2-D real eigenspace; the result reports
m_k = |f_kᴴ x̄|, which has the right energy in each such eigenspace. The divergences depend
on the mean only through m_k² (SPEC §4–5: Δ = m·(1 − H·√a_0)), so this is exact for them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from specdiff.core.checks import check_choice, check_finite, check_int
from specdiff.core.spectrum import Spectrum

__all__ = [
    "PCAResult",
    "FourierResult",
    "pca",
    "from_covariance",
    "fourier_1d",
    "fourier_2d",
    "synthetic_ata",
    "synthetic_ata_matrix",
    "power_law",
]


# --------------------------------------------------------------------------- PCA


@dataclasses.dataclass(frozen=True)
class PCAResult:
    """Eigen-decomposition of a covariance.

    Attributes:
      eigenvalues: (d,) descending, ≥ 0 (round-off negatives from ``eigh`` clipped to 0).
      eigenvectors: (d, d), column i belongs to eigenvalue i.
      mean: (d,) data mean x̄ in the original (flattened) coordinates.
      count: number of samples N (0 when built from a given covariance).
      sample_shape: the shape of one sample before flattening.
      estimator: ``"pca"`` (sample covariance) or ``"covariance"`` (a given Σ0).
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    mean: np.ndarray
    count: int
    sample_shape: tuple[int, ...]
    estimator: str = "pca"

    @property
    def dim(self) -> int:
        return int(self.eigenvalues.shape[0])

    def spectrum(self, name: str | None = None) -> Spectrum:
        """``Spectrum(eigenvalues, mean=Uᵀx̄, name)``."""
        return Spectrum(self.eigenvalues, self.eigenvectors.T @ self.mean, name=name)


def _eigh_descending(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, u = np.linalg.eigh((cov + cov.T) / 2)
    w, u = w[::-1], u[:, ::-1]
    # Deterministic signs: the largest-magnitude entry of each eigenvector is positive.
    idx = np.argmax(np.abs(u), axis=0)
    u = u * np.where(u[idx, np.arange(u.shape[1])] < 0, -1.0, 1.0)
    return np.clip(w, 0.0, None), np.ascontiguousarray(u)


def _batches(samples, batch_size: int):
    if hasattr(samples, "shape") and hasattr(samples, "__getitem__"):
        n = int(samples.shape[0]) if len(samples.shape) else 0
        if len(samples.shape) < 2:
            raise ValueError(
                f"samples must have shape (N, ...) with at least 2 dims, got {samples.shape}"
            )
        for i in range(0, n, batch_size):
            yield samples[i : i + batch_size]
    elif isinstance(samples, Iterable):
        for batch in samples:  # large batches are cut to batch_size rows too
            b = np.asarray(batch)
            if b.ndim < 2 or b.shape[0] <= batch_size:
                yield b
            else:
                yield from (b[i : i + batch_size] for i in range(0, b.shape[0], batch_size))
    else:
        raise ValueError(
            f"samples must be an array (N, ...) or an iterable of batches, got "
            f"{type(samples).__name__}"
        )


def pca(samples, batch_size: int = 1024) -> PCAResult:
    """PCA by streaming covariance accumulation in float64.

    Batches are merged with the pairwise update of Chan et al. (count n, mean x̄, scatter M):
    M = M_a + M_b + δδᵀ·n_a·n_b/n with δ = x̄_b − x̄_a, which stays accurate when the mean
    is large against the spread. Memory: one d×d float64 scatter (75 MB at d = 3072) plus
    one batch; 50,000 CIFAR images are never held in float64 at once. Ĉ = M/(N − 1).

    Args:
      samples: an array (N, ...) (sliced into batches of ``batch_size``) or an iterable of
        arrays (b, ...) with the same sample shape. Each sample is flattened.
      batch_size: rows per accumulation step (larger incoming batches are cut).

    Returns:
      ``PCAResult`` with ``estimator="pca"``.

    Example:
      >>> import numpy as np, specdiff.spectra as sp
      >>> x = np.random.default_rng(0).normal(size=(500, 4)) * [3.0, 2.0, 1.0, 0.5]
      >>> res = sp.pca(x, batch_size=128)
      >>> res.eigenvalues.shape, res.estimator
      ((4,), 'pca')
    """
    check_int("batch_size", batch_size)
    n, mean, scatter, shape = 0, None, None, None
    for k, batch in enumerate(_batches(samples, batch_size)):
        b = np.asarray(batch)
        if b.ndim < 2 or not np.issubdtype(b.dtype, np.number) or np.iscomplexobj(b):
            raise ValueError(
                f"batch {k} must be a real array (b, ...) with ndim >= 2, got shape {b.shape} "
                f"dtype {b.dtype}"
            )
        if shape is None:
            shape = b.shape[1:]
        elif b.shape[1:] != shape:
            raise ValueError(f"batch {k} has sample shape {b.shape[1:]}, earlier ones {shape}")
        if b.shape[0] == 0:
            continue
        b = b.reshape(b.shape[0], -1).astype(np.float64)
        check_finite(f"samples (batch {k})", b)
        nb = b.shape[0]
        mb = b.mean(axis=0)
        c = b - mb
        sb = c.T @ c
        if mean is None:
            n, mean, scatter = nb, mb, sb
            continue
        delta = mb - mean
        tot = n + nb
        scatter += sb + np.outer(delta, delta) * (n * nb / tot)
        mean = mean + delta * (nb / tot)
        n = tot
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {n}")
    w, u = _eigh_descending(scatter / (n - 1))
    return PCAResult(w, u, mean, n, tuple(int(s) for s in shape), "pca")


def from_covariance(cov, mean=None) -> PCAResult:
    """Eigen-decomposition of a given covariance Σ0 (d, d) and mean μ0.

    Returns a ``PCAResult`` with ``estimator="covariance"`` and ``count=0``.
    """
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"cov must be a square (d, d) matrix, got shape {c.shape}")
    check_finite("cov", c)
    if not np.allclose(c, c.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(c).max())):
        raise ValueError("cov must be symmetric")
    mu = np.zeros(c.shape[0]) if mean is None else np.asarray(mean, dtype=np.float64)
    if mu.shape != (c.shape[0],):
        raise ValueError(f"mean must have shape ({c.shape[0]},), got {mu.shape}")
    w, u = _eigh_descending(c)
    return PCAResult(w, u, mu, 0, (c.shape[0],), "covariance")


# --------------------------------------------------------------------------- Fourier


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
    x = _as_real("signals", signals, 1)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"signals must have shape (N, n) or (n,), got {x.shape}")
    x = x.astype(np.float64)
    check_finite("signals", x)
    x, mu, denom = _center(x, center, (1,))
    n = x.shape[1]
    if method == "periodogram":
        acc = np.zeros(n)
        for i in range(0, x.shape[0], batch_size):
            acc += (np.abs(np.fft.fft(x[i : i + batch_size], axis=1)) ** 2).sum(0)
        psd = acc / (n * denom)
        mean = np.abs(np.fft.fft(mu)) / np.sqrt(n)
        return FourierResult(method, psd, mean, np.fft.fftfreq(n), int(x.shape[0]))
    seg = min(n, 256) if segment_length is None else int(segment_length)
    if not 2 <= seg <= n:
        raise ValueError(f"segment_length must be in [2, {n}], got {segment_length!r}")
    hop = seg - seg // 2
    starts = np.arange(0, n - seg + 1, hop)
    w = _window(window, seg)
    acc = np.zeros(seg)
    for i in range(0, x.shape[0], batch_size):
        segs = np.stack([x[i : i + batch_size, s : s + seg] for s in starts], 1)  # (b, S, L)
        acc += (np.abs(np.fft.fft(segs * w, axis=-1)) ** 2).sum((0, 1))
    psd = acc / ((w**2).sum() * len(starts) * denom)
    mean = np.zeros(seg)
    mean[0] = abs(float(np.mean(mu))) * np.sqrt(seg)  # stationary mean: DC component only
    return FourierResult(method, psd, mean, np.fft.fftfreq(seg), int(x.shape[0]))


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
    x = _as_real("images", images, 3)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    gray = x.ndim == 3
    x = x[..., None] if gray else x
    if colour and x.shape[-1] < 2:
        raise ValueError(f"colour=True needs images with C >= 2 channels, got shape {x.shape}")
    x = x.astype(np.float64)
    check_finite("images", x)
    x, mu, denom = _center(x, center, (1, 2))
    n_img, h, w, c = x.shape
    hw = h * w
    freqs = (np.fft.fftfreq(h), np.fft.fftfreq(w))
    m_hat = np.fft.fft2(mu, axes=(0, 1)) / np.sqrt(hw)  # (H, W, C) unitary DFT of the mean
    if not colour:
        acc = np.zeros((h, w, c))
        for i in range(0, n_img, batch_size):
            acc += (np.abs(np.fft.fft2(x[i : i + batch_size], axes=(1, 2))) ** 2).sum(0)
        psd, mean = acc / (hw * denom), np.abs(m_hat)
        if gray:
            psd, mean = psd[..., 0], mean[..., 0]
        return FourierResult("fourier_2d", psd, mean, freqs, n_img)
    acc = np.zeros((h, w, c, c), dtype=np.complex128)
    for i in range(0, n_img, batch_size):
        f = np.fft.fft2(x[i : i + batch_size], axes=(1, 2))
        acc += np.einsum("nhwa,nhwb->hwab", f, f.conj())
    cross = acc / (hw * denom)
    cross = (cross + np.conj(np.swapaxes(cross, -1, -2))) / 2
    ev, vec = np.linalg.eigh(cross)  # ascending per frequency
    ev, vec = np.clip(ev[..., ::-1], 0.0, None), vec[..., ::-1]
    mean = np.abs(np.einsum("hwab,hwa->hwb", vec.conj(), m_hat))
    return FourierResult("fourier_2d_colour", ev, mean, freqs, n_img, vec)


# --------------------------------------------------------------------------- synthetic


def synthetic_ata_matrix(
    d: int = 50, length_scale: float = 0.1, mean: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """(μ0, Σ0) of the published synthetic data: Σ0 = AᵀA, μ0 = mean·1.

    Construction (exact): the grid t_i = i/(d − 1), i = 0..d−1 (uniform on [0, 1], both
    ends included), and the unnormalised Gaussian kernel
    A_ij = exp(−(t_i − t_j)² / (2·l²)), l = ``length_scale`` (A_ii = 1, no row or
    amplitude normalisation). Σ0 = AᵀA = A² (A is symmetric), float64.
    """
    check_int("d", d, 2)
    if not length_scale > 0:
        raise ValueError(f"length_scale must be > 0, got {length_scale!r}")
    a = _gaussian_kernel(d, length_scale)
    return np.full(d, float(mean)), a.T @ a


def _gaussian_kernel(d: int, length_scale: float) -> np.ndarray:
    t = np.arange(d, dtype=np.float64) / (d - 1)
    return np.exp(-((t[:, None] - t[None, :]) ** 2) / (2.0 * length_scale**2))


def synthetic_ata(
    d: int = 50, length_scale: float = 0.1, mean: float = 0.05, name: str | None = None
) -> Spectrum:
    """Spectrum of ``synthetic_ata_matrix``: λ_i = w_i² with w the eigenvalues of A.

    Squaring A's eigenvalues (A symmetric, Σ0 = A²) keeps the tiny eigenvalues of this very
    ill-conditioned Σ0 non-negative and accurate; the mean components are Uᵀμ0 with U the
    eigenvectors of A. Sorted descending.

    Example:
      >>> import specdiff.data.spectra as sp
      >>> spec = sp.synthetic_ata()
      >>> spec.dim, spec.name
      (50, 'synthetic_ata')
    """
    mu, _ = synthetic_ata_matrix(d, length_scale, mean)
    w, u = np.linalg.eigh(_gaussian_kernel(d, length_scale))
    lam = w**2
    order = np.argsort(-lam, kind="stable")
    lam, u = lam[order], u[:, order]
    return Spectrum(lam, u.T @ mu, name=name or "synthetic_ata")


def power_law(
    d: int, alpha: float, scale: float = 1.0, mean: float = 0.0, name: str | None = None
) -> Spectrum:
    """Power-law spectrum λ_i = scale · i^(−α), i = 1..d (descending for α > 0).

    The mean is ``mean`` in every eigen-direction (m_i = mean). α = 2 is the classic 1/f²
    of natural images along one frequency axis.
    """
    check_int("d", d)
    if not np.isfinite(alpha) or not scale > 0:
        raise ValueError(f"alpha must be finite and scale > 0, got {alpha!r}, {scale!r}")
    i = np.arange(1, d + 1, dtype=np.float64)
    lam = float(scale) * i ** (-float(alpha))
    return Spectrum(lam, np.full(d, float(mean)), name=name or f"power_law_{alpha:g}")
