"""Memory per device of the sharded design objective (issue 14; numbers for docs/scale-out.md).

For the largest problems (d = 786432 eigenvalues, S = 1000 steps) and each sampler, XLA's
``compile().memory_analysis()`` of the value and gradient (with respect to the log-SNR grid)
of the weighted W2² objective that ``design_schedule`` optimises, on 1, 4 and 8 devices:
the spectrum (eigenvalues, means, weights) sharded over the devices, the schedule
replicated (``core.sharded.weighted_divergence``); on 1 device the unsharded program that
runs there. Per device: temporaries, arguments, outputs, and their sum (an upper estimate of
the peak: XLA may alias an output with an argument, reported as ``alias``).

Compilation only, nothing runs, on forced host (CPU) devices: the parent process starts one
subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (it must be set
before jax starts). XLA:CPU's buffer assignment; a GPU compiler fuses differently, so its
numbers differ somewhat, but the scaling with the device count is the point.

Usage: ``python -m experiments._scaleout_memory [--dtype float32 float64] [--out DIR]``
(default: both dtypes, folder results/scaleout_memory; a few minutes of compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

D, STEPS = 786432, 1000
SAMPLERS = ("ddim", "heun", "dpmpp_2m_sde")
DTYPES = ("float32", "float64")
DEVICES = (1, 4, 8)
MIB = 2**20


def _measure(name: str, n: int, dtype: str) -> dict:
    """Memory analysis of the compiled value+grad of W2² on the first n devices."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import specdiff as sd
    from specdiff.core import mesh as mesh_mod
    from specdiff.core import sharded
    from specdiff.core.engine import default_block

    sampler = sd.samplers.from_name(name)
    mesh = sharded.active_mesh(n)

    def arg(shape, spec):
        sharding = None if mesh is None else NamedSharding(mesh, spec)
        return jax.ShapeDtypeStruct(shape, np.dtype(dtype), sharding=sharding)

    vec = arg((D,), P(mesh_mod.AXIS))

    def loss(rho, lam, m, w):
        spec = sd.Spectrum.tree_unflatten(None, (lam, m))
        sch = sd.Schedule.from_log_snr(rho, "vp")
        return sharded.weighted_divergence(spec, sch, sampler, "w2", None, w, mesh)

    compiled = jax.jit(jax.value_and_grad(loss)).lower(arg((STEPS,), P()), vec, vec, vec).compile()
    ma = compiled.memory_analysis()
    row = {
        "sampler": name,
        "devices": n,
        "d": D,
        "S": STEPS,
        "dtype": dtype,
        "block": default_block(STEPS, sampler, -(-D // n)),
        "eigenvalues_per_device": -(-D // n),
        "temp_mib": ma.temp_size_in_bytes / MIB,
        "argument_mib": ma.argument_size_in_bytes / MIB,
        "output_mib": ma.output_size_in_bytes / MIB,
        "alias_mib": ma.alias_size_in_bytes / MIB,
        "code_mib": ma.generated_code_size_in_bytes / MIB,
    }
    row["total_mib"] = row["temp_mib"] + row["argument_mib"] + row["output_mib"]
    return row


def _worker(dtype: str) -> None:
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    rows = []
    for name in SAMPLERS:
        for n in DEVICES:
            rows.append(_measure(name, n, dtype))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    json.dump(rows, sys.stdout)


def _table(rows) -> str:
    from experiments._common import markdown_table

    header = ["dtype", "sampler", "devices", "eigenvalues/device", "temp MiB", "args MiB"]
    header += ["out MiB", "total MiB"]
    keys = ["dtype", "sampler", "devices", "eigenvalues_per_device", "temp_mib", "argument_mib"]
    keys += ["output_mib", "total_mib"]
    return markdown_table(header, [[r[k] for k in keys] for r in rows])


def main(argv=None) -> None:
    from experiments._common import Run, forced_cpu_devices, parser

    p = parser("_scaleout_memory", __doc__.split("\n\n")[0])
    p.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args.dtype[0])
    env = forced_cpu_devices(8, dict(os.environ, SPECDIFF_CACHE_DIR="off"))
    rows = []
    for dtype in args.dtype:  # one process per dtype: float64 needs jax_enable_x64 from start
        cmd = [sys.executable, "-m", "experiments._scaleout_memory", "--worker", "--dtype", dtype]
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True, text=True)
        rows += json.loads(out.stdout)
    Run("scaleout_memory", args).finish({"rows": rows}, _table(rows))


if __name__ == "__main__":
    main()
