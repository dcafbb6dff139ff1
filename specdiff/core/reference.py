"""Slow, obviously-correct references for the closed-form engine (SPEC §7).

Nothing here uses the eigen-decomposition, log-SNR or the log-space products of
``specdiff.core.engine``: the steps are written straight from SPEC §2–3 in the schedule's own
units (ᾱ for VP, σ for VE), with the matrix MMSE denoiser of a full covariance Σ0.

- ``propagate`` carries the mean vector and covariance matrix through every step
  (C' = G C Gᵀ + σ_k² I), in float64 NumPy.
- ``sample`` runs the sampler in the time domain on N samples (Monte Carlo).
- ``w2_gaussians`` is the general W2 between two Gaussians,
  tr(C1 + C2 − 2(C2^½ C1 C2^½)^½) + |μ1 − μ2|².
- ``propagate_sampler`` / ``sample_sampler``: the same two references for any sampler of
  ``specdiff.samplers`` (SPEC §11), running the sampler's own ``step`` on full vectors with
  the matrix denoiser D(x; σ) = μ0 + Σ0(Σ0 + σ²I)⁻¹(x − μ0), in σ coordinates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "step_coefficients",
    "propagate",
    "sample",
    "w2_gaussians",
    "psd_sqrt",
    "sampler_sigmas",
    "sampler_start_variance",
    "propagate_sampler",
    "sample_sampler",
]


def psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (eigh, negatives clipped)."""
    w, u = np.linalg.eigh((c + c.T) / 2)
    return (u * np.sqrt(np.clip(w, 0, None))) @ u.T


def w2_gaussians(mu1, c1, mu2, c2) -> float:
    """W2 distance between N(mu1, c1) and N(mu2, c2) for general covariances."""
    r2 = psd_sqrt(c2)
    cross = psd_sqrt(r2 @ c1 @ r2)
    w2sq = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross)
    return float(np.sqrt(max(w2sq, 0.0)))


def step_coefficients(process: str, level, level_next, eta: float):
    """(x̂0 weight, ε̂ weight, injected noise std, signal scale at ``level``) of one step.

    VP (SPEC §3): x' = √a'·x̂0 + √(1 − a' − σ_k²)·ε̂ + σ_k·z,
                  σ_k² = η²(1 − a')/(1 − a)(1 − a/a'); ``level_next=None`` means a' = 1.
    VE:           x' = x̂0 + √(s'² − σ_k²)·ε̂ + σ_k·z, σ_k² = η² s'²(s² − s'²)/s²;
                  ``level_next=None`` means s' = 0.
    """
    if process == "vp":
        a = level
        if level_next is None:
            return 1.0, 0.0, 0.0, np.sqrt(a)
        a2 = level_next
        var_k = eta**2 * (1 - a2) / (1 - a) * (1 - a / a2)
        return np.sqrt(a2), np.sqrt(1 - a2 - var_k), np.sqrt(var_k), np.sqrt(a)
    s = level
    if level_next is None:
        return 1.0, 0.0, 0.0, 1.0
    s2 = level_next
    var_k = eta**2 * s2**2 * (s**2 - s2**2) / s**2
    return 1.0, np.sqrt(s2**2 - var_k), np.sqrt(var_k), 1.0


def _denoiser_matrices(process, level, mu0, cov0):
    """Matrix MMSE denoiser at a level: x̂0 = μ0 + A(x − α μ0), ε̂ = B(x − α μ0)."""
    d = len(mu0)
    eye = np.eye(d)
    if process == "vp":
        a = level
        v = a * cov0 + (1 - a) * eye
        vinv = np.linalg.inv(v)
        return np.sqrt(a) * cov0 @ vinv, np.sqrt(1 - a) * vinv, np.sqrt(a)
    s = level
    vinv = np.linalg.inv(cov0 + s**2 * eye)
    return cov0 @ vinv, s * vinv, 1.0


def _steps(schedule):
    lv = np.asarray(schedule.levels, dtype=np.float64)
    nxt = list(lv[1:]) + [None]
    return list(zip(lv, nxt))


def propagate(mean0, cov0, schedule, eta: float = 0.0, trajectory: bool = False):
    """Exact output mean vector and covariance matrix by full-covariance propagation.

    Args:
      mean0: (d,) data mean μ0; cov0: (d, d) data covariance Σ0 (any basis).
      schedule: a ``specdiff.Schedule``; eta: the DDIM η (0 DDIM, 1 DDPM).

    Returns:
      (mean, cov) of the generated distribution, or lists of them after every step
      (start included) when ``trajectory=True``.
    """
    mu0 = np.asarray(mean0, dtype=np.float64)
    cov0 = np.asarray(cov0, dtype=np.float64)
    d = len(mu0)
    proc = schedule.process
    lv0 = float(np.asarray(schedule.levels, dtype=np.float64)[0])
    mu = np.zeros(d)
    cov = np.eye(d) if proc == "vp" else lv0**2 * np.eye(d)
    means, covs = [mu], [cov]
    for level, nxt in _steps(schedule):
        wx, we, sk, alpha = step_coefficients(proc, level, nxt, eta)
        a_mat, b_mat, _ = _denoiser_matrices(proc, level, mu0, cov0)
        g = wx * a_mat + we * b_mat  # x' = G x + c + σ_k z
        c = wx * (mu0 - alpha * a_mat @ mu0) - we * alpha * b_mat @ mu0
        mu = g @ mu + c
        cov = g @ cov @ g.T + sk**2 * np.eye(d)
        means.append(mu)
        covs.append(cov)
    return (means, covs) if trajectory else (mu, cov)


def sample(mean0, cov0, schedule, eta: float, key: jax.Array, n: int) -> np.ndarray:
    """Monte-Carlo time-domain sampling with the matrix MMSE denoiser; returns (n, d).

    Randomness comes from ``key`` only: the start noise from ``fold_in(key, 0)``, the
    noise of step k from ``fold_in(key, k)``.
    """
    mu0 = np.asarray(mean0, dtype=np.float64)
    cov0 = np.asarray(cov0, dtype=np.float64)
    d = len(mu0)
    proc = schedule.process
    lv0 = float(np.asarray(schedule.levels, dtype=np.float64)[0])
    z0 = np.asarray(jax.random.normal(jax.random.fold_in(key, 0), (n, d)), dtype=np.float64)
    x = z0 if proc == "vp" else lv0 * z0
    for k, (level, nxt) in enumerate(_steps(schedule), start=1):
        wx, we, sk, alpha = step_coefficients(proc, level, nxt, eta)
        a_mat, b_mat, _ = _denoiser_matrices(proc, level, mu0, cov0)
        y = x - alpha * mu0
        x0_hat = mu0 + y @ a_mat.T
        eps_hat = y @ b_mat.T
        x = wx * x0_hat + we * eps_hat
        if sk > 0:
            z = np.asarray(jax.random.normal(jax.random.fold_in(key, k), (n, d)), np.float64)
            x = x + sk * z
    return x


# --------------------------------------------------------------------------------------
# Any sampler (SPEC §11): its own step, on full vectors, with the matrix denoiser
# --------------------------------------------------------------------------------------


def sampler_sigmas(schedule) -> np.ndarray:
    """(S+1,) float64 σ grid from the levels (not from log-SNR), with the final 0 appended.

    VE σ = level; VP σ = √((1 − ᾱ)/ᾱ); flow σ = t/(1 − t).
    """
    lv = np.asarray(schedule.levels, dtype=np.float64)
    if schedule.process == "ve":
        sig = lv
    elif schedule.process == "vp":
        sig = np.sqrt((1.0 - lv) / lv)
    else:
        sig = lv / (1.0 - lv)
    return np.concatenate([sig, [0.0]])


def _alphas(schedule) -> np.ndarray:
    """(S+1,) signal scale α_k of each level, clean last: x_process = α·x_σ."""
    lv = np.asarray(schedule.levels, dtype=np.float64)
    alpha = {"ve": np.ones_like(lv), "vp": np.sqrt(lv), "flow": 1.0 - lv}[schedule.process]
    return np.concatenate([alpha, [1.0]])


def sampler_start_variance(schedule) -> float:
    """v0 of the start N(0, v0·I) in σ coordinates: VE σ_0², VP 1 + σ_0², flow (1 + σ_0)²."""
    s0 = float(sampler_sigmas(schedule)[0])
    return {"ve": s0**2, "vp": 1.0 + s0**2, "flow": (1.0 + s0) ** 2}[schedule.process]


def _matrix_denoiser(mu0: np.ndarray, cov0: np.ndarray):
    """D(x; σ) = μ0 + Σ0(Σ0 + σ²I)⁻¹(x − μ0) on rows of x (any leading shape)."""
    eye = np.eye(len(mu0))

    def denoise(x, sigma):
        s2 = float(sigma) ** 2
        gain = np.linalg.solve(cov0 + s2 * eye, cov0)  # = Σ0(Σ0 + σ²I)⁻¹: they commute
        return mu0 + (np.asarray(x) - mu0) @ gain.T

    return denoise


def _push(sampler, denoise, state, z, sigmas, i, num_steps):
    """One step on a batch of full states: state = (x, *hist), each (r, d); z (q, r, d)."""
    x, hist = sampler.step(
        denoise,
        state[0],
        tuple(state[1:]),
        tuple(z),
        sigmas,
        i,
        order=min(i, sampler.history),
        last=i == num_steps - 1,
    )
    return np.stack([np.asarray(x), *(np.asarray(h) for h in hist)])


def _noise_block(n: int, q: int, d: int):
    """States and noise of the fresh-noise columns: zero state, z_k = e_j (q·d columns)."""
    z = np.zeros((q, q * d, d))
    for k in range(q):
        z[k, k * d : (k + 1) * d] = np.eye(d)
    return np.zeros((n, q * d, d)), z


def _compress(cols: np.ndarray) -> np.ndarray:
    """A square-root factor with n·d columns for the covariance of the columns (n, r, d).

    With M the (r, n·d) matrix of flattened columns, Σ_c c cᵀ = Mᵀ M = Rᵀ R for M = Q R:
    the rows of R are the new columns (so every step runs on the same shapes).
    """
    n, r, d = cols.shape
    flat = cols.transpose(1, 0, 2).reshape(r, n * d)
    rows = np.linalg.qr(flat, mode="r")
    return rows.reshape(-1, n, d).transpose(1, 0, 2)


def propagate_sampler(mean0, cov0, schedule, sampler, trajectory: bool = False):
    """Exact output mean and covariance of any sampler by full-covariance propagation.

    The state (x plus ``sampler.history`` carried values, each a d-vector) is Gaussian with
    mean E and covariance F Fᵀ. A step is affine in (state, noise): s' = G s + c + B z, so

        E' = step(E; μ0, z = 0),   F' = [step(F; μ = 0, z = 0) | step(0; μ = 0, z = e_j)]

    (the columns of F through the centred step, then one column per fresh normal; F' is then
    re-factored by QR to n·d columns). Start: x ~ N(0, v0·I) in σ coordinates
    (``sampler_start_variance``), history zero. Everything is float64; the loop over steps
    is plain Python with order = min(i, history) and last = (i == S − 1), as
    ``specdiff.core.steps.step_loop``.

    Args:
      mean0: (d,) data mean μ0; cov0: (d, d) data covariance Σ0 (any basis).
      schedule: a ``specdiff.Schedule`` (any process); sampler: a ``specdiff.samplers`` object.
      trajectory: also return the moments after every step.

    Returns:
      (mean (d,), cov (d, d)) of x_S, or lists of the S + 1 means and covariances of x after
      each step (start first) in the process's own coordinates (x = α_k·x_σ) when
      ``trajectory``.
    """
    mu0 = np.asarray(mean0, dtype=np.float64)
    cov0 = np.asarray(cov0, dtype=np.float64)
    d, n, q = len(mu0), sampler.state_size, sampler.noise_dim
    sigmas, alpha = sampler_sigmas(schedule), _alphas(schedule)
    num_steps = len(sigmas) - 1
    full, centred = _matrix_denoiser(mu0, cov0), _matrix_denoiser(np.zeros(d), cov0)
    mean = np.zeros((n, 1, d))
    factor = np.zeros((n, n * d, d))  # state component × column × coordinate
    factor[0, :d] = np.sqrt(sampler_start_variance(schedule)) * np.eye(d)
    fresh_state, fresh_z = _noise_block(n, q, d)
    z_cols = np.concatenate([np.zeros((q, n * d, d)), fresh_z], axis=1)
    means, covs = [mean[0, 0]], [factor[0].T @ factor[0]]
    with jax.enable_x64(True):
        for i in range(num_steps):
            mean = _push(sampler, full, mean, np.zeros((q, 1, d)), sigmas, i, num_steps)
            cols = np.concatenate([factor, fresh_state], axis=1)
            factor = _compress(_push(sampler, centred, cols, z_cols, sigmas, i, num_steps))
            means.append(mean[0, 0])
            covs.append(factor[0].T @ factor[0])
    means = [a * m for a, m in zip(alpha, means)]
    covs = [a**2 * c for a, c in zip(alpha, covs)]
    return (means, covs) if trajectory else (means[-1], covs[-1])


def sample_sampler(mean0, cov0, schedule, sampler, key: jax.Array, n: int) -> np.ndarray:
    """Monte-Carlo run of any sampler's ``step`` with the matrix denoiser; returns (n, d).

    Start x ~ N(0, v0·I) in σ coordinates from ``fold_in(key, 0)``; step i draws its
    ``noise_dim`` standard normals (shape (noise_dim, n, d)) from ``fold_in(key, i + 1)``.
    The output x_S is at the clean end, where every process's coordinates coincide.
    """
    mu0 = np.asarray(mean0, dtype=np.float64)
    cov0 = np.asarray(cov0, dtype=np.float64)
    d, q = len(mu0), sampler.noise_dim
    sigmas = sampler_sigmas(schedule)
    num_steps = len(sigmas) - 1
    denoise = _matrix_denoiser(mu0, cov0)
    with jax.enable_x64(True):
        z0 = jax.random.normal(jax.random.fold_in(key, 0), (n, d), jnp.float64)
        state = np.zeros((sampler.state_size, n, d))
        state[0] = np.sqrt(sampler_start_variance(schedule)) * np.asarray(z0)
        for i in range(num_steps):
            z = jax.random.normal(jax.random.fold_in(key, i + 1), (q, n, d), jnp.float64)
            state = _push(sampler, denoise, state, np.asarray(z), sigmas, i, num_steps)
    return state[0]
