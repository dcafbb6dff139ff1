"""The ``specdiff`` command line (also ``python -m specdiff``).

Commands::

  specdiff design    [--steps 10] [--sampler ddim] [--metric w2] [--out schedule.json]
  specdiff evaluate  SCHEDULE.json [--metric w2]
  specdiff compare   [--steps 5,10,20,50]
  specdiff export    SCHEDULE.json --format diffusers|k-diffusion|json [--steps N] [--out F]
  specdiff plot      [SCHEDULE.json ...] [--out-dir plots]

Every command takes a spectrum from one of ``--dataset NAME`` (a built-in dataset, PCA
spectrum), ``--spectrum FILE.npz`` (key ``eigenvalues``, optional ``mean``) or
``--synthetic ata|powerlaw[:alpha]`` with ``--dim D``; by default the synthetic AᵀA
spectrum (d = 50, l = 0.1, μ0 = 0.05), which needs no optional dependency.

Output is a human-readable table; ``--json`` prints one JSON document instead. Bad input
gives one line ``specdiff: error: ...`` on stderr and exit code 2, and writes nothing:
every input is checked and every result computed before the first file is written, and
each file is written atomically (a temporary file moved into place).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

DEFAULT_STEPS = 10
DEFAULT_COMPARE_STEPS = (5, 10, 20, 50)
DEFAULT_PLOT_HEURISTICS = ("linear", "cosine", "edm", "log_snr_uniform")
FORMATS = ("diffusers", "k-diffusion", "json")
SYNTHETIC = ("ata", "powerlaw")
METRIC_LABELS = {"w2": "W2", "kl": "KL(data‖model)", "reverse_kl": "KL(model‖data)"}


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (printed by ``main`` as one line)."""

    def error(self, message):
        raise UsageError(message)


# --------------------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"steps must be an integer >= 1, got {value}")
    return value


def _steps_list(text: str) -> list[int]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("give at least one step count, e.g. 5,10,20")
    out = [_positive_int(p) for p in parts]
    return sorted(set(out))


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# --------------------------------------------------------------------------- parsers


def _spectrum_options() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    g = p.add_argument_group("spectrum (one of; default: --synthetic ata)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--dataset", metavar="NAME", help="built-in dataset (PCA spectrum)")
    src.add_argument("--spectrum", metavar="FILE", help=".npz with 'eigenvalues' (and 'mean')")
    src.add_argument(
        "--synthetic",
        metavar="KIND",
        help="'ata' (Σ0 = AᵀA, l = 0.1, μ0 = 0.05) or 'powerlaw[:alpha]' (λ_i = i^-alpha, "
        "alpha 2 by default)",
    )
    g.add_argument("--dim", type=_positive_int, help="dimension d of --synthetic (default 50)")
    g.add_argument("--split", default="train", help="split of --dataset (train, test, all)")
    return p


def _model_options(metric: bool = True) -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    g = p.add_argument_group("sampler and objective")
    g.add_argument("--sampler", default=None, help="ddim (default) or ddpm")
    g.add_argument("--eta", type=float, default=None, help="DDIM η in [0, 1] (0: deterministic)")
    g.add_argument(
        "--process",
        default=None,
        help="vp (default) or ve; for evaluate, re-read the file's levels in this process",
    )
    if metric:
        g.add_argument("--metric", default="w2", help="w2 (default), kl or reverse_kl")
    g.add_argument(
        "--floor", type=_positive_float, default=None, help="eigenvalue floor for the KLs"
    )
    g.add_argument(
        "--dtype",
        default="float64",
        choices=("float32", "float64"),
        help="precision of design and evaluation (default float64)",
    )
    return p


def _output_options() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``specdiff`` command."""
    from specdiff import __version__

    parser = _Parser(
        prog="specdiff",
        description="Exact spectral analysis of diffusion samplers and design of noise "
        "schedules (Gaussian data, closed form).",
    )
    parser.add_argument("--version", action="version", version=f"specdiff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    spec, out = _spectrum_options(), _output_options()

    p = sub.add_parser(
        "design",
        parents=[spec, _model_options(), out],
        help="design a schedule for a spectrum; write its JSON and print the comparison",
        description="Design the S-level schedule minimising the exact divergence for a "
        "spectrum, write it as JSON and print it beside every heuristic.",
    )
    p.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, help="S (default 10)")
    p.add_argument("--out", default="schedule.json", help="output file (default schedule.json)")
    p.add_argument("--first", type=float, default=None, help="fix the noisiest level (ᾱ or σ)")
    p.add_argument("--last", type=float, default=None, help="fix the cleanest level (ᾱ or σ)")
    p.add_argument("--init", default="best", help="start: best (default) or a heuristic name")
    p.add_argument("--max-iter", type=_positive_int, default=1000, help="iteration cap")
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=None,
        help="save the optimiser state here; rerunning the same command resumes from it",
    )
    p.set_defaults(func=cmd_design)

    p = sub.add_parser(
        "evaluate",
        parents=[spec, _model_options(), out],
        help="the loss of a schedule file on a spectrum",
        description="The divergence of a schedule file's sampler output from a spectrum. "
        "The sampler defaults to the one recorded in the file.",
    )
    p.add_argument("schedule", help="schedule JSON (as written by 'specdiff design')")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        parents=[spec, _model_options(), out],
        help="every heuristic and the spectral schedule for several S, W2 and KL",
        description="Design the spectral schedule (for --metric) at each S and tabulate W2 "
        "and KL(data‖model) of it and of every heuristic.",
    )
    p.add_argument(
        "--steps",
        type=_steps_list,
        default=list(DEFAULT_COMPARE_STEPS),
        help="comma-separated step counts (default 5,10,20,50)",
    )
    p.add_argument("--max-iter", type=_positive_int, default=1000, help="iteration cap")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "export",
        parents=[spec, _model_options(), out],
        help="a schedule for diffusers, k-diffusion or another step count",
        description="Export a schedule: diffusers 'sigmas'/'timesteps', a k-diffusion "
        "sigma array, or (with --steps) the schedule interpolated log-linearly to another "
        "step count, with the loss of the interpolated schedule. See docs/exports.md.",
    )
    p.add_argument("schedule", help="schedule JSON")
    p.add_argument("--format", default="diffusers", help="diffusers (default), k-diffusion, json")
    p.add_argument("--steps", type=_positive_int, default=None, help="interpolate to N steps")
    p.add_argument(
        "--out", default=None, help="output file (default: stdout; .npy for k-diffusion arrays)"
    )
    p.add_argument("--num-train-steps", type=_positive_int, default=1000, help="T (diffusers)")
    p.add_argument("--beta-start", type=float, default=1e-4, help="first β of the training")
    p.add_argument("--beta-end", type=float, default=0.02, help="last β of the training")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "plot",
        parents=[spec, _model_options(), out],
        help="PNG figures: schedules, |H(λ)| curves, loss vs S",
        description="Write schedules.png (log-SNR and ᾱ per step), transfer.png (|H(λ)| "
        "per schedule) and loss_vs_steps.png. Without schedule files the spectral "
        "schedule is designed at --steps.",
    )
    p.add_argument("schedules", nargs="*", help="schedule JSON files (default: design one)")
    p.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, help="S (default 10)")
    p.add_argument(
        "--loss-steps",
        type=_steps_list,
        default=list(DEFAULT_COMPARE_STEPS),
        help="S values of the loss curve (default 5,10,20,50)",
    )
    p.add_argument("--no-loss-curve", action="store_true", help="skip loss_vs_steps.png")
    p.add_argument(
        "--heuristics",
        default=",".join(DEFAULT_PLOT_HEURISTICS),
        help=f"comma-separated heuristics to draw, or 'all' "
        f"(default {','.join(DEFAULT_PLOT_HEURISTICS)})",
    )
    p.add_argument("--out-dir", default="plots", help="folder for the PNGs (default plots)")
    p.add_argument("--max-iter", type=_positive_int, default=1000, help="iteration cap")
    p.set_defaults(func=cmd_plot)
    return parser


# --------------------------------------------------------------------------- shared helpers


def _choice(what: str, value, allowed) -> None:
    if value not in allowed:
        raise UsageError(f"unknown {what} {value!r}; allowed: {', '.join(map(repr, allowed))}")


def _load_spectrum(args):
    """The spectrum chosen by --dataset / --spectrum / --synthetic (default: synthetic AᵀA)."""
    import specdiff as sd
    from specdiff.data import spectra

    if args.dim is not None and args.synthetic is None and (args.dataset or args.spectrum):
        raise UsageError("--dim applies only to --synthetic spectra")
    if args.spectrum is not None:
        return sd.load_spectrum(args.spectrum)
    if args.dataset is not None:
        from specdiff.data import datasets

        _choice("dataset", args.dataset, tuple(datasets.DATASETS))
        _choice("split", args.split, datasets.SPLITS)
        try:
            return datasets.dataset_spectrum(args.dataset, split=args.split)
        except ImportError as e:
            raise UsageError(
                f"dataset {args.dataset!r} needs the optional package {e.name or e}; install it "
                "or choose another spectrum"
            ) from None
    kind = args.synthetic or "ata"
    name, _, param = kind.partition(":")
    _choice("synthetic spectrum", name, SYNTHETIC)
    d = 50 if args.dim is None else args.dim
    if name == "ata":
        if param:
            raise UsageError(f"--synthetic ata takes no parameter, got {kind!r}")
        if d < 2:
            raise UsageError(f"--synthetic ata needs --dim >= 2, got {d}")
        return spectra.synthetic_ata(d=d)
    try:
        alpha = float(param) if param else 2.0
    except ValueError:
        raise UsageError(f"--synthetic powerlaw:ALPHA needs a number, got {param!r}") from None
    return spectra.power_law(d, alpha)


def _sampler(args, record: dict | None = None):
    """--sampler/--eta, else the sampler recorded in a schedule file, else DDIM."""
    from specdiff import samplers

    name, eta = args.sampler, args.eta
    if name is None and record and isinstance(record.get("sampler"), dict):
        rec = record["sampler"]
        name = rec.get("name", "ddim")
        if eta is None and name == "ddim":
            eta = rec.get("eta")
    name = name or "ddim"
    _choice("sampler", name, samplers.SAMPLERS)
    return samplers.from_name(name, eta=eta)


def _check_metric(args) -> None:
    from specdiff import METRICS

    _choice("metric", args.metric, METRICS)


def _check_process(args, default: str | None = "vp") -> None:
    from specdiff.core.schedule import PROCESSES

    if args.process is None:
        args.process = default
    if args.process is not None:
        _choice("process", args.process, PROCESSES)


def _load_schedule(path):
    import specdiff as sd

    return sd.load_schedule(path, with_metadata=True)


def _loss(spec, schedule, sampler, metric, floor):
    """The divergence, or None where it is undefined (KL with a zero eigenvalue, no floor)."""
    import specdiff as sd

    if metric != "w2" and floor is None and (np.asarray(spec.eigenvalues) == 0).any():
        return None
    mom = sd.output_moments(spec, schedule, sampler)
    return float(sd.divergence(spec, mom, metric, floor=floor))


def _spectrum_info(spec) -> dict:
    return {"name": spec.name, "d": spec.dim, "sha256": spec.digest()}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no inf/NaN
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dumps(obj) -> str:
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False)


def _fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def _table(header: list[str], rows: list[list]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(r):
        first = r[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)])


def _check_out_file(path) -> Path:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"output {str(p)!r} is a directory; give a file name")
    return p


def _sampler_label(sampler) -> str:
    return sampler.name if sampler.eta in (0.0, 1.0) else f"ddim(eta={sampler.eta:g})"


def _design(spec, steps, sampler, args, **kw):
    import specdiff as sd

    return sd.design_schedule(
        spec,
        steps,
        sampler,
        process=args.process,
        metric=args.metric,
        floor=args.floor,
        dtype=args.dtype,
        max_iter=args.max_iter,
        progress=False if args.json else None,
        **kw,
    )


# --------------------------------------------------------------------------- design


def cmd_design(args) -> int:
    """``specdiff design``: design, write the schedule JSON, print the comparison table."""
    import specdiff as sd
    from specdiff.design import heuristics as schedules

    _check_metric(args)
    _check_process(args)
    sampler = _sampler(args)
    out = _check_out_file(args.out)
    if args.init not in ("best", *schedules.HEURISTICS):
        _choice("init", args.init, ("best", *schedules.HEURISTICS))
    spec = _load_spectrum(args)
    endpoints = None if args.first is None and args.last is None else (args.first, args.last)
    res = _design(
        spec,
        args.steps,
        sampler,
        args,
        endpoints=endpoints,
        init=args.init,
        checkpoint_dir=args.checkpoint,
    )

    ranking = sorted(
        [("spectral", res.loss), *res.heuristics.items()],
        key=lambda kv: (not math.isfinite(kv[1]), kv[1]),
    )
    extra = {
        "metric": args.metric,
        "floor": args.floor,
        "endpoints": None if endpoints is None else list(endpoints),
        "heuristics": res.heuristics,
        "best_heuristic": res.best_heuristic[0],
        "init": res.init,
        "converged": res.converged,
        "iterations": res.iterations,
    }
    rec = sd.save_schedule(
        out,
        res.schedule,
        sampler=sampler,
        objective=args.metric,
        value=res.loss,
        spectrum=spec,
        extra=_jsonable(extra),
    )
    if args.json:
        print(_dumps({"out": str(out), **rec}))
        return 0
    label = METRIC_LABELS[args.metric]
    best = res.loss
    rows = [[n, v, f"{v / best:.2f}" if best > 0 else "—"] for n, v in ranking]
    print(
        f"spectrum {spec.name!r} (d = {spec.dim}), sampler {_sampler_label(sampler)}, "
        f"process {args.process}, S = {args.steps}, metric {label}"
    )
    print(_table(["schedule", label, "× spectral"], rows))
    conv = "converged" if res.converged else "not converged (raise --max-iter)"
    print(f"optimiser: {res.iterations} iterations from {res.init!r}, {conv}")
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------- evaluate


def _spectrum_note(record: dict, spec) -> str | None:
    rec = record.get("spectrum") if isinstance(record, dict) else None
    if isinstance(rec, dict) and rec.get("sha256") and rec["sha256"] != spec.digest():
        return (
            f"note: the schedule was designed for spectrum {rec.get('name')!r} "
            f"(d = {rec.get('d')}), not for this one"
        )
    return None


def cmd_evaluate(args) -> int:
    """``specdiff evaluate``: the divergence of a schedule file on a spectrum."""
    _check_metric(args)
    _check_process(args, default=None)
    schedule, record = _load_schedule(args.schedule)
    if args.process is not None:  # the same log-SNR grid, run as the other process
        schedule = schedule.to_vp() if args.process == "vp" else schedule.to_ve()
    sampler = _sampler(args, record)
    spec = _load_spectrum(args)
    if args.metric != "w2" and args.floor is None and (np.asarray(spec.eigenvalues) == 0).any():
        raise UsageError(
            f"metric {args.metric!r} is infinite for a zero eigenvalue of spectrum "
            f"{spec.name!r}; pass --floor or use --metric w2"
        )
    loss = _loss(spec, schedule, sampler, args.metric, args.floor)
    note = _spectrum_note(record, spec)
    result = {
        "schedule": str(args.schedule),
        "process": schedule.process,
        "steps": schedule.num_steps,
        "sampler": sampler.to_dict(),
        "spectrum": _spectrum_info(spec),
        "metric": args.metric,
        "value": loss,
        "note": note,
    }
    if args.json:
        print(_dumps(result))
        return 0
    print(
        f"{args.schedule}: S = {schedule.num_steps} ({schedule.process}), sampler "
        f"{_sampler_label(sampler)}, spectrum {spec.name!r} (d = {spec.dim})"
    )
    print(f"{METRIC_LABELS[args.metric]} = {_fmt(loss)}")
    if note:
        print(note)
    return 0


# --------------------------------------------------------------------------- compare


def _compare_table(spec, steps_list, sampler, args) -> dict:
    """{S: {schedule name: {"w2": ..., "kl": ...}}} with the spectral schedule designed."""
    from specdiff.design import heuristics as schedules

    table = {}
    for S in steps_list:
        res = _design(spec, S, sampler, args)
        cands = {"spectral": res.schedule, **schedules.heuristics(S, args.process)}
        table[S] = {
            name: {m: _loss(spec, sch, sampler, m, args.floor) for m in ("w2", "kl")}
            for name, sch in cands.items()
        }
        table[S]["spectral"]["converged"] = res.converged
    return table


def cmd_compare(args) -> int:
    """``specdiff compare``: heuristics and the spectral schedule for several S, W2 and KL."""
    from specdiff.design import heuristics as schedules

    _check_metric(args)
    _check_process(args)
    sampler = _sampler(args)
    spec = _load_spectrum(args)
    steps_list = list(args.steps)
    table = _compare_table(spec, steps_list, sampler, args)
    kl_undefined = all(v["kl"] is None for row in table.values() for v in row.values())
    if args.json:
        print(
            _dumps(
                {
                    "spectrum": _spectrum_info(spec),
                    "sampler": sampler.to_dict(),
                    "process": args.process,
                    "designed_for": args.metric,
                    "steps": steps_list,
                    "table": {str(S): row for S, row in table.items()},
                }
            )
        )
        return 0
    names = ["spectral", *schedules.HEURISTICS]
    print(
        f"spectrum {spec.name!r} (d = {spec.dim}), sampler {_sampler_label(sampler)}, "
        f"process {args.process}; spectral schedule designed for "
        f"{METRIC_LABELS[args.metric]} at each S; * marks the best in a column"
    )
    for metric in ("w2", "kl"):
        header = [METRIC_LABELS[metric], *(f"S={S}" for S in steps_list)]
        best = {}
        for S in steps_list:
            vals = [v[metric] for v in table[S].values() if v[metric] is not None]
            best[S] = min(vals) if vals else None
        rows = []
        for name in names:
            row = [name]
            for S in steps_list:
                v = table[S].get(name, {}).get(metric)
                cell = _fmt(v)
                if v is not None and best[S] is not None and v == best[S]:
                    cell += "*"
                row.append(cell)
            rows.append(row)
        print()
        print(_table(header, rows))
    if kl_undefined:
        print("\nKL is undefined here (zero eigenvalues): pass --floor to clip them")
    return 0


# --------------------------------------------------------------------------- export


def _write_text(path: Path, text: str) -> None:
    from specdiff.core.io import atomic_write

    with atomic_write(path) as f:
        f.write(text)
        if not text.endswith("\n"):
            f.write("\n")


def cmd_export(args) -> int:
    """``specdiff export``: diffusers / k-diffusion arrays, or a schedule at another S."""
    from specdiff.core.io import atomic_write, schedule_record
    from specdiff.design import export
    from specdiff.design import heuristics as schedules

    _choice("format", args.format, FORMATS)
    _check_metric(args)
    _check_process(args, default=None)
    out = None if args.out is None else _check_out_file(args.out)
    if out is not None and out.suffix == ".npy" and args.format != "k-diffusion":
        raise UsageError(".npy output is for --format k-diffusion; use a .json file")
    schedule, record = _load_schedule(args.schedule)
    sampler = _sampler(args, record)
    source_steps = schedule.num_steps

    report = None
    target = schedule
    if args.steps is not None:
        target = export.interpolate(schedule, args.steps)
        spec = _load_spectrum(args)
        heur = {
            n: _loss(spec, s, sampler, args.metric, args.floor)
            for n, s in schedules.heuristics(args.steps, schedule.process).items()
        }
        heur = {n: v for n, v in heur.items() if v is not None}
        best = min(heur, key=heur.get) if heur else None
        report = {
            "metric": args.metric,
            "spectrum": _spectrum_info(spec),
            "sampler": sampler.to_dict(),
            "original": {
                "steps": source_steps,
                "value": _loss(spec, schedule, sampler, args.metric, args.floor),
            },
            "interpolated": {
                "steps": args.steps,
                "value": _loss(spec, target, sampler, args.metric, args.floor),
            },
            "best_heuristic": None
            if best is None
            else {"name": best, "steps": args.steps, "value": heur[best]},
            "note": _spectrum_note(record, spec),
        }

    source = {"schedule": str(args.schedule), "steps": source_steps, "process": schedule.process}
    if args.format == "diffusers":
        d = export.to_diffusers(
            target,
            num_train_steps=args.num_train_steps,
            beta_start=args.beta_start,
            beta_end=args.beta_end,
        )
        payload = {
            "format": "specdiff.diffusers/1",
            "source": source,
            "steps": target.num_steps,
            "sigmas": d["sigmas"],
            "timesteps": d["timesteps"],
            "alphas_cumprod": d["alphas_cumprod"],
            "max_log_snr_error": d["max_log_snr_error"],
            "timesteps_distinct": d["timesteps_distinct"],
            "train_schedule": {
                "beta_schedule": "linear",
                "num_train_timesteps": args.num_train_steps,
                "beta_start": args.beta_start,
                "beta_end": args.beta_end,
            },
            "usage": "EulerDiscreteScheduler: scheduler.set_timesteps(sigmas=sigmas); "
            "DDPMScheduler: scheduler.set_timesteps(timesteps=timesteps); see docs/exports.md",
        }
    elif args.format == "k-diffusion":
        payload = {
            "format": "specdiff.k-diffusion/1",
            "source": source,
            "steps": target.num_steps,
            "sigmas": export.to_k_diffusion(target),
            "usage": "k_diffusion.sampling.sample_euler(model, x * sigmas[0], sigmas)",
        }
    else:
        payload = schedule_record(
            target,
            sampler=sampler,
            objective=None if report is None else args.metric,
            value=None if report is None else report["interpolated"]["value"],
            extra={"interpolated_from": source} if args.steps is not None else None,
        )
        if report is not None:
            payload["spectrum"] = report["spectrum"]
    if report is not None:
        payload["loss"] = report

    warn = None
    if args.format == "diffusers" and not payload["timesteps_distinct"]:
        warn = (
            "warning: two levels map to the same training timestep; diffusers needs strictly "
            "descending timesteps, so use 'sigmas' (or fewer steps)"
        )

    text = _dumps(payload)
    if out is not None:
        if out.suffix == ".npy":
            with atomic_write(out, "wb") as f:
                np.save(f, np.asarray(payload["sigmas"], np.float64))
        else:
            _write_text(out, text)
    human = sys.stdout if out is not None else sys.stderr
    if out is None:
        print(text)
    elif args.json:
        print(_dumps({"out": str(out), "format": args.format, "loss": report}))
    else:
        print(f"wrote {out} ({args.format}, S = {target.num_steps})")
    if warn:
        print(warn, file=sys.stderr)
    if report is not None and not (args.json and out is not None):
        label = METRIC_LABELS[args.metric]
        o, i, b = report["original"], report["interpolated"], report["best_heuristic"]
        lines = [
            f"{label} on spectrum {report['spectrum']['name']!r} "
            f"(d = {report['spectrum']['d']}), sampler {_sampler_label(sampler)}:",
            f"  original      S = {o['steps']:>4}: {_fmt(o['value'])}",
            f"  interpolated  S = {i['steps']:>4}: {_fmt(i['value'])}",
        ]
        if b is not None:
            lines.append(f"  best heuristic at S = {b['steps']} ({b['name']}): {_fmt(b['value'])}")
        if report["note"]:
            lines.append(report["note"])
        print("\n".join(lines), file=human)
    return 0


# --------------------------------------------------------------------------- plot


def cmd_plot(args) -> int:
    """``specdiff plot``: schedules, |H(λ)| and loss-vs-S figures as PNG files."""
    import specdiff as sd
    from specdiff.cli import plot as _plot
    from specdiff.core.io import atomic_write
    from specdiff.design import heuristics as schedules

    _check_metric(args)
    _check_process(args, default=None)
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out-dir {str(out_dir)!r} exists and is not a directory")
    if args.heuristics.strip() == "all":
        heur_names = list(schedules.HEURISTICS)
    else:
        heur_names = [h for h in args.heuristics.split(",") if h.strip()]
        for h in heur_names:
            _choice("heuristic", h, tuple(schedules.HEURISTICS))
    loaded = {}
    records = []
    for path in args.schedules:
        sch, rec = _load_schedule(path)
        loaded[Path(path).name] = sch
        records.append(rec)
    sampler = _sampler(args, records[0] if records else None)
    spec = _load_spectrum(args)

    first = next(iter(loaded.values()), None)
    args.process = args.process or (first.process if first is not None else "vp")
    process = args.process
    if loaded:
        named = dict(loaded)
        S = first.num_steps
    else:
        S = args.steps
        named = {"spectral": _design(spec, S, sampler, args).schedule}
    all_heur = schedules.heuristics(S, process)
    for h in heur_names:
        if h in all_heur:
            named[h] = all_heur[h]

    figures = {"schedules.png": _plot.schedules_figure(named)}
    ev = np.asarray(spec.eigenvalues, np.float64)
    pos = ev[ev > 0]
    lo, hi = (np.log10(pos.min()) - 1, np.log10(pos.max()) + 1) if pos.size else (-4.0, 2.0)
    grid = np.logspace(lo, hi, 200)
    curves = {n: np.asarray(sd.transfer_function(grid, s, sampler)) for n, s in named.items()}
    figures["transfer.png"] = _plot.transfer_figure(grid, curves, ev, _sampler_label(sampler))

    loss_data = None
    if not args.no_loss_curve:
        steps_list = list(args.loss_steps)
        loss_curves = {"spectral": (steps_list, [])}
        for h in heur_names:
            loss_curves[h] = ([], [])
        for s_ in steps_list:
            loss_curves["spectral"][1].append(_design(spec, s_, sampler, args).loss)
            hs = schedules.heuristics(s_, args.process)
            for h in heur_names:
                if h in hs:
                    loss_curves[h][0].append(s_)
                    loss_curves[h][1].append(_loss(spec, hs[h], sampler, args.metric, args.floor))
        points = {
            n: (s.num_steps, _loss(spec, s, sampler, args.metric, args.floor))
            for n, s in loaded.items()
        }
        label = METRIC_LABELS[args.metric]
        figures["loss_vs_steps.png"] = _plot.loss_figure(loss_curves, label, points)
        loss_data = {
            "metric": args.metric,
            "curves": {n: {"steps": c[0], "values": c[1]} for n, c in loss_curves.items()},
            "schedules": {n: {"steps": p[0], "value": p[1]} for n, p in points.items()},
        }

    pngs = {name: _plot.to_png(fig) for name, fig in figures.items()}  # all made, then written
    written = []
    for name, data in pngs.items():
        path = out_dir / name
        with atomic_write(path, "wb") as f:
            f.write(data)
        written.append(str(path))
    if args.json:
        print(
            _dumps(
                {
                    "files": written,
                    "spectrum": _spectrum_info(spec),
                    "sampler": sampler.to_dict(),
                    "schedules": list(named),
                    "loss": loss_data,
                }
            )
        )
    else:
        for p in written:
            print(f"wrote {p}")
    return 0


# --------------------------------------------------------------------------- entry point


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv=None) -> int:
    """Run the ``specdiff`` command line; returns the exit code.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      0 on success, 2 for bad input (one line ``specdiff: error: ...`` on stderr, nothing
      written), 1 when a file cannot be written.

    Example:
      >>> from specdiff.cli.main import main
      >>> main(["evaluate", "--help"])  # doctest: +SKIP
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"specdiff: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help, --version
        return int(e.code or 0)
    if args.command is None:
        print(
            "specdiff: error: give a command: design, evaluate, compare, export or plot "
            "(specdiff --help)",
            file=sys.stderr,
        )
        return 2

    import jax

    previous = jax.config.jax_enable_x64
    try:
        if args.dtype == "float64" and not previous:
            jax.config.update("jax_enable_x64", True)
        return args.func(args)
    except (UsageError, ValueError) as e:
        print(f"specdiff: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"specdiff: error: {_one_line(e)}", file=sys.stderr)
        return 1
    finally:
        if jax.config.jax_enable_x64 != previous:
            jax.config.update("jax_enable_x64", previous)


if __name__ == "__main__":
    sys.exit(main())
