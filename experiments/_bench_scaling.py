"""Benchmark section "scaling": the engine's value+grad of W2 over a d × S grid.

For DDIM (the closed-form Möbius path) and heun (a sampler written once as its step: the
rational closed form of one-state deterministic samplers, ``core.rational``), at every
d ∈ {3072, 49152, 786432} and S ∈ {10, 100, 1000}, float32:

- time of the compiled value+grad, timed side by side with the straightforward ``lax.scan``
  of the same sampler (``w2_scan`` of experiments.benchmark for DDIM, ``_scan_moments`` of
  experiments._bench_samplers for heun), median [IQR] of n alternating pairs (each timed
  call the second of a run of two; the first, right after the other's call, gives the cold
  speed-up);
- peak memory of each compiled function: XLA temporaries + arguments + outputs
  (``memory_bytes``); a version whose peak would not fit in 70 % of the memory available
  is not run, and its cell says so (the engine is then timed alone);
- a floor: the same value+grad for a "sampler" of one closed-form step (x̂0 at the last
  level, no loop over steps): the per-eigenvalue work (read λ and m, the moments' W2, the
  reverse pass) that every version pays whatever S is. scan / floor is the largest
  speed-up over the scan that any implementation of the S steps could show in that cell;
- the memory-bandwidth bound: the bytes one pass must at least read and write,
  B = itemsize·(2d + S) in (λ, m, ρ) + itemsize·(1 + S) out (W2 and ∂W2/∂ρ), over a
  STREAM-like triad bandwidth measured in the same run, t_B = B / bandwidth; a column
  gives t_B / t, the fraction of the bound each version reaches (1 = at the bound).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from experiments._bench_memory import memory_bytes
from experiments._bench_samplers import _scan_moments, _w2
from experiments._common import markdown_table
from experiments.benchmark import _meminfo_gib, floor_vg, w2_fast, w2_scan

D_FULL, S_FULL = (3072, 49152, 786432), (10, 100, 1000)
D_QUICK, S_QUICK = (1024,), (10,)
SAMPLERS = ("ddim", "heun")
MEMORY_FRACTION = 0.7  # of MemAvailable: a cell that needs more is skipped


def _heun_fast(rho, spec, sampler):
    mom = sd.output_moments(spec, sd.Schedule.from_log_snr(rho, "ve"), sampler)
    return sd.divergence(spec, mom, "w2")


def _heun_scan(rho, spec, sampler):
    return _w2(*_scan_moments(spec, sd.Schedule.from_log_snr(rho, "ve"), sampler), spec)


def _versions(name: str, S: int):
    """(engine fn, its static arg), (scan fn, its static arg), ρ for ``name`` at S steps."""
    if name == "ddim":
        rho = sd.schedules.cosine(S).log_snr
        return (w2_fast, sd.samplers.DDIM()), (w2_scan, 0.0), rho
    sampler = sd.samplers.from_name(name)
    rho = sd.schedules.edm(S, process="ve").log_snr
    return (_heun_fast, sampler), (_heun_scan, sampler), rho


def stream_triad(stats, n: int, reps: int) -> dict:
    """STREAM-like triad x ← 0.5·x + y over n float32, x donated so that no call allocates:
    bandwidth = 3·4·n bytes / time (GB/s, 1e9), with the ``stats`` of the repeats."""
    triad = jax.jit(lambda x, y: 0.5 * x + y, donate_argnums=0)
    x, y = jnp.ones(n, jnp.float32), jnp.full(n, 0.25, jnp.float32)
    x = jax.block_until_ready(triad(x, y))  # compile and warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x = jax.block_until_ready(triad(x, y))
        times.append(time.perf_counter() - t0)
    t = stats(times)
    gbs = stats(3 * 4 * n / np.asarray(times) / 1e9)
    return {"array_mib": 4 * n / 2**20, "time_s": t, "gb_per_s": gbs}


def _compile(fn, static, rho, spec):
    t0 = time.perf_counter()
    c = jax.jit(jax.value_and_grad(fn), static_argnums=2).lower(rho, spec, static).compile()
    return c, time.perf_counter() - t0


def _cell(name, d, S, spectrum, timing, bandwidth, quick) -> dict:
    (fast, fast_arg), (slow, slow_arg), rho = _versions(name, S)
    spec = spectrum(d, np.float32)
    rho = jnp.asarray(rho, jnp.float32)
    c_fast, compile_fast = _compile(fast, fast_arg, rho, spec)
    c_slow, compile_slow = _compile(slow, slow_arg, rho, spec)
    mem_f, mem_s = memory_bytes(c_fast), memory_bytes(c_slow)
    item = 4
    min_bytes = item * (2 * d + S) + item * (1 + S)
    row = {
        "section": "scaling",
        "what": f"value+grad W2, {name}",
        "sampler": name,
        "d": d,
        "S": S,
        "dtype": "float32",
        "memory_bytes_fast": mem_f,
        "memory_bytes_scan": mem_s,
        "compile_s_fast": compile_fast,
        "compile_s_scan": compile_slow,
        "min_bytes": min_bytes,
        "bandwidth_gb_per_s": bandwidth["gb_per_s"]["median"],
        "bound_ms": 1e3 * min_bytes / (1e9 * bandwidth["gb_per_s"]["median"]),
    }
    available = (_meminfo_gib("MemAvailable") or float("inf")) * 2**30
    too_big = [mem["peak"] > MEMORY_FRACTION * available for mem in (mem_f, mem_s)]
    for key, big, mem in (("fast", too_big[0], mem_f), ("scan", too_big[1], mem_s)):
        if big:
            row[f"{key}_skipped"] = (
                f"not run: needs {mem['peak'] / 2**30:.1f} GiB, "
                f"{available / 2**30:.1f} GiB available"
            )
    reps, min_time = (3, 0.0) if quick else (10, 0.5)
    if too_big[0]:
        return row
    jax.block_until_ready(floor_vg(rho, spec))
    t = timing["timed"](floor_vg, rho, spec, reps=reps, min_time=min_time, max_time=5.0)
    row.update(floor_ms=1e3 * t["median"], floor_q25_ms=1e3 * t["q25"])
    row.update(floor_q75_ms=1e3 * t["q75"], floor_n=t["n"])
    vf, gf = jax.block_until_ready(c_fast(rho, spec))  # also the warm-up calls
    if too_big[1]:  # the engine alone
        t = timing["timed"](c_fast, rho, spec, reps=reps, min_time=min_time, max_time=20.0)
        row.update(fast_ms=1e3 * t["median"], fast_q25_ms=1e3 * t["q25"])
        row.update(fast_q75_ms=1e3 * t["q75"], n=t["n"], speedup=None)
        row["fast_bound_fraction"] = row["bound_ms"] / row["fast_ms"]
        return row
    vs, gs = jax.block_until_ready(c_slow(rho, spec))
    p = timing["paired"](
        c_fast,
        c_slow,
        (rho, spec),
        (rho, spec),
        reps=reps,
        min_time=min_time,
        max_time=20.0,
        warmup=False,
    )
    row.update(timing["pair_fields"](p))
    row["fast_bound_fraction"] = row["bound_ms"] / row["fast_ms"]
    row["scan_bound_fraction"] = row["bound_ms"] / row["scan_ms"]
    row["ceiling"] = row["scan_ms"] / row["floor_ms"]
    row["value_rel_diff"] = float(abs(vf - vs) / abs(vs))
    row["grad_rel_diff"] = float(jnp.max(jnp.abs(gf - gs)) / jnp.max(jnp.abs(gs)))
    return row


def bench_scaling(quick, timing, benchmark_spectrum, *, d_list=None, s_list=None) -> list[dict]:
    """The grid (``d_list``/``s_list`` replace its axes, e.g. one full-size cell).

    ``timing``: the harness's ``paired``, ``pair_fields`` and ``stats``.
    """
    d_list = d_list or (D_QUICK if quick else D_FULL)
    s_list = s_list or (S_QUICK if quick else S_FULL)
    n = 2**20 if quick else 2**26  # 4 MiB / 256 MiB per array
    bandwidth = stream_triad(timing["stats"], n, 5 if quick else 20)
    print({"stream_triad": bandwidth}, flush=True)
    rows = []
    for name in SAMPLERS:
        for d in d_list:
            for S in s_list:
                row = _cell(name, d, S, benchmark_spectrum, timing, bandwidth, quick)
                row["bandwidth"] = bandwidth
                rows.append(row)
                print({k: v for k, v in row.items() if k != "bandwidth"}, flush=True)
    return rows


def _mib(mem: dict) -> str:
    return f"{mem['peak'] / 2**20:.3g} ({mem['temp'] / 2**20:.3g} temp)"


def _time(r, key) -> str:
    if f"{key}_skipped" in r:
        return r[f"{key}_skipped"]
    return f"{r[f'{key}_ms']:.3g} [{r[f'{key}_q25_ms']:.3g}–{r[f'{key}_q75_ms']:.3g}]"


def _fraction(r, key) -> str:
    x = r.get(f"{key}_bound_fraction")
    return "-" if x is None else f"{100 * x:.3g}%"


def table(rows: list[dict]) -> str:
    """The scaling table, with the triad bandwidth it was measured against."""
    bw = rows[0]["bandwidth"]
    g = bw["gb_per_s"]
    head = (
        "## Scaling: jit(value_and_grad) W2, float32, engine vs lax.scan\n\n"
        f"STREAM-like triad in this run ({bw['array_mib']:.0f} MiB arrays): {g['median']:.3g} "
        f"GB/s [{g['q25']:.3g}–{g['q75']:.3g}], n = {g['n']}. Bound: the bytes one pass must "
        "read and write (λ, m, ρ in; W2, ∂W2/∂ρ out) at that bandwidth; 'at bound' is bound "
        "time / measured time. Peak MiB: XLA temporaries + arguments + outputs. Floor: the "
        "same value+grad with one closed-form step (no loop over steps); ceiling = scan / "
        "floor, the most any implementation of the S steps could gain over the scan. Cold "
        "speed-up: the same pairs timed on the call right after the other version's call, "
        "whose memory traffic has evicted this one's data from the caches.\n\n"
    )
    header = ["sampler", "d", "S", "engine ms", "lax.scan ms", "speed-up", "cold speed-up",
              "n", "floor ms",
              "ceiling",
              "engine peak MiB", "scan peak MiB", "bytes/pass", "bound ms", "engine at bound",
              "scan at bound"]  # fmt: skip
    body = []
    for r in rows:
        speed = cold = "-"
        if r.get("speedup") is not None:
            speed = f"{r['speedup']:.3g}x [{r['speedup_q25']:.3g}–{r['speedup_q75']:.3g}]"
        if r.get("speedup_cold") is not None:
            cold = (
                f"{r['speedup_cold']:.3g}x [{r['speedup_cold_q25']:.3g}–"
                f"{r['speedup_cold_q75']:.3g}]"
            )
        body.append([
            r["sampler"], r["d"], r["S"], _time(r, "fast"), _time(r, "scan"), speed, cold,
            r.get("n", "-"), _time(r, "floor") if "floor_ms" in r else "-",
            f"{r['ceiling']:.3g}x" if r.get("ceiling") else "-",
            _mib(r["memory_bytes_fast"]), _mib(r["memory_bytes_scan"]),
            f"{r['min_bytes']:,}", f"{r['bound_ms']:.3g}", _fraction(r, "fast"),
            _fraction(r, "scan"),
        ])  # fmt: skip
    return head + markdown_table(header, body)
