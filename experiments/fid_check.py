"""Spectral vs heuristic schedules on real (trained) denoisers: FD-pixel, FD-classifier, KID.

    python -m experiments.fid_check                # DDIM, NFE = S ∈ {5, 10, 20, 50}, 3 seeds
    python -m experiments.fid_check --sampler heun,dpmpp_2m,euler_ancestral --nfe 10 20 50
    python -m experiments.fid_check --quick        # CI smoke test (seconds per dataset)

For each shipped denoiser (``specdiff/nn/weights/denoisers/*``), each sampler of ``--sampler``
(k-diffusion names, comma-separated; any of ``sd.samplers.SAMPLERS``, run by ``sd.sample``
through its own step) and each NFE budget of ``--nfe`` (S = ``sampler.steps_for_nfe(nfe)``:
NFE for DDIM, Euler and the other one-evaluation samplers, ⌊(NFE + 1)/2⌋ for Heun, DPM-2 and
the ancestral second-order samplers), the schedules are

- ``spectral``: ``sd.design_schedule`` on the PCA spectrum of the dataset's training split,
  for the same sampler, W2 objective, endpoints free (the optimiser also places the first
  and last level; the denoiser extrapolates outside its trained log-SNR range as documented
  in ``specdiff.denoisers``);
- ``spectral_first``: the same with the first level fixed at ᾱ_999 of the linear-β training
  schedule (σ_0 ≈ 157) and the last free, as ``experiments.sampler_comparison`` designs;
- ``spectral_tr``: the same with ``endpoints=(ᾱ_999, ᾱ_0)`` of the linear-β training
  schedule, i.e. kept inside the range the denoiser was trained on;
- ``linear``, ``cosine``, ``edm``, ``log_snr_uniform``: ``sd.schedules.HEURISTICS`` with
  their default parameters.

Each (sampler, schedule, NFE, seed) draws ``--n`` samples with ``sd.sample`` (seed j uses
``fold_in(key(seed), j)`` for every schedule and sampler: common random numbers) and compares
them with the test split: FD-pixel, FD-classifier and KID-classifier (``specdiff.metrics``).
The row ``data`` compares ``--n`` training images with the test split: the floor set by
finite samples. The Gaussian-theory W2 of each schedule (``sd.output_moments``) is reported
beside the measured numbers. The summary holds, per metric, the rank of each spectral
schedule and its paired per-seed difference to the best heuristic (mean ± std over seeds).

A DDIM/DDPM-only run writes to ``results/fid_check``; any other sampler list to
``results/fid_check_samplers`` (``--out`` overrides both).
"""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments._common import Run, fail, markdown_table, parser, pyplot

SCHEDULES = (
    "spectral",
    "spectral_first",
    "spectral_tr",
    "linear",
    "cosine",
    "edm",
    "log_snr_uniform",
)
DEFAULT_SCHEDULES = ("spectral", "spectral_tr", "linear", "cosine", "edm", "log_snr_uniform")
HEURISTIC_NAMES = ("linear", "cosine", "edm", "log_snr_uniform")
METRICS = ("fd_pixel", "fd_classifier", "kid_classifier")
NFE, QUICK_NFE = (5, 10, 20, 50), (5, 10)  # --nfe's default, and with --quick


def _schedules(spec, steps: int, sampler, names):
    """name → Schedule for the requested names; the spectral ones designed for ``sampler``."""
    import specdiff as sd
    from specdiff.design.heuristics import ddpm_alphas_bar

    ab = ddpm_alphas_bar()
    ends = {
        "spectral": None,
        "spectral_first": (float(ab[-1]), None),
        "spectral_tr": (float(ab[-1]), float(ab[0])),
    }
    out = {}
    for name in names:
        if name in ends:
            out[name] = sd.design_schedule(
                spec,
                steps,
                sampler,
                process="vp",
                metric="w2",
                endpoints=ends[name],
                progress=False,
            ).schedule
        else:
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


def _reference(name, args, key):
    """Denoiser, classifier, reference statistics of the test split and the data floor."""
    from specdiff import datasets, metrics
    from specdiff.nn.denoisers import load_denoiser

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
    ref_feats = metrics.extract_features(clf, test)
    ref = {
        "pixel_stats": metrics.feature_stats(test),
        "features": ref_feats,
        "feature_stats": metrics.feature_stats(ref_feats),
    }
    floor = []  # --n training images against the test split
    for j in range(args.seeds):
        idx = np.asarray(jax.random.permutation(jax.random.fold_in(key, 10_000 + j), len(train)))
        floor.append(
            _evaluate(train[idx[: args.n]], ref, clf, jax.random.fold_in(key, j), args.kid_subsets)
        )
    return den, clf, ref, test, {m: _mean_std([f[m] for f in floor]) for m in METRICS}


def _run_schedule(den, sch, sampler, ref, clf, key, args, keep_examples):
    """Per-seed metrics of one schedule; seed j samples with ``fold_in(key, j)``."""
    from specdiff.nn.sampling import sample

    vals, examples = [], None
    for j in range(args.seeds):
        kj = jax.random.fold_in(key, j)
        x = np.asarray(sample(den, sch, sampler, kj, args.n, batch_size=args.batch_size))
        if not np.isfinite(x).all():
            vals.append({m: np.inf for m in METRICS})
            continue
        if j == 0 and keep_examples:
            examples = x[:8]
        vals.append(_evaluate(x, ref, clf, jax.random.fold_in(kj, 1), args.kid_subsets))
    return vals, examples


def run_dataset(name, args, key, samplers):
    """Every sampler, NFE and schedule on one shipped denoiser."""
    import specdiff as sd
    from specdiff import datasets

    den, clf, ref, test, floor = _reference(name, args, key)
    spec = datasets.dataset_spectrum(name)
    out, examples = {}, {}
    show = min(args.nfe, key=lambda s: abs(s - 10))  # the sample grid is at NFE ≈ 10
    for sampler in samplers:
        res = {"floor": floor, "steps": {}, "schedules": {}}
        examples[sampler.name] = {}
        for nfe in args.nfe:
            steps = sampler.steps_for_nfe(nfe)
            scheds = _schedules(spec, steps, sampler, args.schedules)
            res["schedules"][nfe] = {k: np.asarray(s.log_snr).tolist() for k, s in scheds.items()}
            per = {}
            for sname, sch in scheds.items():
                w2 = float(sd.divergence(spec, sd.output_moments(spec, sch, sampler), "w2"))
                vals, ex = _run_schedule(den, sch, sampler, ref, clf, key, args, nfe == show)
                if ex is not None:
                    examples[sampler.name][sname] = ex
                per[sname] = {m: _mean_std([v[m] for v in vals]) for m in METRICS}
                per[sname] |= {"gaussian_w2": w2, "steps": steps, "per_seed": vals}
            res["steps"][nfe] = per
            jax.clear_caches()  # long runs otherwise exhaust the memory maps of compiled code
        out[sampler.name] = res
    return out, (show, examples, test[:8])


def _table(all_results) -> str:
    header = [
        "dataset",
        "sampler",
        "NFE",
        "S",
        "schedule",
        "FD-pixel",
        "FD-classifier",
        "KID-classifier",
        "Gaussian W2",
    ]
    rows = []
    f = lambda ms, p=3: f"{ms[0]:.{p}g} ± {ms[1]:.2g}"  # noqa: E731
    for ds, per_sampler in all_results.items():
        fl = next(iter(per_sampler.values()))["floor"]
        rows.append([ds, "–", "–", "–", "data (train vs test)", *[f(fl[m]) for m in METRICS], "–"])
        for smp, res in per_sampler.items():
            for nfe, per in res["steps"].items():
                best = min(per, key=lambda k: per[k]["fd_classifier"][0])
                for sname, r in per.items():
                    mark = " **best**" if sname == best else ""
                    rows.append(
                        [
                            ds,
                            smp,
                            nfe,
                            r["steps"],
                            sname + mark,
                            *[f(r[m]) for m in METRICS],
                            f"{r['gaussian_w2']:.4g}",
                        ]
                    )
    return markdown_table(header, rows)


def _paired(per, a, b, metric):
    """Mean ± std over seeds of metric(a) − metric(b) (common random numbers)."""
    d = [x[metric] - y[metric] for x, y in zip(per[a]["per_seed"], per[b]["per_seed"])]
    return _mean_std(d)


def _summary(all_results) -> dict:
    """Per dataset, sampler and NFE: the best schedule, the rank of each spectral one, and its
    paired per-seed difference to the best heuristic (negative: the spectral one is better)."""
    out = {}
    for ds, per_sampler in all_results.items():
        for smp, res in per_sampler.items():
            for nfe, per in res["steps"].items():
                entry = {}
                spectral = [s for s in per if s.startswith("spectral")]
                heur = [s for s in per if not s.startswith("spectral")]
                for metric in METRICS:
                    order = sorted(per, key=lambda k: per[k][metric][0])
                    e = {"best": order[0]}
                    e |= {f"rank_{s}": order.index(s) + 1 for s in spectral}
                    if heur:
                        bh = min(heur, key=lambda k: per[k][metric][0])
                        e["best_heuristic"] = bh
                        e |= {
                            f"{s}_minus_best_heuristic": _paired(per, s, bh, metric)
                            for s in spectral
                        }
                    entry[metric] = e
                out.setdefault(ds, {}).setdefault(smp, {})[nfe] = entry
    return out


def _figure(all_results, run):
    plt = pyplot()

    panels = [(ds, smp) for ds, per in all_results.items() for smp in per]
    metrics_ = [("fd_pixel", "FD-pixel"), ("fd_classifier", "FD-classifier")]
    fig, axes = plt.subplots(
        len(metrics_), len(panels), figsize=(5 * len(panels), 7), squeeze=False
    )
    for c, (ds, smp) in enumerate(panels):
        res = all_results[ds][smp]
        nfes = list(res["steps"])
        for r, (m, label) in enumerate(metrics_):
            ax = axes[r, c]
            for sname in res["steps"][nfes[0]]:
                mu = [res["steps"][s][sname][m][0] for s in nfes]
                sd_ = [res["steps"][s][sname][m][1] for s in nfes]
                style = "-o" if sname.startswith("spectral") else "--s"
                ax.errorbar(nfes, mu, yerr=sd_, fmt=style, ms=4, capsize=2, label=sname)
            ax.axhline(res["floor"][m][0], color="k", lw=0.8, ls=":", label="data floor")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(nfes, [str(x) for x in nfes])
            ax.xaxis.set_minor_locator(plt.NullLocator())
            ax.set_xlabel("NFE (denoiser evaluations)")
            ax.set_ylabel(label)
            ax.set_title(f"{ds}, {smp}: {label}", fontsize=9)
        axes[0, c].legend(fontsize=7)
    fig.tight_layout()
    run.save_figure(fig, "fid_check.png")


def _sample_grid(ds, smp, examples, run, filename):
    plt = pyplot()

    nfe, per, test = examples
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
    fig.suptitle(f"{ds}, {smp}: samples at NFE = {nfe} (seed 0)", fontsize=9)
    run.save_figure(fig, filename)


def _parse(argv):
    import specdiff as sd
    from specdiff.nn.denoisers import shipped_denoisers

    p = parser("fid_check", __doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=None, help="default: every shipped denoiser")
    p.add_argument(
        "--nfe",
        "--steps",
        dest="nfe",
        nargs="+",
        type=int,
        default=None,
        help="denoiser-evaluation budgets (for DDIM/DDPM the steps S); default "
        f"{' '.join(map(str, NFE))}, with --quick {' '.join(map(str, QUICK_NFE))}",
    )
    p.add_argument("--seeds", type=int, default=3, help="sample sets per (schedule, NFE)")
    p.add_argument("--n", type=int, default=500, help="samples per set")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--sampler", default="ddim", help="NAME[,NAME...] (k-diffusion names)")
    p.add_argument("--schedules", nargs="+", default=list(DEFAULT_SCHEDULES))
    p.add_argument("--kid-subsets", type=int, default=10)
    p.add_argument(
        "--quick", action="store_true", help=f"smoke test: NFE {QUICK_NFE}, 2 seeds, 64 samples"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.n, args.kid_subsets = 2, 64, 2
    if args.nfe is None:  # an --nfe given on the command line holds with --quick too
        args.nfe = list(QUICK_NFE if args.quick else NFE)
    args.sampler = [s.strip() for s in args.sampler.split(",") if s.strip()]
    bad = [s for s in args.sampler if s not in sd.samplers.SAMPLERS]
    if bad or not args.sampler:
        fail(f"unknown sampler(s) {bad}; allowed: {', '.join(sd.samplers.SAMPLERS)}")
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
    samplers = [sd.samplers.from_name(s) for s in args.sampler]
    low = [(s.name, n) for s in samplers for n in args.nfe if n < s.nfe(1)]
    if low or args.seeds < 1 or args.n < 2:
        fail(f"--nfe must allow one step of each sampler {low}, --seeds >= 1 and --n >= 2")
    return args, samplers


def main(argv=None) -> None:
    args, samplers = _parse(argv)
    name = "fid_check" if set(args.sampler) <= {"ddim", "ddpm"} else "fid_check_samplers"
    run = Run(name, args)
    key = jax.random.key(args.seed)
    all_results = {}
    t0 = time.time()
    for i, ds in enumerate(args.datasets):
        all_results[ds], (nfe, examples, test) = run_dataset(
            ds, args, jax.random.fold_in(key, i), samplers
        )
        for smp, ex in examples.items():
            fname = f"samples_{ds}.png" if len(samplers) == 1 else f"samples_{ds}_{smp}.png"
            _sample_grid(ds, smp, (nfe, ex, test), run, fname)
        print(f"{ds}: done after {time.time() - t0:.0f} s", flush=True)
    table = _table(all_results)
    _figure(all_results, run)
    run.finish(
        {
            "results": all_results,
            "summary": _summary(all_results),
            "samplers": {s.name: s.to_dict() for s in samplers},
            "wall_time_s": time.time() - t0,
        },
        table,
    )


if __name__ == "__main__":
    main()
