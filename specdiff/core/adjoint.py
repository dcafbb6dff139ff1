"""Samplers with history or noise: the output's row propagated back through the steps.

Per eigenvalue, step k maps the centred state s = (y, history) as s' = A_k s + B_k z_k
(SPEC §11), and the output is y_S = e₁ᵀ s_S. With the row u_k = e₁ᵀ A_{S−1} ⋯ A_k
(u_S = e₁ᵀ, u_k = u_{k+1} A_k: n numbers per eigenvalue, n = the state size):

    H = u_0 e₁,        Var[y_S] = H² Var[y_0] + Σ_k |u_{k+1} B_k|²

(the start state is (y_0, 0, …, 0)). So the output's moments need one pass over the steps
with a row of n numbers per eigenvalue: n² products per step, where composing the maps
(``core.compose``) multiplies n × n matrices and carries an n × n noise covariance.

Step k's [A_k | B_k] at eigenvalue λ is the multilinear interpolation of the step run at
the corners of its denoiser gains (``compose.corner_columns``: the sampler's own ``step``
on scalars, independent of λ) at γ_j = λ/(λ + s_kj²); every step, the warm-up and the last
ones included, is one row of a (S, 2^E, n, n + q) array (a step with fewer calls is padded:
its corners repeat along the missing gains, whose weights sum to one).

Both passes are ``lax.scan`` over the steps whose bodies work on (d,) vectors with the
step's coefficients as scalars (on CPU, (n, n, d)-shaped intermediates measured ~25×
slower per step). The reverse pass is written out: the row's adjoint runs forward,
ū_{k+1} = A_k ū_k + 2 v̄ B_k (u_{k+1} B_k)ᵀ, and each step's sums over eigenvalues
(∂/∂F_k[T] = Σ_λ w_T u_{k+1} ⊗ [ū_k | 2 v̄ u_{k+1} B_k], and the gains' derivatives) are
one (rows × d) @ (d × (n + q)) matrix product per step, not one reduction kernel each.
The forward pass keeps u_{k+1} and u_{k+1} B_k, S·(n + q) numbers per eigenvalue (the
engine blocks this path like the others), so the reverse pass recomputes neither.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.core.checks import row_sums
from specdiff.core.compose import (
    corner_columns,
    corner_gains,
    corner_weight,
    corners_over,
    count_calls,
)
from specdiff.core.steps import step_plan

__all__ = ["output_row", "step_corners"]


def step_corners(sampler, sigmas):
    """(F (S, 2^E, n, n + q), s (S, E)): every step's corners and its calls' σ.

    E is the most calls of any step; a step with e < E calls repeats its corners along the
    missing gains (F[T] = F[T mod 2^e], σ = 1 there), which leaves its map unchanged.
    Independent of the eigenvalues; differentiable in ``sigmas``.
    """
    head, middle, tail = step_plan(sigmas.shape[0] - 1, sampler.history)

    def single(i, order, last):  # one step's corners, stacked on a step axis of 1
        calls = count_calls(sampler, sigmas, i, order, last)
        f, s = corner_columns(sampler, sigmas, i, order=order, last=last, calls=calls)
        return f[None], s[None]

    parts = [single(*step) for step in head]
    if middle is not None:
        start, stop, order = middle
        calls = count_calls(sampler, sigmas, start, order, False)
        parts.append(corners_over(sampler, sigmas, start, stop, order, calls))
    if tail is not None:
        parts.append(single(*tail))
    calls = max(s.shape[-1] for _, s in parts)
    padded = []
    for f, s in parts:
        e = s.shape[-1]
        if e < calls:
            f = f[:, jnp.arange(2**calls) & (2**e - 1)]
            s = jnp.concatenate([s, jnp.ones(s.shape[:-1] + (calls - e,), s.dtype)], -1)
        padded.append((f, s))
    return tuple(jnp.concatenate(x, 0) for x in zip(*padded))


def _map(f, weights, n, m):
    """[A | B] entries M[a][b] (each (d,)) = Σ_T f[T, a, b]·w_T; f flat (T·n·m,) scalars."""
    return [
        [sum(f[(t * n + a) * m + b] * w for t, w in enumerate(weights)) for b in range(m)]
        for a in range(n)
    ]


def _all_weights(gains, count):
    return [corner_weight(gains, t) for t in range(count)]


def _row_codes(calls):
    """(2^E + E·2^(E−1), E) constant table of the gain rows: factor j of a row is 1 − γ_j
    (code 0), γ_j (1) or r_j γ_j (2). Rows 0 … 2^E − 1 are the weights w_T; then, per call
    j, r_jγ_j ∏_{i≠j} (T's factors) = ±r_jγ_j ∂w_T/∂γ_j, which does not depend on bit j of
    T: one row for each T with bit j clear, in increasing order (``_squeeze``)."""
    count = 2**calls
    codes = [[(t >> j) & 1 for j in range(calls)] for t in range(count)]
    for j in range(calls):
        for t in range(count):
            if not (t >> j) & 1:
                codes.append([2 if i == j else (t >> i) & 1 for i in range(calls)])
    return np.asarray(codes, np.int32).reshape(len(codes), calls)


def _squeeze(t, j):
    """Position of corner t, bit j cleared, among the corners with bit j clear."""
    return ((t >> (j + 1)) << j) | (t & ((1 << j) - 1))


def _gain_rows(gains, lam):
    """(rows, d): the products of ``_row_codes``, built by broadcasting against constant
    masks (on CPU a concatenation of computed rows compiled to a kernel ~5× slower than
    this product, in a profile of a microbenchmark)."""
    codes = _row_codes(len(gains))
    rows = jnp.ones((codes.shape[0], lam.shape[0]), lam.dtype)
    for j, (g, rest, r) in enumerate(gains):
        # One mask is 1, the others 0: the sum is exact ((1 − γ) + mask·(f − (1 − γ)) was
        # not, for a factor f ≪ 1 − γ).
        pick = [jnp.asarray(codes[:, j, None] == c, lam.dtype) for c in range(3)]
        rows = rows * (pick[0] * rest[None] + pick[1] * g[None] + pick[2] * (r * g)[None])
    return rows


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rows(shape, f, s, lam):
    return _rows_fwd(shape, f, s, lam)[0]


def _rows_fwd(shape, f, s, lam):
    n, m = shape
    count = f.shape[1] // (n * m)
    zero = jnp.zeros_like(lam)

    def body(carry, x):
        u, v = carry
        fk, sk = x
        a = _map(fk, _all_weights(corner_gains(sk, lam), count), n, m)
        noise = tuple(sum(u[i] * a[i][b] for i in range(n)) for b in range(n, m))  # u_{k+1} B_k
        v = v + sum(c * c for c in noise)
        return (tuple(sum(u[i] * a[i][b] for i in range(n)) for b in range(n)), v), u + noise

    u0 = (zero + 1.0,) + (zero,) * (n - 1)
    (u, v), rows = jax.lax.scan(body, (u0, zero), (f, s), reverse=True)
    return (u[0], v), (f, s, lam, rows)


def _rows_bwd(shape, res, cts):
    n, m = shape
    f, s, lam, rows = res
    ct_h, ct_v = cts
    count, calls = f.shape[1] // (n * m), s.shape[1]
    zero = jnp.zeros_like(lam)
    two_v = 2.0 * ct_v

    def body(carry, x):
        ub, d_lam = carry
        fk, sk, kept = x
        u = kept[:n]
        gains = corner_gains(sk, lam)
        w = _all_weights(gains, count)
        a = _map(fk, w, n, m)
        # ∂L/∂[A_k | B_k] = u_{k+1} ⊗ col per eigenvalue, col = [ū_k | 2 v̄ u_{k+1} B_k].
        col = list(ub) + [two_v * c for c in kept[n:]]
        ub = tuple(sum(a[i][b] * col[b] for b in range(m)) for i in range(n))
        for j, (_, rest, r) in enumerate(gains):  # ∂L/∂λ: ∂w_T/∂γ_j = ±∏_{i≠j}
            d_gain = 0.0
            for t in range(count):
                other = corner_weight(gains, t, skip=j)  # 1.0 for a single call
                dot = sum(
                    fk[(t * n + i) * m + b] * u[i] * col[b] for i in range(n) for b in range(m)
                )
                d_gain = d_gain + (other * dot if (t >> j) & 1 else -other * dot)
            d_lam = d_lam + d_gain * r * rest  # ∂γ/∂λ = s² r² = (1 − γ) r
        # The sums over eigenvalues: (gain rows × u_i) against col, one (rows·n × d) @
        # (d × m) product a step (full float32 on accelerators too); both operands
        # broadcast or stack vectors that are already stored.
        lhs = _gain_rows(gains, lam)[:, None, :] * jnp.stack(u)[None]
        sums = row_sums(lhs.reshape(-1, lam.shape[0]), jnp.stack(col))
        return (ub, d_lam), sums

    ub0 = (ct_h,) + (zero,) * (n - 1)
    (_, d_lam), sums = jax.lax.scan(body, (ub0, zero), (f, s, rows))
    steps = f.shape[0]
    d_f = sums[:, : count * n].reshape(steps, count * n * m)
    half = [[_squeeze(t, j) for t in range(count)] for j in range(calls)]  # (E, 2^E)
    part = sums[:, count * n :].reshape(steps, calls, count // 2, n * m)
    part = part[:, np.arange(calls)[:, None], np.asarray(half, np.int32).reshape(calls, count)]
    bits = (np.arange(count)[None, :] >> np.arange(calls)[:, None]) & 1  # (E, 2^E)
    sign = jnp.asarray(2.0 * bits - 1.0, f.dtype)  # ∂w_T/∂γ_j: + if bit j of T is set
    per_call = f.reshape(steps, 1, count, n * m) * part * sign[None, :, :, None]
    d_s = -2.0 * s * jnp.sum(per_call, axis=(2, 3))
    return d_f, d_s, d_lam


_rows.defvjp(_rows_fwd, _rows_bwd)


def output_row(corners, lam):
    """(H, Σ_k |u_{k+1} B_k|²) per eigenvalue, σ coordinates (module docstring).

    Args:
      corners: ``step_corners(sampler, sigmas)``.
      lam: (d,) eigenvalues.
    """
    f, s = corners
    steps, count, n, m = f.shape
    lam = lam.astype(f.dtype)
    return _rows((n, m), f.reshape(steps, count * n * m), s, lam)
