"""The closed-form engine against its independent references (SPEC §7), as numbers.

  python -m experiments.verify_engine [--samples 200000]

For a random non-diagonal Σ0 (d = 12) and both processes, DDIM/η = 0.5/DDPM:
- full-covariance propagation: largest relative disagreement of output variances, means
  and W2 (general Gaussian formula);
- Monte Carlo time-domain sampling: largest |z|-score of sample means and variances;
- VP/VE DDIM equivalence: largest relative gap between H_VP and H_VE/√ᾱ_0;
- convergence: the log-log slope of W2 against S for DDIM with the cosine schedule.
Writes results/verify_engine/.
"""

from __future__ import annotations

import jax
import numpy as np

import specdiff as sd
from experiments._common import Run, markdown_table, parser
from specdiff import reference


def problem(d, seed):
    rng = np.random.default_rng(seed)
    lam = np.sort(rng.lognormal(0.0, 1.5, d))[::-1]
    u, _ = np.linalg.qr(rng.normal(size=(d, d)))
    mu0 = rng.normal(size=d)
    return lam, u, mu0, (u * lam) @ u.T


def main(argv=None):
    p = parser("verify_engine", __doc__)
    p.add_argument("--samples", type=int, default=200_000, help="Monte-Carlo samples")
    p.add_argument("--dim", type=int, default=12)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    run = Run("verify_engine", args)
    key = jax.random.key(args.seed)
    lam, u, mu0, cov0 = problem(args.dim, args.seed)
    spec = sd.Spectrum(lam, u.T @ mu0)
    rows, out = [], []
    for process in ("vp", "ve"):
        sch = sd.schedules.cosine(15) if process == "vp" else sd.schedules.edm(15)
        for eta in (0.0, 0.5, 1.0):
            mom = sd.output_moments(spec, sch, sd.samplers.DDIM(eta))
            m_ref, c_ref = reference.propagate(mu0, cov0, sch, eta=eta)
            c_eig = u.T @ c_ref @ u
            var_err = float(np.max(np.abs(np.diag(c_eig) - mom.var) / mom.var))
            mean_err = float(np.max(np.abs(u.T @ m_ref - mom.mean)) / np.max(np.abs(mom.mean)))
            w2 = float(sd.divergence(spec, mom, "w2"))
            w2_err = abs(w2 - reference.w2_gaussians(m_ref, c_ref, mu0, cov0)) / w2
            x = reference.sample(
                mu0, cov0, sch, eta, jax.random.fold_in(key, len(out)), args.samples
            )
            y = x @ u
            n = args.samples
            z_mean = np.abs(y.mean(0) - mom.mean) / np.sqrt(mom.var / n)
            z_var = np.abs(y.var(0, ddof=1) - mom.var) / (mom.var * np.sqrt(2 / (n - 1)))
            rec = {
                "process": process,
                "eta": eta,
                "full_cov_var_rel": var_err,
                "full_cov_mean_rel": mean_err,
                "full_cov_w2_rel": w2_err,
                "mc_max_z_mean": float(z_mean.max()),
                "mc_max_z_var": float(z_var.max()),
            }
            out.append(rec)
            rows.append(
                [process, eta, var_err, mean_err, w2_err, rec["mc_max_z_mean"], rec["mc_max_z_var"]]
            )
    lam_grid = np.logspace(-4, 3, 50)
    vp = sd.schedules.chen_sigmoid(20)
    ddim = sd.samplers.DDIM()
    h_vp = np.asarray(sd.transfer_function(lam_grid, vp, ddim))
    h_ve = np.asarray(sd.transfer_function(lam_grid, vp.to_ve(), ddim))
    equiv = float(np.max(np.abs(h_vp - h_ve / np.sqrt(vp.levels[0])) / h_vp))
    steps = np.array([25, 50, 100, 200, 400, 800])
    w2s = [
        float(sd.divergence(spec, sd.output_moments(spec, sd.schedules.cosine(int(s)), ddim), "w2"))
        for s in steps
    ]
    slope = float(np.polyfit(np.log(steps), np.log(w2s), 1)[0])
    table = markdown_table(
        [
            "process",
            "eta",
            "var rel err",
            "mean rel err",
            "W2 rel err",
            "MC max |z| mean",
            "MC max |z| var",
        ],
        rows,
    )
    table += (
        f"\nVP/VE DDIM equivalence, max rel gap: {equiv:.3g}\n"
        f"W2 vs S (cosine, DDIM) log-log slope: {slope:.3f} (W2 at S=800: {w2s[-1]:.3g})\n"
    )
    summary = {
        "max_full_cov_var_rel": max(r["full_cov_var_rel"] for r in out),
        "max_full_cov_mean_rel": max(r["full_cov_mean_rel"] for r in out),
        "max_full_cov_w2_rel": max(r["full_cov_w2_rel"] for r in out),
        "max_mc_z": max(max(r["mc_max_z_mean"], r["mc_max_z_var"]) for r in out),
        "vp_ve_equivalence_rel": equiv,
        "w2_convergence_slope": slope,
    }
    run.finish(
        {"cases": out, "summary": summary, "w2_vs_steps": dict(zip(steps.tolist(), w2s))}, table
    )


if __name__ == "__main__":
    main()
