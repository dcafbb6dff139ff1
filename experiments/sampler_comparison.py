"""Designed vs heuristic schedules for every sampler at equal NFE (SPEC §11).

For every spectrum (the synthetic AᵀA of ``experiments.synthetic_schedules`` and the PCA
spectra of the built-in datasets' training splits, as ``experiments.real_data``), every
sampler of ``sd.samplers.SAMPLERS`` with its k-diffusion defaults (``ddpm`` left out: it is
``euler_ancestral`` with η = 1, the same map; ``ddim`` is kept, equal to ``euler``, as a
check of the closed-form path) and every NFE (default 10, 20, 50):

- S = ``sampler.steps_for_nfe(nfe)`` levels (Heun and DPM-2 spend 2S − 1 evaluations);
- ``designed``: ``sd.design_schedule`` for W2, VP, with the first level fixed at ᾱ_999 of the
  DDPM linear-β schedule (σ_0 ≈ 157, the noisiest level the shipped denoisers were trained
  at, and the first level of ``linear_linspace``/``linear_trailing``) and the last level
  free. With ``--endpoints free`` both ends are free; multistep samplers then push σ_0 to
  1e150 and beyond (exact in the analysis, useless in floating point);
- W2 and KL(data‖model) of the designed schedule and of every heuristic defined at S
  (``sd.schedules.heuristics(S, "vp")``, as published, not moved to the fixed first level).

Per spectrum the results also give the start-mismatch floor (``ode_floor``): the W2 of the
exact probability-flow ODE started from the VP start N(0, 1) at σ_0. A deterministic sampler
with that first level ends near it however many steps it takes.

Eigenvalues are floored at ``--floor``·λ_max (default 1e-10) so that the multistep samplers'
output variance, a difference of large terms for λ ≈ 0, stays positive; KL uses the floor
``--kl-floor``·λ_max of ``experiments.real_data``. Float64 throughout.

Resumable: each (spectrum, sampler, NFE) cell is written atomically to ``cells/`` when done; a
rerun with the same settings reads finished cells instead of recomputing them.

  python -m experiments.sampler_comparison [--datasets synthetic_ata digits ...]
      [--samplers heun dpmpp_2m ...] [--nfe 10 20 50] [--endpoints first|free] [--quick]
"""

from __future__ import annotations

import json
import time

import jax
import numpy as np

import specdiff as sd
from experiments._common import Run, fail, markdown_table, parser, pyplot, to_jsonable
from specdiff import datasets, spectra
from specdiff.core.io import write_json

SYNTHETIC = "synthetic_ata"
DATASETS = (SYNTHETIC, *datasets.DATASETS)
SAMPLERS = tuple(n for n in sd.samplers.SAMPLERS if n != "ddpm")
NFES = (10, 20, 50)
QUICK = {"datasets": [SYNTHETIC], "samplers": ["ddim", "euler", "heun"], "nfe": [10]}


def load_spectrum(name: str, floor: float) -> sd.Spectrum:
    """The spectrum of ``name`` (float64), eigenvalues floored at floor·λ_max."""
    spec = spectra.synthetic_ata() if name == SYNTHETIC else datasets.dataset_spectrum(name)
    lam = np.asarray(spec.eigenvalues, np.float64)
    lam = np.maximum(lam, floor * lam.max())
    return sd.Spectrum(lam, np.asarray(spec.mean, np.float64), name=name)


ALPHA_BAR_FIRST = float(sd.schedules.ddpm_alphas_bar()[-1])  # ᾱ_999 of linear β, T = 1000
SIGMA0 = float(np.sqrt((1 - ALPHA_BAR_FIRST) / ALPHA_BAR_FIRST))  # ≈ 156.7


def first_level(mode: str):
    """design_schedule's ``endpoints``: (ᾱ_999, free) or both free."""
    return None if mode == "free" else (ALPHA_BAR_FIRST, None)


def ode_floor(spec, sigma0: float) -> float:
    """W2 of the exact probability-flow ODE started from the VP start at σ_0.

    In σ coordinates each direction starts at y_0 = x_0 − m ~ N(−m, 1 + σ_0²) instead of the
    true N(0, λ + σ_0²), and the exact ODE scales y by √(λ/(λ + σ_0²)) on the way to σ = 0:

        W2² = Σ_i m_i²·λ_i/(λ_i + σ_0²) + λ_i·(√((1 + σ_0²)/(λ_i + σ_0²)) − 1)².

    A deterministic sampler started at σ_0 cannot forget this start error (its
    discretisation error may only offset part of it); stochastic ones can contract it.
    """
    lam, m = np.asarray(spec.eigenvalues, np.float64), np.asarray(spec.mean, np.float64)
    s2 = float(sigma0) ** 2
    shrink = lam / (lam + s2)
    return float(np.sqrt(np.sum(m**2 * shrink + lam * (np.sqrt((1 + s2) / (lam + s2)) - 1) ** 2)))


def evaluate(spec, schedule, sampler, kl_floor: float) -> dict:
    """W2 and KL(data‖model) of one schedule (``sd.output_moments``, ``sd.divergence``)."""
    mom = sd.output_moments(spec, schedule, sampler)
    return {
        "w2": float(sd.divergence(spec, mom, "w2")),
        "kl": float(sd.divergence(spec, mom, "kl", floor=kl_floor)),
    }


def run_cell(spec, sampler, nfe: int, args) -> dict:
    """Design at S = steps_for_nfe(nfe); W2 and KL of the design and of every heuristic."""
    steps = sampler.steps_for_nfe(nfe)
    kl_floor = args.kl_floor * float(np.max(spec.eigenvalues))
    t0 = time.time()
    res = sd.design_schedule(
        spec,
        steps,
        sampler,
        process="vp",
        metric="w2",
        endpoints=first_level(args.endpoints),
        max_iter=args.max_iter,
        progress=False,
    )
    heur = {
        n: evaluate(spec, s, sampler, kl_floor)
        for n, s in sd.schedules.heuristics(steps, "vp").items()
    }
    designed = evaluate(spec, res.schedule, sampler, kl_floor)
    best = {m: min(heur, key=lambda n: heur[n][m]) for m in ("w2", "kl")}
    return {
        "steps": steps,
        "nfe_used": sampler.nfe(steps),
        "designed": designed
        | {
            "log_snr": np.asarray(res.schedule.log_snr),
            "sigma": np.asarray(res.schedule.sigma),
            "iterations": int(res.iterations),
            "converged": bool(res.converged),
            "init": res.init,
        },
        "heuristics": heur,
        "best_heuristic": {m: {"name": best[m], "value": heur[best[m]][m]} for m in best},
        "gain_w2": heur[best["w2"]]["w2"] / designed["w2"],
        "wall_s": time.time() - t0,
    }


def cell_settings(spec, sampler, nfe, args) -> dict:
    return {
        "spectrum": spec.name,
        "spectrum_sha256": spec.digest(),
        "sampler": sampler.to_dict(),
        "nfe": nfe,
        "endpoints": args.endpoints,
        "max_iter": args.max_iter,
        "floor": args.floor,
        "kl_floor": args.kl_floor,
        "version": sd.__version__,
    }


def cached_cell(run: Run, spec, sampler, nfe: int, args) -> tuple[dict, bool]:
    """(cell, reused): the finished cell from ``cells/`` if its settings match, else run it."""
    settings = to_jsonable(cell_settings(spec, sampler, nfe, args))
    path = run.path("cells") / f"{spec.name}__{sampler.name}__nfe{nfe}.json"
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            rec = {}
        if rec.get("settings") == settings:
            return rec["cell"], True
    cell = to_jsonable(run_cell(spec, sampler, nfe, args))
    write_json(path, {"settings": settings, "cell": cell})
    # Every cell compiles new programs (its S, sampler and d); without dropping them a full
    # run exhausts the process's memory maps (LLVM "Cannot allocate memory") after ~150.
    jax.clear_caches()
    return cell, False


CELL_HEADER = ["spectrum", "sampler", "NFE", "S", "W2 designed", "W2 best heur.", "(which)",
               "gain", "iters", "KL designed", "KL best heur.", "(which)"]  # fmt: skip


def _cell_row(name, smp, nfe, c) -> list:
    bw, bk = c["best_heuristic"]["w2"], c["best_heuristic"]["kl"]
    iters = f"{c['designed']['iterations']}" + ("" if c["designed"]["converged"] else "*")
    return [name, smp, nfe, c["steps"], c["designed"]["w2"], bw["value"], bw["name"],
            c["gain_w2"], iters, c["designed"]["kl"], bk["value"], bk["name"]]  # fmt: skip


def tables(results: dict, nfes) -> str:
    """A summary (median and range of the W2 gain over spectra), the floors, every cell."""
    names = list(results)
    samplers = list(results[names[0]]["samplers"])
    cell = lambda n, smp, nfe: results[n]["samplers"][smp][str(nfe)]  # noqa: E731
    rows = []
    for smp in samplers:
        gains = [[cell(n, smp, nfe)["gain_w2"] for n in names] for nfe in nfes]
        rows.append([smp, *[f"{np.median(g):.3g} ({min(g):.3g}–{max(g):.3g})" for g in gains]])
    head = ["sampler", *[f"NFE {n}: W2 gain, median (min–max)" for n in nfes]]
    summary = markdown_table(head, rows)
    full = [_cell_row(n, smp, nfe, cell(n, smp, nfe)) for n in names for smp in samplers
            for nfe in nfes]  # fmt: skip
    floors = ""
    if all("ode_floor_w2" in results[n] for n in names):
        floors = (
            f"\nStart-mismatch floor (exact probability-flow ODE from the VP start at σ_0 = "
            f"{SIGMA0:.4g}; `ode_floor`):\n\n"
            + markdown_table(
                ["spectrum", "d", "W2 floor"],
                [[n, results[n]["d"], results[n]["ode_floor_w2"]] for n in names],
            )
        )
    return (
        "W2 gain = W2(best heuristic) / W2(designed), per sampler and NFE, over the spectra "
        f"{', '.join(names)}.\n\n" + summary + floors + "\nPer cell (iters: design iterations, "
        "* = stopped at --max-iter before the convergence test was met):\n\n"
        + markdown_table(CELL_HEADER, full)
    )


def figure(results: dict, nfes):
    """Per spectrum: the W2 gain of the design over the best heuristic, per sampler and NFE."""
    plt = pyplot()
    names = list(results)
    samplers = list(results[names[0]]["samplers"])
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.2 * rows), squeeze=False)
    width = 0.8 / len(nfes)
    x = np.arange(len(samplers))
    for ax, n in zip(axes.flat, names):
        for j, nfe in enumerate(nfes):
            g = [results[n]["samplers"][s][str(nfe)]["gain_w2"] for s in samplers]
            ax.bar(x + (j - (len(nfes) - 1) / 2) * width, g, width, label=f"NFE {nfe}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(x, samplers, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{n} (d = {results[n]['d']})", fontsize=9)
        ax.set_ylabel("W2 best heuristic / designed", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def parse(argv):
    p = parser("sampler_comparison", __doc__)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS))
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    p.add_argument("--nfe", type=int, nargs="+", default=list(NFES))
    p.add_argument("--endpoints", choices=("first", "free"), default="first")
    p.add_argument("--max-iter", type=int, default=300, help="design iterations per cell")
    p.add_argument("--floor", type=float, default=1e-10, help="eigenvalue floor / λ_max")
    p.add_argument("--kl-floor", type=float, default=1e-4, help="KL floor / λ_max")
    p.add_argument("--quick", action="store_true", help=f"CI smoke test: {QUICK}, 30 iterations")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets, args.samplers, args.nfe = QUICK["datasets"], QUICK["samplers"], QUICK["nfe"]
        args.max_iter = min(args.max_iter, 30)
    bad = [n for n in args.datasets if n not in DATASETS]
    if bad:
        fail(f"unknown dataset(s) {bad}; allowed: {', '.join(DATASETS)}")
    bad = [n for n in args.samplers if n not in sd.samplers.SAMPLERS]
    if bad:
        fail(f"unknown sampler(s) {bad}; allowed: {', '.join(sd.samplers.SAMPLERS)}")
    if min(args.nfe) < 1 or args.max_iter < 1 or not (args.floor >= 0 and args.kl_floor > 0):
        fail("--nfe and --max-iter must be >= 1, --floor >= 0 and --kl-floor > 0")
    samplers = [sd.samplers.from_name(n) for n in args.samplers]
    low = [(s.name, n) for s in samplers for n in args.nfe if n < s.nfe(1)]
    if low:
        fail(f"NFE below one step of the sampler: {low}")
    return args, samplers


def main(argv=None):
    args, samplers = parse(argv)
    jax.config.update("jax_enable_x64", True)
    run = Run("sampler_comparison", args)
    t0 = time.time()
    results, reused = {}, 0
    for name in args.datasets:
        spec = load_spectrum(name, args.floor)
        per = {}
        for smp in samplers:
            per[smp.name] = {}
            for nfe in args.nfe:
                cell, was_cached = cached_cell(run, spec, smp, nfe, args)
                reused += was_cached
                per[smp.name][str(nfe)] = cell
                print(
                    f"{name} {smp.name} NFE {nfe} (S={cell['steps']}): W2 designed "
                    f"{cell['designed']['w2']:.4g}, best heuristic "
                    f"{cell['best_heuristic']['w2']['value']:.4g} "
                    f"({cell['best_heuristic']['w2']['name']}), {cell['wall_s']:.1f} s"
                    + (" (reused)" if was_cached else ""),
                    flush=True,
                )
        results[name] = {"d": spec.dim, "sha256": spec.digest(), "samplers": per}
        if args.endpoints == "first":
            results[name]["ode_floor_w2"] = ode_floor(spec, SIGMA0)
    run.save_figure(figure(results, args.nfe), "gain.png")
    wall = time.time() - t0
    cell_s = sum(
        c["wall_s"] for r in results.values() for s in r["samplers"].values() for c in s.values()
    )
    run.finish(
        {
            "samplers": {s.name: s.to_dict() for s in samplers},
            "spectra": results,
            "wall_time_s": wall,
            "cells_reused": reused,
            "cell_seconds": cell_s,
        },
        tables(results, args.nfe)
        + f"\nDesign and evaluation time of the cells: {cell_s:.0f} s (summed over the calls "
        f"that computed them; {reused} reused); wall time of this call: {wall:.0f} s.\n",
    )
    return results


if __name__ == "__main__":
    main()
