"""Per-eigenvalue schedules for the synthetic AᵀA spectrum, and trajectory accuracy.

1. ``sd.design_per_eigenvalue``: for every eigenvalue λ_i of Σ0 = AᵀA (d = 50, l = 0.1) the
   S-step schedule that is optimal for that eigenvalue alone (SPEC §6), W2 objective,
   with each problem's iteration count and why it stopped (converged / stalled / budget).
2. Trajectory: along a 60-step cosine schedule, the variance after each step
   (``sd.output_moments(..., trajectory=True)``) against the true forward marginal
   α_k²λ + σ_k² (``sd.forward_marginals``); the relative error
   |v_k − v_k^true| / v_k^true of the 10 largest eigenvalues over the final 20 steps.

  python -m experiments.per_eigenvalue [--steps 28] [--sampler ddim] [--devices all] [--quick]
"""

from __future__ import annotations

import jax
import numpy as np

import specdiff as sd
from experiments._common import Run, fail, markdown_table, parser, pyplot
from specdiff import spectra


def trajectory_error(
    spec: sd.Spectrum, sampler, steps: int = 60, last: int = 20, top: int = 10
) -> dict:
    """Relative variance error of the ``top`` largest eigenvalues over the ``last`` steps."""
    sch = sd.schedules.cosine(steps)
    mom = sd.output_moments(spec, sch, sampler, trajectory=True)
    true = sd.forward_marginals(spec, sch)
    order = np.argsort(-np.asarray(spec.eigenvalues))[:top]
    v = np.asarray(mom.trajectory_var, np.float64)[:, order]
    vt = np.asarray(true.trajectory_var, np.float64)[:, order]
    m = np.asarray(mom.trajectory_mean, np.float64)[:, order]
    mt = np.asarray(true.trajectory_mean, np.float64)[:, order]
    rows = np.arange(steps + 1 - last, steps + 1)  # states after steps S−last+1 .. S
    rel = np.abs(v[rows] - vt[rows]) / vt[rows]
    return {
        "schedule": "cosine",
        "steps": steps,
        "after_step": rows,
        "eigenvalues": np.asarray(spec.eigenvalues, np.float64)[order],
        "relative_variance_error": rel,  # (last, top)
        "mean_abs_error": np.abs(m[rows] - mt[rows]),
        "max_relative_error_per_step": rel.max(axis=1),
        "max_relative_error_per_eigenvalue": rel.max(axis=0),
    }


def figure(spec, design, traj):
    plt = pyplot()

    lam = np.asarray(spec.eigenvalues, np.float64)
    rho = np.asarray(design.log_snr, np.float64)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    cmap = plt.get_cmap("viridis")
    loglam = np.log10(np.maximum(lam, 1e-8 * lam.max()))
    span = np.ptp(loglam) or 1.0
    # Eigenvalues below 1e-8·λ_max contribute ~0 to any schedule's loss (their designs stay
    # at the heuristic start): left out of the plot.
    shown = lam >= 1e-8 * lam.max()
    for i in np.flatnonzero(shown):
        a.plot(rho[i], color=cmap((loglam[i] - loglam.min()) / span), lw=1)
    a.set(
        xlabel="step k",
        ylabel="log-SNR ρ_k",
        title=f"per-eigenvalue schedules, {shown.sum()} λ ≥ 1e-8·λ_max (colour: log λ)",
    )
    for j in range(traj["relative_variance_error"].shape[1]):
        b.semilogy(
            traj["after_step"],
            np.maximum(traj["relative_variance_error"][:, j], 1e-17),
            label=f"λ={traj['eigenvalues'][j]:.3g}",
        )
    b.set(
        xlabel="after step k",
        ylabel="|v − v_true| / v_true",
        title=f"trajectory variance error, {traj['steps']}-step cosine",
    )
    b.legend(fontsize=6, ncol=2)
    return fig


def main(argv=None):
    p = parser("per_eigenvalue", __doc__)
    p.add_argument("--steps", type=int, default=28, help="S for the per-eigenvalue designs")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim")
    p.add_argument("--quick", action="store_true", help="CI smoke test: S = 10")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = min(args.steps, 10)
    if args.steps < 1:
        fail(f"--steps must be >= 1, got {args.steps}")
    jax.config.update("jax_enable_x64", True)
    run = Run("per_eigenvalue", args)
    spec = spectra.synthetic_ata()
    sampler = sd.samplers.from_name(args.sampler)
    # --devices was checked by the parser and selects the mesh (SPECDIFF_DEVICES).
    design = sd.design_per_eigenvalue(
        spec.eigenvalues, args.steps, sampler, metric="w2", mean=spec.mean, progress=False
    )
    traj = trajectory_error(spec, sampler)
    run.save_figure(figure(spec, design, traj), "per_eigenvalue.png")
    lam = np.asarray(spec.eigenvalues, np.float64)
    rho = np.asarray(design.log_snr, np.float64)
    loss = np.asarray(design.loss, np.float64)
    rows = [
        [i + 1, float(lam[i]), float(rho[i, 0]), float(rho[i, -1]), float(loss[i])]
        for i in range(min(10, len(lam)))
    ]
    table = markdown_table(["i", "λ_i", "ρ_0 (start)", "ρ_{S−1}", "W2, λ_i alone"], rows)
    t_rows = [
        [int(k), float(e)] for k, e in zip(traj["after_step"], traj["max_relative_error_per_step"])
    ]
    table += "\n" + markdown_table(
        ["after step (60-step cosine)", "max rel. var. error, top-10 λ"], t_rows
    )
    results = {
        "spectrum": {"name": spec.name, "d": spec.dim, "eigenvalues": lam},
        "sampler": sampler.to_dict(),
        "per_eigenvalue": {
            "steps": args.steps,
            "log_snr": rho,
            "loss": loss,
            "iterations": design.iterations,
            "stop_reason": design.stop_reason.tolist(),
        },
        "trajectory": traj,
    }
    run.finish(results, table)
    return results


if __name__ == "__main__":
    main()
