"""Benchmark section "samplers": value+grad of W2 for several samplers (issue 12).

specdiff's engine (``sd.output_moments``: the closed-form Möbius path for DDIM, the
telescoped closed form for DDPM and ancestral Euler, the rational path for one-state
deterministic samplers, the adjoint path for the other samplers with history or noise;
blocked over eigenvalues) against a
straightforward ``lax.scan`` of the same step: at every step, the per-eigenvalue Jacobian
of ``sampler.step`` on the scalar linear denoiser (``jax.jacfwd`` under ``vmap``), then
mean and covariance of the state propagated with it. Both are differentiated end to end.
The eigenvalue counts come from ``--dims`` (default 3072); the scan's row is skipped where
its reverse pass would keep more than ``SCAN_ELEMENTS`` residuals (d = 786432, S = 1000).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from experiments.benchmark import floor_vg
from specdiff.core.engine import sigmas_with_zero, start_variance

SAMPLERS = ("ddim", "heun", "dpmpp_2m", "dpmpp_2m_sde")
# The full run adds DDPM, a three-value state and an ancestral (noisy one-state) sampler.
FULL_SAMPLERS = SAMPLERS + ("ddpm", "dpmpp_3m_sde", "euler_ancestral")


def _scan_moments(spec, schedule, sampler):
    """Mean and variance of the output: plain ``lax.scan`` over the steps, jacfwd per λ."""
    lam, m = spec.eigenvalues, spec.mean
    sig = sigmas_with_zero(schedule, lam.dtype)
    n, q, S = sampler.state_size, sampler.noise_dim, schedule.num_steps

    def jac(i, order, last):
        def one(s, z, lam_):
            def den(x, sigma):
                return lam_ / (lam_ + sigma**2) * x

            x, h = sampler.step(den, s[0], tuple(s[1:]), tuple(z), sig, i, order=order, last=last)
            return jnp.stack([x, *h])

        s0, z0 = jnp.zeros((n,), lam.dtype), jnp.zeros((q,), lam.dtype)
        return jax.vmap(jax.jacfwd(one, argnums=(0, 1)), in_axes=(None, None, 0))(s0, z0, lam)

    def propagate(carry, a, b):
        e, p = carry
        p = jnp.einsum("dij,djk,dlk->dil", a, p, a) + jnp.einsum("dij,dkj->dik", b, b)
        return jnp.einsum("dij,dj->di", a, e), p

    e = jnp.zeros((lam.shape[0], n), lam.dtype).at[:, 0].set(-m)
    p = jnp.zeros((lam.shape[0], n, n), lam.dtype).at[:, 0, 0].set(start_variance(schedule))
    carry = (e, p)
    for i in range(min(sampler.history, S)):  # warm-up steps of multistep samplers
        carry = propagate(carry, *jac(i, i, i == S - 1))
    w = min(sampler.history, S)
    if S - 1 > w:
        carry, _ = jax.lax.scan(
            lambda c, i: (propagate(c, *jac(i, w, False)), None),
            carry,
            jnp.arange(w, S - 1),
        )
    if S - 1 >= w:
        carry = propagate(carry, *jac(S - 1, w, True))
    e, p = carry
    return m + e[:, 0], p[:, 0, 0]


def _w2(mean, var, spec):
    lam, m = spec.eigenvalues, spec.mean
    return jnp.sqrt(jnp.sum((mean - m) ** 2 + (jnp.sqrt(var) - jnp.sqrt(lam)) ** 2))


def _fast(rho, spec, sampler):
    mom = sd.output_moments(spec, sd.Schedule.from_log_snr(rho, "ve"), sampler)
    return _w2(mom.mean, mom.var, spec)


def _scan(rho, spec, sampler):
    return _w2(*_scan_moments(spec, sd.Schedule.from_log_snr(rho, "ve"), sampler), spec)


_fast_vg = jax.jit(jax.value_and_grad(_fast), static_argnums=2)
_scan_vg = jax.jit(jax.value_and_grad(_scan), static_argnums=2)


# The straightforward scan's reverse pass keeps every step's residuals, O(S·d·n²) floats:
# past this many (1 GiB of float32) its row is skipped, the engine's still timed.
SCAN_ELEMENTS = 2**28


def _row(d, name, S, timing, spec, quick) -> dict:
    sampler = sd.samplers.from_name(name)
    rho = jnp.asarray(sd.schedules.edm(S, process="ve").log_snr, np.float32)
    vf, gf = _fast_vg(rho, spec, sampler)
    row = {
        "section": "samplers",
        "what": f"jit(value_and_grad) W2, {name}",
        "d": d,
        "S": S,
        "dtype": "float32",
    }
    reps, min_time = (3, 0.0) if quick else (20, 0.5)
    floor = timing["timed"](floor_vg, rho, spec, reps=reps, min_time=min_time, max_time=5.0)
    row["floor_ms"] = 1e3 * floor["median"]
    size = S * d * sampler.state_size**2
    if size > SCAN_ELEMENTS:
        t = timing["timed"](_fast_vg, rho, spec, sampler, reps=reps, min_time=min_time)
        row.update(fast_ms=1e3 * t["median"], scan_ms=None, speedup=None)
        row["slow_label"] = f"skipped ({size:.1e} residuals)"
        return row
    vs, gs = jax.block_until_ready(_scan_vg(rho, spec, sampler))
    args = (rho, spec, sampler)
    p = timing["paired"](_fast_vg, _scan_vg, args, args, reps=reps, min_time=min_time, warmup=False)
    row.update(timing["pair_fields"](p))
    row.update(
        ceiling=row["scan_ms"] / row["floor_ms"],
        value_rel_diff=float(abs(vf - vs) / abs(vs)),
        grad_rel_diff=float(jnp.max(jnp.abs(gf - gs)) / jnp.max(jnp.abs(gs))),
    )
    return row


def bench_samplers(quick: bool, timing, benchmark_spectrum, dims=None) -> list[dict]:
    """Rows for every sampler, d in ``dims`` (default 3072; --quick 256), S in 10, 100, 1000.

    ``timing``: the harness's ``timed``, ``paired`` and ``pair_fields``. Each row also
    times the floor (``experiments.benchmark.w2_floor``: one closed-form step) and gives
    the ceiling scan / floor, the most any implementation of the S steps could gain.
    """
    if dims is None:
        dims = (256,) if quick else (3072,)
    steps = (10, 100) if quick else (10, 100, 1000)
    rows = []
    for d in dims:
        spec = benchmark_spectrum(d, np.float32)
        for name in SAMPLERS if quick else FULL_SAMPLERS:
            for S in steps:
                rows.append(_row(d, name, S, timing, spec, quick))
                print(rows[-1], flush=True)
    return rows
