"""Every figure and table of the README in one go, each experiment into ``<out>/<name>/``.

  python -m experiments.reproduce_all                  # full runs (hours on a laptop CPU)
  python -m experiments.reproduce_all --quick          # small settings: a smoke test
  python -m experiments.reproduce_all --devices all    # on every visible device
  python -m experiments.reproduce_all --only sanity real_data

Runs, in this order, ``RUNS``: the data experiments (``sanity``, ``verify_engine``,
``per_eigenvalue``, ``synthetic_schedules``, ``real_data``), the linear-diffusion ones
(``spiked_covariance``, ``emergence_order``, ``power_iteration``), the shipped denoisers
(``denoiser_jacobians``, ``fid_check``, ``fid_check_samplers``), the sampler comparison and
the grid of independent designs (``grid``). ``benchmark`` is not among them: its numbers
are taken on a quiet machine by itself. ``--devices`` is passed on to every experiment (the
mesh of ``specdiff.core.mesh``); in a multi-process run (``specdiff.core.multihost``, see
docs/scale-out.md) every process runs this same command and process 0 writes the files.
``--cifar10``/``--wav`` are passed on to ``real_data``.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from experiments._common import Run, markdown_table, parser

# name → (module, arguments of the full run, arguments of --quick)
RUNS = {
    "sanity": ("sanity", [], ["--samples", "2000"]),
    "verify_engine": ("verify_engine", [], ["--samples", "20000"]),
    "per_eigenvalue": ("per_eigenvalue", [], ["--quick"]),
    "synthetic_schedules": ("synthetic_schedules", [], ["--quick"]),
    "real_data": ("real_data", [], ["--quick"]),
    "spiked_covariance": ("spiked_covariance", [], ["--quick"]),
    "emergence_order": ("emergence_order", [], ["--quick"]),
    "power_iteration": ("power_iteration", [], ["--quick"]),
    "denoiser_jacobians": ("denoiser_jacobians", [], ["--quick"]),
    "fid_check": ("fid_check", [], ["--quick"]),
    "fid_check_samplers": (
        "fid_check",
        ["--sampler", "heun,dpmpp_2m,euler_ancestral"],
        ["--sampler", "heun,dpmpp_2m,euler_ancestral", "--quick"],
    ),
    "sampler_comparison": ("sampler_comparison", [], ["--quick"]),
    "grid": ("grid", [], ["--quick"]),
}
DATA = ("sanity", "per_eigenvalue", "synthetic_schedules", "real_data")  # the CI test's set


def experiment_argv(name: str, root: Path, args) -> list[str]:
    """The command line ``reproduce_all`` gives experiment ``name``."""
    _, full, quick = RUNS[name]
    argv = ["--out", str(root / name), "--seed", str(args.seed)]
    argv += quick if args.quick else full
    if args.devices is not None:
        argv += ["--devices", args.devices]
    if name == "real_data":
        argv += ["--cifar10", args.cifar10] if args.cifar10 else []
        argv += ["--wav", args.wav] if args.wav else []
    return argv


def main(argv=None):
    p = parser("reproduce_all", __doc__)
    p.add_argument("--quick", action="store_true", help="small settings (smoke test)")
    p.add_argument("--only", nargs="+", choices=tuple(RUNS), default=list(RUNS))
    p.add_argument("--cifar10", default=None)
    p.add_argument("--wav", default=None)
    args = p.parse_args(argv)
    root = Path(args.out or "results")
    args.out = str(root / "reproduce_all")
    run = Run("reproduce_all", args)
    timings = {}
    for name in args.only:
        argv_i = experiment_argv(name, root, args)
        print(f"== {name} {' '.join(argv_i)}", flush=True)
        t0 = time.perf_counter()
        importlib.import_module(f"experiments.{RUNS[name][0]}").main(argv_i)
        timings[name] = time.perf_counter() - t0
    rows = [[n, str(root / n), f"{t:.1f} s"] for n, t in timings.items()]
    run.finish(
        {"quick": args.quick, "devices": args.devices, "seconds": timings},
        markdown_table(["experiment", "results", "time"], rows),
    )
    return timings


if __name__ == "__main__":
    main()
