"""A grid of independent design problems, spread over every visible device (issue 14).

A problem is (dataset, sampler, S, metric, seed): ``sd.design_schedule`` for that spectrum,
sampler and metric at S steps (VP, first level fixed at ᾱ_999 of the DDPM linear-β schedule
as in ``experiments.sampler_comparison``; eigenvalues floored at ``--floor``·λ_max), and the
designed schedule's W2 and metric value against a few heuristics (``HEURISTICS``). Seed 0
starts the design from the best heuristic (the library default); seed k ≥ 1 from a random
monotone grid drawn with ``fold_in(jax.random.key(--seed), k)``, so several seeds show
whether the design depends on its start.

Placement is static: with D devices in ``specdiff.core.mesh.current_mesh()`` (all processes'
devices in a multi-process run, see ``specdiff.core.multihost``), problem k runs on device
k mod D. Each process runs the problems of its own devices, one thread per device under
``jax.default_device``. Every finished problem is one JSON record, written atomically to
``<out>/records/<key>.json``: a killed run loses only the problems in flight, and a rerun
skips every problem whose record has the same settings. When every process is done, the
records are gathered to process 0 (so ``--out`` need not be a shared disk), which writes
``results.json`` and ``table.md`` in grid order (datasets × samplers × S × metrics × seeds);
``--merge-only`` does only that step from the records on disk.

  python -m experiments.grid [--datasets synthetic_ata digits ...] [--samplers ddim heun ...]
      [--steps 10 20] [--metrics w2 kl] [--seeds 0 1 2] [--devices all] [--quick]
  python -m experiments.grid --merge-only [--out results/grid]
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

import specdiff as sd
from experiments import sampler_comparison as sc
from experiments._common import Run, fail, is_writer, markdown_table, parser, to_jsonable
from specdiff.core import mesh, multihost
from specdiff.core.io import write_json

DEFAULTS = {
    "datasets": list(sc.DATASETS),
    "samplers": ["ddim", "euler_ancestral", "heun", "dpmpp_2m"],
    "steps": [10, 20],
    "metrics": ["w2", "kl"],
    "seeds": [0],
}
QUICK = {
    "datasets": [sc.SYNTHETIC, "digits"],
    "samplers": ["ddim", "heun"],
    "steps": [4],
    "metrics": ["w2"],
    "seeds": [0],
}
QUICK_MAX_ITER = 20
HEURISTICS = ("linear", "cosine", "edm", "log_snr_uniform", "chen_sigmoid")
GRID_FILE = "grid.json"
_BAR_LOCK = threading.Lock()  # the device threads share one progress bar


class Problem(NamedTuple):
    dataset: str
    sampler: str
    steps: int
    metric: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}__{self.sampler}__S{self.steps}__{self.metric}__seed{self.seed}"


def problems(grid: dict) -> list[Problem]:
    """Every problem of the grid, in its fixed order."""
    return [
        Problem(d, s, int(S), m, int(k))
        for d in grid["datasets"]
        for s in grid["samplers"]
        for S in grid["steps"]
        for m in grid["metrics"]
        for k in grid["seeds"]
    ]


def settings(p: Problem, args) -> dict:
    """What a finished record must match to be reused."""
    return {
        "problem": p._asdict(),
        "max_iter": args.max_iter,
        "floor": args.floor,
        "kl_floor": args.kl_floor,
        "base_seed": args.seed,
        "heuristics": list(HEURISTICS),
        "version": sd.__version__,
    }


# --------------------------------------------------------------------------- one problem


class _Spectra:
    """Each dataset's spectrum, loaded once per process (shared by the device threads)."""

    def __init__(self, floor: float):
        self.floor, self.cache, self.lock = floor, {}, threading.Lock()

    def __call__(self, name: str) -> sd.Spectrum:
        with self.lock:
            if name not in self.cache:
                self.cache[name] = sc.load_spectrum(name, self.floor)
            return self.cache[name]


def _values(spec, schedule, sampler, metric: str, kl_floor: float) -> dict:
    mom = sd.output_moments(spec, schedule, sampler)
    out = {"w2": float(sd.divergence(spec, mom, "w2"))}
    if metric != "w2":
        out[metric] = float(sd.divergence(spec, mom, metric, floor=kl_floor))
    return out


def solve(p: Problem, spec: sd.Spectrum, args) -> dict:
    """Design one problem; its values and those of ``HEURISTICS`` (on the current device)."""
    sampler = sd.samplers.from_name(p.sampler)
    kl_floor = args.kl_floor * float(np.max(spec.eigenvalues))
    key = jax.random.fold_in(jax.random.key(args.seed), p.seed)
    start = {"init": "best"} if p.seed == 0 else {"init": "random", "key": key}
    res = sd.design_schedule(
        spec,
        p.steps,
        sampler,
        process="vp",
        metric=p.metric,
        endpoints=sc.first_level("first"),
        max_iter=args.max_iter,
        floor=None if p.metric == "w2" else kl_floor,
        progress=False,
        **start,
    )
    heur = sd.schedules.heuristics(p.steps, "vp")
    heur = {n: _values(spec, heur[n], sampler, p.metric, kl_floor) for n in HEURISTICS if n in heur}
    designed = _values(spec, res.schedule, sampler, p.metric, kl_floor)
    best = min(heur, key=lambda n: heur[n][p.metric])
    return {
        "designed": designed
        | {
            "iterations": int(res.iterations),
            "init": res.init,
            "converged": bool(res.converged),
            "log_snr": np.asarray(res.schedule.log_snr, np.float64),
        },
        "heuristics": heur,
        "best_heuristic": {"name": best, "value": heur[best][p.metric]},
        "gain": heur[best][p.metric] / designed[p.metric],
    }


# --------------------------------------------------------------------------- records


def record_path(out: Path, p: Problem) -> Path:
    return out / "records" / f"{p.key}.json"


def read_record(path: Path, want: dict | None = None) -> dict | None:
    """The record at ``path`` if it is complete (and has the settings ``want``), else None."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict) or "result" not in rec:
        return None
    return rec if want is None or rec.get("settings") == want else None


def _run_device(dev, todo: list[Problem], out: Path, args, spectra, bar) -> None:
    """The problems of one device, in order, one record each (runs in its own thread).

    The problem's own calls see this device alone (``use_devices``, per thread): a grid
    problem is not sharded further, so no collective joins problems of other devices.
    """
    with jax.default_device(dev), mesh.use_devices([dev.id]):
        for p in todo:
            t0 = time.perf_counter()
            result = solve(p, spectra(p.dataset), args)
            run = {
                "process": jax.process_index(),
                "device": str(dev),
                "finished_utc": datetime.datetime.now(datetime.UTC).isoformat(),
                "wall_s": time.perf_counter() - t0,
            }
            rec = {
                "key": p.key,
                "settings": to_jsonable(settings(p, args)),
                "result": to_jsonable(result),
                "run": run,
            }
            write_json(record_path(out, p), rec)
            r = rec["result"]
            bar.write(
                f"{p.key}: {p.metric} designed {r['designed'][p.metric]:.4g}, best "
                f"heuristic {r['best_heuristic']['value']:.4g} "
                f"({r['best_heuristic']['name']}), {run['wall_s']:.1f} s on {dev}"
            )
            with _BAR_LOCK:
                bar.update(1)


def run_grid(grid: dict, out: Path, args) -> dict:
    """Run this process's share of the grid; returns counts (mine, skipped, computed)."""
    from tqdm.auto import tqdm

    devices = list(mesh.current_mesh().devices.flat)
    here = jax.process_index()
    mine: dict = {d: [] for d in devices if d.process_index == here}
    skipped = []
    for k, p in enumerate(problems(grid)):
        dev = devices[k % len(devices)]
        if dev not in mine:
            continue
        if read_record(record_path(out, p), to_jsonable(settings(p, args))) is not None:
            skipped.append(p.key)
        else:
            mine[dev].append(p)
    for key in skipped:
        print(f"skipped (finished): {key}", flush=True)
    total = len(skipped) + sum(len(v) for v in mine.values())
    spectra = _Spectra(args.floor)
    busy = {d: v for d, v in mine.items() if v}
    with tqdm(
        total=total, initial=len(skipped), desc=f"grid process {here}", unit="problem"
    ) as bar:
        if busy:
            with ThreadPoolExecutor(max_workers=len(busy)) as pool:
                futures = [
                    pool.submit(_run_device, d, v, out, args, spectra, bar) for d, v in busy.items()
                ]
                for f in futures:
                    f.result()
    return {"problems": total, "skipped": len(skipped), "computed": total - len(skipped)}


def gather_records(grid: dict, out: Path) -> None:
    """Copy every process's finished records to process 0's ``out`` (multi-process runs)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    recs = [r for p in problems(grid) if (r := read_record(record_path(out, p))) is not None]
    data = np.frombuffer(json.dumps(recs).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size], np.int64))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: data.size] = data
    every = multihost_utils.process_allgather(padded)
    if not is_writer():
        return
    for size, row in zip(np.asarray(sizes).ravel(), np.asarray(every)):
        for rec in json.loads(row[: int(size)].tobytes().decode()):
            path = out / "records" / f"{rec['key']}.json"
            if read_record(path) is None:
                write_json(path, rec)


# --------------------------------------------------------------------------- merge


HEADER = [
    "dataset",
    "sampler",
    "S",
    "metric",
    "seed",
    "designed",
    "best heur.",
    "(which)",
    "gain",
    "W2 designed",
    "iters",
]


def merge(grid: dict, out: Path, run: Run, args) -> dict:
    """``results.json`` and ``table.md`` from the records, in grid order (process 0 only)."""
    entries, rows, missing, runs = [], [], [], {}
    for p in problems(grid):
        rec = read_record(record_path(out, p), to_jsonable(settings(p, args)))
        if rec is None:
            missing.append(p.key)
            continue
        r = rec["result"]
        entries.append({"key": p.key, "problem": p._asdict(), "result": r})
        runs[p.key] = rec.get("run", {})
        iters = f"{r['designed']['iterations']}" + ("" if r["designed"]["converged"] else "*")
        rows.append(
            [
                *p,
                r["designed"][p.metric],
                r["best_heuristic"]["value"],
                r["best_heuristic"]["name"],
                r["gain"],
                r["designed"]["w2"],
                iters,
            ]
        )
    n = len(entries) + len(missing)
    table = (
        f"{len(entries)} of {n} problems finished"
        + (f"; missing: {', '.join(missing)}" if missing else "")
        + ". designed / best heur.: the problem's metric (W2 not squared); gain = best "
        "heuristic / designed; iters: design iterations (* = stopped at --max-iter).\n\n"
        + markdown_table(HEADER, rows)
    )
    results = {
        "grid": grid,
        "settings": resolved_settings(args),
        "problems": entries,
        "missing": missing,
        "runs": runs,
    }
    run.finish(results, table)
    return results


# --------------------------------------------------------------------------- command line


def resolved_settings(args) -> dict:
    return {"max_iter": args.max_iter, "floor": args.floor, "kl_floor": args.kl_floor,
            "seed": args.seed}  # fmt: skip


def parse(argv):
    p = parser("grid", __doc__)
    p.add_argument("--datasets", nargs="+", default=None, help=f"of {', '.join(sc.DATASETS)}")
    p.add_argument("--samplers", nargs="+", default=None, help="sampler names")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="S values")
    p.add_argument("--metrics", nargs="+", default=None, help=f"of {', '.join(sd.METRICS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="0: best-heuristic start")
    p.add_argument("--max-iter", type=int, default=None, help="design iterations (300)")
    p.add_argument("--floor", type=float, default=None, help="eigenvalue floor / λ_max (1e-10)")
    p.add_argument("--kl-floor", type=float, default=None, help="KL floor / λ_max (1e-4)")
    p.add_argument("--quick", action="store_true", help=f"CI smoke test: {QUICK}")
    p.add_argument("--merge-only", action="store_true", help="only merge the records in --out")
    args = p.parse_args(argv)
    out = Path(args.out or Path("results") / "grid")
    saved = {}
    if args.merge_only and (out / GRID_FILE).is_file():
        saved = json.loads((out / GRID_FILE).read_text())
    base = QUICK if args.quick else DEFAULTS
    grid = {k: getattr(args, k) or saved.get("grid", {}).get(k) or base[k] for k in DEFAULTS}
    fixed = {"max_iter": QUICK_MAX_ITER if args.quick else 300, "floor": 1e-10, "kl_floor": 1e-4}
    for k, v in fixed.items():
        if getattr(args, k) is None:
            setattr(args, k, saved.get("settings", {}).get(k, v))
    args.seed = saved.get("settings", {}).get("seed", args.seed)  # --merge-only: the run's
    _check(grid, args)
    return args, grid, out


def _check(grid: dict, args) -> None:
    bad = [n for n in grid["datasets"] if n not in sc.DATASETS]
    if bad:
        fail(f"unknown dataset(s) {bad}; allowed: {', '.join(sc.DATASETS)}")
    bad = [n for n in grid["samplers"] if n not in sd.samplers.SAMPLERS]
    if bad:
        fail(f"unknown sampler(s) {bad}; allowed: {', '.join(sd.samplers.SAMPLERS)}")
    bad = [m for m in grid["metrics"] if m not in sd.METRICS]
    if bad:
        fail(f"unknown metric(s) {bad}; allowed: {', '.join(sd.METRICS)}")
    for k in DEFAULTS:
        if len(set(grid[k])) != len(grid[k]):
            fail(f"--{k} lists a value twice: {grid[k]}")
    if min(grid["steps"]) < 1 or min(grid["seeds"]) < 0 or args.max_iter < 1:
        fail("--steps and --max-iter must be >= 1 and --seeds >= 0")
    if not (args.floor > 0 and args.kl_floor > 0):
        fail("--floor and --kl-floor must be > 0")


def main(argv=None):
    args, grid, out = parse(argv)
    jax.config.update("jax_enable_x64", True)
    args.out = str(out)
    run = Run("grid", args)
    if run.writer and not args.merge_only:
        write_json(out / GRID_FILE, {"grid": grid, "settings": resolved_settings(args)})
    counts = {}
    if not args.merge_only:
        t0 = time.perf_counter()
        counts = run_grid(grid, out, args)
        print(f"process {jax.process_index()}: {counts} in {time.perf_counter() - t0:.1f} s")
        multihost.barrier("specdiff_grid_done")
        gather_records(grid, out)
    results = merge(grid, out, run, args) if run.writer else None
    return results if results is not None else counts


if __name__ == "__main__":
    main()
