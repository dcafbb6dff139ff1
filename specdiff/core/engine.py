"""Closed-form spectral transfer functions and output moments (SPEC §3–4, §11).

Four paths. DDIM/DDPM (``sampler.mobius``; the outputs at η = 0 and every trajectory;
with noise the outputs take ``core.telescoped`` at η = 1, the adjoint path below at
0 < η < 1): for a schedule with levels
L_0 … L_{S−1} (the final step to clean data implicit), step k maps the centred state per
eigenvalue as y_k = g_k(λ)·y_{k−1} + σ_k·z. Then

    H(λ)        = ∏_k g_k(λ)
    E[y_S]      = H·E[y_0]
    Var[y_S]    = H²·Var[y_0] + Σ_k σ_k²·∏_{j>k} g_j²

evaluated in log space over a (steps × eigenvalues) array: one fused pass, no loop over
steps or eigenvalues, no underflow for large S, and finite gradients with respect to the
log-SNR levels everywhere inside the domain. The final step (to clean) has σ = 0 and is
kept apart so that λ = 0 gives H = 0 exactly with finite gradients.

One-state deterministic samplers (Euler, Heun, DPM-2, the ancestral ones at η = 0;
``core.rational``): the same product with g_k(λ) a ratio of polynomials of degree E (the
step's denoiser calls), from the step run at the corners of its gains; same chunked
forward and written-out reverse pass.

DDPM and ancestral Euler at η = 1 (``core.telescoped``): their gains' products
telescope, so H = λ/(λ + σ_0²) (σ coordinates) and the noise is one weighted sum over
steps of (λ/(λ + σ_{k+1}²))².

Every other sampler (history or noise; SPEC §11):
s = (y, history) maps as s' = A_k s + B_k z_k, and the output's row u_k = e₁ᵀ A_{S−1}⋯A_k
runs back through the steps (``core.adjoint``: n numbers per eigenvalue, [A_k | B_k]
interpolated at the gains γ(σ) from the step run at the corners of its gains), with a
written-out reverse pass.
Trajectories compose the steps' maps instead (``core.compose``, an associative scan).
All run over blocks of eigenvalues (``_blocked_output``): no (S × d) temporary.

Why this module is long: the public entry points (moments, transfer function, forward
marginals), their input checks and the dispatch between the paths and onto devices share
the private blocked output; split apart, each piece would import the others.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from specdiff.core import adjoint, rational, sharded, telescoped
from specdiff.core.checks import cumsum, matmul, row_sums
from specdiff.core.compose import propagate
from specdiff.core.mesh import pad_to_multiple
from specdiff.core.schedule import Schedule, log_alpha_sigma
from specdiff.core.spectrum import Spectrum


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Moments:
    """Per-eigenvalue Gaussian moments of the generated distribution.

    Attributes:
      mean: (d,) output mean in the eigenbasis (uncentred, compare with ``spectrum.mean``).
      var: (d,) output variance (compare with the eigenvalues).
      trajectory_mean: (S+1, d) or None; row 0 is the start distribution, row k the state
        after step k (at level L_k; row S is the output).
      trajectory_var: (S+1, d) or None, likewise.
    """

    mean: jax.Array
    var: jax.Array
    trajectory_mean: jax.Array | None = None
    trajectory_var: jax.Array | None = None


def _check_args(spectrum, schedule, sampler):
    if not isinstance(spectrum, Spectrum):
        raise ValueError(f"spectrum must be a specdiff.Spectrum, got {type(spectrum).__name__}")
    _check_schedule_sampler(schedule, sampler)


def _check_schedule_sampler(schedule, sampler):
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")
    if not (hasattr(sampler, "affine") and hasattr(sampler, "step")):
        raise ValueError(
            f"unknown sampler {sampler!r}; allowed: a specdiff.samplers object, e.g. "
            "specdiff.samplers.DDIM(eta) or specdiff.samplers.from_name('heun')"
        )


def _mobius(sampler) -> bool:
    """DDIM/DDPM: Möbius gains (their trajectories take the closed-form scan below)."""
    return getattr(sampler, "mobius", False)


def _mobius_output(sampler) -> bool:
    """DDIM at η = 0: outputs by the closed-form product of Möbius gains. With noise the
    outputs take ``core.telescoped`` (η = 1) or the adjoint path (0 < η < 1). Before the
    telescoped path, DDPM's outputs took the adjoint path, whose row recursion measured
    1.3× / 2.4× / 3.3× faster than this path's log-space sum of the noise at S = 10 / 100 /
    1000 (d = 3072, float32 value+grad of W2, ad hoc) and equals it to 1e-14 in float64
    (tests/core/test_adjoint.py)."""
    return _mobius(sampler) and sampler.deterministic


def _telescoped(sampler) -> bool:
    """DDPM's step (DDPM, ancestral Euler at η = 1): ``core.telescoped``."""
    return telescoped.applies(sampler)


def _rational(sampler) -> bool:
    """One-state deterministic samplers (Euler, Heun, DPM-2, …): ``core.rational``."""
    return not _mobius(sampler) and rational.applies(sampler)


def _as_eigenvalues(eigenvalues):
    if isinstance(eigenvalues, Spectrum):
        return eigenvalues.eigenvalues
    return Spectrum(eigenvalues).eigenvalues


# Steps multiplied together before one log is taken (``rational.chunked``: chunks of up
# to 32). Each inner gain lies between its λ → 0 and λ → ∞ limits c_k/σ_k and α_{k+1}/α_k,
# whose products over any run of steps telescope, so a chunk's product stays far inside
# the float32 range.


@jax.custom_vjp
def _sum_log_mobius(lam, log_p, log_q, log_r, log_t):
    """Σ_k log((p_k λ + q_k)/(r_k λ + t_k)) for each λ, with p_k … t_k > 0.

    Forward: products of up to 32 gains, then one log per chunk (no log per element).
    Backward: the derivatives are sums over λ of pλ/N, q/N, rλ/D and t/D (N = pλ + q,
    D = rλ + t) against the cotangent: from one (steps × d) array and one matrix product
    (``_mobius_sums``), or, for small problems, from the arrays 1/N and 1/D.
    """
    if lam.shape[-1] <= 16:  # few eigenvalues (per-eigenvalue problems): one log per step
        p, q, r, t = (jnp.exp(v)[:, None] for v in (log_p, log_q, log_r, log_t))
        return jnp.sum(jnp.log((p * lam + q) / (r * lam + t)), axis=0)
    p, q, r, t = (
        jnp.exp(rational.chunked(v, 0.0))[..., None] for v in (log_p, log_q, log_r, log_t)
    )
    g = (p * lam + q) / (r * lam + t)  # (chunks, chunk, d)
    return jnp.sum(jnp.log(jnp.prod(g, axis=1)), axis=0)


def _sum_log_mobius_fwd(lam, log_p, log_q, log_r, log_t):
    return _sum_log_mobius(lam, log_p, log_q, log_r, log_t), (lam, log_p, log_q, log_r, log_t)


def _mobius_sums(lam, ct, log_p, log_q, log_r, log_t):
    """The reverse pass's sums over λ, from one division per step and eigenvalue.

    With a = √(p/q), b = √(r/t), u = 1/(1 + λ), v = λu (so u + v = 1), N = √(pq)(aλ + 1/a)
    and D = √(rt)(bλ + 1/b), and R = 1/((a v + u/a)(b v + u/b)) = u⁻²/((aλ + 1/a)(bλ + 1/b)):

        pλ/N = a(b v² + uv/b)·R,   q/N = (b uv + u²/b)·R/a,
        rλ/D = b(a v² + uv/a)·R,   t/D = (a uv + u²/a)·R/b,

    so the four sums against the cotangent are combinations of X = R @ [ct v², ct uv, ct u²],
    one (steps × d) @ (d × 3) product. Each factor of R lies between min(a, 1/a) and
    max(a, 1/a) (resp. b) whatever λ is (``rational.unit_parts``), so nothing overflows
    where 1/N and 1/D do not; and
    p/N − r/D = (a/b − b/a)·u²R gives ∂/∂λ. Against the two reciprocal arrays and two
    products (DDIM, d = 3072, S = 100, float32 value+grad, ad hoc, two sessions):
    0.147–0.180 against 0.168–0.220 ms, and closer to float64 (largest gradient error
    1.7e-3 against 2.8e-3 of the largest gradient, VE).
    """
    a, b = jnp.exp(0.5 * (log_p - log_q)), jnp.exp(0.5 * (log_r - log_t))
    ia, ib = 1.0 / a, 1.0 / b
    u, v = rational.unit_parts(lam)
    rr = 1.0 / ((a[:, None] * v + ia[:, None] * u) * (b[:, None] * v + ib[:, None] * u))
    x = row_sums(rr, jnp.stack([ct * v * v, ct * u * v, ct * u * u]))  # (S, 3)
    x2, x1, x0 = x[:, 0], x[:, 1], x[:, 2]
    d_lam = ct * u * u * matmul(a * ib - b * ia, rr)
    return (
        d_lam,
        a * (b * x2 + ib * x1),
        ia * (b * x1 + ib * x0),
        -b * (a * x2 + ia * x1),
        -ib * (a * x1 + ia * x0),
    )


# (steps × eigenvalues) from which the reverse pass takes one array (``_mobius_sums``):
# below, the two reciprocal arrays. At d = 3072, S = 10 (9 inner steps) XLA's CPU
# backend split the one-array fusion over its threads and not the reciprocal fusions (its
# cost model: more flops per byte); the call took 0.10–0.13 against 0.05–0.09 ms. At
# S = 30 both took the same; at d = 49152, S = 10 0.44 against 0.51 ms (DDIM value+grad,
# float32, ad hoc).
_ONE_ARRAY_MIN = 65536


def _sum_log_mobius_bwd(res, ct):
    lam, log_p, log_q, log_r, log_t = res
    if lam.shape[-1] * log_p.shape[0] >= _ONE_ARRAY_MIN:
        return _mobius_sums(lam, ct, log_p, log_q, log_r, log_t)
    p, q, r, t = (jnp.exp(v) for v in (log_p, log_q, log_r, log_t))
    if lam.shape[-1] > 16:  # one matrix product over the eigenvalue axis
        # 1/N and 1/D stacked into one (2S × d) array: one kernel and one product, not two
        # of each (DDIM, d = 3072, S = 10, float32 value+grad, synchronous dispatch, ad hoc:
        # 0.081 against 0.088 ms; S = 20 0.105 against 0.113–0.116 ms).
        n = p.shape[0]
        inv = 1.0 / (jnp.concatenate([p, r])[:, None] * lam + jnp.concatenate([q, t])[:, None])
        ab = row_sums(inv, jnp.stack([ct * lam, ct]))  # (2S, 2)
        a, b = ab[:n], ab[n:]
        d_lam = ct * matmul(jnp.concatenate([p, -r]), inv)
        return d_lam, p * a[:, 0], q * a[:, 1], -r * b[:, 0], -t * b[:, 1]
    # Few eigenvalues (per-eigenvalue problems under vmap): plain fused sums.
    inv_num = 1.0 / (p[:, None] * lam + q[:, None])  # (S, d)
    inv_den = 1.0 / (r[:, None] * lam + t[:, None])
    a = jnp.stack([matmul(inv_num, ct * lam), matmul(inv_num, ct)], axis=1)
    b = jnp.stack([matmul(inv_den, ct * lam), matmul(inv_den, ct)], axis=1)
    d_lam = ct * jnp.sum(p[:, None] * inv_num - r[:, None] * inv_den, axis=0)
    return d_lam, p * a[:, 0], q * a[:, 1], -r * b[:, 0], -t * b[:, 1]


_sum_log_mobius.defvjp(_sum_log_mobius_fwd, _sum_log_mobius_bwd)


def _inner_steps(lam, schedule: Schedule, sampler):
    """The sampler's steps between noisy levels, the final-step gain and start moments.

    Returns (step: LinearStep over S−1 steps, log_g_final (d,), log_var0 (), log_alpha0 ()).
    """
    rho = schedule.log_snr
    dtype = jnp.result_type(rho.dtype, lam.dtype)
    rho, lam = rho.astype(dtype), lam.astype(dtype)
    la, ls = log_alpha_sigma(rho, schedule.process)
    st = sampler.steps_along(rho, schedule.process)
    # Final step to clean: x̂0, g = α λ / (α² λ + σ²); log λ = −inf at λ = 0 gives H = 0.
    log_g_final = la[-1] + jnp.log(lam) - jnp.log(jnp.exp(2 * la[-1]) * lam + jnp.exp(2 * ls[-1]))
    # Start: VP and flow from N(0, 1); VE from N(0, σ_0²). Always E[y_0] = −α_0·m.
    log_var0 = 2 * ls[0] if schedule.process == "ve" else jnp.zeros((), dtype)
    return st, log_g_final, log_var0, la[0]


def _log_gain_matrix(lam, st):
    """log g_k(λ) for every inner step and eigenvalue, shape (S−1, d)."""
    e = lambda v: jnp.exp(v)[:, None]  # noqa: E731  (per-step scalar, broadcast over λ)
    return jnp.log((e(st.log_p) * lam + e(st.log_q)) / (e(st.log_r) * lam + e(st.log_t)))


def _log_output(lam, schedule, sampler):
    """(log H, log Var[y_S], log α_0) per eigenvalue."""
    st, log_gf, log_var0, log_a0 = _inner_steps(lam, schedule, sampler)
    lam = lam.astype(log_gf.dtype)
    total = _sum_log_mobius(lam, st.log_p, st.log_q, st.log_r, st.log_t)
    log_v = 2 * total + log_var0  # variance reaching the final step, noise-free part
    if not sampler.deterministic and st.log_p.shape[0] > 0:
        two = 2 * _log_gain_matrix(lam, st)
        suffix = cumsum(two, axis=0, reverse=True) - two  # Σ_{j>k} 2 log g_j
        noise = jax.nn.logsumexp(st.log_noise_var[:, None] + suffix, axis=0)
        log_v = jnp.logaddexp(log_v, noise)
    return total + log_gf, 2 * log_gf + log_v, log_a0


def _output(lam, m, schedule, sampler, transfer: bool = False, coeffs=None):
    """(mean, var) of the output per eigenvalue, or (H,) with ``transfer``. ``coeffs``: the
    eigenvalue-independent step data (``_step_data``), if computed."""
    if not _mobius_output(sampler):
        if _telescoped(sampler):
            h, mean, var = _telescoped_moments(lam, m, schedule, sampler, transfer, coeffs)
        elif _rational(sampler):
            h, mean, var = _rational_moments(lam, m, schedule, sampler, transfer, coeffs)
        else:
            h, mean, var = _adjoint_moments(lam, m, schedule, sampler, transfer, coeffs)
        if transfer:  # H of the process's own coordinates (SPEC §4): y_0 = α_0·y_0^σ
            la0, _ = log_alpha_sigma(schedule.log_snr[0].astype(h.dtype), schedule.process)
            return (h * jnp.exp(-la0),)
        return mean, var
    log_h, log_var, log_a0 = _log_output(lam, schedule, sampler)
    h = jnp.exp(log_h)
    return (h,) if transfer else (m - h * jnp.exp(log_a0) * m, jnp.exp(log_var))


# Elements of one (steps × block) temporary: 2²⁰ float32 = 4 MiB on the Möbius path.
_BLOCK_ELEMENTS = 2**20
# The rational path (``core.rational``: one-state deterministic samplers) keeps one
# (steps × block) array in its reverse pass, and about (E + 1)² ≤ 16 (block,) columns. It
# runs in one piece while d·(S + 16) ≤ 3·2²¹, else in blocks of S·block ≈ 2¹⁸ (timings:
# BUILD_NOTES, "Thirteenth pass").
_RATIONAL_ELEMENTS = 2**18
_RATIONAL_WHOLE = 3 * 2**21
_RATIONAL_COLUMNS = 16
# The adjoint path (``core.adjoint``: samplers with history or noise) keeps n + q numbers
# per step and eigenvalue (u_{k+1} and u_{k+1} B_k) for its reverse pass; blocks
# recompute its forward scan. DPM++ 2M SDE (n + q = 3), float32 value+grad of W2 (ad-hoc
# timings): d = 3072, S = 1000 took 23 ms in one piece against 20 ms in blocks of 512 or
# 1024; d = 49152, S = 100 took 21 / 22 / 27 / 37 ms in blocks of 4096 / 8192 / 16384 /
# one piece, S = 1000 267–276 ms in blocks of 1024–4096. DPM++ 2M (n + q = 2), d = 3072,
# S = 1000: 10.8 ms in one piece, 12.7 ms in blocks of 1024.
_ADJOINT_ELEMENTS = 2**22
_ADJOINT_WHOLE = 2**23
# The Möbius path's blocks may be larger than 16384 for short schedules: DDIM, d = 786432,
# S = 10, float32 value+grad (ad hoc): 11.9 ms in blocks of 16384, 9.6 ms of 65536, 9.5 ms
# of 131072, 32 ms unblocked (fewer trips through the loop over blocks). The telescoped
# path takes the same rule. DDPM, float32 value+grad (ad hoc): d = 3072, S = 1000: 1.05 ms
# in blocks of 1024, 1.3–1.6 ms of 256, 512 or 2048, 9.2–10.3 ms unblocked; d = 49152,
# S = 100: 1.75 ms of 8192, 1.9–2.3 ms of 4096 or 16384, 14–17 ms unblocked; d = 786432,
# S = 10: 4.9 ms of 65536, 5.5 ms of 16384 or 131072.
_MOBIUS_CAP = 2**17


# On GPUs and TPUs the blocks are sized for device memory, not for CPU caches: up to 2²⁶
# (steps × block) elements (256 MiB of float32) per number kept a step. There the CPU rule
# cost time: on an H200 (docs/results/benchmark_samplers_h200, d = 3072, S = 1000) it cut
# DPM++ 2M SDE and 3M SDE into 3 blocks each, whose scans (~20 µs a step there) ran one
# after another: 86 and 118 ms, against 19.5 ms for DDPM, one block of the same length.
_ACCELERATOR_ELEMENTS = 2**26


def _on_accelerator() -> bool:
    """Whether the default backend is a GPU or TPU (the blocks' rule, ``default_block``)."""
    return jax.default_backend() != "cpu"


def _power_of_two(target: int, lowest: int, cap: int) -> int:
    """The largest power of two ≤ ``target``, clamped to [lowest, cap]."""
    return int(min(cap, max(lowest, 1 << max(0, target.bit_length() - 1))))


def block_size(steps: int, cap: int = 16384) -> int:
    """Eigenvalues per block of the Möbius path, a power of two: S·block ≈ 2²⁰ in
    [256, ``cap``]."""
    return _power_of_two(_BLOCK_ELEMENTS // max(1, steps), 256, cap)


def _kept_per_step(sampler) -> int:
    """Numbers a block keeps per step and eigenvalue: 1 on the Möbius and rational paths,
    n + q on the paths with noise or history (adjoint: u_{k+1} and u_{k+1} B_k; telescoped,
    n = q = 1: r² and r²q in its reverse pass)."""
    if _mobius_output(sampler) or _rational(sampler):
        return 1
    return sampler.state_size + sampler.noise_dim


def default_block(steps: int, sampler, d: int | None = None) -> int:
    """The block ``_blocked_output`` uses for this schedule length, sampler and (if given)
    number of eigenvalues ``d`` (d itself: one block, no loop over blocks). On CPU the
    rules below fit the caches; on GPUs and TPUs ``_ACCELERATOR_ELEMENTS``."""
    if _on_accelerator():
        whole = _ACCELERATOR_ELEMENTS // _kept_per_step(sampler)
        if d is not None and d * steps <= whole:
            return d
        return _power_of_two(whole // max(1, steps), 256, 2**20)
    if _mobius_output(sampler) or _telescoped(sampler):
        return block_size(steps, cap=_MOBIUS_CAP)
    # One piece while d·(steps + columns) elements fit ``whole``, else blocks of ``target``.
    if _rational(sampler):
        columns, whole = _RATIONAL_COLUMNS, _RATIONAL_WHOLE
        target = _RATIONAL_ELEMENTS // max(1, steps)
    else:
        kept = _kept_per_step(sampler)
        columns, whole = 0, _ADJOINT_WHOLE // kept
        target = _ADJOINT_ELEMENTS // max(1, steps * kept)
    if d is not None and d * (steps + columns) <= whole:
        return d
    return _power_of_two(target, 256, 16384)


def _blocked_output(lam, m, schedule, sampler, block: int | None = None, transfer=False):
    """``_output`` over blocks of eigenvalues (``lax.map`` of a rematerialised body).

    Only one block's (steps × block) temporaries are live at a time, in the forward pass
    and in the backward pass (which recomputes each block), so memory is
    O(block·S + d) instead of O(S·d). The spectrum is padded with λ = 1, m = 0 to a
    multiple of the block; eigenvalues are independent, so padding changes nothing. The
    eigenvalue-independent step data (``_step_data``) is computed once, before the loop
    over blocks.
    """
    d = lam.shape[0]
    if block is None:
        block = default_block(schedule.num_steps, sampler, d)
    if d <= block:
        return _output(lam, m, schedule, sampler, transfer)
    lam_p = pad_to_multiple(lam, block, 1.0)[0].reshape(-1, block)
    m_p = pad_to_multiple(m, block, 0.0)[0].reshape(-1, block)
    coeffs = _step_data(lam, schedule, sampler)
    body = jax.checkpoint(lambda lm, sch, cn: _output(lm[0], lm[1], sch, sampler, transfer, cn))
    out = jax.lax.map(lambda lm: body(lm, schedule, coeffs), (lam_p, m_p))
    return tuple(o.reshape(-1)[:d] for o in out)


@functools.partial(jax.jit, static_argnames=("sampler", "mesh"))
def _transfer(lam, schedule, sampler, mesh=None):
    zeros = jnp.zeros_like(lam)
    return sharded.blocked_output(lam, zeros, schedule, sampler, transfer=True, mesh=mesh)[0]


def transfer_function(eigenvalues, schedule: Schedule, sampler) -> jax.Array:
    """The spectral transfer function H(λ) = ∏_k g_k(λ) of a sampler on a schedule.

    Args:
      eigenvalues: (d,) array of λ ≥ 0 (or a ``Spectrum``).
      schedule: the ``Schedule`` (S levels).
      sampler: ``samplers.DDIM(eta)`` or ``samplers.DDPM()``.

    Returns:
      (d,) array H(λ): the output's centred mean is H·E[y_0].

    Example:
      >>> import specdiff as sd
      >>> sch = sd.schedules.cosine(10)
      >>> H = sd.transfer_function([0.0, 1.0], sch, sd.samplers.DDIM())
      >>> float(H[0])
      0.0
    """
    _check_schedule_sampler(schedule, sampler)
    mesh = sharded.active_mesh()  # None on one device: the unsharded program
    lam = sharded.place(_as_eigenvalues(eigenvalues), mesh)
    return _transfer(lam, sharded.replicate(schedule, mesh), sampler, mesh)


def _alpha_trajectory(schedule):
    la, _ = log_alpha_sigma(schedule.log_snr, schedule.process)
    return jnp.concatenate([jnp.exp(la), jnp.ones((1,), la.dtype)])  # clean: α = 1


@functools.partial(jax.jit, static_argnames=("sampler", "trajectory", "block", "mesh"))
def _moments(spectrum, schedule, sampler, trajectory, block=None, mesh=None):
    lam, m = spectrum.eigenvalues, spectrum.mean
    if not trajectory:
        mean, var = sharded.blocked_output(lam, m, schedule, sampler, block, mesh=mesh)
        return Moments(mean=mean, var=var)
    if not _mobius(sampler):
        mean, var, traj = _trajectory_moments(lam, m, schedule, sampler)
        return Moments(mean=mean, var=var, trajectory_mean=traj[0], trajectory_var=traj[1])
    log_h, log_var, log_a0 = _log_output(lam, schedule, sampler)
    ey0 = -jnp.exp(log_a0) * m
    mean = m + jnp.exp(log_h) * ey0
    var = jnp.exp(log_var)
    # Trajectory: the linear recurrence y_k = g_k y_{k−1} + σ_k z composed with an
    # associative scan over (gain, noise) pairs: (g1, n1) then (g2, n2) = (g1 g2, g2² n1 + n2).
    st, log_gf, log_var0, _ = _inner_steps(lam, schedule, sampler)
    log_g = _log_gain_matrix(lam.astype(log_gf.dtype), st)
    gains = jnp.exp(jnp.concatenate([log_g, log_gf[None]], 0))
    nvar = jnp.concatenate([jnp.exp(st.log_noise_var), jnp.zeros((1,), log_gf.dtype)])
    nvar = jnp.broadcast_to(nvar[:, None], gains.shape)

    def compose(a, b):
        return a[0] * b[0], b[0] ** 2 * a[1] + b[1]

    cum_g, cum_n = jax.lax.associative_scan(compose, (gains, nvar), axis=0)
    var0 = jnp.exp(log_var0) * jnp.ones_like(lam)
    traj_var = jnp.concatenate([var0[None], cum_g**2 * var0 + cum_n], 0)
    traj_ey = jnp.concatenate([ey0[None], cum_g * ey0], 0)
    alpha = _alpha_trajectory(schedule)
    traj_mean = alpha[:, None] * m + traj_ey
    traj_mean = traj_mean.at[0].set(jnp.zeros_like(m))  # the start is N(0, Var0)
    return Moments(mean=mean, var=var, trajectory_mean=traj_mean, trajectory_var=traj_var)


def output_moments(
    spectrum: Spectrum, schedule: Schedule, sampler, trajectory: bool = False
) -> Moments:
    """Exact per-eigenvalue mean and variance of the generated distribution (SPEC §4).

    Args:
      spectrum: the data ``Spectrum`` (eigenvalues and mean in the eigenbasis).
      schedule: the ``Schedule``; S levels, noisiest first.
      sampler: ``samplers.DDIM(eta)`` or ``samplers.DDPM()``.
      trajectory: also return the moments after every step, shape (S+1, d).

    Returns:
      ``Moments`` with ``mean`` and ``var`` of shape (d,).

    Example:
      >>> import specdiff as sd
      >>> spec = sd.Spectrum([4.0, 1.0, 0.25])
      >>> mom = sd.output_moments(spec, sd.schedules.cosine(50), sd.samplers.DDIM())
      >>> mom.var.shape
      (3,)
    """
    _check_args(spectrum, schedule, sampler)
    mesh = None if trajectory else sharded.active_mesh()  # None on one device: unsharded
    spectrum = sharded.place(spectrum.anonymous(), mesh)
    return _moments(
        spectrum, sharded.replicate(schedule, mesh), sampler, bool(trajectory), None, mesh
    )


def forward_marginals(spectrum: Spectrum, schedule: Schedule) -> Moments:
    """True forward marginals N(α_k m, α_k² λ + σ_k²) at every level, clean data last.

    ``trajectory_mean``/``trajectory_var`` have shape (S+1, d), aligned with the rows of
    ``output_moments(..., trajectory=True)``; ``mean``/``var`` are the data moments.
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a specdiff.Schedule, got {type(schedule).__name__}")
    lam, m = spectrum.eigenvalues, spectrum.mean
    la, ls = log_alpha_sigma(schedule.log_snr, schedule.process)
    a2 = jnp.concatenate([jnp.exp(2 * la), jnp.ones((1,), la.dtype)])
    s2 = jnp.concatenate([jnp.exp(2 * ls), jnp.zeros((1,), ls.dtype)])
    return Moments(
        mean=m,
        var=lam,
        trajectory_mean=jnp.sqrt(a2)[:, None] * m,
        trajectory_var=a2[:, None] * lam + s2[:, None],
    )


# --------------------------------------------------------------------------------------
# Any sampler: the affine maps of its steps, composed (SPEC §11)
# --------------------------------------------------------------------------------------


def start_variance(schedule: Schedule):
    """Var of the start state in σ coordinates (SPEC §11): VE σ_0², VP 1 + σ_0², flow (1 + σ_0)²."""
    sigma0 = schedule.sigma[0]
    if schedule.process == "ve":
        return sigma0**2
    if schedule.process == "vp":
        return 1.0 + sigma0**2
    return (1.0 + sigma0) ** 2


def sigmas_with_zero(schedule: Schedule, dtype=None):
    """The (S+1,) σ grid a k-diffusion sampler loop receives: σ_0 … σ_{S−1}, 0."""
    s = schedule.sigma if dtype is None else jnp.asarray(schedule.sigma, dtype)
    return jnp.concatenate([s, jnp.zeros((1,), s.dtype)])


def _step_data(lam, schedule, sampler):
    """The eigenvalue-independent step data of the telescoped path (``telescoped``'s
    coefficients), the rational path (``rational``'s) or the adjoint path (``adjoint``'s
    corners), else None (Möbius)."""
    dtype = jnp.result_type(lam.dtype, schedule.log_snr.dtype)
    if _mobius_output(sampler):
        return None
    sigmas = sigmas_with_zero(schedule, dtype)
    if _telescoped(sampler):
        return telescoped.coefficients(sampler, sigmas)
    if _rational(sampler):
        return rational.step_coefficients(sampler, sigmas)
    return adjoint.step_corners(sampler, sigmas)


def _with_start(h, noise, m, schedule, transfer):
    """(H, None, None) with ``transfer``, else (None, mean, var) from H and the noise the
    steps add, σ coordinates: y_0 = x_0 − m, E[y_0] = −m, so mean m − H·m and variance
    H²·Var0 + noise."""
    if transfer:
        return h, None, None
    var = h * h * start_variance(schedule).astype(h.dtype) + noise
    # A variance that is 0 in exact arithmetic (λ → 0) may round below it; clamp it to the
    # smallest normal number so √var and its gradient in the divergences stay finite.
    return None, m - h * m, jnp.maximum(var, jnp.finfo(h.dtype).tiny)


def _rational_moments(lam, m, schedule, sampler, transfer, coeffs=None):
    """``_with_start`` of a one-state deterministic sampler: H in closed form
    (``core.rational``), no noise."""
    dtype = jnp.result_type(lam.dtype, schedule.log_snr.dtype)
    lam, m = lam.astype(dtype), m.astype(dtype)
    h = rational.transfer(sampler, lam, sigmas_with_zero(schedule, dtype), coeffs)
    return _with_start(h, 0.0, m, schedule, transfer)


def _noisy_moments(lam, m, schedule, sampler, transfer, coeffs, step_data, output):
    """``_with_start`` of a path that gives H and the noise from eigenvalue-independent step
    data: ``output(coeffs, λ)``, with ``coeffs = step_data(sampler, σ's)`` unless given."""
    dtype = jnp.result_type(lam.dtype, schedule.log_snr.dtype)
    lam, m = lam.astype(dtype), m.astype(dtype)
    if coeffs is None:
        coeffs = step_data(sampler, sigmas_with_zero(schedule, dtype))
    h, noise = output(coeffs, lam)
    return _with_start(h, noise, m, schedule, transfer)


def _telescoped_moments(lam, m, schedule, sampler, transfer, coeffs=None):
    """DDPM's step (``core.telescoped``): H and the noise in closed form."""
    args = (telescoped.coefficients, telescoped.output)
    return _noisy_moments(lam, m, schedule, sampler, transfer, coeffs, *args)


def _adjoint_moments(lam, m, schedule, sampler, transfer, corners=None):
    """A sampler with history or noise: H and the noise by the output's row
    (``core.adjoint``)."""
    args = (adjoint.step_corners, adjoint.output_row)
    return _noisy_moments(lam, m, schedule, sampler, transfer, corners, *args)


def _trajectory_moments(lam, m, schedule, sampler):
    """Moments after every step of a sampler other than DDIM/DDPM, by composing the steps'
    affine maps (``core.compose``; the output alone takes the closed forms above).

    The state is s = (y, history) per eigenvalue, y = x − m in σ coordinates, with mean E
    (n, d) and covariance P (n, n, d) (eigenvalues last); ``compose.propagate`` applies
    E' = A E, P' = A P Aᵀ + B Bᵀ over all steps (the steady ones by an associative scan).
    Returns (mean, var, (trajectory mean, trajectory var)) in the process's coordinates.
    """
    dtype = jnp.result_type(lam.dtype, schedule.log_snr.dtype)
    lam, m = lam.astype(dtype), m.astype(dtype)
    sig = sigmas_with_zero(schedule, dtype)
    n = sampler.state_size
    d = lam.shape[0]
    e0 = jnp.zeros((n, d), dtype).at[0].set(-m)
    p0 = jnp.zeros((n, n, d), dtype).at[0, 0].set(start_variance(schedule).astype(dtype))
    (e, p), (es, ps) = propagate(sampler, lam, sig, (e0, p0))
    # A variance that is 0 in exact arithmetic (λ → 0) can come out as −1e-23 after the
    # products; clamp it to the smallest normal number (as ``_with_start``).
    tiny = jnp.finfo(dtype).tiny
    traj_mean = jnp.concatenate([jnp.zeros((1, d), dtype), m + es[:, 0]], 0)
    traj_var = jnp.maximum(jnp.concatenate([p0[None, 0, 0], ps[:, 0, 0]], 0), tiny)
    # σ coordinates → the process's own (x_process = α·x_σ; α = 1 at the clean end).
    la, _ = log_alpha_sigma(schedule.log_snr.astype(dtype), schedule.process)
    alpha = jnp.concatenate([jnp.exp(la), jnp.ones((1,), dtype)])[:, None]
    return m + e[0], traj_var[-1], (alpha * traj_mean, alpha**2 * traj_var)
