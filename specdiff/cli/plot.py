"""``specdiff plot``: schedules, |H(λ)| and loss-vs-S figures as PNG files.

The figures themselves are drawn by ``specdiff.cli.figures``; every figure is rendered
before the first file is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specdiff.cli import common as c
from specdiff.cli import figures


def _check(args):
    """(out_dir, heuristic names) after checking the flags."""
    from specdiff.design import heuristics as schedules

    c.check_metric(args)
    c.check_process(args, default=None)
    out_dir = Path(args.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise c.UsageError(f"--out-dir {str(out_dir)!r} exists and is not a directory")
    if args.heuristics.strip() == "all":
        return out_dir, list(schedules.HEURISTICS)
    names = [h for h in args.heuristics.split(",") if h.strip()]
    for h in names:
        c.choice("heuristic", h, tuple(schedules.HEURISTICS))
    return out_dir, names


def _schedules(args, loaded, spec, sampler, heur_names) -> dict:
    """The schedules to draw: the files (else one designed at --steps), then heuristics."""
    from specdiff.design import heuristics as schedules

    if loaded:
        named = dict(loaded)
        S = next(iter(loaded.values())).num_steps
    else:
        S = args.steps
        named = {"spectral": c.design(spec, S, sampler, args).schedule}
    all_heur = schedules.heuristics(S, args.process)
    named.update({h: all_heur[h] for h in heur_names if h in all_heur})
    return named


def _transfer(spec, named, sampler):
    """|H(λ)| of each schedule on a λ grid a decade beyond the spectrum on each side."""
    import specdiff as sd

    ev = np.asarray(spec.eigenvalues, np.float64)
    pos = ev[ev > 0]
    lo, hi = (np.log10(pos.min()) - 1, np.log10(pos.max()) + 1) if pos.size else (-4.0, 2.0)
    grid = np.logspace(lo, hi, 200)
    curves = {n: np.asarray(sd.transfer_function(grid, s, sampler)) for n, s in named.items()}
    return figures.transfer_figure(grid, curves, ev, c.sampler_label(sampler))


def _loss_curves(args, spec, sampler, heur_names, loaded):
    """(figure, data) of the loss against S: designed, heuristics, and the files as points."""
    from specdiff.design import heuristics as schedules

    def loss(sch):
        return c.loss(spec, sch, sampler, args.metric, args.floor)

    steps_list = list(args.loss_steps)
    curves = {"spectral": (steps_list, [])}
    curves.update({h: ([], []) for h in heur_names})
    for S in steps_list:
        curves["spectral"][1].append(c.design(spec, S, sampler, args).loss)
        hs = schedules.heuristics(S, args.process)
        for h in heur_names:
            if h in hs:
                curves[h][0].append(S)
                curves[h][1].append(loss(hs[h]))
    points = {n: (s.num_steps, loss(s)) for n, s in loaded.items()}
    fig = figures.loss_figure(curves, c.METRIC_LABELS[args.metric], points)
    data = {
        "metric": args.metric,
        "curves": {n: {"steps": s, "values": v} for n, (s, v) in curves.items()},
        "schedules": {n: {"steps": p[0], "value": p[1]} for n, p in points.items()},
    }
    return fig, data


def cmd_plot(args) -> int:
    """``specdiff plot``: schedules, |H(λ)| and loss-vs-S figures as PNG files."""
    out_dir, heur_names = _check(args)
    loaded, records = {}, []
    for path in args.schedules:
        sch, rec = c.load_schedule(path)
        loaded[Path(path).name] = sch
        records.append(rec)
    sampler = c.one_sampler(args, records[0] if records else None)
    spec = c.load_spectrum(args)
    first = next(iter(loaded.values()), None)
    args.process = args.process or (first.process if first is not None else "vp")

    named = _schedules(args, loaded, spec, sampler, heur_names)
    figs = {"schedules.png": figures.schedules_figure(named)}
    figs["transfer.png"] = _transfer(spec, named, sampler)
    loss_data = None
    if not args.no_loss_curve:
        figs["loss_vs_steps.png"], loss_data = _loss_curves(args, spec, sampler, heur_names, loaded)
    pngs = {name: figures.to_png(fig) for name, fig in figs.items()}  # all made, then written
    written = []
    for name, data in pngs.items():
        c.write_bytes(out_dir / name, data)
        written.append(str(out_dir / name))
    if args.json:
        doc = {"files": written, "spectrum": c.spectrum_info(spec), "sampler": sampler.to_dict()}
        print(c.dumps({**doc, "schedules": list(named), "loss": loss_data}))
    else:
        for p in written:
            print(f"wrote {p}")
    return 0
