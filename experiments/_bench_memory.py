"""Benchmark section "memory": the blocked engine against the same engine unblocked, and
``memory_bytes``, how every section reads a compiled function's memory.

For each (d, S, sampler): XLA's temporary bytes of the compiled value+grad of W2
(``compile().memory_analysis()``) and its time, with the eigenvalue axis processed in
blocks (the default) and in one piece (``block`` larger than d), timed side by side.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from specdiff.core.engine import _moments, default_block

CASES = (
    (49152, 1000, "ddim"),
    (49152, 1000, "ddpm"),
    (49152, 1000, "heun"),  # S = 100 now runs in one piece by default
    (49152, 1000, "dpmpp_2m_sde"),
    (786432, 1000, "ddim"),
)
QUICK = ((32768, 100, "ddim"), (65536, 100, "dpmpp_2m"))  # several blocks each


def memory_bytes(compiled) -> dict:
    """Memory of a compiled executable from XLA's buffer assignment, in bytes.

    ``temp``: XLA temporaries; ``argument``/``output``/``alias``: its parameters, results
    and the bytes shared between the two; ``peak`` = temp + argument + output − alias, an
    upper bound on what one call holds at once. (``peak_memory_in_bytes`` is not used: with
    jaxlib 0.10.2 on CPU it stayed at ~10 MiB where the temporaries were 23 GiB.)
    """
    m = compiled.memory_analysis()
    out = {
        "temp": int(m.temp_size_in_bytes),
        "argument": int(m.argument_size_in_bytes),
        "output": int(m.output_size_in_bytes),
        "alias": int(m.alias_size_in_bytes),
    }
    out["peak"] = out["temp"] + out["argument"] + out["output"] - out["alias"]
    return out


def _compiled(spec, rho, sampler, block):
    def loss(r):
        mom = _moments(spec, sd.Schedule.from_log_snr(r, "ve"), sampler, False, block)
        return sd.divergence(spec, mom, "w2")

    return jax.jit(jax.value_and_grad(loss)).lower(rho).compile()


def bench_memory(quick: bool, timing: dict, benchmark_spectrum) -> list[dict]:
    """``timing``: the harness's ``paired`` and ``pair_fields`` (see experiments.benchmark)."""
    reps, min_time = (3, 0.0) if quick else (10, 0.5)
    rows = []
    for d, steps, name in QUICK if quick else CASES:
        sampler = sd.samplers.from_name(name)
        spec = benchmark_spectrum(d, np.float32)
        rho = jnp.asarray(sd.schedules.edm(steps, process="ve").log_snr, jnp.float32)
        blocked = _compiled(spec, rho, sampler, None)
        unblocked = _compiled(spec, rho, sampler, 2 * d)
        mem_b, mem_u = memory_bytes(blocked), memory_bytes(unblocked)
        p = timing["paired"](blocked, unblocked, (rho,), (rho,), reps=reps, min_time=min_time)
        tb, tu = mem_b["temp"] / 2**20, mem_u["temp"] / 2**20
        block = default_block(steps, sampler, d)
        rows.append(
            {
                "section": "memory",
                "what": f"value+grad W2, {name}, block {block} vs unblocked",
                "d": d,
                "S": steps,
                "dtype": "float32",
                **timing["pair_fields"](p),
                "temp_mib_blocked": tb,
                "temp_mib_unblocked": tu,
                "memory_bytes_blocked": mem_b,
                "memory_bytes_unblocked": mem_u,
                "fast_note": f", {tb:.1f} MiB temp",
                "scan_note": f", {tu:.1f} MiB temp",
            }
        )
        print(rows[-1], flush=True)
    return rows
