"""``specdiff design``: design schedules, write their JSON, print them beside the heuristics.

With several samplers (``--sampler heun,dpmpp_2m,euler``) one schedule is designed per
sampler, each at S = ``sampler.steps_for_nfe(nfe)`` when ``--nfe`` is given, so that the
designed divergences compare samplers at equal cost; a last line ranks them.
"""

from __future__ import annotations

import math
from pathlib import Path

from specdiff.cli import common as c


def _out_paths(out: str, names: list[str]) -> list[Path]:
    """``--out`` for one sampler; ``<stem>_<sampler><suffix>`` beside it for several."""
    base = c.check_out_file(out)
    if len(names) == 1:
        return [base]
    suffix = base.suffix or ".json"
    return [c.check_out_file(base.with_name(f"{base.stem}_{n}{suffix}")) for n in names]


def _design_one(spec, steps, sampler, args, checkpoint):
    endpoints = None if args.first is None and args.last is None else (args.first, args.last)
    res = c.design(
        spec,
        steps,
        sampler,
        args,
        endpoints=endpoints,
        init=args.init,
        checkpoint_dir=checkpoint,
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
        "nfe": sampler.nfe(steps),
    }
    return res, extra


def _record(spec, res, sampler, args, extra) -> dict:
    from specdiff.core.io import schedule_record

    return schedule_record(
        res.schedule,
        sampler=sampler,
        objective=args.metric,
        value=res.loss,
        spectrum=spec,
        extra=c.jsonable(extra),
    )


def _print_block(spec, res, sampler, args, out, show_nfe: bool) -> None:
    """The design table of one sampler: the designed schedule and every heuristic."""
    label = c.METRIC_LABELS[args.metric]
    ranking = sorted(
        [("spectral", res.loss), *res.heuristics.items()],
        key=lambda kv: (not math.isfinite(kv[1]), kv[1]),
    )
    best = res.loss
    rows = [[n, v, f"{v / best:.2f}" if best > 0 else "—"] for n, v in ranking]
    S = res.schedule.num_steps
    nfe = f", NFE = {sampler.nfe(S)}" if show_nfe else ""
    print(
        f"spectrum {spec.name!r} (d = {spec.dim}), sampler {c.sampler_label(sampler)}, "
        f"process {args.process}, S = {S}{nfe}, metric {label}"
    )
    print(c.table(["schedule", label, "× spectral"], rows))
    conv = "converged" if res.converged else "not converged (raise --max-iter)"
    print(f"optimiser: {res.iterations} iterations from {res.init!r}, {conv}")
    print(f"wrote {out}")


def _ranking(names, results) -> list[str]:
    return sorted(names, key=lambda n: (not math.isfinite(results[n].loss), results[n].loss))


def _summary(names, samplers, results, args) -> str:
    """One line: the samplers ranked by the divergence of their designed schedules."""
    budget = f"NFE <= {args.nfe}" if args.nfe is not None else "equal S"
    parts = []
    for n in _ranking(names, results):
        S = results[n].schedule.num_steps
        sampler = samplers[names.index(n)]
        parts.append(f"{n} {c.fmt(results[n].loss)} (S = {S}, NFE = {sampler.nfe(S)})")
    return f"samplers by designed {c.METRIC_LABELS[args.metric]} at {budget}: " + " < ".join(parts)


def _check(args):
    """Every input checked before anything is designed: (samplers, names, steps, outs)."""
    from specdiff.design import heuristics as schedules

    c.check_metric(args)
    c.check_process(args)
    samplers = c.samplers_from_args(args)
    names = list(args.sampler) if args.sampler is not None else [samplers[0].name]
    default = c.DEFAULT_STEPS if args.steps is None else args.steps
    steps = [c.steps_at(s, default, args.nfe) for s in samplers]
    outs = _out_paths(args.out, names)
    if args.init not in ("best", *schedules.HEURISTICS):
        c.choice("init", args.init, ("best", *schedules.HEURISTICS))
    return samplers, names, steps, outs


def cmd_design(args) -> int:
    """``specdiff design``: design, write the schedule JSON(s), print the comparison."""
    from specdiff.core.io import write_json

    samplers, names, steps, outs = _check(args)
    spec = c.load_spectrum(args)
    several = len(samplers) > 1
    results, records = {}, []
    for name, sampler, S in zip(names, samplers, steps):
        ck = args.checkpoint
        if ck is not None and several:
            ck = str(Path(ck) / name)
        results[name], extra = _design_one(spec, S, sampler, args, ck)
        records.append(_record(spec, results[name], sampler, args, extra))
    for out, rec in zip(outs, records):  # every design done: now write
        write_json(out, rec)
    if args.json:
        docs = [{"out": str(out), **rec} for out, rec in zip(outs, records)]
        if not several:
            print(c.dumps(docs[0]))
            return 0
        doc = {"metric": args.metric, "steps": args.steps, "nfe": args.nfe, "designs": docs}
        print(c.dumps({**doc, "ranking": _ranking(names, results)}))
        return 0
    for i, (name, sampler, out) in enumerate(zip(names, samplers, outs)):
        if i:
            print()
        _print_block(spec, results[name], sampler, args, out, several or args.nfe is not None)
    if several:
        print()
        print(_summary(names, samplers, results, args))
    return 0
