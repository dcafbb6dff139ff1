"""One-state deterministic samplers in closed form: H(λ) as a product of rational gains.

A sampler whose state is x alone (``history`` 0) and that draws no noise (Euler, Heun,
DPM-2, and the ancestral samplers at η = 0) maps each eigen-direction as y' = g_k(λ)·y.
Step k calls the denoiser E times at levels s_k1 … s_kE; with the Gaussian denoiser each
call contributes a gain γ_j = λ/(λ + s_kj²) and its complement s_kj²/(λ + s_kj²), and the
step is multilinear in the γ_j (``core.compose.corner_columns``). So

    g_k(λ) = Σ_T F_k[T] ∏_{j∈T} γ_j ∏_{j∉T} (1 − γ_j) = N_k(λ) / ∏_j (λ + s_kj²),
    N_k(λ) = Σ_i c_ki λ^i,  c_ki = Σ_{|T| = i} F_k[T] ∏_{j∉T} s_kj²,

a ratio of polynomials of degree E, from the step run once per step at the 2^E corners of
its gains (on scalars, independent of λ). The transfer function H = ∏_k g_k(λ) is then
the DDIM/DDPM path's product of Möbius gains generalised from E = 1 to any E:

- forward: the gains of ``_CHUNK`` steps multiplied together, one log per chunk (a fused
  pass over (steps × eigenvalues), no loop over steps);
- reverse (written out): ∂ log|N_k|/∂c_ki = λ^i/N_k and ∂ log(λ + s²)/∂s² = 1/(λ + s²),
  summed over eigenvalues against the cotangent: one (steps × block) array of
  1/(N_k·∏_j (λ + s_kj²)) (scaled) and one matrix product with (E + 1)² columns
  (``_bwd``), no autodiff transpose of the products.

A gain can be negative for a large step of a high-order sampler: the product keeps its
sign apart (log |H| and sign H). Where a gain is exactly 0 (H = 0 exactly), the reverse
pass takes 1/N = 0 for it (finite; the exact gradient there is ∏_{j≠k} g_j·∂g_k, a set of
measure zero in the parameters). ``core.engine`` uses this path for every schedule length
and without a trajectory; the trajectory still runs ``core.compose``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdiff.core.checks import matmul, row_sums
from specdiff.core.compose import corners_over, count_calls
from specdiff.core.steps import step_plan

__all__ = [
    "applies",
    "chunked",
    "coefficients",
    "log_gain_product",
    "step_coefficients",
    "transfer",
    "unit_parts",
]

# Gains multiplied together before one log (as the Möbius path's chunk).
_CHUNK = 32


def applies(sampler) -> bool:
    """Whether ``sampler`` has a one-component state and no noise (this path's samplers)."""
    return sampler.history == 0 and sampler.noise_dim == 0


def coefficients(sampler, sigmas, start, stop):
    """(c (M, E + 1), s2 (M, E)) of the steps start … stop − 1 before the last: N_k's
    coefficients, lowest power first, and the calls' s_kj². Independent of λ;
    differentiable in ``sigmas``."""
    calls = count_calls(sampler, sigmas, start, 0, False)
    f, s = corners_over(sampler, sigmas, start, stop, 0, calls)
    f = f[:, :, 0, 0]  # (M, 2^E): the one-state step's gain at each corner
    s2 = s**2
    cols = []
    for power in range(calls + 1):
        total = jnp.zeros(f.shape[:1], f.dtype)
        for corner in range(2**calls):
            bits = [(corner >> j) & 1 for j in range(calls)]
            if sum(bits) != power:
                continue
            term = f[:, corner]
            for j, b in enumerate(bits):
                if not b:
                    term = term * s2[:, j]
            total = total + term
        cols.append(total)
    return jnp.stack(cols, -1), s2


def _numerator(c, lam):
    """N(λ) = Σ_i c_i λ^i by Horner; c (…, E + 1), lam broadcast against c[..., 0]."""
    out = c[..., -1]
    for i in range(c.shape[-1] - 2, -1, -1):
        out = out * lam + c[..., i]
    return out


def _product(xs):
    out = 1.0
    for x in xs:
        out = out * x
    return out


def _gains(c, s2, lam):
    """g (M, d) = N(λ)/∏_j (λ + s_j²)."""
    num = _numerator(c[:, None, :], lam)
    return num / _product([lam + s2[:, j, None] for j in range(s2.shape[-1])])


def chunked(x, fill):
    """(n, …) → (k, c, …), k = ⌈n/``_CHUNK``⌉ chunks of c = ⌈n/k⌉ ≤ ``_CHUNK`` (fewer than
    k padding rows, e.g. 99 steps as 4 × 25), padded with ``fill``."""
    n = x.shape[0]
    size = max(1, -(-n // max(1, -(-n // _CHUNK))))
    pad = (-n) % size
    x = jnp.concatenate([x, jnp.full((pad,) + x.shape[1:], fill, x.dtype)], 0)
    return x.reshape((-1, size) + x.shape[1:])


@jax.custom_vjp
def log_gain_product(lam, c, s2):
    """(Σ_k log|g_k(λ)|, ∏_k sign g_k(λ)) per eigenvalue; lam (d,), c (M, E+1), s2 (M, E)."""
    if lam.shape[-1] <= 16:  # few eigenvalues (per-eigenvalue problems): one log per step
        g = _gains(c, s2, lam)
        return jnp.sum(jnp.log(jnp.abs(g)), 0), jnp.prod(jnp.sign(g), 0)
    valid = chunked(jnp.ones(c.shape[:1], bool), False)[..., None]  # (chunks, size, 1)
    g = jax.vmap(lambda a, b: _gains(a, b, lam))(chunked(c, 1.0), chunked(s2, 1.0))
    p = jnp.prod(jnp.where(valid, g, 1.0), axis=1)  # (chunks, d)
    return jnp.sum(jnp.log(jnp.abs(p)), 0), jnp.prod(jnp.sign(p), 0)


def _fwd(lam, c, s2):
    return log_gain_product(lam, c, s2), (lam, c, s2)


def _safe_inverse(x):
    nonzero = x != 0
    return jnp.where(nonzero, 1.0 / jnp.where(nonzero, x, 1.0), 0.0)


def unit_parts(lam):
    """(u, v) = (1/(1 + λ), λ/(1 + λ)), u + v = 1: the reverse passes' per-eigenvalue
    weights. A factor v + c·u lies between min(1, c) and max(1, c) whatever λ ≥ 0 is, so
    products of such factors keep the range of their coefficients (``_bwd``,
    ``engine._mobius_sums``)."""
    u = 1.0 / (1.0 + lam)
    return u, lam * u


def _elementary(xs):
    """[e_0, …, e_n] of the values xs: the coefficients of ∏_x (t + x), highest power of
    t first (e_0 = 1, e_1 = Σ x, …, e_n = ∏ x)."""
    e = [1.0]
    for x in xs:
        e = [e[0]] + [e[i] + x * e[i - 1] for i in range(1, len(e))] + [x * e[-1]]
    return e


def _bwd(res, cts):
    """The reverse pass: every sum over eigenvalues from one (M × d) array and one product.

    The cotangent of Σ_k log|g_k| needs, per step k, Σ_d ct·λ^i/N_k (∂/∂c_ki) and
    Σ_d ct/(λ + s_kj²) (∂/∂s_kj²). With u = 1/(1 + λ), v = λu and
    P_k = ∏_j (v + s_kj² u) = u^E ∏_j (λ + s_kj²) = Σ_m e_m(s_k²) u^m v^(E−m), take

        t = L_k/(N_k·P_k),  L_k = ∏_j min(1, s_kj²) ≤ P_k (so |t| ≤ 1/|N_k|),

    one division per step and eigenvalue, and X[k, i, m] = Σ_d t·ct·λ^i u^m v^(E−m), one
    (M × d) @ (d × (E + 1)²) product. Then 1/N_k = t·P_k/L_k gives
    Σ_d ct λ^i/N_k = Σ_m (e_m/L_k)·X[k, i, m], and 1/P_k = t·N_k/L_k gives
    Σ_d ct u^(E−m) v^m/P_k = Σ_i c_ki·X[k, i, E−m]/L_k, from which
    1/(λ + s_j²) = u·∏_{l≠j} (v + s_l² u)/P_k = Σ_m e_(E−1−m)(s²_{l≠j})·u^(E−m) v^m/P_k.
    The per-eigenvalue ∂/∂λ comes from one (rows × M) @ (M × d) product the same way.
    Where N_k(λ) = 0 exactly, t = 0 (as 1/N was before): a finite gradient there.

    Until the thirteenth pass of issue 13 the reverse pass built 1/N_k and 1/P_k as two
    arrays with a product each (BUILD_NOTES, "Thirteenth pass"). Near a zero of N_k the
    sums through 1/P_k are now combinations Σ_i c_ki(…) whose terms cancel, so their
    error grows like that of the ∂/∂c_ki sums, which is there in either form (1/N_k is
    large); tested at eigenvalues 1e-8 from a zero.
    """
    lam, c, s2 = res
    ct = cts[0]  # the sign is piecewise constant: no cotangent flows through it
    calls = s2.shape[-1]
    steps = c.shape[:1]
    u, v = unit_parts(lam)
    uv = [u**m * v ** (calls - m) for m in range(calls + 1)]  # u^m v^(E−m)
    powers = [jnp.ones_like(lam)]
    for _ in range(calls):
        powers.append(powers[-1] * lam)
    low = _product([jnp.minimum(1.0, s2[:, j]) for j in range(calls)])
    e = [jnp.broadcast_to(x / low, steps) for x in _elementary(list(s2.T))]  # e_m/L
    inv_low = jnp.broadcast_to(1.0 / low, steps)
    pu = sum(e[m][:, None] * uv[m] for m in range(calls + 1))  # P_k/L_k ≥ 1, (M, d)
    t = _safe_inverse(_numerator(c[:, None, :], lam) * pu)
    cols = jnp.stack([ct * powers[i] * uv[m] for i in range(calls + 1) for m in range(calls + 1)])
    x = row_sums(t, cols).reshape(steps + (calls + 1, calls + 1))  # X[k, i, m]
    d_c = sum(e[m][:, None] * x[:, :, m] for m in range(calls + 1))  # Σ_d ct λ^i/N_k
    # Σ_d ct u^(E−m) v^m/P_k for m < E, and the weights of 1/(λ + s_j²) on them.
    x_p = [
        inv_low * sum(c[:, i] * x[:, i, calls - m] for i in range(calls + 1)) for m in range(calls)
    ]
    others = [_elementary([s2[:, i] for i in range(calls) if i != j]) for j in range(calls)]
    d_s2 = [-sum(others[j][calls - 1 - m] * x_p[m] for m in range(calls)) for j in range(calls)]
    d_lam = _lambda_sums(t, c, e, inv_low, others, powers, uv)
    d_s2 = jnp.stack(d_s2, -1) if calls else jnp.zeros_like(s2)
    return ct * d_lam, d_c, d_s2


def _lambda_sums(t, c, e, inv_low, others, powers, uv):
    """Per eigenvalue, Σ_k Σ_i i c_ki λ^(i−1)/N_k − Σ_k Σ_j 1/(λ + s_kj²) (``_bwd``'s
    ∂/∂λ), from ``t`` by one (rows × M) @ (M × d) product."""
    calls, steps = len(uv) - 1, c.shape[:1]
    rows, monomials = [], []
    for i in range(1, calls + 1):
        for m in range(calls + 1):
            rows.append(i * c[:, i] * e[m])  # 1/N_k = t·Σ_m (e_m/L_k) u^m v^(E−m)
            monomials.append(powers[i - 1] * uv[m])
    for m in range(calls):
        weight = inv_low * sum(others[j][calls - 1 - m] for j in range(calls))
        for i in range(calls + 1):
            rows.append(-weight * c[:, i])  # 1/P_k = t·Σ_i (c_ki/L_k) λ^i
            monomials.append(uv[calls - m] * powers[i])
    r = matmul(jnp.stack([jnp.broadcast_to(w, steps) for w in rows]).astype(t.dtype), t)
    return jnp.sum(jnp.stack(monomials) * r, axis=0)


log_gain_product.defvjp(_fwd, _bwd)


def step_coefficients(sampler, sigmas):
    """The steady steps' (c, s2) (``coefficients``), or None when S = 1 (last step only)."""
    _, middle, _ = step_plan(sigmas.shape[0] - 1, sampler.history)
    if middle is None:
        return None
    start, stop, _ = middle
    return coefficients(sampler, sigmas, start, stop)


def transfer(sampler, lam, sigmas, coeffs=None):
    """H(λ) in σ coordinates: the product of every step's gain (steady steps in closed
    form, the last step, which may differ, by ``sampler.affine_columns``)."""
    num_steps = sigmas.shape[0] - 1
    if coeffs is None:
        coeffs = step_coefficients(sampler, sigmas)
    a_last, _ = sampler.affine_columns(lam, sigmas, num_steps - 1, order=0, last=True)
    h = a_last[0, 0]
    if coeffs is None:
        return h
    log_abs, sign = log_gain_product(lam, *coeffs)
    return h * sign * jnp.exp(log_abs)
