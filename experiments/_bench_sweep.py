"""Benchmark section "sweep": a per-eigenvalue design streamed over many eigenvalues.

``sd.design_per_eigenvalue`` (DDIM, W2, S = 50) on the benchmark spectrum with n = 25 000
and 100 000 eigenvalues (--quick: 512 and 2048 at S = 10, in blocks of 256), after a
warm-up call on the smallest size so that the timed calls compile nothing. Each row gives
the wall time with the progress bar on (problems done / total with ETA, on stderr),
problems a second, the stop reasons, and the process's peak resident memory over the call
above its resident memory before it (Linux: ``VmHWM`` reset through
``/proc/self/clear_refs``; None where that is not available) next to the size of the
result's schedules. Streaming keeps one block of problems in flight, so the peak should
grow with n no faster than the result itself does.
"""

from __future__ import annotations

import time

import numpy as np

import specdiff as sd
from experiments._common import file_field, markdown_table

DDIM = sd.samplers.DDIM()


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None."""
    kib = file_field("/proc/self/status", field.lower() + ":")
    return None if kib is None else int(kib.split()[0])


def _reset_peak() -> bool:
    """Reset the peak resident memory (``VmHWM``) to the current one; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _row(lam, mean, steps, block) -> dict:
    n = lam.shape[0]
    reset = _reset_peak()
    rss0 = _status_kib("VmRSS")
    t0 = time.perf_counter()
    per = sd.design_per_eigenvalue(lam, steps, DDIM, mean=mean, block_size=block, progress=True)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") if reset else None
    reasons, counts = np.unique(per.stop_reason, return_counts=True)
    return {
        "section": "sweep",
        "what": "design_per_eigenvalue, streamed, progress bar on",
        "d": n,
        "S": steps,
        "dtype": str(per.log_snr.dtype),
        "block_size": block,
        "seconds": seconds,
        "problems_per_s": n / seconds,
        "stop_reasons": {str(r): int(c) for r, c in zip(reasons, counts)},
        "peak_rss_growth_mib": None if peak is None or rss0 is None else (peak - rss0) / 1024,
        "result_schedules_mib": per.log_snr.nbytes / 2**20,
        "all_not_worse_than_heuristic": bool(np.all(per.loss <= per.heuristic_loss)),
    }


def bench_sweep(quick: bool, benchmark_spectrum) -> list[dict]:
    sizes, steps, block = ((512, 2048), 10, 256) if quick else ((25_000, 100_000), 50, None)
    spec = benchmark_spectrum(max(sizes), np.float32)
    lam, mean = np.asarray(spec.eigenvalues), np.asarray(spec.mean)
    # The smallest size whole: its blocks have the shapes of every timed call's (the default
    # block depends on the device count), so the timed calls compile nothing.
    warm = min(sizes)
    sd.design_per_eigenvalue(
        lam[:warm], steps, DDIM, mean=mean[:warm], block_size=block, progress=False
    )
    rows = []
    for n in sizes:
        # Every n-th eigenvalue of the largest spectrum: the same range of λ at every size.
        idx = np.linspace(0, lam.shape[0] - 1, n).astype(int)
        rows.append(_row(lam[idx], mean[idx], steps, block))
        print(rows[-1], flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "## Per-eigenvalue sweep, streamed\n\n"
        "Peak memory growth: the process's peak resident memory during the call above its "
        "resident memory before it. Schedules: the size of the result's (n, S) log-SNR "
        "array.\n\n"
    )
    header = ["n", "S", "time", "problems/s", "stop reasons", "peak memory growth",
              "schedules", "block"]  # fmt: skip
    body = []
    for r in rows:
        growth = r["peak_rss_growth_mib"]
        body.append([
            r["d"], r["S"], f"{r['seconds']:.3g} s", f"{r['problems_per_s']:.4g}",
            ", ".join(f"{k} {v}" for k, v in r["stop_reasons"].items()),
            "not measured" if growth is None else f"{growth:.3g} MiB",
            f"{r['result_schedules_mib']:.3g} MiB", r["block_size"] or "default",
        ])  # fmt: skip
    return head + markdown_table(header, body)
