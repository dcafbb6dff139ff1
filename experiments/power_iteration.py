"""Linear DDIM as power iteration (SPEC §8): the normalised output concentrates on the
leading eigenvectors, next to power iteration on the same matrix.

Data: d-dimensional Gaussian, eigenvalues λ_i = i^{−α} (λ_1/λ_2 = 2^α) in a random basis U,
N samples; the denoiser is the Wiener filter of their covariance Σ̂ = Û diag(λ̂) Ûᵀ
(``sd.linear.fit``, zero mean). Linear DDIM (VE, EDM schedule, S steps) runs from n start
vectors (``sd.linear.reverse_sample``); power iteration v ← Σ̂v/|Σ̂v| runs from the same
starts (``sd.linear.power_iteration``). Per step:

- mean alignment ⟨x_k/|x_k|, û_1⟩² (and with the true u_1), for DDIM states, DDIM x̂0
  predictions and power iteration;
- the measured growth of the ratio of the components on û_1 and û_2,
  median_n |⟨x_k,û_1⟩/⟨x_k,û_2⟩| / |⟨x_0,û_1⟩/⟨x_0,û_2⟩|, against the transfer-function
  prediction H_k(λ̂_1)/H_k(λ̂_2) (H_k = ∏_{j≤k} g_j, SPEC §3–4) and (λ̂_1/λ̂_2)^k for power
  iteration. k_eq = log(H(λ̂_1)/H(λ̂_2))/log(λ̂_1/λ̂_2) is DDIM's equivalent number of power
  iterations.

  python -m experiments.power_iteration [--dim 200] [--samples 2000] [--alpha 1] [--steps 30]
      [--starts 512] [--quick]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import specdiff as sd
from experiments._common import Run, fail, markdown_table, parser, pyplot
from specdiff import linear


def cumulative_log_gains(lam, schedule, sampler):
    """(S+1, d) log H_k(λ) = Σ_{j≤k} log g_j(λ); row 0 is 0, row S includes the final x̂0."""
    rho = schedule.log_snr
    st = sampler.mobius_step(rho[:-1], rho[1:], schedule.process)
    e = lambda v: jnp.exp(v)[:, None]  # noqa: E731
    g = (e(st.log_p) * lam + e(st.log_q)) / (e(st.log_r) * lam + e(st.log_t))
    la, ls = sd.samplers.log_alpha_sigma(rho, schedule.process)
    al, sg = jnp.exp(la[-1]), jnp.exp(ls[-1])
    g_final = al * lam / (al**2 * lam + sg**2)
    logs = jnp.log(jnp.concatenate([g, g_final[None]]))
    return np.concatenate([np.zeros((1, lam.shape[0])), np.cumsum(np.asarray(logs), 0)])


def main(argv=None):
    p = parser("power_iteration", __doc__)
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--starts", type=int, default=512)
    p.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.dim, args.samples, args.steps, args.starts = 30, 300, 10, 64
    if args.dim < 3 or args.samples < 2 or args.steps < 2 or args.starts < 2:
        fail("need dim >= 3, samples >= 2, steps >= 2 and starts >= 2")
    if not args.alpha > 0:
        fail(f"--alpha must be > 0 (a spectral gap), got {args.alpha}")
    run = Run("power_iteration", args)
    key = jax.random.key(args.seed)
    d = args.dim
    lam = np.arange(1, d + 1, dtype=float) ** (-args.alpha)
    u = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(key, 0), (d, d)))[0]
    z = jax.random.normal(jax.random.fold_in(key, 1), (args.samples, d))
    model = linear.fit((z * np.sqrt(lam)) @ u.T, center=False)
    uh = model.eigenvectors
    lam_h = np.asarray(model.eigenvalues)
    dirs = jnp.stack([uh[:, 0], uh[:, 1], u[:, 0], u[:, 1]], 1)
    sch = sd.schedules.edm(args.steps)
    smp = sd.samplers.DDIM()
    tr = linear.reverse_sample(model, sch, smp, jax.random.fold_in(key, 2), args.starts, dirs)
    st = np.asarray(tr.states)  # (S+1, n, 4)
    nrm = np.asarray(tr.sq_norm)
    align_ddim = (st[..., 0] ** 2 / nrm).mean(1)
    align_ddim_true = (st[..., 2] ** 2 / nrm).mean(1)
    x0 = np.asarray(tr.x0)
    align_x0 = (x0[..., 0] ** 2 / np.asarray(tr.x0_sq_norm)).mean(1)
    # Power iteration from the same start vectors (the DDIM start is σ_0·z: same direction).
    z0 = jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 2), 0), (args.starts, d))
    _, proj = linear.power_iteration(model.covariance(), z0, args.steps, dirs)
    proj = np.asarray(proj)
    align_pi = (proj[..., 0] ** 2).mean(1)
    align_pi_true = (proj[..., 2] ** 2).mean(1)
    # Ratio growth, measured and predicted.
    r0 = np.abs(st[0, :, 0] / st[0, :, 1])
    meas_ratio = np.median(np.abs(st[..., 0] / st[..., 1]) / r0, axis=1)
    meas_ratio_true = np.median(
        np.abs(st[..., 2] / st[..., 3]) / np.abs(st[0, :, 2] / st[0, :, 3]), axis=1
    )
    logh = cumulative_log_gains(jnp.asarray(lam_h), sch, smp)
    pred_ratio = np.exp(logh[:, 0] - logh[:, 1])
    pi_ratio = (lam_h[0] / lam_h[1]) ** np.arange(args.steps + 1)
    k_eq = float(np.log(pred_ratio[-1]) / np.log(lam_h[0] / lam_h[1]))
    per_step_rate = np.diff(np.log(pred_ratio))
    peak = int(np.argmax(per_step_rate))
    res = {
        "eigenvalues_true_top": lam[:5],
        "eigenvalues_sample_top": lam_h[:5],
        "sample_gap_ratio": float(lam_h[0] / lam_h[1]),
        "overlap_uhat1_u1": float(jnp.dot(uh[:, 0], u[:, 0]) ** 2),
        "sigmas": np.asarray(sch.sigma),
        "align_ddim_state": align_ddim,
        "align_ddim_state_true_u1": align_ddim_true,
        "align_ddim_x0": align_x0,
        "align_power_iteration": align_pi,
        "align_power_iteration_true_u1": align_pi_true,
        "ratio_measured": meas_ratio,
        "ratio_measured_true_basis": meas_ratio_true,
        "ratio_predicted_H": pred_ratio,
        "ratio_power_iteration": pi_ratio,
        "max_rel_err_ratio_measured_vs_H": float(np.max(np.abs(meas_ratio / pred_ratio - 1))),
        "ddim_equivalent_power_iterations": k_eq,
        "peak_rate_step": peak,
        "peak_rate_sigma": float(np.asarray(sch.sigma)[peak]),
        "final_ratio_H": float(pred_ratio[-1]),
        "sqrt_gap_ratio": float(np.sqrt(lam_h[0] / lam_h[1])),
        "power_iterations_to_match_ddim_alignment": int(
            np.argmax(align_pi >= align_ddim[-1]) if (align_pi >= align_ddim[-1]).any() else -1
        ),
    }
    sel = np.unique(np.linspace(0, args.steps, 7).astype(int))
    rows = [
        [
            int(k),
            float(res["sigmas"][min(k, args.steps - 1)]) if k < args.steps else 0.0,
            float(align_ddim[k]),
            float(align_x0[min(k, args.steps - 1)]),
            float(align_pi[k]),
            float(meas_ratio[k]),
            float(pred_ratio[k]),
            float(pi_ratio[k]),
        ]
        for k in sel
    ]
    table = markdown_table(
        [
            "step k",
            "σ_k",
            "align DDIM x_k",
            "align DDIM x̂0",
            "align power it.",
            "ratio measured",
            "H_k(λ̂1)/H_k(λ̂2)",
            "(λ̂1/λ̂2)^k",
        ],
        rows,
    )
    table += (
        f"\nλ̂1/λ̂2 = {res['sample_gap_ratio']:.3f}; final H ratio {res['final_ratio_H']:.3f} "
        f"(√(λ̂1/λ̂2) = {res['sqrt_gap_ratio']:.3f}); DDIM ≈ {k_eq:.2f} power iterations; "
        f"max rel. error measured vs predicted ratio {res['max_rel_err_ratio_measured_vs_H']:.2e}"
        f"; fastest growth at step {peak} (σ = {res['peak_rate_sigma']:.3g})\n"
    )
    _figures(run, res, args)
    run.finish(res, table)


def _figures(run, r, args):
    plt = pyplot()

    k = np.arange(args.steps + 1)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    ax.plot(k, r["align_ddim_state"], "o-", ms=3, label="DDIM state x_k")
    ax.plot(k[1:], r["align_ddim_x0"], "s-", ms=3, label="DDIM x̂0(x_k)")
    ax.plot(k, r["align_power_iteration"], "^-", ms=3, label="power iteration on Σ̂")
    ax.plot(k, r["align_ddim_state_true_u1"], ":", label="DDIM state vs true u₁")
    ax.set_xlabel("step / iteration k")
    ax.set_ylabel("mean ⟨v/|v|, û₁⟩²")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.semilogy(k, r["ratio_measured"], "o", ms=3, label="DDIM measured")
    ax.semilogy(k, r["ratio_predicted_H"], "-", label="H_k(λ̂₁)/H_k(λ̂₂)")
    ax.semilogy(k, r["ratio_power_iteration"], "--", label="(λ̂₁/λ̂₂)^k")
    ax.set_ylim(0.5, max(10.0, 2 * float(np.max(r["ratio_predicted_H"]))))
    ax.set_xlabel("step / iteration k")
    ax.set_ylabel("growth of ⟨·,û₁⟩/⟨·,û₂⟩")
    ax.legend(fontsize=7)
    run.save_figure(fig, "power_iteration.png")


if __name__ == "__main__":
    main()
