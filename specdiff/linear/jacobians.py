"""Matrix-free singular vectors of the Jacobian of a denoiser (SPEC §8, beyond the linear case).

``top_singular_vectors`` gives the leading singular triplets of J = ∂D/∂x of any map
x ↦ D(x) (a trained denoiser) from jvp/vjp products only.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from specdiff.linear.finite_sample import _check_key

__all__ = [
    "SingularTriplets",
    "top_singular_vectors",
]


class SingularTriplets(NamedTuple):
    """Leading singular triplets of J = ∂f/∂x at a point: J ≈ U diag(S) Vᵀ.

    Attributes:
      left: (d_out, k) left singular vectors u_i (output space, flattened).
      values: (k,) singular values, decreasing.
      right: (d_in, k) right singular vectors v_i (input space, flattened).
      residual: (k,) |Jᵀ u_i − s_i v_i| / s_i (0 for exact triplets; |J v_i − s_i u_i| = 0
        by construction of the Rayleigh–Ritz step).
    """

    left: jax.Array
    values: jax.Array
    right: jax.Array
    residual: jax.Array


@functools.partial(jax.jit, static_argnames=("fn", "k", "oversample", "iters"))
def _subspace_svd(fn, x, args, key, k, oversample, iters):
    shape = x.shape
    flat = x.reshape(-1)

    def f(v):
        return fn(v.reshape(shape), *args).reshape(-1)

    _, jvp = jax.linearize(f, flat)
    _, vjp = jax.vjp(f, flat)
    jv = jax.vmap(jvp, in_axes=1, out_axes=1)  # J V, V (d_in, m)
    jtu = jax.vmap(lambda u: vjp(u)[0], in_axes=1, out_axes=1)  # Jᵀ U
    m = k + oversample
    v = jnp.linalg.qr(jax.random.normal(key, (flat.shape[0], m), flat.dtype))[0]

    def body(_, v):  # block power iteration on JᵀJ, re-orthonormalised every step
        return jnp.linalg.qr(jtu(jv(v)))[0]

    v = jax.lax.fori_loop(0, iters, body, v)
    b = jv(v)  # Rayleigh–Ritz: SVD of J restricted to span(V)
    ub, s, wt = jnp.linalg.svd(b, full_matrices=False)
    right = v @ wt.T
    u, s, right = ub[:, :k], s[:k], right[:, :k]
    res = jnp.linalg.norm(jtu(u) - right * s, axis=0) / jnp.where(s > 0, s, 1.0)
    return SingularTriplets(left=u, values=s, right=right, residual=res)


def top_singular_vectors(
    fn, x, *args, k: int, key: jax.Array, iters: int = 50, oversample: int = 4
) -> SingularTriplets:
    """Top-k singular triplets of the Jacobian ∂fn/∂x at x, from jvp/vjp products only.

    Block subspace iteration on JᵀJ with m = k + oversample vectors (V ← qr(Jᵀ J V), ``iters``
    times in a ``lax.fori_loop``), then a Rayleigh–Ritz step: the SVD of the d_out × m
    matrix J V. The error in the i-th singular vector decays as (s_{m+1}/s_i)^{2·iters}.
    No Jacobian is ever formed: each iteration costs m jvps and m vjps of ``fn``.

    ``fn`` is a static argument of a module-level ``jit``: pass the same function object
    across calls (e.g. a module-level function, with the model's parameters in ``args``)
    so the compilation is reused.

    Args:
      fn: callable ``fn(x, *args) -> y`` (e.g. a denoiser x ↦ D(x)); any input/output
        shapes (flattened internally).
      x: the point of linearisation.
      *args: further (traced) arguments of ``fn``: parameters, noise level.
      k: number of triplets; key: typed PRNG key for the random start block.
      iters: subspace iterations; oversample: extra vectors beyond k.

    Returns:
      ``SingularTriplets`` (flattened vectors).
    """
    _check_key(key)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(float)
    for name, v, lo in (("k", k, 1), ("iters", iters, 1), ("oversample", oversample, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    d_in = int(np.prod(x.shape))
    d_out = int(np.prod(jax.eval_shape(lambda v: fn(v, *args), x).shape))
    if k + oversample > min(d_in, d_out):
        raise ValueError(
            f"k + oversample = {k + oversample} must not exceed min(d_in, d_out) = "
            f"{min(d_in, d_out)}"
        )
    return _subspace_svd(fn, x, tuple(args), key, int(k), int(oversample), int(iters))
