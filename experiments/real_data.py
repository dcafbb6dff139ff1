"""Spectral vs heuristic schedules on real data spectra.

For each built-in dataset (``sd.datasets.DATASETS``; training split, PCA spectrum) and, when
their paths are given, CIFAR-10 (PCA over 3,072 pixels) and a WAV folder (periodogram of the
1 s clips, d = 16,000, shift-invariant): the spectrum; the schedule designed for W2 and the one
designed for KL(data‖model) at every S; and W2 and KL of every heuristic defined at that S.

KL needs positive eigenvalues: low-rank spectra (LFW: 160 faces in d = 625) are floored at
``--kl-floor``·λ_max for the KL rows (the W2 rows use the spectrum as estimated).

  python -m experiments.real_data [--datasets digits lfw ...] [--cifar10 DIR] [--wav DIR]
                                  [--steps 10 28 112] [--quick]
"""

from __future__ import annotations

import jax
import numpy as np

import specdiff as sd
from experiments._common import Run, fail, markdown_table, parser, pyplot
from experiments.synthetic_schedules import design_across_steps
from specdiff import datasets, spectra

STEPS = (5, 10, 20, 28, 50, 112, 250)
QUICK_STEPS = (10,)
REPORT_STEPS = (10, 28, 112)
# --quick: smaller patch sets (the colour patches 16×16, d = 768) so CI stays fast.
QUICK_OPTIONS = {
    "patches_gray": {"per_image": 100},
    "patches_color": {"per_image": 200, "size": 16},
    "mnist1d": {"num_samples": 1000},
}


def spectra_for(args) -> dict[str, tuple[sd.Spectrum, dict]]:
    """name → (spectrum, how it was estimated)."""
    out = {}
    for name in args.datasets:
        opts = QUICK_OPTIONS.get(name, {}) if args.quick else {}
        x = datasets.load_dataset(name, split="train", **opts)
        est = spectra.pca(x)
        out[name] = (
            est.spectrum(name=name),
            {"estimator": est.estimator, "n": est.count, "shape": x.shape[1:], "options": opts},
        )
    if args.cifar10:
        try:  # streamed: one batch file in memory at a time
            est = spectra.pca(datasets.iter_cifar10(args.cifar10, split="train"))
        except ValueError as e:
            fail(str(e))
        out["cifar10"] = (
            est.spectrum(name="cifar10"),
            {"estimator": est.estimator, "n": est.count, "shape": est.sample_shape},
        )
    if args.wav:
        try:
            x = datasets.load_wav_folder(args.wav)
        except ValueError as e:
            fail(str(e))
        est = spectra.fourier_1d(x, method="periodogram")
        out["wav"] = (
            est.spectrum(name="wav"),
            {"estimator": est.estimator, "n": est.count, "shape": x.shape[1:]},
        )
    return out


def floored(spec: sd.Spectrum, rel: float) -> sd.Spectrum:
    lam = np.asarray(spec.eigenvalues, np.float64)
    return sd.Spectrum(np.maximum(lam, rel * lam.max()), spec.mean, name=spec.name)


def figures(results: dict, steps_detail: int):
    plt = pyplot()

    names = list(results)
    figs = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        lam = np.asarray(results[n]["eigenvalues"])
        ax.loglog(np.arange(1, len(lam) + 1) / len(lam), np.maximum(lam, 1e-12), label=n)
    ax.set(xlabel="i / d", ylabel="eigenvalue", title="data spectra")
    ax.legend(fontsize=7)
    figs["spectra.png"] = fig
    for metric in [m for m in ("w2", "kl") if m in results[names[0]]]:
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
        for ax, n in zip(axes[0], names):
            tab = results[n][metric]
            steps = sorted(int(s) for s in tab)
            ax.loglog(
                steps, [tab[str(s)]["designed"] for s in steps], "ko-", lw=2, label="spectral"
            )
            heur = sorted({h for s in steps for h in tab[str(s)]["heuristics"]})
            for h in heur:
                ys = [tab[str(s)]["heuristics"].get(h, np.nan) for s in steps]
                ax.loglog(steps, ys, ".-", lw=1, label=h)
            ax.set(title=n, xlabel="S")
        axes[0][0].set_ylabel(metric.upper())
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
        fig.tight_layout()
        figs[f"{metric}_vs_steps.png"] = fig
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
    for ax, n in zip(axes[0], names):
        row = results[n]["w2"].get(str(steps_detail))
        if row is None:
            continue
        ax.plot(row["log_snr"], "k-", lw=2, label="spectral (W2)")
        for h in ("linear", "edm", "chen_cosine", "chen_sigmoid"):
            ax.plot(np.asarray(sd.schedules.heuristic(h, steps_detail, "vp").log_snr), label=h)
        ax.set(title=n, xlabel="step k")
    axes[0][0].set_ylabel("log-SNR ρ")
    axes[0][0].legend(fontsize=7)
    figs[f"schedules_S{steps_detail}.png"] = fig
    return figs


def main(argv=None):
    p = parser("real_data", __doc__)
    p.add_argument("--datasets", nargs="+", default=list(datasets.DATASETS))
    p.add_argument("--cifar10", default=None, help="folder cifar-10-batches-py")
    p.add_argument("--wav", default=None, help="folder of .wav clips (SC09-style)")
    p.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--metrics", nargs="+", choices=("w2", "kl"), default=["w2", "kl"])
    p.add_argument("--kl-floor", type=float, default=1e-4, help="KL eigenvalue floor / λ_max")
    p.add_argument(
        "--quick", action="store_true", help=f"CI smoke test: small patch sets, W2, S {QUICK_STEPS}"
    )
    args = p.parse_args(argv)
    unknown = [n for n in args.datasets if n not in datasets.DATASETS]
    if unknown:
        fail(f"unknown dataset(s) {unknown}; allowed: {', '.join(datasets.DATASETS)}")
    if args.quick:
        args.steps, args.metrics = list(QUICK_STEPS), ["w2"]
    if "w2" not in args.metrics:
        args.metrics = ["w2", *args.metrics]  # the summary is in W2
    if min(args.steps) < 1 or not args.kl_floor > 0:
        fail("--steps must be >= 1 and --kl-floor > 0")
    jax.config.update("jax_enable_x64", True)
    run = Run("real_data", args)
    sampler = sd.samplers.from_name(args.sampler)
    results, rows, summary = {}, [], {}
    for name, (spec, info) in spectra_for(args).items():
        print(f"{name}: d={spec.dim}, {info}")
        per_metric = {}
        for metric in args.metrics:
            sp = spec if metric == "w2" else floored(spec, args.kl_floor)
            tab = design_across_steps(sp, args.steps, sampler, None, metric=metric)
            per_metric[metric] = {
                str(S): {k: v for k, v in r.items() if k != "result"}
                | {"log_snr": np.asarray(r["result"].schedule.log_snr)}
                for S, r in tab.items()
            }
        results[name] = {
            "estimation": info,
            "d": spec.dim,
            "eigenvalues": np.asarray(spec.eigenvalues),
            **per_metric,
        }
        summary[name] = {
            str(S): {
                "w2_spectral": per_metric["w2"][str(S)]["designed"],
                "w2_best_heuristic": per_metric["w2"][str(S)]["best_heuristic_value"],
                "best_heuristic": per_metric["w2"][str(S)]["best_heuristic"],
            }
            for S in REPORT_STEPS
            if str(S) in per_metric["w2"]
        }
        for S in args.steps:
            row = [name, S]
            for metric in args.metrics:
                r = per_metric[metric][str(S)]
                row += [r["designed"], r["best_heuristic_value"], r["best_heuristic"]]
            rows.append(row)
    detail = 112 if 112 in args.steps else max(args.steps)
    for fname, fig in figures(results, detail).items():
        run.save_figure(fig, fname)
    header = ["dataset", "S"]
    for metric in args.metrics:
        header += [f"{metric.upper()} spectral", f"{metric.upper()} best heur.", "(which)"]
    run.finish(
        {"sampler": sampler.to_dict(), "summary": summary, "datasets": results},
        markdown_table(header, rows),
    )
    return summary


if __name__ == "__main__":
    main()
