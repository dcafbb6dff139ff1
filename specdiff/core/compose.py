"""The affine maps of all of a sampler's steps at once, composed for trajectories (SPEC §11).

Per eigenvalue, step k maps the centred state s = (y, history) as s' = A_k·s + B_k·z_k.
A pair (A, Q = B·Bᵀ) acts on a Gaussian state's moments as E' = A·E, P' = A·P·Aᵀ + Q, and
two steps compose associatively:

    (A₁, Q₁) then (A₂, Q₂) = (A₂·A₁, A₂·Q₁·A₂ᵀ + Q₂).

So the moments after every step (``propagate``, the engine's trajectories) come from the
maps of all steady steps, computed in one batch of shape (steps, n, n, eigenvalues), and
``lax.associative_scan`` with this composition. The warm-up steps and the last step (their
own static ``order`` / ``last``, as ``steps.step_plan``) are applied to the state apart.
Products over the small axes are written as sums of broadcast products (n ≤ 4: far too
small for a matrix-product kernel). A deterministic sampler (noise_dim = 0) carries no Q.
The outputs alone take cheaper forms: ``core.rational`` (one-state deterministic samplers)
and ``core.adjoint`` (the rest), which also uses ``corner_columns``.

The batch of maps: ``sampler.affine_columns`` under ``vmap`` over the traced step index,
or, for a step that calls the denoiser E ≥ 2 times (Heun, DPM-2, …), the step run once per
step on scalars with its j-th call replaced by t_j·x at the 2^E corners t ∈ {0, 1}^E
(``corner_columns``, independent of λ, so computed once per schedule), then interpolated
multilinearly at t_j = γ(σ_j) = λ/(λ + σ_j²) for every eigenvalue (``_interpolate``, exact:
the step is linear in x, z and each denoised value, so multilinear in t), with a
written-out reverse pass. On CPU this measured ~2.5× faster than differentiating Heun's
step over the eigenvalues; for E = 1 the step itself was faster.

Round-off: the scan multiplies contiguous runs of steps, as a sequential loop's running
state does; each run's product is bounded by the gains' telescoping limits (σ'/σ below,
α'/α above), so nothing overflows in float32 over thousands of steps. The interpolation
rounds a step's A ≈ 1 a few times more than the step's own x + d·dt form; float64 agrees
to round-off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdiff.core.checks import FULL_PRECISION
from specdiff.core.steps import step_plan

__all__ = [
    "compose",
    "corner_columns",
    "corner_gains",
    "corner_weight",
    "corners_over",
    "count_calls",
    "middle_corners",
    "propagate",
    "step_maps",
]


def _mm(a, b):
    """Matrix product over axes (−3, −2), eigenvalues last: (…, n, k, d) @ (…, k, m, d)."""
    return sum(a[..., :, k, None, :] * b[..., None, k, :, :] for k in range(a.shape[-2]))


def _t(a):
    return jnp.swapaxes(a, -3, -2)


def _noise_cov(b):
    """Q = B·Bᵀ of B (…, n, q, d), or None for a deterministic step (q = 0)."""
    return _mm(b, _t(b)) if b.shape[-2] else None


def compose(first, second):
    """(A₁, Q₁) then (A₂, Q₂) → (A₂·A₁, A₂·Q₁·A₂ᵀ + Q₂); Q is None when deterministic."""
    a1, q1 = first
    a2, q2 = second
    a = _mm(a2, a1)
    if q1 is None:
        return a, q2
    q = _mm(_mm(a2, q1), _t(a2))
    return a, q if q2 is None else q + q2


def count_calls(sampler, sigmas, i, order, last):
    """How many times the step calls the denoiser (static: the step's Python control flow)."""
    calls = []

    def denoise(x, sigma):
        calls.append(sigma)
        return x

    n, q = sampler.state_size, sampler.noise_dim
    zero = jnp.zeros((), sigmas.dtype)
    jax.eval_shape(
        lambda sg: sampler.step(
            denoise, zero, (zero,) * (n - 1), (zero,) * q, sg, i, order=order, last=last
        ),
        sigmas,
    )
    return len(calls)


def corner_columns(sampler, sigmas, i, *, order: int, last: bool, calls: int):
    """The step's [A | B] at the corners of its denoiser gains, and the gains' σ.

    Run the step with the j-th denoiser call replaced by D_j(x) = t_j·x: its columns are
    multilinear in t = (t_1 … t_E) (each call multiplies its input once; the step is linear
    in x, the denoised values and z). Returns F (2^E, n, n + q), F[T] at t_j = bit j of T,
    and s (E,), the σ of each call. Under the Gaussian denoiser t_j = γ(s_j) = λ/(λ + s_j²).
    """
    n, q = sampler.state_size, sampler.noise_dim
    dtype = sigmas.dtype
    corners = (jnp.arange(2**calls)[:, None] >> jnp.arange(calls)) & 1

    def run(t, unit):
        seen = []

        def denoise(x, sigma):
            seen.append(jnp.asarray(sigma, dtype))
            return t[len(seen) - 1] * x

        s = unit[:n]
        x, hist = sampler.step(
            denoise, s[0], tuple(s[1:]), tuple(unit[n:]), sigmas, i, order=order, last=last
        )
        return jnp.stack([x, *hist]), jnp.stack(seen) if seen else jnp.zeros((0,), dtype)

    units = jnp.eye(n + q, dtype=dtype)
    cols = jax.vmap(run, in_axes=(None, 0), out_axes=(1, None))  # over unit columns
    f, s = jax.vmap(cols, in_axes=(0, None), out_axes=(0, None))(corners.astype(dtype), units)
    return f, s


def corner_gains(s, lam):
    """[(γ_j, 1 − γ_j, r_j)] per call j, each (…, d): γ = λ r, 1 − γ = s² r, r = 1/(λ + s²).

    The gains at which a step's corners are interpolated (here and in ``core.adjoint``)."""
    out = []
    for j in range(s.shape[-1]):
        s2 = s[..., j, None] ** 2
        r = 1.0 / (lam + s2)
        out.append((lam * r, s2 * r, r))
    return out


def corner_weight(gains, corner: int, skip: int = -1):
    """∏_{j ≠ skip} (γ_j if bit j of ``corner`` else 1 − γ_j), or 1.0 without factors."""
    w = 1.0
    for j, (g, rest, _) in enumerate(gains):
        if j != skip:
            w = w * (g if (corner >> j) & 1 else rest)
    return w


@jax.custom_vjp
def _interpolate(f, s, lam):
    """Σ_T F[T]·∏_{j∈T} γ_j ∏_{j∉T} (1 − γ_j), γ_j = λ/(λ + s_j²).

    f: (M, 2^E, n, m) corners; s: (M, E) the calls' σ; lam: (d,). Returns (M, n, m, d): a
    convex combination of the corners, exact for a step multilinear in its gains. The
    backward pass is written out (sums over the eigenvalue axis of single products): the
    autodiff transpose measured ~15× slower on CPU (its fused reductions read several
    materialised broadcasts).
    """
    gains = corner_gains(s, lam)
    out = 0.0
    for corner in range(f.shape[1]):
        w = jnp.broadcast_to(corner_weight(gains, corner), (f.shape[0], lam.shape[0]))
        out = out + f[:, corner, :, :, None] * w[:, None, None, :]
    return out


def _interpolate_fwd(f, s, lam):
    return _interpolate(f, s, lam), (f, s, lam)


def _interpolate_bwd(res, ct):
    f, s, lam = res
    gains = corner_gains(s, lam)
    ct_f, ct_w = [], []
    for corner in range(f.shape[1]):
        w = jnp.broadcast_to(corner_weight(gains, corner), (f.shape[0], lam.shape[0]))
        n, m = f.shape[2:]
        pairs = [(a, b) for a in range(n) for b in range(m)]
        # Per entry (a, b): products and one sum each (batched dots over these tiny
        # dimensions and fused multi-input reductions both measured several times slower).
        dots = [jnp.einsum("kd,kd->k", ct[:, a, b], w, precision=FULL_PRECISION) for a, b in pairs]
        ct_f.append(jnp.stack(dots, -1).reshape(f.shape[0], n, m))
        ct_w.append(sum(ct[:, a, b] * f[:, corner, a, b, None] for a, b in pairs))  # ∂L/∂w_T
    ct_s, ct_lam = [], jnp.zeros_like(lam)
    for j, (g, rest, r) in enumerate(gains):
        # ∂w_T/∂γ_j = ±∏_{i≠j}: + where bit j of T is set (γ_j), − where not (1 − γ_j).
        ct_g = sum(
            (1 if (corner >> j) & 1 else -1) * c * corner_weight(gains, corner, skip=j)
            for corner, c in enumerate(ct_w)
        )
        u = ct_g * r  # ∂γ/∂λ = s² r² = (1 − γ) r, ∂γ/∂s = −2 s λ r² = −2 s γ r
        ct_s.append(-2.0 * s[:, j] * jnp.sum(u * g, axis=-1))
        ct_lam = ct_lam + jnp.sum(u * rest, axis=0)
    ct_s = jnp.stack(ct_s, -1) if ct_s else jnp.zeros_like(s)
    return jnp.stack(ct_f, 1), ct_s, ct_lam


_interpolate.defvjp(_interpolate_fwd, _interpolate_bwd)


def corners_over(sampler, sigmas, start, stop, order, calls):
    """``corner_columns`` of the steps start … stop − 1 (one static ``order``, not the
    last step), under ``vmap`` over the step index: (F (M, 2^E, n, n + q), s (M, E))."""

    def one(i):
        return corner_columns(sampler, sigmas, i, order=order, last=False, calls=calls)

    return jax.vmap(one)(jnp.arange(start, stop, dtype=jnp.int32))


def middle_corners(sampler, sigmas):
    """The steady steps' corners (F (M, 2^E, n, n + q), s (M, E)), or None.

    Independent of the eigenvalues: computed once, outside any loop over eigenvalue blocks.
    None without steady steps, and for a step with a single denoiser call: there the step
    run over the eigenvalues is already one gain deep, and its own autodiff measured about
    twice as fast on CPU as the interpolation's (E ≥ 2, e.g. Heun: ~2.5× slower).
    """
    _, middle, _ = step_plan(sigmas.shape[0] - 1, sampler.history)
    if middle is None:
        return None
    start, stop, order = middle
    calls = count_calls(sampler, sigmas, start, order, False)
    if calls < 2:
        return None
    return corners_over(sampler, sigmas, start, stop, order, calls)


def step_maps(sampler, lam, sigmas, corners=None):
    """(A (M, n, n, d), Q (M, n, n, d) or None) of the steady steps.

    With ``corners`` (``middle_corners``: the step run once per step and corner of its
    denoiser gains, on scalars) the maps for every eigenvalue are the multilinear
    interpolation of those corners at the gains γ(λ); without, ``sampler.affine_columns``
    under ``vmap`` over the traced step index.
    """
    n = sampler.state_size
    if corners is None:
        _, (start, stop, order), _ = step_plan(sigmas.shape[0] - 1, sampler.history)

        def one(i):
            return sampler.affine_columns(lam, sigmas, i, order=order, last=False)

        a, b = jax.vmap(one)(jnp.arange(start, stop, dtype=jnp.int32))
        return a, _noise_cov(b)
    f, s = corners
    lam = lam.astype(f.dtype)
    a = _interpolate(f[..., :n], s, lam)  # A and B apart: no slices of one output
    return a, (_noise_cov(_interpolate(f[..., n:], s, lam)) if f.shape[-1] > n else None)


def _apply(maps, state):
    """The moments after a map: (A, Q) on (E (…, n, d), P (…, n, n, d))."""
    a, q = maps
    e, p = state
    e = sum(a[..., :, k, :] * e[..., None, k, :] for k in range(a.shape[-2]))
    p = _mm(_mm(a, p), _t(a))
    return e, p if q is None else p + q


def propagate(sampler, lam, sigmas, state):
    """Moments of the state after every one of the S = len(sigmas) − 1 steps (SPEC §11).

    Args:
      sampler: a sampler object (``affine_columns``, ``history``).
      lam: (d,) eigenvalues; sigmas: (S+1,) σ levels ending in 0.
      state: (E (n, d), P (n, n, d)): the start mean and covariance.

    Returns:
      (final (E, P), (Es (S, n, d), Ps (S, n, n, d))): the states after each step.
    """
    head, middle, tail = step_plan(sigmas.shape[0] - 1, sampler.history)
    states = []

    def single(state, i, order, last):
        a, b = sampler.affine_columns(lam, sigmas, i, order=order, last=last)
        state = _apply((a, _noise_cov(b)), state)
        states.append(jax.tree.map(lambda x: x[None], state))
        return state

    for i, order, last in head:
        state = single(state, i, order, last)
    if middle is not None:
        a, q = step_maps(sampler, lam, sigmas, middle_corners(sampler, sigmas))
        cum = jax.lax.associative_scan(compose, (a, q))
        rows = _apply(cum, state)  # (M, n, d), (M, n, n, d)
        states.append(rows)
        state = jax.tree.map(lambda x: x[-1], rows)
    if tail is not None:
        state = single(state, *tail)
    return state, jax.tree.map(lambda *x: jnp.concatenate(x, 0), *states)
