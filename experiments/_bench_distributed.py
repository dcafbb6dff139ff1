"""Benchmark section "distributed": throughput on 1, 2 and 4 devices, side by side (issue 14).

Two workloads, each timed in a fresh subprocess per device count with
``XLA_FLAGS=--xla_force_host_platform_device_count=n`` (forced CPU devices: they share the
machine's cores, so the speed-up is bounded by the core count, which every row states), and
each run once to compile and once timed:

- per-eigenvalue sweep: ``sd.design_per_eigenvalue`` (DDIM, W2) of a power-law spectrum
  under ``use_devices(n)``; throughput = eigenvalue problems per second. The sweep uses the
  mesh's devices where ``design_per_eigenvalue`` shards its problems; where it does not
  (yet), the rows show it.
- grid: ``experiments.grid`` on a small grid of independent problems (problem k on device
  k mod n, one thread per device); throughput = problems per second.

On an accelerator host the same code measures real devices: pass ``forced=False``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_COUNTS = (1, 2, 4)


def settings(quick: bool) -> dict:
    """Problem sizes: the full run is 3072 eigenvalues × S = 50 and a 16-problem grid."""
    if quick:
        return {
            "n": 256,
            "S": 10,
            "max_iter": 50,
            "grid": [
                "--datasets",
                "synthetic_ata",
                "--samplers",
                "ddim",
                "--steps",
                "4",
                "--metrics",
                "w2",
                "--seeds",
                "0",
                "1",
                "2",
                "3",
                "--max-iter",
                "20",
            ],
        }
    return {
        "n": 3072,
        "S": 50,
        "max_iter": 500,
        "grid": [
            "--datasets",
            "synthetic_ata",
            "digits",
            "--samplers",
            "ddim",
            "heun",
            "--steps",
            "10",
            "--metrics",
            "w2",
            "--seeds",
            "0",
            "1",
            "2",
            "3",
            "--max-iter",
            "300",
        ],
    }


def _child() -> None:
    """Run in the subprocess: time one workload on every visible device, print one JSON."""
    cfg = json.loads(sys.argv[1])
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import specdiff as sd
    from specdiff.core.mesh import use_devices

    n_dev = len(jax.devices())
    if cfg["workload"] == "per_eigenvalue":
        k = np.arange(1, cfg["n"] + 1, dtype=np.float64)
        lam, mean = 20.0 / k**1.2, 0.1 * np.cos(k)

        def work():
            with use_devices("all"):
                sd.design_per_eigenvalue(
                    lam,
                    cfg["S"],
                    sd.samplers.DDIM(),
                    mean=mean,
                    max_iter=cfg["max_iter"],
                    progress=False,
                )

        count = cfg["n"]
    else:
        from experiments import grid

        out = Path(tempfile.mkdtemp())

        def work():
            grid.main([*cfg["grid"], "--devices", "all", "--out", str(out / str(time.time()))])

        count = len(grid.problems(grid.parse(cfg["grid"])[1]))
    work()  # compile
    t0 = time.perf_counter()
    work()
    wall = time.perf_counter() - t0
    print("RESULT " + json.dumps({"devices": n_dev, "count": count, "wall_s": wall}))


def _measure(workload: str, devices: int, cfg: dict, forced: bool) -> dict:
    from experiments._common import forced_cpu_devices

    env = dict(os.environ, PYTHONPATH=str(ROOT), SPECDIFF_CACHE_DIR="off")
    if forced:
        env = forced_cpu_devices(devices, env)
    else:
        env["SPECDIFF_DEVICES"] = str(devices)
    code = "from experiments._bench_distributed import _child; _child()"
    arg = json.dumps(cfg | {"workload": workload})
    r = subprocess.run(
        [sys.executable, "-c", code, arg],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"{workload} on {devices} devices failed: {r.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def bench_distributed(quick: bool, device_counts=DEVICE_COUNTS, forced: bool = True) -> list[dict]:
    """Rows in ``experiments.benchmark``'s format: per workload and device count, the
    throughput there (``fast``) next to the one-device throughput (``straightforward``)."""
    cfg = settings(quick)
    cores = os.cpu_count()
    rows = []
    for workload, what, unit in (
        ("per_eigenvalue", f"design_per_eigenvalue, {cfg['n']} eigenvalues", "eigenvalues"),
        ("grid", "grid of independent design_schedule problems", "problems"),
    ):
        base = None
        for n in device_counts:
            m = _measure(workload, n, cfg, forced)
            rate = m["count"] / m["wall_s"]
            base = rate if base is None else base
            rows.append(
                {
                    "section": "distributed",
                    "what": f"{what}, {n} device(s), {cores} cores",
                    "d": cfg["n"] if workload == "per_eigenvalue" else "-",
                    "S": cfg["S"] if workload == "per_eigenvalue" else 4 if quick else 10,
                    "dtype": "float64",
                    "devices": n,
                    "forced_cpu_devices": forced,
                    "cpu_count": cores,
                    "count": m["count"],
                    "wall_s": m["wall_s"],
                    "per_second": rate,
                    "fast_ms": 1e3 * m["wall_s"],
                    "scan_ms": None,
                    "fast_label": f"{rate:.3g} {unit}/s on {n}",
                    "slow_label": f"{base:.3g} {unit}/s on {device_counts[0]}",
                    "speedup": rate / base,
                }
            )
            print(rows[-1], flush=True)
    return rows
