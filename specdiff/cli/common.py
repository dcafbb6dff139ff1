"""Helpers shared by the commands: spectrum and sampler from the arguments, losses, the
schedule designs, tables, JSON and atomic writing.

Every helper that reads user input raises ``UsageError`` or ``ValueError`` with one line
naming what was wrong and what is allowed; ``main`` prints it and exits with code 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

DEFAULT_STEPS = 10
DEFAULT_COMPARE_STEPS = (5, 10, 20, 50)
DEFAULT_PLOT_HEURISTICS = ("linear", "cosine", "edm", "log_snr_uniform")
FORMATS = ("diffusers", "k-diffusion", "json")
SYNTHETIC = ("ata", "powerlaw")
METRIC_LABELS = {"w2": "W2", "kl": "KL(data‖model)", "reverse_kl": "KL(model‖data)"}
# Sampler parameters that have a flag (``--s-noise`` → ``s_noise``), as k-diffusion names them.
SAMPLER_PARAMS = ("eta", "s_noise", "s_churn", "s_tmin", "s_tmax", "solver_type", "order")


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


def choice(what: str, value, allowed) -> None:
    if value not in allowed:
        raise UsageError(f"unknown {what} {value!r}; allowed: {', '.join(map(repr, allowed))}")


# --------------------------------------------------------------------------- spectrum


def load_spectrum(args):
    """The spectrum chosen by --dataset / --spectrum / --synthetic (default: synthetic AᵀA)."""
    import specdiff as sd

    if args.dim is not None and args.synthetic is None and (args.dataset or args.spectrum):
        raise UsageError("--dim applies only to --synthetic spectra")
    if args.spectrum is not None:
        return sd.load_spectrum(args.spectrum)
    if args.dataset is not None:
        return _dataset_spectrum(args.dataset, args.split)
    return _synthetic_spectrum(args.synthetic or "ata", 50 if args.dim is None else args.dim)


def _dataset_spectrum(name: str, split: str):
    from specdiff.data import datasets

    choice("dataset", name, tuple(datasets.DATASETS))
    choice("split", split, datasets.SPLITS)
    try:
        return datasets.dataset_spectrum(name, split=split)
    except ImportError as e:
        raise UsageError(
            f"dataset {name!r} needs the optional package {e.name or e}; install it "
            "or choose another spectrum"
        ) from None


def _synthetic_spectrum(kind: str, d: int):
    from specdiff.data import spectra

    name, _, param = kind.partition(":")
    choice("synthetic spectrum", name, SYNTHETIC)
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


def spectrum_info(spec) -> dict:
    return {"name": spec.name, "d": spec.dim, "sha256": spec.digest()}


def spectrum_note(record: dict, spec) -> str | None:
    rec = record.get("spectrum") if isinstance(record, dict) else None
    if isinstance(rec, dict) and rec.get("sha256") and rec["sha256"] != spec.digest():
        return (
            f"note: the schedule was designed for spectrum {rec.get('name')!r} "
            f"(d = {rec.get('d')}), not for this one"
        )
    return None


# --------------------------------------------------------------------------- samplers


def sampler_flags(args) -> dict:
    """The sampler parameters given as flags (``--eta 0.5`` → ``{"eta": 0.5}``)."""
    return {k: getattr(args, k) for k in SAMPLER_PARAMS if getattr(args, k, None) is not None}


def samplers_from_args(args, record: dict | None = None) -> list:
    """The samplers of ``--sampler A,B,…`` with the parameter flags, one per name.

    Without ``--sampler``: the sampler recorded in a schedule file (``record["sampler"]``,
    as written by ``sampler.to_dict()``) with the flags overriding its parameters, else
    DDIM. A flag that a sampler does not take is a ``ValueError`` naming the parameters
    it does take (``samplers.from_name``).
    """
    from specdiff import samplers

    flags = sampler_flags(args)
    if args.sampler is not None:
        return [samplers.from_name(name, **flags) for name in args.sampler]
    rec = record.get("sampler") if isinstance(record, dict) else None
    if isinstance(rec, dict) and "name" in rec:
        rec = {**rec, **flags}
        if rec["name"] == "ddpm" and "eta" in flags:  # DDPM is DDIM with η = 1
            rec["name"] = "ddim"
        return [samplers.from_dict(rec)]
    return [samplers.from_name("ddim", **flags)]


def one_sampler(args, record: dict | None = None):
    """The single sampler of a command that takes one (evaluate, export, plot)."""
    found = samplers_from_args(args, record)
    if len(found) != 1:
        raise UsageError(
            f"'specdiff {args.command}' takes one sampler, got {len(found)}: "
            f"{','.join(args.sampler)}"
        )
    return found[0]


def sampler_label(sampler) -> str:
    """The name, with the parameters that differ from its defaults: ``ddim(eta=0.5)``."""
    from specdiff import samplers

    rec = sampler.to_dict()
    default = samplers.from_name(rec["name"]).to_dict()
    changed = [f"{k}={_fmt_param(v)}" for k, v in rec.items() if k != "name" and default[k] != v]
    return rec["name"] if not changed else f"{rec['name']}({', '.join(changed)})"


def _fmt_param(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- checks


def check_metric(args) -> None:
    from specdiff import METRICS

    choice("metric", args.metric, METRICS)


def check_process(args, default: str | None = "vp") -> None:
    from specdiff.core.schedule import PROCESSES

    if args.process is None:
        args.process = default
    if args.process is not None:
        choice("process", args.process, PROCESSES)


def check_out_file(path) -> Path:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"output {str(p)!r} is a directory; give a file name")
    return p


# --------------------------------------------------------------------------- schedules


def load_schedule(path):
    import specdiff as sd

    return sd.load_schedule(path, with_metadata=True)


def loss(spec, schedule, sampler, metric, floor):
    """The divergence, or None where it is undefined (KL with a zero eigenvalue, no floor)."""
    import specdiff as sd

    if metric != "w2" and floor is None and (np.asarray(spec.eigenvalues) == 0).any():
        return None
    mom = sd.output_moments(spec, schedule, sampler)
    return float(sd.divergence(spec, mom, metric, floor=floor))


def design(spec, steps, sampler, args, **kw):
    """``specdiff.design_schedule`` with the command's process, metric, floor and dtype."""
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


def steps_at(sampler, steps: int | None, nfe: int | None) -> int:
    """S for a step count or, given ``nfe``, the most steps within that many evaluations."""
    return steps if nfe is None else sampler.steps_for_nfe(nfe)


# --------------------------------------------------------------------------- output


def jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # strict JSON has no inf/NaN
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj) -> str:
    return json.dumps(jsonable(obj), indent=2, allow_nan=False)


def fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def table(header: list[str], rows: list[list]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]

    def line(r):
        first = r[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, cells)])


def write_text(path: Path, text: str) -> None:
    """Write text atomically (a temporary file moved into place), ending in a newline."""
    from specdiff.core.io import atomic_write

    with atomic_write(path) as f:
        f.write(text)
        if not text.endswith("\n"):
            f.write("\n")


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes atomically."""
    from specdiff.core.io import atomic_write

    with atomic_write(path, "wb") as f:
        f.write(data)
