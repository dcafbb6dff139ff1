"""Benchmark section "cold": start-up of a fresh process, specdiff against plain JAX.

Each pair of commands runs as subprocesses of this Python on this machine in this run,
alternating (a, b, b, a, …) so that load falls on both alike; medians of the wall times:

- ``import specdiff`` against ``import jax``: target ratio ≤ 1.2;
- the README's main command, ``python -m specdiff design --out <tmp>/schedule.json``, with
  the persistent compilation cache (``SPECDIFF_CACHE_DIR``) in a temporary folder warmed by
  one run before the timed ones, against ``import jax.numpy as jnp; jnp.zeros(1)`` (JAX
  started with one array on its backend): target ratio ≤ 2.5.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments._common import markdown_table

ROOT = Path(__file__).resolve().parents[1]  # the checkout whose specdiff is measured


def _seconds(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def _alternating(cmd_a, cmd_b, runs: int, env: dict) -> tuple[list[float], list[float]]:
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        if i % 2 == 0:
            ta.append(_seconds(cmd_a, env))
            tb.append(_seconds(cmd_b, env))
        else:
            tb.append(_seconds(cmd_b, env))
            ta.append(_seconds(cmd_a, env))
    return ta, tb


def _row(what, baseline_what, t_ours, t_base, target, stats, **extra) -> dict:
    ours, base = stats(t_ours), stats(t_base)
    ratio = ours["median"] / base["median"]
    return {
        "section": "cold",
        "what": what,
        "baseline": baseline_what,
        "d": None,
        "S": None,
        "dtype": None,
        "specdiff_s": ours,
        "baseline_s": base,
        "ratio": ratio,
        "pair_ratio": stats([a / b for a, b in zip(t_ours, t_base)]),
        "target": target,
        "meets_target": bool(ratio <= target),
        **extra,
    }


def bench_cold(quick: bool, stats) -> list[dict]:
    """``stats``: the harness's summary of repeats (median, q25, q75, min, max, n)."""
    runs = 1 if quick else 5
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="specdiff-cold-") as tmp:
        env = dict(os.environ, SPECDIFF_CACHE_DIR=str(Path(tmp) / "cache"))
        env.pop("SPECDIFF_DEVICES", None)
        rows = []
        t_sd, t_jax = _alternating(
            [py, "-c", "import specdiff"], [py, "-c", "import jax"], runs, env
        )
        rows.append(_row("import specdiff", "import jax", t_sd, t_jax, 1.2, stats))
        print(rows[-1], flush=True)
        design = [py, "-m", "specdiff", "design", "--out", str(Path(tmp) / "schedule.json")]
        first = _seconds(design, env)  # fills the compilation cache
        t_design, t_zeros = _alternating(
            design, [py, "-c", "import jax.numpy as jnp; jnp.zeros(1)"], runs, env
        )
        rows.append(
            _row(
                "specdiff design (README main command), compile cache warm",
                "import jax.numpy as jnp; jnp.zeros(1)",
                t_design,
                t_zeros,
                2.5,
                stats,
                first_run_s=first,
            )
        )
        print(rows[-1], flush=True)
    return rows


def _s(s: dict) -> str:
    return f"{s['median']:.3g} [{s['q25']:.3g}–{s['q75']:.3g}] s"


def table(rows: list[dict]) -> str:
    """The cold-start table: both commands' wall times, their ratio and its target."""
    head = (
        "## Cold start: fresh processes, alternating, same machine and run\n\n"
        "Ratio: median of specdiff's command over median of the baseline.\n\n"
    )
    header = ["command", "time", "baseline", "baseline time", "ratio", "target", "n"]
    body = [
        [
            r["what"]
            + (f" (first run, cache cold: {r['first_run_s']:.3g} s)" if "first_run_s" in r else ""),
            _s(r["specdiff_s"]),
            r["baseline"],
            _s(r["baseline_s"]),
            f"{r['ratio']:.3g}x",
            f"≤ {r['target']}x " + ("(met)" if r["meets_target"] else "(NOT met)"),
            r["specdiff_s"]["n"],
        ]
        for r in rows
    ]
    return head + markdown_table(header, body)
