"""Benchmarks: every fast call timed side by side with a straightforward version of it in the
same run, with the spread over repeats and the machine it ran on.

  python -m experiments.benchmark                   # everything (run it on a quiet machine)
  python -m experiments.benchmark --only scaling    # one section
  python -m experiments.benchmark --quick           # small sizes (CI smoke test)
  python -m experiments.benchmark --only samplers --dims 3072,49152,786432

Sections: engine, samplers, memory, design, sweep (a per-eigenvalue design streamed over
10⁵ eigenvalues), scaling (d × S grid: time, peak memory and the memory-bandwidth bound),
cold (process start-up against plain JAX), distributed (throughput on 1, 2, 4 forced CPU
devices). Times are medians with the 25th–75th percentiles over n repeats; a speed-up is
the median of per-pair ratios, the fast and straightforward calls alternating in runs of
two (fast, fast, slow, slow, slow, slow, fast, fast, …) so that load from neighbours on a
shared machine falls on both alike; the second call of each run is timed (``paired``; the
first, right after the other's call, is kept as "cold").
Calls run synchronously (``jax_cpu_enable_async_dispatch`` off; ``--async-dispatch`` keeps
JAX's default): every timed call blocks on its result, so JAX's asynchronous CPU dispatch
would only add the hand-off of each call to a worker thread and back, the same for the
fast and the straightforward call. On this project's 2-core virtual machines that
hand-off was ~0.04 ms a call (ad hoc: the one-step floor of the samplers section took
0.073 ms with it, 0.027 ms without), close to a whole DDPM value+grad at d = 3072,
S = 10 (0.050 ms without it).
Writes results/benchmark/results.json and table.md, whose first lines give the command and
the machine (CPU, cores, memory, OS, Python, jax/jaxlib, devices, 1-minute load average at
start and end).
"""

from __future__ import annotations

import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from experiments._common import Run, file_field, markdown_table, parser

SECTIONS = ("engine", "samplers", "memory", "design", "sweep", "scaling", "cold", "distributed")

# Every timing taken through ``timed``/``median_time`` in this process, in order: rows of
# sections that only return medians get their spread back from here (see _attach_spread).
_LOG: list[dict] = []


def stats(samples) -> dict:
    """Median, 25th/75th percentiles, min, max and count of ``samples``."""
    x = np.asarray(samples, dtype=np.float64)
    q25, med, q75 = np.percentile(x, [25, 50, 75])
    return {
        "median": float(med),
        "q25": float(q25),
        "q75": float(q75),
        "min": float(x.min()),
        "max": float(x.max()),
        "n": int(x.size),
    }


def _more(n: int, elapsed: float, reps: int, min_time: float, max_time: float) -> bool:
    """Whether to take another repeat: at least ``reps`` and ``min_time`` seconds, at most
    500 repeats, and past ``max_time`` seconds stop as soon as 3 repeats are in."""
    if n >= 500 or (n >= 3 and elapsed > max_time):
        return False
    return n < reps or elapsed < min_time


def _call(fn, args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def timed(fn, *args, reps: int = 20, min_time: float = 0.5, max_time: float = 30.0) -> dict:
    """Wall time of ``fn(*args)`` (results blocked on) after one warm-up call.

    Returns ``stats`` of the repeats in seconds: median, q25, q75, min, max, n.
    """
    jax.block_until_ready(fn(*args))
    times: list[float] = []
    t_start = time.perf_counter()
    while _more(len(times), time.perf_counter() - t_start, reps, min_time, max_time):
        times.append(_call(fn, args))
    out = stats(times)
    _LOG.append(out)
    return out


def median_time(fn, *args, reps: int = 20, min_time: float = 0.5) -> float:
    """Median wall time of ``fn(*args)`` in seconds (``timed(...)["median"]``)."""
    return timed(fn, *args, reps=reps, min_time=min_time)["median"]


def paired(
    fast,
    slow,
    args_fast=(),
    args_slow=(),
    *,
    reps: int = 20,
    min_time: float = 0.5,
    max_time: float = 30.0,
    warmup: bool = True,
) -> dict:
    """``fast(*args_fast)`` and ``slow(*args_slow)`` timed side by side.

    After one warm-up call of each (skipped with ``warmup=False`` when the caller has just
    run both), the two alternate in runs of two calls (fast, fast, slow, slow, slow, slow,
    fast, fast, …) so that a neighbour's load and any drift fall on both alike. The second
    call of a run is the one timed: it follows a call of the same function, as in a loop
    that calls it (a design loop), and gives ``fast``, ``slow`` and the per-pair ratio
    slow_i / fast_i. The first call follows the other function's call, whose memory traffic
    has evicted this one's data from the caches; it is timed too, as ``fast_cold``,
    ``slow_cold`` and ``ratio_cold``. (DDIM, d = 786432, S = 10: the engine took 8.3–9.0 ms
    after its own call and 18.8–21.6 ms right after the scan's, with next to no page
    faults.) After a scan that moves GiB the second call is not fully warm either: DDIM,
    d = 49152, S = 1000 took 22.8 ms here against 10.8 ms after its own calls (BUILD_NOTES,
    "Noticed and left alone").
    Returns ``stats`` of each (seconds; the ratios are speed-ups).
    """
    if warmup:
        jax.block_until_ready(fast(*args_fast))
        jax.block_until_ready(slow(*args_slow))
    times: dict[str, list[float]] = {"fast": [], "slow": [], "fast_cold": [], "slow_cold": []}

    def run(key, fn, args):
        times[f"{key}_cold"].append(_call(fn, args))
        times[key].append(_call(fn, args))

    t_start = time.perf_counter()
    while _more(len(times["fast"]), time.perf_counter() - t_start, reps, min_time, max_time):
        if len(times["fast"]) % 2 == 0:
            run("fast", fast, args_fast)
            run("slow", slow, args_slow)
        else:
            run("slow", slow, args_slow)
            run("fast", fast, args_fast)
    out = {key: stats(t) for key, t in times.items()}
    out["ratio"] = stats(np.divide(times["slow"], times["fast"]))
    out["ratio_cold"] = stats(np.divide(times["slow_cold"], times["fast_cold"]))
    return out


def pair_fields(p: dict) -> dict:
    """A ``paired`` result as the flat row fields the tables read (times in ms)."""
    out = {"fast_ms": 1e3 * p["fast"]["median"], "scan_ms": 1e3 * p["slow"]["median"]}
    for key, s in (("fast", p["fast"]), ("scan", p["slow"])):
        out[f"{key}_q25_ms"], out[f"{key}_q75_ms"] = 1e3 * s["q25"], 1e3 * s["q75"]
    out["speedup"] = p["ratio"]["median"]
    out["speedup_q25"], out["speedup_q75"] = p["ratio"]["q25"], p["ratio"]["q75"]
    out["n"] = p["ratio"]["n"]
    out["fast_cold_ms"] = 1e3 * p["fast_cold"]["median"]
    out["scan_cold_ms"] = 1e3 * p["slow_cold"]["median"]
    out["speedup_cold"] = p["ratio_cold"]["median"]
    out["speedup_cold_q25"] = p["ratio_cold"]["q25"]
    out["speedup_cold_q75"] = p["ratio_cold"]["q75"]
    out["paired"] = True
    return out


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


def w2_floor(rho, spec):
    """One closed-form step per eigenvalue (DDIM's last, to x̂0): the floor of a cell, the
    per-eigenvalue work (read λ and m, the W2, its reverse pass) that every version of a
    sampler pays whatever S is. scan / floor is the most any implementation of the S
    steps could gain over the scan (sections scaling and samplers)."""
    a = jax.nn.sigmoid(rho[-1])
    lam, m = spec.eigenvalues, spec.mean
    g = jnp.sqrt(a) * lam / (a * lam + 1 - a)
    mean, var = m - g * jnp.sqrt(a) * m, g**2
    return jnp.sqrt(jnp.sum(mean**2 + (jnp.sqrt(var) - jnp.sqrt(lam)) ** 2))


floor_vg = jax.jit(jax.value_and_grad(w2_floor))


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
    reps, min_time = (5, 0.05) if quick else (20, 0.5)
    rows = []
    for dtype in (np.float32, np.float64):
        spec = benchmark_spectrum(d, dtype)
        for S in steps:
            rho = jnp.asarray(sd.schedules.cosine(S).log_snr, dtype)
            fast, slow = _w2_fast_vg, _w2_scan_vg
            sampler = sd.samplers.DDIM()
            vf, gf = fast(rho, spec, sampler)
            vs, gs = slow(rho, spec, 0.0)
            p = paired(
                fast, slow, (rho, spec, sampler), (rho, spec, 0.0), reps=reps, min_time=min_time
            )
            rows.append(
                {
                    "section": "engine",
                    "what": "jit(value_and_grad) W2, DDIM",
                    "d": d,
                    "S": S,
                    "dtype": np.dtype(dtype).name,
                    **pair_fields(p),
                    "value_rel_diff": float(abs(vf - vs) / abs(vs)),
                    "grad_rel_diff": float(jnp.max(jnp.abs(gf - gs)) / jnp.max(jnp.abs(gs))),
                }
            )
            print(rows[-1], flush=True)
    return rows


# --- the machine, the spread of other sections' timings, and the tables -------------------


def _meminfo_gib(field: str) -> float | None:
    kb = file_field("/proc/meminfo", field.lower() + ":")
    return None if kb is None else int(kb.split()[0]) / 2**20


def environment() -> dict:
    """The machine and software the run is on (no load figures: see ``main``)."""
    import jaxlib

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": file_field("/proc/cpuinfo", "model name", "hardware", "cpu model")
        or platform.processor()
        or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": _meminfo_gib("MemTotal"),
        "memory_available_gib": _meminfo_gib("MemAvailable"),
        "os": f"{file_field('/etc/os-release', 'pretty_name=', sep='=')}, {platform.platform()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "devices": [str(dev) for dev in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def set_dispatch(asynchronous: bool) -> str:
    """JAX's CPU dispatch for this process, set before its backend starts (the client reads
    it then); returns the mode the run has, for the table's head."""
    try:
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:  # private API gone: set the mode and trust it

        def backends_are_initialized() -> bool:
            return False

    if backends_are_initialized():  # called in a process that has computed (tests)
        return "unknown (set after the backend started)"
    jax.config.update("jax_cpu_enable_async_dispatch", asynchronous)
    return "asynchronous" if asynchronous else "synchronous"


def _attach_spread(rows: list[dict], log: list[dict]) -> None:
    """Rows of sections that call ``median_time`` carry medians only; the timing whose
    median gave ``fast_ms``/``scan_ms`` (1e3·median, equal to the bit) supplies its spread."""
    by_ms = {1e3 * t["median"]: t for t in log}
    for r in rows:
        if r.get("paired"):
            continue
        for key in ("fast", "scan"):
            t = by_ms.get(r.get(f"{key}_ms"))
            if t is not None:
                r[f"{key}_q25_ms"], r[f"{key}_q75_ms"] = 1e3 * t["q25"], 1e3 * t["q75"]
                r[f"{key}_n"] = t["n"]


def _ms(row: dict, key: str) -> str:
    """``median [q25–q75] ms`` of a row's fast or scan time, keeping a section's own label
    (and its ``>`` for lower bounds) where no spread was recorded."""
    label = row.get("fast_label" if key == "fast" else "slow_label")
    med = row.get(f"{key}_ms")
    if med is None:
        return label or "-"
    if f"{key}_q25_ms" not in row:
        return (label or f"{med:.3g} ms") + " (spread not recorded)"
    mark = ">" if (label or "").startswith(">") else ""
    note = row.get(f"{key}_note", "")
    return f"{mark}{med:.3g} [{row[f'{key}_q25_ms']:.3g}–{row[f'{key}_q75_ms']:.3g}] ms{note}"


def _speedup(row: dict) -> str:
    if row.get("speedup") is None:
        return "-"
    if "speedup_q25" in row:
        return f"{row['speedup']:.3g}x [{row['speedup_q25']:.3g}–{row['speedup_q75']:.3g}]"
    return f"{row['speedup']:.3g}x (ratio of medians)"


def _n(row: dict) -> str:
    if "n" in row:
        return str(row["n"])
    ns = [str(row[k]) for k in ("fast_n", "scan_n") if k in row]
    return "/".join(ns) or "-"


def speedup_table(rows: list[dict]) -> str:
    header = ["section", "what", "d", "S", "dtype", "fast", "straightforward", "speedup", "n"]
    ceiling = any("ceiling" in r for r in rows)
    if ceiling:
        header += ["cold speedup", "floor", "ceiling"]
    body = []
    for r in rows:
        line = [r["section"], r["what"], r["d"], r["S"], r["dtype"], _ms(r, "fast"),
                _ms(r, "scan"), _speedup(r), _n(r)]  # fmt: skip
        if ceiling:
            cold = r.get("speedup_cold")
            line += [
                "-" if cold is None else f"{cold:.3g}x",
                f"{r['floor_ms']:.3g} ms" if "floor_ms" in r else "-",
                f"{r['ceiling']:.3g}x" if r.get("ceiling") else "-",
            ]
        body.append(line)
    text = markdown_table(header, body)
    if ceiling:
        text += (
            "\nCold speedup: the median ratio of the calls right after the other version's "
            "call (its memory traffic has evicted this one's data from the caches). Floor: "
            "the same value+grad with one closed-form step (no loop over steps); ceiling = "
            "straightforward / floor, the most any implementation of the S steps could gain "
            "over the straightforward version.\n"
        )
    return text


def header_lines(command: str, env: dict) -> str:
    mem = env["memory_gib"]
    return (
        "# Benchmark\n\n"
        f"command: `{command}`\n\n"
        f"machine: {env['cpu_model']}, {env['cpu_count']} cores ({env['cpus_usable']} usable), "
        f"{'?' if mem is None else f'{mem:.1f}'} GiB memory, {env['os']}; Python "
        f"{env['python']}, jax {env['jax']}, jaxlib {env['jaxlib']}, backend "
        f"{env['backend']}, devices {', '.join(env['devices'])}; {env['dispatch']} "
        "dispatch\n\n"
        f"load average (1 min): {env['load_1min_start']:.2f} at start, "
        f"{env['load_1min_end']:.2f} at end\n\n"
        "Times: median [25th–75th percentile] of n repeats. Speed-up: median [IQR] of the "
        "per-pair ratios, fast and straightforward calls alternating in runs of two in one "
        "loop; the second call of each run is timed (the first, right after the other's call, "
        "gives the cold speed-up where a table shows it).\n\n"
    )


def _sections(args) -> list[dict]:
    from experiments import (
        _bench_cold,
        _bench_design,
        _bench_memory,
        _bench_samplers,
        _bench_scaling,
        _bench_sweep,
    )

    timing = {"timed": timed, "paired": paired, "pair_fields": pair_fields, "stats": stats}
    rows: list[dict] = []
    want = lambda name: args.only in (None, name)  # noqa: E731
    if want("engine"):
        rows += bench_engine(args.quick)
    if want("samplers"):
        rows += _bench_samplers.bench_samplers(args.quick, timing, benchmark_spectrum, args.dims)
    if want("memory"):
        rows += _bench_memory.bench_memory(args.quick, timing, benchmark_spectrum)
    if want("design"):
        rows += _bench_design.bench_design(args.quick, median_time, benchmark_spectrum, timing)
    if want("sweep"):
        rows += _bench_sweep.bench_sweep(args.quick, benchmark_spectrum)
    if want("scaling"):
        rows += _bench_scaling.bench_scaling(
            args.quick, timing, benchmark_spectrum, d_list=args.scaling_d, s_list=args.scaling_s
        )
    if want("cold"):
        rows += _bench_cold.bench_cold(args.quick, stats)
    if want("distributed"):
        from experiments import _bench_distributed

        rows += _bench_distributed.bench_distributed(args.quick)
    return rows


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser("benchmark", __doc__)
    p.add_argument("--only", choices=SECTIONS, default=None)
    p.add_argument("--quick", action="store_true", help="small sizes, for the CI smoke test")
    p.add_argument(
        "--dims", type=_int_list, default=None, help="samplers: d list, e.g. 3072,49152,786432"
    )
    p.add_argument("--scaling-d", type=_int_list, default=None, help="scaling: d list, e.g. 3072")
    p.add_argument("--scaling-s", type=_int_list, default=None, help="scaling: S list, e.g. 10")
    p.add_argument(
        "--async-dispatch",
        action="store_true",
        help="keep JAX's asynchronous CPU dispatch (default: calls run synchronously)",
    )
    args = p.parse_args(argv)
    dispatch = set_dispatch(args.async_dispatch)
    jax.config.update("jax_enable_x64", True)  # float64 rows need it; float32 rows stay float32
    run = Run("benchmark", args)
    load_start = os.getloadavg()
    env = environment()
    env["dispatch"] = dispatch
    _LOG.clear()
    rows = _sections(args)
    _attach_spread(rows, _LOG)
    env["load_1min_start"], env["load_1min_end"] = load_start[0], os.getloadavg()[0]
    env["loadavg_start"], env["loadavg_end"] = list(load_start), list(os.getloadavg())
    command = " ".join(["python -m experiments.benchmark", *argv])
    from experiments import _bench_cold, _bench_scaling, _bench_sweep

    main_rows = [r for r in rows if r["section"] not in ("scaling", "cold", "sweep")]
    table = header_lines(command, env)
    if main_rows:
        table += speedup_table(main_rows)
    scaling = [r for r in rows if r["section"] == "scaling"]
    if scaling:
        table += "\n" + _bench_scaling.table(scaling)
    sweep = [r for r in rows if r["section"] == "sweep"]
    if sweep:
        table += "\n" + _bench_sweep.table(sweep)
    cold = [r for r in rows if r["section"] == "cold"]
    if cold:
        table += "\n" + _bench_cold.table(cold)
    run.finish({"command": command, "environment": env, "rows": rows}, table)


if __name__ == "__main__":
    main()
