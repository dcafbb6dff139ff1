"""``specdiff export``: a schedule as diffusers ``sigmas``/``timesteps``, a k-diffusion
sigma array, or (``--steps N``) interpolated to another step count with its loss."""

from __future__ import annotations

import sys

import numpy as np

from specdiff.cli import common as c


def _check(args):
    """The output path (None: stdout), after checking the format and the flags."""
    c.choice("format", args.format, c.FORMATS)
    c.check_metric(args)
    c.check_process(args, default=None)
    out = None if args.out is None else c.check_out_file(args.out)
    if out is not None and out.suffix == ".npy" and args.format != "k-diffusion":
        raise c.UsageError(".npy output is for --format k-diffusion; use a .json file")
    return out


def _interpolation_report(args, schedule, target, record, sampler) -> dict:
    """The loss of the source and of the interpolated schedule, and the best heuristic."""
    from specdiff.design import heuristics as schedules

    spec = c.load_spectrum(args)

    def loss(sch):
        return c.loss(spec, sch, sampler, args.metric, args.floor)

    heur = {n: loss(s) for n, s in schedules.heuristics(args.steps, schedule.process).items()}
    heur = {n: v for n, v in heur.items() if v is not None}
    best = min(heur, key=heur.get) if heur else None
    return {
        "metric": args.metric,
        "spectrum": c.spectrum_info(spec),
        "sampler": sampler.to_dict(),
        "original": {"steps": schedule.num_steps, "value": loss(schedule)},
        "interpolated": {"steps": args.steps, "value": loss(target)},
        "best_heuristic": None
        if best is None
        else {"name": best, "steps": args.steps, "value": heur[best]},
        "note": c.spectrum_note(record, spec),
    }


def _given_spectrum(args):
    """The spectrum options' spectrum when any was given (for the quantisation report)."""
    if args.dataset is None and args.spectrum is None and args.synthetic is None:
        return None
    return c.load_spectrum(args)


def _diffusers_payload(args, target, source, sampler) -> dict:
    """The diffusers scheduler and config that run ``sampler`` on ``target``.

    A sampler with no diffusers twin (e.g. dpm_2, or churn) gets the arrays alone and a
    note on stderr saying why and where it does run (k-diffusion).
    """
    from specdiff.design import export

    train = {
        "num_train_steps": args.num_train_steps,
        "beta_start": args.beta_start,
        "beta_end": args.beta_end,
        "beta_schedule": args.beta_schedule,
    }
    c.choice("beta schedule", args.beta_schedule, export.BETA_SCHEDULES)
    try:
        spec = _given_spectrum(args)
        d = export.to_diffusers(
            target, sampler, spectrum=spec, metric=args.metric, floor=args.floor, **train
        )
    except export.NotExportable as e:
        print(f"note: {e}; writing the sigmas/timesteps arrays only", file=sys.stderr)
        d = export.to_diffusers(target, **train)
    for note in d.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    keep = (
        "scheduler", "config", "method", "set_timesteps", "override", "step_kwargs", "exact",
        "sigmas_used", "levels_used", "start_std", "init_noise_sigma", "notes", "divergence",
    )  # fmt: skip
    return {
        "format": "specdiff.diffusers/2",
        "source": source,
        "steps": target.num_steps,
        "sampler": sampler.to_dict(),
        **{k: d[k] for k in keep if k in d},
        "sigmas": d["sigmas"],
        "timesteps": d["timesteps"],
        "alphas_cumprod": d["alphas_cumprod"],
        "max_log_snr_error": d["max_log_snr_error"],
        "timesteps_distinct": d["timesteps_distinct"],
        "train_schedule": {
            "beta_schedule": args.beta_schedule,
            "num_train_timesteps": args.num_train_steps,
            "beta_start": args.beta_start,
            "beta_end": args.beta_end,
        },
        "usage": "getattr(diffusers, scheduler)(**config), then "
        "scheduler.set_timesteps(**set_timesteps) (and the override, if any); "
        "see docs/exports.md",
    }


def _payload(args, target, source, sampler, report) -> dict:
    from specdiff.core.io import schedule_record
    from specdiff.design import export

    if args.format == "diffusers":
        payload = _diffusers_payload(args, target, source, sampler)
    elif args.format == "k-diffusion":
        kd = export.to_k_diffusion(target, sampler)
        payload = {
            "format": "specdiff.k-diffusion/2",
            "source": source,
            "steps": target.num_steps,
            **kd,
            "usage": f"k_diffusion.sampling.{kd['sampler']}(model, x, sigmas, **kwargs) "
            "with x as in 'start'",
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
    return payload


def _report_lines(report, sampler, args) -> list[str]:
    label = c.METRIC_LABELS[args.metric]
    o, i, b = report["original"], report["interpolated"], report["best_heuristic"]
    lines = [
        f"{label} on spectrum {report['spectrum']['name']!r} "
        f"(d = {report['spectrum']['d']}), sampler {c.sampler_label(sampler)}:",
        f"  original      S = {o['steps']:>4}: {c.fmt(o['value'])}",
        f"  interpolated  S = {i['steps']:>4}: {c.fmt(i['value'])}",
    ]
    if b is not None:
        lines.append(f"  best heuristic at S = {b['steps']} ({b['name']}): {c.fmt(b['value'])}")
    if report["note"]:
        lines.append(report["note"])
    return lines


def _write(out, payload, text) -> None:
    if out.suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(payload["sigmas"], np.float64))
        c.write_bytes(out, buf.getvalue())
    else:
        c.write_text(out, text)


def _print(args, out, payload, text, report, sampler) -> None:
    """The payload (no --out) or a line saying what was written; the loss report."""
    if out is None:
        print(text)
    elif args.json:
        print(c.dumps({"out": str(out), "format": args.format, "loss": report}))
    else:
        print(f"wrote {out} ({args.format}, S = {payload['steps']})")
    if args.format == "diffusers" and not payload["timesteps_distinct"]:
        print(
            "warning: two levels map to the same training timestep; diffusers needs strictly "
            "descending timesteps, so use 'sigmas' (or fewer steps)",
            file=sys.stderr,
        )
    if report is not None and not (args.json and out is not None):
        human = sys.stdout if out is not None else sys.stderr
        print("\n".join(_report_lines(report, sampler, args)), file=human)


def cmd_export(args) -> int:
    """``specdiff export``: diffusers / k-diffusion arrays, or a schedule at another S."""
    from specdiff.design import export

    out = _check(args)
    schedule, record = c.load_schedule(args.schedule)
    sampler = c.one_sampler(args, record)
    target, report = schedule, None
    if args.steps is not None:
        target = export.interpolate(schedule, args.steps)
        report = _interpolation_report(args, schedule, target, record, sampler)
    source = {"schedule": str(args.schedule), "steps": schedule.num_steps}
    source["process"] = schedule.process
    payload = _payload(args, target, source, sampler, report)
    text = c.dumps(payload)
    if out is not None:
        _write(out, payload, text)
    _print(args, out, payload, text, report, sampler)
    return 0
