"""Benchmark section "memory": the blocked engine against the same engine unblocked.

For each (d, S, sampler): XLA's temporary bytes of the compiled value+grad of W2
(``compile().memory_analysis()``) and its median time, with the eigenvalue axis processed
in blocks (the default) and in one piece (``block`` larger than d), in the same run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from specdiff.core.engine import _moments, block_size

CASES = ((49152, 1000, "ddim"), (49152, 1000, "ddpm"), (49152, 100, "heun"), (786432, 1000, "ddim"))
QUICK = ((32768, 100, "ddim"), (16384, 100, "dpmpp_2m"))  # several blocks each


def _compiled(spec, rho, sampler, block):
    def loss(r):
        mom = _moments(spec, sd.Schedule.from_log_snr(r, "ve"), sampler, False, block)
        return sd.divergence(spec, mom, "w2")

    return jax.jit(jax.value_and_grad(loss)).lower(rho).compile()


def bench_memory(quick: bool, median_time, benchmark_spectrum) -> list[dict]:
    rows = []
    for d, steps, name in QUICK if quick else CASES:
        sampler = sd.samplers.from_name(name)
        spec = benchmark_spectrum(d, np.float32)
        rho = jnp.asarray(sd.schedules.edm(steps, process="ve").log_snr, jnp.float32)
        out = {}
        for label, block in (("blocked", None), ("unblocked", 2 * d)):
            c = _compiled(spec, rho, sampler, block)
            out[label] = (c.memory_analysis().temp_size_in_bytes / 2**20, median_time(c, rho))
        rows.append(
            {
                "section": "memory",
                "what": f"value+grad W2, {name}, block {block_size(steps, sampler.state_size)}",
                "d": d,
                "S": steps,
                "dtype": "float32",
                "fast_ms": 1e3 * out["blocked"][1],
                "scan_ms": 1e3 * out["unblocked"][1],
                "speedup": out["unblocked"][1] / out["blocked"][1],
                "temp_mib_blocked": out["blocked"][0],
                "temp_mib_unblocked": out["unblocked"][0],
                "fast_label": f"{1e3 * out['blocked'][1]:.3g} ms, {out['blocked'][0]:.1f} MiB",
                "slow_label": f"{1e3 * out['unblocked'][1]:.3g} ms, "
                f"{out['unblocked'][0]:.1f} MiB (unblocked)",
            }
        )
        print(rows[-1], flush=True)
    return rows
