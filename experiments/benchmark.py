"""Benchmarks: medians of compiled calls, each next to a straightforward version timed in
the same run.

  python -m experiments.benchmark                 # everything
  python -m experiments.benchmark --only engine   # one section
  python -m experiments.benchmark --quick         # small sizes (CI smoke test)
  python -m experiments.benchmark --only samplers --dims 3072,49152,786432

Writes results/benchmark/results.json and table.md.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from experiments._common import Run, markdown_table, parser

SECTIONS = ("engine", "samplers", "memory", "design")


def median_time(fn, *args, reps: int = 20, min_time: float = 0.5) -> float:
    """Median wall time of ``fn(*args)`` (results blocked on), after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    t_start = time.perf_counter()
    while len(times) < reps or (time.perf_counter() - t_start < min_time and len(times) < 500):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
        if len(times) >= 3 and time.perf_counter() - t_start > 30:
            break
    return float(np.median(times))


def benchmark_spectrum(d: int, dtype) -> sd.Spectrum:
    """A CIFAR-like power-law spectrum with a non-zero mean, d eigenvalues."""
    k = np.arange(1, d + 1, dtype=np.float64)
    lam = (20.0 / k**1.2).astype(dtype)
    mean = (0.1 * np.cos(k)).astype(dtype)
    return sd.Spectrum(lam, mean)


# --- engine: the W2 objective ------------------------------------------------------------


def w2_fast(rho, spec, sampler):
    sch = sd.Schedule.from_log_snr(rho, "vp")
    return sd.divergence(spec, sd.output_moments(spec, sch, sampler), "w2")


def w2_scan(rho, spec, eta):
    """Straightforward version: SPEC §3–4 step by step in ᾱ with ``lax.scan``."""
    a = jax.nn.sigmoid(rho)
    lam, m = spec.eigenvalues, spec.mean

    def step(carry, aa):
        mean, var = carry  # centred state y = x − √a·m
        a0, a1 = aa
        sk2 = eta**2 * (1 - a1) / (1 - a0) * (1 - a0 / a1)
        g = (jnp.sqrt(a0 * a1) * lam + jnp.sqrt((1 - a0) * (1 - a1 - sk2))) / (a0 * lam + 1 - a0)
        return (g * mean, g**2 * var + sk2), None

    init = (-jnp.sqrt(a[0]) * m, jnp.ones_like(lam))
    (mean, var), _ = jax.lax.scan(step, init, (a[:-1], a[1:]))
    g = jnp.sqrt(a[-1]) * lam / (a[-1] * lam + 1 - a[-1])  # last step: x̂0
    mean, var = g * mean, g**2 * var
    return jnp.sqrt(jnp.sum(mean**2 + (jnp.sqrt(var) - jnp.sqrt(lam)) ** 2))


_w2_fast_vg = jax.jit(jax.value_and_grad(w2_fast), static_argnums=2)
_w2_scan_vg = jax.jit(jax.value_and_grad(w2_scan), static_argnums=2)


def bench_engine(quick: bool) -> list[dict]:
    d = 256 if quick else 3072
    steps = (10, 100) if quick else (10, 100, 1000)
    rows = []
    for dtype in (np.float32, np.float64):
        spec = benchmark_spectrum(d, dtype)
        for S in steps:
            rho = jnp.asarray(sd.schedules.cosine(S).log_snr, dtype)
            fast, slow = _w2_fast_vg, _w2_scan_vg
            sampler = sd.samplers.DDIM()
            vf, gf = fast(rho, spec, sampler)
            vs, gs = slow(rho, spec, 0.0)
            t_fast = median_time(fast, rho, spec, sampler)
            t_slow = median_time(slow, rho, spec, 0.0)
            rows.append(
                {
                    "section": "engine",
                    "what": "jit(value_and_grad) W2, DDIM",
                    "d": d,
                    "S": S,
                    "dtype": np.dtype(dtype).name,
                    "fast_ms": 1e3 * t_fast,
                    "scan_ms": 1e3 * t_slow,
                    "speedup": t_slow / t_fast,
                    "value_rel_diff": float(abs(vf - vs) / abs(vs)),
                    "grad_rel_diff": float(jnp.max(jnp.abs(gf - gs)) / jnp.max(jnp.abs(gs))),
                }
            )
            print(rows[-1])
    return rows


def main(argv=None):
    p = parser("benchmark", __doc__)
    p.add_argument("--only", choices=SECTIONS, default=None)
    p.add_argument("--quick", action="store_true", help="small sizes, for the CI smoke test")
    p.add_argument(
        "--dims",
        type=lambda v: tuple(int(x) for x in v.split(",")),
        default=None,
        help="eigenvalue counts of the samplers section, e.g. 3072,49152,786432",
    )
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 rows stay float32
    run = Run("benchmark", args)
    rows = []
    if args.only in (None, "engine"):
        rows += bench_engine(args.quick)
    if args.only in (None, "samplers"):
        from experiments import _bench_samplers

        rows += _bench_samplers.bench_samplers(
            args.quick, median_time, benchmark_spectrum, args.dims
        )
    if args.only in (None, "memory"):
        from experiments import _bench_memory

        rows += _bench_memory.bench_memory(args.quick, median_time, benchmark_spectrum)
    if args.only in (None, "design"):
        from experiments import _bench_design

        rows += _bench_design.bench_design(args.quick, median_time, benchmark_spectrum)
    env = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": __import__("os").cpu_count(),
        "machine": platform.machine(),
    }
    header = ["section", "what", "d", "S", "dtype", "fast", "straightforward", "speedup"]
    table_rows = [
        [
            r["section"],
            r["what"],
            r["d"],
            r["S"],
            r["dtype"],
            r.get("fast_label") or f"{r['fast_ms']:.3g} ms",
            r.get("slow_label") or f"{r['scan_ms']:.3g} ms",
            "-" if r["speedup"] is None else f"{r['speedup']:.1f}x",
        ]
        for r in rows
    ]
    run.finish({"environment": env, "rows": rows}, markdown_table(header, table_rows))


if __name__ == "__main__":
    main()
