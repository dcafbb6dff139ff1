"""Every data experiment of issue 4 in one go, each into ``<out>/<name>/``.

  python -m experiments.reproduce_all            # full runs (tens of minutes on a laptop)
  python -m experiments.reproduce_all --quick    # a few minutes; CI runs it as a test

Runs ``sanity``, ``per_eigenvalue``, ``synthetic_schedules`` and ``real_data`` in that order;
``--cifar10``/``--wav`` are passed on to ``real_data``.
"""

from __future__ import annotations

import time
from pathlib import Path

from experiments import per_eigenvalue, real_data, sanity, synthetic_schedules
from experiments._common import Run, markdown_table, parser

EXPERIMENTS = {
    "sanity": sanity,
    "per_eigenvalue": per_eigenvalue,
    "synthetic_schedules": synthetic_schedules,
    "real_data": real_data,
}


def main(argv=None):
    p = parser("reproduce_all", __doc__)
    p.add_argument("--quick", action="store_true", help="small settings (CI smoke test)")
    p.add_argument("--only", nargs="+", choices=tuple(EXPERIMENTS), default=list(EXPERIMENTS))
    p.add_argument("--cifar10", default=None)
    p.add_argument("--wav", default=None)
    args = p.parse_args(argv)
    root = Path(args.out or "results")
    args.out = str(root / "reproduce_all")
    run = Run("reproduce_all", args)
    timings = {}
    for name in args.only:
        argv_i = ["--out", str(root / name), "--seed", str(args.seed)]
        if args.quick:
            argv_i += ["--samples", "2000"] if name == "sanity" else ["--quick"]
        if name == "real_data":
            argv_i += ["--cifar10", args.cifar10] if args.cifar10 else []
            argv_i += ["--wav", args.wav] if args.wav else []
        print(f"== {name} {' '.join(argv_i)}")
        t0 = time.perf_counter()
        EXPERIMENTS[name].main(argv_i)
        timings[name] = time.perf_counter() - t0
    rows = [[n, str(root / n), f"{t:.1f} s"] for n, t in timings.items()]
    run.finish(
        {"quick": args.quick, "seconds": timings},
        markdown_table(["experiment", "results", "time"], rows),
    )
    return timings


if __name__ == "__main__":
    main()
