"""Spectral vs heuristic schedules on real (trained) denoisers: FD-pixel, FD-classifier, KID.

    python -m experiments.fid_check                # full run (S ∈ {5, 10, 20, 50}, 3 seeds)
    python -m experiments.fid_check --quick        # CI smoke test (seconds per dataset)

For each shipped denoiser (``specdiff/nn/weights/denoisers/*``) and each S, the schedules are

- ``spectral``: ``sd.design_schedule`` on the PCA spectrum of the dataset's training split,
  for the same sampler, W2 objective, endpoints free (the optimiser also places the first
  and last level; the denoiser extrapolates outside its trained log-SNR range as documented
  in ``specdiff.denoisers``);
- ``spectral_tr``: the same with ``endpoints=(ᾱ_999, ᾱ_0)`` of the linear-β training
  schedule, i.e. kept inside the range the denoiser was trained on;
- ``linear``, ``cosine``, ``edm``, ``log_snr_uniform``: ``sd.schedules.HEURISTICS`` with
  their default parameters.

Each (schedule, S, seed) draws ``--n`` samples with ``sd.sample`` (seed j uses
``fold_in(key(seed), j)`` for every schedule: common random numbers) and compares them with
the test split: FD-pixel, FD-classifier and KID-classifier (``specdiff.metrics``). The row
``data`` compares ``--n`` training images with the test split: the floor set by finite
samples. The Gaussian-theory W2² of each schedule (``sd.output_moments``) is reported beside
the measured numbers.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments._common import Run, fail, markdown_table, parser, pyplot

SCHEDULES = ("spectral", "spectral_tr", "linear", "cosine", "edm", "log_snr_uniform")
HEURISTIC_NAMES = ("linear", "cosine", "edm", "log_snr_uniform")


def _schedules(spec, steps: int, sampler):
    import specdiff as sd
    from specdiff.design.heuristics import ddpm_alphas_bar

    ab = ddpm_alphas_bar()
    out = {
        "spectral": sd.design_schedule(
            spec, steps, sampler, process="vp", metric="w2", progress=False
        ).schedule,
        "spectral_tr": sd.design_schedule(
            spec,
            steps,
            sampler,
            process="vp",
            metric="w2",
            endpoints=(float(ab[-1]), float(ab[0])),
            progress=False,
        ).schedule,
    }
    for name in HEURISTIC_NAMES:
        out[name] = sd.schedules.HEURISTICS[name](steps, process="vp")
    return out


def _mean_std(v):
    v = np.asarray(v, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _evaluate(x, ref, clf, key, kid_subsets):
    from specdiff import metrics

    feats = metrics.extract_features(clf, x)
    kid_m, _ = metrics.kid(
        feats,
        ref["features"],
        key,
        num_subsets=kid_subsets,
        subset_size=min(len(x), len(ref["features"]), 1000),
    )
    return {
        "fd_pixel": metrics.frechet_distance(x, ref["pixel_stats"]),
        "fd_classifier": metrics.frechet_distance(feats, ref["feature_stats"]),
        "kid_classifier": kid_m,
    }


def run_dataset(name, args, key, sampler):
    import specdiff as sd
    from specdiff import datasets, metrics
    from specdiff.nn.denoisers import load_denoiser
    from specdiff.nn.sampling import sample

    den = load_denoiser(name)
    try:
        clf = metrics.load_classifier(name)
    except ValueError as e:
        fail(
            f"{e}\ntrain it with: python -m experiments.train_denoiser --dataset {name} "
            "--classifier"
        )
    test = datasets.load_dataset(name, "test")
    train = datasets.load_dataset(name, "train")
    spec = datasets.dataset_spectrum(name)
    ref_feats = metrics.extract_features(clf, test)
    ref = {
        "pixel_stats": metrics.feature_stats(test),
        "features": ref_feats,
        "feature_stats": metrics.feature_stats(ref_feats),
    }
    rows = {}
    # Floor: --n training images against the test split.
    floor = []
    for j in range(args.seeds):
        idx = np.asarray(jax.random.permutation(jax.random.fold_in(key, 10_000 + j), len(train)))
        floor.append(
            _evaluate(train[idx[: args.n]], ref, clf, jax.random.fold_in(key, j), args.kid_subsets)
        )
    rows["data"] = {m: _mean_std([f[m] for f in floor]) for m in floor[0]}

    results = {"floor": rows["data"], "steps": {}, "schedules": {}}
    examples = {}
    show_steps = min(args.steps, key=lambda s: abs(s - 10))  # the sample grid is at S ≈ 10
    for steps in args.steps:
        scheds = _schedules(spec, steps, sampler)
        results["schedules"][steps] = {k: np.asarray(s.log_snr).tolist() for k, s in scheds.items()}
        per = {}
        for sname in args.schedules:
            sch = scheds[sname]
            w2 = float(sd.divergence(spec, sd.output_moments(spec, sch, sampler), "w2"))
            vals = []
            for j in range(args.seeds):
                kj = jax.random.fold_in(key, j)
                x = np.asarray(sample(den, sch, sampler, kj, args.n, batch_size=args.batch_size))
                if not np.isfinite(x).all():
                    vals.append(
                        {"fd_pixel": np.inf, "fd_classifier": np.inf, "kid_classifier": np.inf}
                    )
                    continue
                if j == 0 and steps == show_steps:
                    examples[sname] = x[:8]
                vals.append(_evaluate(x, ref, clf, jax.random.fold_in(kj, 1), args.kid_subsets))
            per[sname] = {m: _mean_std([v[m] for v in vals]) for m in vals[0]}
            per[sname]["gaussian_w2"] = w2
            per[sname]["per_seed"] = vals
        results["steps"][steps] = per
    return results, (show_steps, examples, test[:8])


def _table(all_results, args) -> str:
    header = [
        "dataset",
        "S",
        "schedule",
        "FD-pixel",
        "FD-classifier",
        "KID-classifier",
        "Gaussian W2²",
    ]
    rows = []
    f = lambda ms, p=3: f"{ms[0]:.{p}g} ± {ms[1]:.2g}"  # noqa: E731
    for ds, res in all_results.items():
        fl = res["floor"]
        rows.append(
            [
                ds,
                "–",
                "data (train vs test)",
                f(fl["fd_pixel"]),
                f(fl["fd_classifier"]),
                f(fl["kid_classifier"]),
                "–",
            ]
        )
        for steps, per in res["steps"].items():
            best = min(per, key=lambda k: per[k]["fd_classifier"][0])
            for sname, r in per.items():
                mark = " **best**" if sname == best else ""
                rows.append(
                    [
                        ds,
                        steps,
                        sname + mark,
                        f(r["fd_pixel"]),
                        f(r["fd_classifier"]),
                        f(r["kid_classifier"]),
                        f"{r['gaussian_w2']:.4g}",
                    ]
                )
    return markdown_table(header, rows)


def _summary(all_results) -> dict:
    """Per dataset and S: rank of each spectral schedule among all, by each metric."""
    out = {}
    for ds, res in all_results.items():
        out[ds] = {}
        for steps, per in res["steps"].items():
            entry = {}
            for metric in ("fd_pixel", "fd_classifier", "kid_classifier"):
                order = sorted(per, key=lambda k: per[k][metric][0])
                entry[metric] = {
                    "best": order[0],
                    **{
                        f"rank_{s}": order.index(s) + 1
                        for s in ("spectral", "spectral_tr")
                        if s in per
                    },
                }
            out[ds][steps] = entry
    return out


def _figure(all_results, run):
    plt = pyplot()

    names = list(all_results)
    metrics_ = [("fd_pixel", "FD-pixel"), ("fd_classifier", "FD-classifier")]
    fig, axes = plt.subplots(len(metrics_), len(names), figsize=(5 * len(names), 7), squeeze=False)
    for c, ds in enumerate(names):
        res = all_results[ds]
        steps = list(res["steps"])
        for r, (m, label) in enumerate(metrics_):
            ax = axes[r, c]
            for sname in res["steps"][steps[0]]:
                mu = [res["steps"][s][sname][m][0] for s in steps]
                sd_ = [res["steps"][s][sname][m][1] for s in steps]
                style = "-o" if sname.startswith("spectral") else "--s"
                ax.errorbar(steps, mu, yerr=sd_, fmt=style, ms=4, capsize=2, label=sname)
            ax.axhline(res["floor"][m][0], color="k", lw=0.8, ls=":", label="data floor")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(steps, [str(x) for x in steps])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            ax.set_xlabel("steps S (NFE)")
            ax.set_ylabel(label)
            ax.set_title(f"{ds}: {label}")
        axes[0, c].legend(fontsize=7)
    fig.tight_layout()
    run.save_figure(fig, "fid_check.png")


def _sample_grid(ds, examples, run):
    plt = pyplot()

    steps, per, test = examples
    rows = [("test data", test)] + [(k, v) for k, v in per.items()]
    fig, axes = plt.subplots(len(rows), 8, figsize=(8, 1.1 * len(rows)), squeeze=False)
    for r, (label, xs) in enumerate(rows):
        for c in range(8):
            ax = axes[r, c]
            if c < len(xs):
                ax.imshow(np.clip(xs[c], -1, 1), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", fontsize=8)
    fig.suptitle(f"{ds}: samples at S = {steps} (seed 0)", fontsize=9)
    run.save_figure(fig, f"samples_{ds}.png")


def main(argv=None) -> None:
    import specdiff as sd
    from specdiff.nn.denoisers import shipped_denoisers

    p = parser("fid_check", __doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=None, help="default: every shipped denoiser")
    p.add_argument("--steps", nargs="+", type=int, default=[5, 10, 20, 50])
    p.add_argument("--seeds", type=int, default=3, help="sample sets per (schedule, S)")
    p.add_argument("--n", type=int, default=500, help="samples per set")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES))
    p.add_argument("--kid-subsets", type=int, default=10)
    p.add_argument(
        "--quick", action="store_true", help="smoke test: S ∈ {5, 10}, 2 seeds, 64 samples"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.n, args.kid_subsets = [5, 10], 2, 64, 2
    shipped = shipped_denoisers()
    args.datasets = args.datasets or shipped
    if not args.datasets:
        fail("no shipped denoisers found (train them with experiments.train_denoiser)")
    for ds in args.datasets:
        if ds not in shipped:
            fail(f"no shipped denoiser {ds!r}; shipped: {', '.join(shipped) or 'none'}")
    for s in args.schedules:
        if s not in SCHEDULES:
            fail(f"unknown schedule {s!r}; allowed: {', '.join(SCHEDULES)}")
    if any(s < 1 for s in args.steps) or args.seeds < 1 or args.n < 2:
        fail("--steps must be >= 1, --seeds >= 1 and --n >= 2")
    run = Run("fid_check", args)
    sampler = sd.samplers.from_name(args.sampler)
    key = jax.random.key(args.seed)
    all_results = {}
    t0 = time.time()
    for i, ds in enumerate(args.datasets):
        all_results[ds], examples = run_dataset(ds, args, jax.random.fold_in(key, i), sampler)
        _sample_grid(ds, examples, run)
        print(f"{ds}: done after {time.time() - t0:.0f} s", flush=True)
    table = _table(all_results, args)
    _figure(all_results, run)
    run.finish(
        {
            "results": all_results,
            "summary": _summary(all_results),
            "sampler": sampler.to_dict(),
            "wall_time_s": time.time() - t0,
        },
        table,
    )


if __name__ == "__main__":
    main()
