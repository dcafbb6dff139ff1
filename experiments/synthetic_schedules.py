"""Designed (W2) schedules for the synthetic AᵀA spectrum, against the heuristics.

Data: Σ0 = AᵀA, d = 50, l = 0.1, μ0 = 0.05·1 (``sd.spectra.synthetic_ata``). For every S
the spectral schedule minimising W2 (``sd.design_schedule``); at S = 112 it is compared with
linear (DDPM, T = 1000), EDM (ρ = 7), Chen cosine (0, 1, 1) and Chen sigmoid (−3, 3, 1),
and fitted with the cosine and sigmoid families (``sd.fit_family``). W2 of each across S.
Every W2 in the table is recomputed from the schedule with ``sd.output_moments`` and
``sd.divergence``.

  python -m experiments.synthetic_schedules [--steps 10 28 ...] [--sampler ddim] [--quick]
"""

from __future__ import annotations

import jax
import numpy as np

import specdiff as sd
from experiments._common import Run, fail, markdown_table, parser, pyplot
from specdiff import spectra

STEPS = (10, 28, 38, 60, 90, 112, 250, 334)
QUICK_STEPS = (10, 112)
COMPARED = ("linear", "edm", "chen_cosine", "chen_sigmoid")
FAMILIES = ("chen_cosine", "chen_sigmoid")


def evaluate(spec, schedule, sampler, metric: str = "w2", floor=None) -> float:
    """The divergence of ``metric`` between the sampler's output and the data."""
    mom = sd.output_moments(spec, schedule, sampler)
    return float(sd.divergence(spec, mom, metric, floor=floor))


def design_across_steps(spec, steps, sampler, names, metric="w2", floor=None, **design_kw):
    """For each S: designed schedule, its value and the value of every heuristic in ``names``.

    ``names=None`` compares every heuristic defined at that S (``sd.schedules.heuristics``).
    """
    out = {}
    for S in steps:
        res = sd.design_schedule(spec, S, sampler, metric=metric, progress=False, **design_kw)
        heur = sd.schedules.heuristics(S, "vp")
        if names is not None:
            heur = {n: heur[n] for n in names if n in heur}
        values = {n: evaluate(spec, s, sampler, metric, floor) for n, s in heur.items()}
        best = min(values, key=values.get)
        out[S] = {
            "designed": evaluate(spec, res.schedule, sampler, metric, floor),
            "design_loss": float(res.loss),
            "converged": bool(res.converged),
            "heuristics": values,
            "best_heuristic": best,
            "best_heuristic_value": values[best],
            "result": res,
        }
    return out


def figures(spec, designed112, sampler, fits):
    plt = pyplot()

    S = designed112.schedule.num_steps
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    k = np.arange(S)
    a.plot(k, np.asarray(designed112.schedule.log_snr), "k-", lw=2, label="spectral (W2)")
    for name in COMPARED:
        a.plot(k, np.asarray(sd.schedules.heuristic(name, S, "vp").log_snr), label=name)
    for fam, fit in fits.items():
        a.plot(k, np.asarray(fit.schedule.log_snr), "--", label=f"{fam} fit")
    a.set(xlabel="step k (noisiest first)", ylabel="log-SNR ρ", title=f"schedules, S={S}")
    a.legend(fontsize=7)
    t = 1 - k / S
    b.plot(t, np.asarray(designed112.schedule.alpha_bar), "k-", lw=2, label="spectral (W2)")
    for fam, fit in fits.items():
        b.plot(t, np.asarray(fit.schedule.alpha_bar), "--", label=f"{fam} fit")
    b.set(xlabel="t = 1 − k/S", ylabel="ᾱ", title="ᾱ(t) and the fitted families")
    b.legend(fontsize=7)
    return fig


def w2_figure(table: dict, title: str):
    plt = pyplot()

    steps = sorted(table)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(steps, [table[S]["designed"] for S in steps], "ko-", lw=2, label="spectral")
    names = sorted({n for S in steps for n in table[S]["heuristics"]})
    for n in names:
        ys = [table[S]["heuristics"].get(n, np.nan) for S in steps]
        ax.loglog(steps, ys, ".-", lw=1, label=n)
    ax.set(xlabel="S (steps)", ylabel="W2", title=title)
    ax.legend(fontsize=7)
    return fig


def main(argv=None):
    p = parser("synthetic_schedules", __doc__)
    p.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    p.add_argument("--compare-at", type=int, default=112, help="S of the detailed comparison")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--quick", action="store_true", help=f"CI smoke test: S in {QUICK_STEPS}")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = list(QUICK_STEPS)
    if min(args.steps) < 1 or args.compare_at < 1:
        fail("--steps and --compare-at must be >= 1")
    if args.compare_at not in args.steps:
        args.steps = sorted({*args.steps, args.compare_at})
    jax.config.update("jax_enable_x64", True)
    run = Run("synthetic_schedules", args)
    spec = spectra.synthetic_ata()
    sampler = sd.samplers.from_name(args.sampler)
    table = design_across_steps(spec, args.steps, sampler, None)  # every heuristic
    res112 = table[args.compare_at]["result"]
    fits = {fam: sd.fit_family(res112.schedule, fam) for fam in FAMILIES}
    fit_info = {
        fam: {
            "params": {k: float(v) for k, v in fit.params.items()},
            "rmse_log_snr": float(fit.rmse_log_snr),
            "w2": evaluate(spec, fit.schedule, sampler),
        }
        for fam, fit in fits.items()
    }
    for S, row in table.items():
        sd.save_schedule(
            run.path(f"schedule_S{S}.json"),
            row["result"].schedule,
            sampler=sampler,
            objective="w2",
            value=row["designed"],
            spectrum=spec,
        )
    run.save_figure(figures(spec, res112, sampler, fits), f"schedules_S{args.compare_at}.png")
    run.save_figure(w2_figure(table, "synthetic AᵀA: W2 vs S"), "w2_vs_steps.png")
    header = ["S", "spectral W2", *COMPARED, "best heuristic", "spectral / best"]
    rows = [
        [
            S,
            r["designed"],
            *[r["heuristics"].get(n, float("nan")) for n in COMPARED],
            r["best_heuristic"],
            r["designed"] / r["best_heuristic_value"],
        ]
        for S, r in sorted(table.items())
    ]
    fit_rows = [
        [fam, ", ".join(f"{k}={v:.4g}" for k, v in f["params"].items()), f["rmse_log_snr"], f["w2"]]
        for fam, f in fit_info.items()
    ]
    text = (
        markdown_table(header, rows)
        + "\n"
        + markdown_table(
            [f"family fitted at S={args.compare_at}", "params", "RMSE (log-SNR)", "W2 of fit"],
            fit_rows,
        )
    )
    results = {
        "spectrum": {"name": spec.name, "d": spec.dim, "sha256": spec.digest()},
        "sampler": sampler.to_dict(),
        "steps": {
            str(S): {k: v for k, v in r.items() if k != "result"}
            | {"log_snr": np.asarray(r["result"].schedule.log_snr)}
            for S, r in sorted(table.items())
        },
        "fits": fit_info,
    }
    run.finish(results, text)
    return results


if __name__ == "__main__":
    main()
