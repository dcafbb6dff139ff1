"""Spiked covariance: overlap of the top noisy-sample eigenvector with the spike, theory vs
simulation (SPEC §8), for several γ = d/N, with error bars over seeds and the gap vs d.

Data: x0 = √ℓ·g·u (rank one, g ~ N(0, 1), u a random unit vector); at noise level s the
denoiser sees N samples x0 + s·z (``sd.linear.fit_noisy``, one noise draw each), whose
covariance is s²I + ℓ·u uᵀ. Simulation: |⟨û_1(s), u⟩|² averaged over seeds; theory:
``sd.spiked.overlap(s, ℓ, γ)`` = (1 − γ/β²)/(1 + γ/β), β = ℓ/s², for β > √γ.

  python -m experiments.spiked_covariance [--dims 200 400 800] [--gammas 0.25 0.5 1 2]
      [--seeds 6] [--levels 14] [--ell 1.0] [--quick]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import Run, fail, markdown_table, parser, pyplot
from specdiff import linear, spiked


def simulate(d: int, gamma: float, ell: float, noise, seeds: int, key) -> dict:
    """Overlaps and top eigenvalues of the noisy sample covariance, one row per seed."""
    n = max(int(round(d / gamma)), 2)
    ov, top = [], []
    for m in range(seeds):
        km = jax.random.fold_in(key, m)
        u = jax.random.normal(jax.random.fold_in(km, 0), (d,))
        u = u / jnp.linalg.norm(u)
        g = jax.random.normal(jax.random.fold_in(km, 1), (n, 1))
        models = linear.fit_noisy(
            np.sqrt(ell) * g * u, noise, jax.random.fold_in(km, 2), center=False
        )
        ov.append(np.asarray(linear.eigenvector_overlaps(models, u[:, None], k=1))[:, 0, 0])
        top.append(np.asarray(models.eigenvalues[:, 0]) + np.asarray(noise) ** 2)
    return {"n": n, "overlap": np.array(ov), "top": np.array(top)}


def main(argv=None):
    p = parser("spiked_covariance", __doc__)
    p.add_argument("--dims", type=int, nargs="+", default=[200, 400, 800])
    p.add_argument("--gammas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--levels", type=int, default=14)
    p.add_argument("--ell", type=float, default=1.0)
    p.add_argument("--quick", action="store_true", help="tiny run (seconds): d 40, 80")
    args = p.parse_args(argv)
    if args.quick:
        args.dims, args.gammas, args.seeds, args.levels = [40, 80], [0.5, 1.0], 3, 6
    if min(args.dims) < 2 or min(args.gammas) <= 0 or args.seeds < 2 or args.levels < 2:
        fail("need dims >= 2, gammas > 0, seeds >= 2 and levels >= 2")
    if not args.ell > 0:
        fail(f"--ell must be > 0, got {args.ell}")
    run = Run("spiked_covariance", args)
    key = jax.random.key(args.seed)
    ell = args.ell
    # Noise variances s² from 0.05ℓ to 5ℓ: every γ in (0.04, 400) has its threshold inside.
    s2 = ell * np.logspace(np.log10(0.05), np.log10(5.0), args.levels)
    noise = np.sqrt(s2)
    results = {"ell": ell, "noise_var": s2, "by_gamma": {}}
    rows = []
    for gi, gamma in enumerate(args.gammas):
        theory = np.asarray(spiked.overlap(noise, ell, gamma))
        top_th = np.asarray(spiked.top_eigenvalue(noise, ell, gamma))
        per_d = {}
        for di, d in enumerate(args.dims):
            sim = simulate(
                d, gamma, ell, noise, args.seeds, jax.random.fold_in(key, 1000 * gi + di)
            )
            mean = sim["overlap"].mean(0)
            se = sim["overlap"].std(0, ddof=1) / np.sqrt(args.seeds)
            err = np.abs(mean - theory)
            per_d[d] = {
                "n": sim["n"],
                "overlap_mean": mean,
                "overlap_se": se,
                "max_abs_gap": float(err.max()),
                "rms_gap": float(np.sqrt(np.mean(err**2))),
                "within_3se_fraction": float(np.mean(err <= 3 * se + 1e-12)),
                "top_eig_mean": sim["top"].mean(0),
                "top_eig_rel_gap_max": float(np.max(np.abs(sim["top"].mean(0) / top_th - 1))),
            }
            rows.append(
                [
                    gamma,
                    d,
                    sim["n"],
                    per_d[d]["max_abs_gap"],
                    per_d[d]["rms_gap"],
                    float(se.max()),
                    per_d[d]["within_3se_fraction"],
                    per_d[d]["top_eig_rel_gap_max"],
                ]
            )
        dims = np.array(args.dims, float)
        gaps = np.array([per_d[d]["rms_gap"] for d in args.dims])
        slope = float(np.polyfit(np.log(dims), np.log(gaps), 1)[0]) if len(dims) > 1 else None
        results["by_gamma"][gamma] = {
            "threshold_noise_var": float(spiked.emergence_noise_var(ell, gamma)),
            "theory_overlap": theory,
            "theory_top_eig": top_th,
            "rms_gap_vs_d_slope": slope,
            "per_d": per_d,
        }
    header = [
        "γ",
        "d",
        "N",
        "max |sim−th|",
        "rms |sim−th|",
        "max SE",
        "frac ≤3SE",
        "top-eig max rel gap",
    ]
    table = markdown_table(header, rows)
    table += (
        "\nrms gap vs d, log-log slope per γ: "
        + ", ".join(
            f"γ={g}: {results['by_gamma'][g]['rms_gap_vs_d_slope']:.2f}"
            for g in args.gammas
            if results["by_gamma"][g]["rms_gap_vs_d_slope"] is not None
        )
        + "\n"
    )
    _figures(run, results, args)
    run.finish(results, table)
    return results


def _figures(run, results, args):
    plt = pyplot()

    s2 = results["noise_var"]
    fig, axes = plt.subplots(
        1, len(args.gammas), figsize=(3.6 * len(args.gammas), 3.2), sharey=True, squeeze=False
    )
    for ax, gamma in zip(axes[0], args.gammas):
        r = results["by_gamma"][gamma]
        fine = np.logspace(np.log10(s2[0]), np.log10(s2[-1]), 300)
        ax.plot(fine, spiked.overlap(np.sqrt(fine), args.ell, gamma), "k-", label="theory")
        for d in args.dims:
            pd = r["per_d"][d]
            ax.errorbar(
                s2,
                pd["overlap_mean"],
                yerr=pd["overlap_se"],
                fmt="o",
                ms=3,
                capsize=2,
                label=f"d={d}",
            )
        ax.axvline(r["threshold_noise_var"], color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_title(f"γ = d/N = {gamma:g}")
        ax.set_xlabel("noise variance s²")
    axes[0][0].set_ylabel("|⟨û₁(s), u⟩|²")
    axes[0][0].legend(fontsize=7)
    run.save_figure(fig, "overlap_vs_noise.png")
    fig, ax = plt.subplots(figsize=(4, 3.2))
    for gamma in args.gammas:
        pd = results["by_gamma"][gamma]["per_d"]
        ax.loglog(args.dims, [pd[d]["rms_gap"] for d in args.dims], "o-", label=f"γ={gamma:g}")
    ax.set_xlabel("d")
    ax.set_ylabel("rms |simulation − theory|")
    ax.legend(fontsize=7)
    run.save_figure(fig, "gap_vs_d.png")


if __name__ == "__main__":
    main()
