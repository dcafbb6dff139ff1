"""Sanity check: the spectral formula against a time-domain simulation with the full covariance.

Data: the synthetic Σ0 = AᵀA (d = 50, l = 0.1, μ0 = 0.05·1, ``sd.spectra.synthetic_ata``).
Schedule: DDPM linear (T = 1000, ``uniform`` spacing) with S = 112 steps, DDIM by default.
The eigenvalues of the generated distribution are computed three ways:

- spectral: ``sd.output_moments`` (SPEC §4), v_i per eigenvalue;
- full covariance: ``sd.reference.propagate`` (C' = G C Gᵀ + σ_k² I, no eigen trick), then
  diag(Uᵀ C_out U) (= eigvalsh(C_out), the output is diagonal in U);
- Monte Carlo: ``sd.reference.sample`` with the matrix MMSE denoiser on N samples, then
  diag(Uᵀ Ĉ U) of the sample covariance.

  python -m experiments.sanity [--steps 112] [--eta 0] [--samples 20000]
"""

from __future__ import annotations

import jax
import numpy as np

import specdiff as sd
from experiments._common import Run, fail, markdown_table, parser, pyplot
from specdiff import spectra


def compare(steps: int, eta: float, samples: int, key) -> dict:
    """Spectral vs full-covariance vs Monte-Carlo output eigenvalues (float64 throughout)."""
    mu0, cov0 = spectra.synthetic_ata_matrix(50, 0.1, 0.05)
    pcs = spectra.from_covariance(cov0, mu0)
    spec = pcs.spectrum(name="synthetic_ata")
    u = pcs.eigenvectors
    sch = sd.schedules.ddpm_linear(steps, "uniform")
    sampler = sd.samplers.DDIM(eta)
    mom = sd.output_moments(spec, sch, sampler)
    v_spec = np.asarray(mom.var, np.float64)
    mean_out, cov_out = sd.reference.propagate(mu0, cov0, sch, eta=eta)
    v_full = np.diag(u.T @ cov_out @ u)
    x = sd.reference.sample(mu0, cov0, sch, eta, key, samples)
    v_mc = np.diag(u.T @ np.cov(x.T) @ u)
    # Monte-Carlo standard error of a variance estimate: v·√(2/(N−1)).
    return {
        "eigenvalues": pcs.eigenvalues,
        "spectral": v_spec,
        "full_covariance": v_full,
        "full_covariance_eigvalsh": np.sort(np.linalg.eigvalsh(cov_out))[::-1],
        "monte_carlo": v_mc,
        "abs_err_full": np.abs(v_full - v_spec),
        "abs_err_mc": np.abs(v_mc - v_spec),
        "mc_std_err": v_spec * np.sqrt(2.0 / (samples - 1)),
        "w2_spectral": float(sd.divergence(spec, mom, "w2")),
        # General W2 formula (matrix square roots): its float64 round-off is ~1e-5 here, as
        # Σ0 has eigenvalues down to 1e-30; the eigenbasis form of the same output is exact.
        "w2_full_covariance": sd.reference.w2_gaussians(mean_out, cov_out, mu0, cov0),
        "w2_full_covariance_eigenbasis": float(
            np.sqrt(
                np.sum((u.T @ (mean_out - mu0)) ** 2)
                + np.sum((np.sqrt(np.clip(v_full, 0, None)) - np.sqrt(pcs.eigenvalues)) ** 2)
            )
        ),
    }


def figure(res: dict, steps: int):
    plt = pyplot()

    i = np.arange(1, len(res["eigenvalues"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.semilogy(i, np.maximum(res["eigenvalues"], 1e-30), "k-", label="data λ")
    a.semilogy(i, res["spectral"], "o", ms=5, mfc="none", label="spectral formula")
    a.semilogy(i, res["full_covariance"], "x", label="full covariance")
    a.semilogy(i, res["monte_carlo"], "+", label="Monte Carlo")
    a.set(xlabel="eigenvalue index", ylabel="variance", title=f"output eigenvalues, S={steps}")
    a.legend(fontsize=8)
    b.semilogy(i, np.maximum(res["abs_err_full"], 1e-300), "x", label="|full − spectral|")
    b.semilogy(i, res["abs_err_mc"], "+", label="|MC − spectral|")
    b.semilogy(i, res["mc_std_err"], "k:", label="MC std. error")
    b.set(xlabel="eigenvalue index", ylabel="absolute error")
    b.legend(fontsize=8)
    return fig


def main(argv=None):
    p = parser("sanity", __doc__)
    p.add_argument("--steps", type=int, default=112)
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η (0 DDIM, 1 DDPM)")
    p.add_argument("--samples", type=int, default=20000, help="Monte-Carlo samples")
    args = p.parse_args(argv)
    if args.steps < 1 or args.samples < 2 or not 0 <= args.eta <= 1:
        fail("need --steps >= 1, --samples >= 2 and 0 <= --eta <= 1")
    jax.config.update("jax_enable_x64", True)  # the comparison is at float64 round-off
    run = Run("sanity", args)
    res = compare(args.steps, args.eta, args.samples, jax.random.key(args.seed))
    run.save_figure(figure(res, args.steps), "eigenvalues.png")
    rows = [
        [
            k + 1,
            float(res["eigenvalues"][k]),
            float(res["spectral"][k]),
            float(res["full_covariance"][k]),
            float(res["monte_carlo"][k]),
            f"{res['abs_err_full'][k]:.2e}",
            f"{res['abs_err_mc'][k]:.2e}",
        ]
        for k in range(10)
    ]
    header = ["i", "λ_i", "spectral v_i", "full cov.", "Monte Carlo", "|full−spec|", "|MC−spec|"]
    keep = res["spectral"] > 1e-8 * res["spectral"].max()
    summary = {
        "max_abs_err_full": float(res["abs_err_full"].max()),
        "max_abs_err_mc": float(res["abs_err_mc"].max()),
        # Over eigenvalues whose output variance is not negligible (tiny λ give v ≈ 0).
        "max_mc_err_in_std_errs": float(
            np.max(res["abs_err_mc"][keep] / res["mc_std_err"][keep], initial=0.0)
        ),
        "w2_spectral": res["w2_spectral"],
        "w2_full_covariance": res["w2_full_covariance"],
        "w2_full_covariance_eigenbasis": res["w2_full_covariance_eigenbasis"],
    }
    table = (
        markdown_table(header, rows)
        + "\n"
        + markdown_table(["quantity", "value"], [[k, v] for k, v in summary.items()])
    )
    run.finish({"settings": vars(args), "summary": summary, **res}, table)
    return summary


if __name__ == "__main__":
    main()
