"""``specdiff evaluate`` (the loss of a schedule file) and ``specdiff compare`` (every
heuristic and the designed schedule, for several S or NFE budgets and samplers)."""

from __future__ import annotations

import numpy as np

from specdiff.cli import common as c

TABLE_METRICS = ("w2", "kl")


# --------------------------------------------------------------------------- evaluate


def _as_process(schedule, process: str):
    """The same log-SNR grid, run as another process."""
    convert = {"vp": schedule.to_vp, "ve": schedule.to_ve, "flow": schedule.to_flow}
    return convert[process]()


def cmd_evaluate(args) -> int:
    """``specdiff evaluate``: the divergence of a schedule file on a spectrum."""
    c.check_metric(args)
    c.check_process(args, default=None)
    schedule, record = c.load_schedule(args.schedule)
    if args.process is not None:
        schedule = _as_process(schedule, args.process)
    sampler = c.one_sampler(args, record)
    spec = c.load_spectrum(args)
    if args.metric != "w2" and args.floor is None and (np.asarray(spec.eigenvalues) == 0).any():
        raise c.UsageError(
            f"metric {args.metric!r} is infinite for a zero eigenvalue of spectrum "
            f"{spec.name!r}; pass --floor or use --metric w2"
        )
    loss = c.loss(spec, schedule, sampler, args.metric, args.floor)
    note = c.spectrum_note(record, spec)
    result = {
        "schedule": str(args.schedule),
        "process": schedule.process,
        "steps": schedule.num_steps,
        "sampler": sampler.to_dict(),
        "spectrum": c.spectrum_info(spec),
        "metric": args.metric,
        "value": loss,
        "note": note,
    }
    if args.json:
        print(c.dumps(result))
        return 0
    print(
        f"{args.schedule}: S = {schedule.num_steps} ({schedule.process}), sampler "
        f"{c.sampler_label(sampler)}, spectrum {spec.name!r} (d = {spec.dim})"
    )
    print(f"{c.METRIC_LABELS[args.metric]} = {c.fmt(loss)}")
    if note:
        print(note)
    return 0


# --------------------------------------------------------------------------- compare


def _rows(spec, S, sampler, args, metrics) -> dict:
    """{schedule name: {metric: value}} at S, the spectral schedule designed for --metric."""
    from specdiff.design import heuristics as schedules

    res = c.design(spec, S, sampler, args)
    cands = {"spectral": res.schedule, **schedules.heuristics(S, args.process)}
    rows = {
        name: {m: c.loss(spec, sch, sampler, m, args.floor) for m in metrics}
        for name, sch in cands.items()
    }
    rows["spectral"]["converged"] = res.converged
    return rows


def _sampler_table(spec, steps, sampler, args, metrics) -> list[dict]:
    """The rows at each S of ``steps`` (each distinct S designed once)."""
    done = {}
    for S in steps:
        if S not in done:
            done[S] = _rows(spec, S, sampler, args, metrics)
    return [done[S] for S in steps]


def _starred(table: list[dict], names, metric) -> list[list]:
    """Rows name, value per column, ``*`` on the best value of each column."""
    best = []
    for col in table:
        vals = [v[metric] for v in col.values() if v.get(metric) is not None]
        best.append(min(vals) if vals else None)
    rows = []
    for name in names:
        row = [name]
        for col, b in zip(table, best):
            v = col.get(name, {}).get(metric)
            row.append(c.fmt(v) + ("*" if v is not None and b is not None and v == b else ""))
        rows.append(row)
    return rows


def _print_tables(table: list[dict], columns: list[str]) -> None:
    from specdiff.design import heuristics as schedules

    names = ["spectral", *schedules.HEURISTICS]
    for metric in TABLE_METRICS:
        print()
        print(c.table([c.METRIC_LABELS[metric], *columns], _starred(table, names, metric)))


def _kl_undefined(tables) -> bool:
    return all(v["kl"] is None for t in tables for col in t for v in col.values())


def _compare_one(spec, sampler, args) -> int:
    """One sampler at several S: the output of ``specdiff compare`` before samplers lists."""
    steps = list(args.steps or c.DEFAULT_COMPARE_STEPS)
    table = _sampler_table(spec, steps, sampler, args, TABLE_METRICS)
    if args.json:
        doc = {
            "spectrum": c.spectrum_info(spec),
            "sampler": sampler.to_dict(),
            "process": args.process,
            "designed_for": args.metric,
            "steps": steps,
            "table": {str(S): rows for S, rows in zip(steps, table)},
        }
        print(c.dumps(doc))
        return 0
    print(
        f"spectrum {spec.name!r} (d = {spec.dim}), sampler {c.sampler_label(sampler)}, "
        f"process {args.process}; spectral schedule designed for "
        f"{c.METRIC_LABELS[args.metric]} at each S; * marks the best in a column"
    )
    _print_tables(table, [f"S={S}" for S in steps])
    if _kl_undefined([table]):
        print("\nKL is undefined here (zero eigenvalues): pass --floor to clip them")
    return 0


def _columns(budgets, steps, by_nfe: bool) -> list[str]:
    if by_nfe:
        return [f"NFE={b} (S={S})" for b, S in zip(budgets, steps)]
    return [f"S={S}" for S in steps]


def _print_many(spec, names, samplers, budgets, steps, tables, args) -> None:
    by_nfe = args.nfe is not None
    label = c.METRIC_LABELS[args.metric]
    print(
        f"spectrum {spec.name!r} (d = {spec.dim}), process {args.process}; spectral schedule "
        f"designed for {label} at each {'NFE' if by_nfe else 'S'}; * marks the best in a column"
    )
    for sampler, S, table in zip(samplers, steps, tables):
        print(f"\nsampler {c.sampler_label(sampler)}")
        _print_tables(table, _columns(budgets, S, by_nfe))
    header = [f"spectral, {label}", *(f"{'NFE' if by_nfe else 'S'}={b}" for b in budgets)]
    cols = [{n: t[j]["spectral"] for n, t in zip(names, tables)} for j in range(len(budgets))]
    print(f"\nthe designed schedules at equal {'NFE' if by_nfe else 'S'}")
    print(c.table(header, _starred(cols, names, args.metric)))
    if _kl_undefined(tables):
        print("\nKL is undefined here (zero eigenvalues): pass --floor to clip them")


def cmd_compare(args) -> int:
    """``specdiff compare``: heuristics and the spectral schedule for several S, W2 and KL."""
    c.check_metric(args)
    c.check_process(args)
    samplers = c.samplers_from_args(args)
    if len(samplers) == 1 and args.nfe is None:
        return _compare_one(c.load_spectrum(args), samplers[0], args)
    names = list(args.sampler) if args.sampler is not None else [samplers[0].name]
    budgets = list(args.nfe or args.steps or c.DEFAULT_COMPARE_STEPS)
    nfe = args.nfe is not None
    steps = [[s.steps_for_nfe(b) if nfe else b for b in budgets] for s in samplers]
    spec = c.load_spectrum(args)
    metrics = tuple(dict.fromkeys((*TABLE_METRICS, args.metric)))
    tables = [_sampler_table(spec, S, s, args, metrics) for s, S in zip(samplers, steps)]
    if args.json:
        per = [
            {
                "name": n,
                "sampler": s.to_dict(),
                "steps": S,
                "nfe": [s.nfe(k) for k in S],
                "table": {str(b): rows for b, rows in zip(budgets, t)},
            }
            for n, s, S, t in zip(names, samplers, steps, tables)
        ]
        doc = {"spectrum": c.spectrum_info(spec), "process": args.process}
        doc.update(designed_for=args.metric, budget="nfe" if nfe else "steps", values=budgets)
        print(c.dumps({**doc, "samplers": per}))
        return 0
    _print_many(spec, names, samplers, budgets, steps, tables, args)
    return 0
