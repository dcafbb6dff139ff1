"""Run by tests/core/test_sharded.py in a subprocess with 4 forced CPU devices (float64).

Computes the same quantities on 1 device and on 4 (``use_devices``) and prints them as one
JSON object; the test compares them. Cases: samplers × dimensions d (divisible by 4, not
divisible, and d < 4), through the public entry points (``output_moments``,
``transfer_function``, ``divergence`` and its gradient with respect to the levels) and
through the fused sharded objective (``sharded.weighted_divergence``: value and gradient
with respect to the log-SNR grid, with weights and a small engine block so each device
runs several blocks). Also records what shows that 4 devices really ran: the output's
sharding and the all-reduce in the compiled objective.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from specdiff.core import mesh, sharded

SAMPLERS = ("ddim", "heun", "dpmpp_2m_sde")
DIMS = (3, 7, 40)  # d < 4 devices, not divisible by 4, divisible by 4 (and > 16)
STEPS = 10
# Log-SNR from −8 to 8. (The cosine schedule starts at ρ_0 = −20.7, σ_0² ≈ 10⁹: there the
# derivative with respect to ρ_0 is so ill-conditioned that on one device it changes by
# 4e-13 of the gradient's norm when nothing but the spectrum's length changes.)
RHO = np.linspace(-8.0, 8.0, STEPS)


def _problem(d, seed):
    rng = np.random.default_rng(seed)
    spec = sd.Spectrum(np.exp(2 * rng.normal(size=d)), rng.normal(size=d))
    weights = rng.uniform(0.5, 2.0, size=d)
    weights[d // 2] = 0.0  # a real eigenvalue with weight 0 stays out of the sum
    return spec, weights


# Every metric of (spectrum, moments), one jitted function per device count: it compiles
# once per d (the divergences do not depend on the sampler), and no program compiled for
# one device selection is reused for another.
_DIVERGENCES = {
    n: jax.jit(lambda s, mo: jnp.stack([sd.divergence(s, mo, m) for m in sd.METRICS]))
    for n in (1, 4)
}


def _public(spec, smp, levels, metric, grad, n):
    """Moments, H, every metric, and (``grad``) one metric's gradient w.r.t. the VP levels,
    on ``n`` devices.

    The divergences and the gradient run under ``jit`` (one compilation instead of one per
    eager operation); the gradient's function is made here, inside the device selection.
    """
    sch = sd.Schedule(levels, "vp")
    mom = sd.output_moments(spec, sch, smp)
    out = {"mean": mom.mean, "var": mom.var, "H": sd.transfer_function(spec, sch, smp)}
    out["div"] = _DIVERGENCES[n](spec, mom)
    if grad:

        def div(lv):
            mo = sd.output_moments(spec, sd.Schedule(lv, "vp"), smp)
            return sd.divergence(spec, mo, metric)

        out["grad"] = jax.jit(jax.grad(div))(levels)
    return out, mom


def _fused(spec, smp, rho, weights, metric, mesh_):
    """Value and gradient (w.r.t. ρ) of the weighted divergence sum, and its lowered text.

    ``block=4``: each device runs the engine's blocked loop over its eigenvalues.
    """

    def f(r):
        sch = sd.Schedule.from_log_snr(r, "vp")
        return sharded.weighted_divergence(spec, sch, smp, metric, None, weights, mesh_, block=4)

    fn = jax.jit(jax.value_and_grad(f))
    placed = sharded.replicate(rho, mesh_)
    value, grad = fn(placed)
    return {"fused": value, "fused_grad": grad}, fn.lower(placed).as_text()


def _case(name, d, k):
    """Case k: the gradient of metric k mod 3, through the public entry points (k even) or
    the fused sharded objective (k odd), so each sampler and each d meets both."""
    smp = sd.samplers.from_name(name)
    spec, weights = _problem(d, k)
    rho = jnp.asarray(RHO)
    levels = np.asarray(sd.Schedule.from_log_snr(RHO, "vp").levels)
    metric, fused = sd.METRICS[k % 3], k % 2 == 1
    runs, evidence = {}, {}
    for n in (1, 4):
        with mesh.use_devices(n):
            out, mom = _public(spec, smp, levels, metric, grad=not fused, n=n)
            m_ = sharded.active_mesh()
            text = ""
            if fused:
                w = sharded.place(weights, m_)
                more, text = _fused(sharded.place(spec, m_), smp, rho, w, metric, m_)
                out |= more
            evidence[n] = {
                "active_mesh": None if m_ is None else int(m_.devices.size),
                "var_devices": len(mom.var.sharding.device_set),
                "var_spec": str(getattr(mom.var.sharding, "spec", None)),
                "var_shards": [list(s.data.shape) for s in mom.var.addressable_shards],
                "all_reduce": "all_reduce" in text or "all-reduce" in text,
            }
        runs[n] = {k: np.asarray(v).tolist() for k, v in out.items()}
    return {"metric": metric, "fused": fused, "runs": runs, "evidence": evidence}


def _one_device_program(name):
    """Whether ``output_moments`` traces a ``shard_map`` on 1, 4 and again 1 device, and
    on how many devices its output lies (a program compiled for one selection is never
    reused for another)."""
    smp = sd.samplers.from_name(name)
    spec, sch = _problem(7, 0)[0], sd.schedules.cosine(STEPS)
    found = []
    for n in (1, 4, 1):
        with mesh.use_devices(n):
            jaxpr = jax.make_jaxpr(lambda s: sd.output_moments(s, sch, smp).var)(spec)
            devices = len(sd.output_moments(spec, sch, smp).var.sharding.device_set)
            found.append({"devices": n, "shard_map": "shard_map" in str(jaxpr), "on": devices})
    return found


def main():
    jax.config.update("jax_enable_x64", True)
    if len(jax.devices()) != 4:
        raise SystemExit(f"expected 4 forced host devices, got {jax.devices()}")
    cases = {}
    for i, name in enumerate(SAMPLERS):
        for j, d in enumerate(DIMS):
            cases[f"{name}/d={d}"] = _case(name, d, i + j)
    json.dump({"cases": cases, "shard_map_traced": _one_device_program("heun")}, sys.stdout)


if __name__ == "__main__":
    main()
