"""The argument parsers of ``specdiff``: shared option groups and one builder per command.

Parsing only reads the text; whether a name, a sampler parameter or a step count is
allowed is checked by the commands and the library, which give one-line messages.
Each subparser records its command in ``args.command``; ``main`` dispatches on it.
"""

from __future__ import annotations

import argparse
import math

from specdiff.cli.common import (
    DEFAULT_COMPARE_STEPS,
    DEFAULT_PLOT_HEURISTICS,
    DEFAULT_STEPS,
    UsageError,
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (printed by ``main`` as one line)."""

    def error(self, message):
        raise UsageError(message)


# --------------------------------------------------------------------------- argument types


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"steps must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"steps must be an integer >= 1, got {value}")
    return value


def _split(text: str, what: str) -> list[str]:
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError(f"give at least one {what}")
    return parts


def steps_list(text: str) -> list[int]:
    """``5,10,20`` → [5, 10, 20] (sorted, without repeats)."""
    return sorted(set(positive_int(p) for p in _split(text, "step count, e.g. 5,10,20")))


def nfe(text: str) -> int:
    """An evaluation budget; its lower limit depends on the sampler (``steps_for_nfe``)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"nfe must be an integer, got {text!r}") from None


def nfe_list(text: str) -> list[int]:
    return sorted(set(nfe(p) for p in _split(text, "evaluation budget, e.g. 10,20")))


def name_list(text: str) -> list[str]:
    """``heun,euler`` → ["heun", "euler"] (order kept; a repeated name is an error)."""
    names = _split(text, "sampler name, e.g. heun,dpmpp_2m")
    for n in names:
        if names.count(n) > 1:
            raise argparse.ArgumentTypeError(f"sampler {n!r} is given twice")
    return names


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# --------------------------------------------------------------------------- option groups


def spectrum_options() -> argparse.ArgumentParser:
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
    g.add_argument("--dim", type=positive_int, help="dimension d of --synthetic (default 50)")
    g.add_argument("--split", default="train", help="split of --dataset (train, test, all)")
    return p


def _sampler_group(p: argparse.ArgumentParser, several: bool) -> None:
    from specdiff.samplers import SAMPLERS

    g = p.add_argument_group(
        "sampler (k-diffusion names and parameters; a parameter the sampler does not take "
        "is an error)"
    )
    g.add_argument(
        "--sampler",
        type=name_list,
        default=None,
        metavar="NAMES" if several else "NAME",
        help=f"{', '.join(SAMPLERS)} (default: a schedule file's, else ddim)"
        + ("; a comma list compares several" if several else ""),
    )
    g.add_argument("--eta", type=float, help="noise of ddim / ancestral / SDE steps (0: none)")
    g.add_argument("--s-noise", type=float, help="scale of the injected noise (default 1)")
    g.add_argument("--s-churn", type=float, help="Karras churn (euler, heun, dpm_2; default 0)")
    g.add_argument("--s-tmin", type=float, help="lowest σ that is churned (default 0)")
    g.add_argument("--s-tmax", type=float, help="highest σ that is churned (default inf)")
    g.add_argument(
        "--solver-type", metavar="midpoint|heun", help="dpmpp_2m_sde's second-order correction"
    )
    g.add_argument("--order", type=int, help="lms: order of the multistep (default 4)")


def model_options(metric: bool = True, several: bool = False) -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    _sampler_group(p, several)
    g = p.add_argument_group("process and objective")
    g.add_argument(
        "--process",
        default=None,
        metavar="vp|ve|flow",
        help="vp (default), ve or flow; for a schedule file, re-read its levels in this process",
    )
    if metric:
        g.add_argument(
            "--metric", default="w2", metavar="w2|kl|reverse_kl", help="objective (default w2)"
        )
    g.add_argument("--floor", type=positive_float, default=None, help="eigenvalue floor for KLs")
    g.add_argument(
        "--dtype",
        default="float64",
        choices=("float32", "float64"),
        help="precision of design and evaluation (default float64)",
    )
    return p


def output_options() -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _max_iter(p) -> None:
    p.add_argument("--max-iter", type=positive_int, default=1000, help="iteration cap")


# --------------------------------------------------------------------------- commands


def add_design(sub, parents) -> None:
    p = sub.add_parser(
        "design",
        parents=[parents["spectrum"], model_options(several=True), parents["output"]],
        help="design a schedule for a spectrum; write its JSON and print the comparison",
        description="Design the S-level schedule minimising the exact divergence for a "
        "spectrum, write it as JSON and print it beside every heuristic. With several "
        "samplers (--sampler a,b) and --nfe, one schedule per sampler at equal cost.",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, default=None, help="S (default 10)")
    budget.add_argument(
        "--nfe", type=nfe, default=None, help="denoiser evaluations: S = most steps within them"
    )
    p.add_argument(
        "--out",
        default="schedule.json",
        help="output file (default schedule.json); several samplers: STEM_SAMPLER.json",
    )
    p.add_argument("--first", type=float, default=None, help="fix the noisiest level (ᾱ, σ, t)")
    p.add_argument("--last", type=float, default=None, help="fix the cleanest level (ᾱ, σ, t)")
    p.add_argument("--init", default="best", help="start: best (default) or a heuristic name")
    _max_iter(p)
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        default=None,
        help="save the optimiser state here; rerunning the same command resumes from it",
    )
    p.set_defaults(command="design")


def add_evaluate(sub, parents) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[parents["spectrum"], model_options(), parents["output"]],
        help="the loss of a schedule file on a spectrum",
        description="The divergence of a schedule file's sampler output from a spectrum. "
        "The sampler is the one recorded in the file; flags override it.",
    )
    p.add_argument("schedule", help="schedule JSON (as written by 'specdiff design')")
    p.set_defaults(command="evaluate")


def add_compare(sub, parents) -> None:
    p = sub.add_parser(
        "compare",
        parents=[parents["spectrum"], model_options(several=True), parents["output"]],
        help="every heuristic and the spectral schedule for several S (or NFE), W2 and KL",
        description="Design the spectral schedule (for --metric) at each S and tabulate W2 "
        "and KL(data‖model) of it and of every heuristic. With several samplers or --nfe, "
        "one table per sampler and a table of the designed schedules at equal budget.",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps", type=steps_list, default=None, help="comma-separated S (default 5,10,20,50)"
    )
    budget.add_argument("--nfe", type=nfe_list, default=None, help="comma-separated NFE budgets")
    _max_iter(p)
    p.set_defaults(command="compare")


def add_export(sub, parents) -> None:
    p = sub.add_parser(
        "export",
        parents=[parents["spectrum"], model_options(), parents["output"]],
        help="a schedule for diffusers, k-diffusion or another step count",
        description="Export a schedule: diffusers 'sigmas'/'timesteps', a k-diffusion "
        "sigma array, or (with --steps) the schedule interpolated log-linearly to another "
        "step count, with the loss of the interpolated schedule. See docs/exports.md.",
    )
    p.add_argument("schedule", help="schedule JSON")
    p.add_argument("--format", default="diffusers", help="diffusers (default), k-diffusion, json")
    p.add_argument("--steps", type=positive_int, default=None, help="interpolate to N steps")
    p.add_argument(
        "--out", default=None, help="output file (default: stdout; .npy for k-diffusion arrays)"
    )
    p.add_argument("--num-train-steps", type=positive_int, default=1000, help="T (diffusers)")
    p.add_argument("--beta-start", type=float, default=1e-4, help="first β of the training")
    p.add_argument("--beta-end", type=float, default=0.02, help="last β of the training")
    p.add_argument(
        "--beta-schedule",
        default="linear",
        help="the model's training β schedule: linear (DDPM) or scaled_linear (Stable Diffusion)",
    )
    p.set_defaults(command="export")


def add_plot(sub, parents) -> None:
    p = sub.add_parser(
        "plot",
        parents=[parents["spectrum"], model_options(), parents["output"]],
        help="PNG figures: schedules, |H(λ)| curves, loss vs S",
        description="Write schedules.png (log-SNR and ᾱ per step), transfer.png (|H(λ)| "
        "per schedule) and loss_vs_steps.png. Without schedule files the spectral "
        "schedule is designed at --steps.",
    )
    p.add_argument("schedules", nargs="*", help="schedule JSON files (default: design one)")
    p.add_argument(
        "--steps", type=positive_int, default=DEFAULT_STEPS, help=f"S (default {DEFAULT_STEPS})"
    )
    loss_steps = ",".join(map(str, DEFAULT_COMPARE_STEPS))
    p.add_argument(
        "--loss-steps",
        type=steps_list,
        default=list(DEFAULT_COMPARE_STEPS),
        help=f"S values of the loss curve (default {loss_steps})",
    )
    p.add_argument("--no-loss-curve", action="store_true", help="skip loss_vs_steps.png")
    default = ",".join(DEFAULT_PLOT_HEURISTICS)
    p.add_argument(
        "--heuristics",
        default=default,
        help=f"comma-separated heuristics to draw, or 'all' (default {default})",
    )
    p.add_argument("--out-dir", default="plots", help="folder for the PNGs (default plots)")
    _max_iter(p)
    p.set_defaults(command="plot")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``specdiff`` command."""
    from specdiff import __version__

    parser = _Parser(
        prog="specdiff",
        description="Exact spectral analysis of diffusion samplers and design of noise "
        "schedules (Gaussian data, closed form).",
    )
    parser.add_argument("--version", action="version", version=f"specdiff {__version__}")
    parser.add_argument(
        "--devices",
        default=None,
        metavar="all|N|IDS",
        help="devices to run on (before the command): all, the first N, or ids like 0,2 "
        "(default: SPECDIFF_DEVICES, else all)",
    )
    parser.set_defaults(command=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parents = {"spectrum": spectrum_options(), "output": output_options()}
    for add in (add_design, add_evaluate, add_compare, add_export, add_plot):
        add(sub, parents)
    return parser
