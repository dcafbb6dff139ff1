"""The order in which eigen-directions emerge during sampling (SPEC §8).

Two data sets, one schedule (EDM/Karras, VE, S steps, noisiest first):

1. Low rank: d dimensions, r spikes λ_1 > … > λ_r (geometric), N = d/γ samples. At each
   sampler level s_k the denoiser is estimated from N noisy samples
   (``sd.linear.fit_noisy``, bulk-edge "spiked" shrinkage). Measured: the first step at
   which |⟨û_i(s_k), u_i⟩|² ≥ ½;
   theory: the first step with s_k² ≤ ``sd.spiked.emergence_noise_var(λ_i, γ, ½)``; the
   BBP step (s_k² < λ_i/√γ) and the infinite-data step (s_k² ≤ λ_i, Wiener gain ½) beside
   it. Also from the exact propagation of the reverse process with these per-level
   denoisers (``sd.linear.reverse_moments``): the first step at which the variance of
   ⟨x̂0(x_k), u_i⟩ reaches (and stays above) half of its final value.
2. Natural-image patches (``sd.datasets.load_dataset("patches_gray")``, 32×32; a synthetic
   stationary 1/f^α field if the dataset is unavailable): the Wiener denoiser of the
   sample covariance (``sd.linear.fit``); the emergence step of each PCA direction from
   Monte-Carlo sampling (``sd.linear.reverse_sample``: variance of ⟨x̂0(x_k), û_i⟩ across
   samples reaching half of its final value) and from the exact moments, against the
   rule s_k² ≤ λ_i, and against each direction's spatial frequency.

  python -m experiments.emergence_order [--steps 40] [--dim 400] [--rank 8] [--gamma 0.5]
      [--patch-samples 400] [--quick]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import spearmanr

import specdiff as sd
from experiments._common import Run, fail, markdown_table, parser, pyplot
from specdiff import linear, spiked


def first_at_least(curve, frac):
    """First row k from which on curve[j] ≥ frac·curve[-1] for all j ≥ k (per column).

    "From which on" (1 + the last row below) rather than the first crossing, so that a
    transient from a noise-fitted direction at high noise does not count as emergence.
    """
    c = np.asarray(curve)
    below = c < frac * c[-1:]
    last_below = len(c) - 1 - np.argmax(below[::-1], axis=0)
    return np.where(below.any(0), last_below + 1, 0)


def low_rank(d, rank, gamma, steps, key) -> dict:
    lam = 16.0 * (0.01) ** (np.arange(rank) / max(rank - 1, 1))  # 16 … 0.16
    n = int(round(d / gamma))
    q = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(key, 0), (d, rank)))[0]
    z = jax.random.normal(jax.random.fold_in(key, 1), (n, rank))
    x0 = (z * np.sqrt(lam)) @ q.T
    sch = sd.schedules.edm(steps)
    sig = np.asarray(sch.sigma)
    models = linear.fit_noisy(
        x0, sch.sigma, jax.random.fold_in(key, 2), center=False, shrinkage="spiked"
    )
    ov = np.asarray(jnp.diagonal(linear.eigenvector_overlaps(models, q), axis1=-2, axis2=-1))
    th = np.asarray(spiked.overlap(sig[:, None], lam[None, :], gamma))
    hit = ov >= 0.5
    measured = np.where(hit.any(0), hit.argmax(0), steps)
    mom = linear.reverse_moments(models, sch, sd.samplers.DDIM(), directions=q)
    return {
        "eigenvalues": lam,
        "n": n,
        "sigmas": sig,
        "overlap_sim": ov,
        "overlap_theory": th,
        "step_overlap_half_measured": measured,
        "step_overlap_half_theory": np.asarray(
            spiked.emergence_step(sig, spiked.emergence_noise_var(lam, gamma, 0.5))
        ),
        "step_bbp_theory": np.asarray(spiked.emergence_step(sig, lam / np.sqrt(gamma))),
        "step_wiener_half_infinite_data": np.asarray(spiked.emergence_step(sig, lam)),
        "step_x0_var_half_propagated": first_at_least(mom.x0_var, 0.5),
        "x0_var_propagated": np.asarray(mom.x0_var),
    }


def _patch_data(n_train, quick, key):
    """(samples (N, h, w), source name)."""
    try:
        from specdiff import datasets

        opts = {"size": 8} if quick else {}
        x = np.asarray(datasets.load_dataset("patches_gray", split="train", **opts), np.float64)
        if x.ndim == 4:
            x = x[..., 0]
        idx = np.random.default_rng(0).permutation(len(x))[:n_train]
        return x[idx], "patches_gray"
    except Exception as e:  # dataset module or bundled photos missing: synthetic fallback
        print(f"patches_gray unavailable ({e}); using a synthetic 1/f^2 stationary field")
    h = 8 if quick else 32
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(h)[None, :] ** 2)
    psd = 1.0 / (f**2 + (1.0 / h) ** 2)
    w = np.asarray(jax.random.normal(key, (n_train, h, h)), np.float64)
    x = np.real(np.fft.ifft2(np.fft.fft2(w) * np.sqrt(psd)))
    return x / x.std(), "synthetic_power_law"


def radial_frequency(vectors, h, w):
    """Energy-weighted mean |f| (cycles/pixel) of each column reshaped to (h, w)."""
    v = np.asarray(vectors).T.reshape(-1, h, w)
    p = np.abs(np.fft.fft2(v)) ** 2
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    return (p * f).sum((1, 2)) / p.sum((1, 2))


def patches(n_train, n_mc, n_dirs, steps, quick, key) -> dict:
    x, source = _patch_data(n_train, quick, jax.random.fold_in(key, 0))
    h, w = x.shape[1:]
    model = linear.fit(x)
    sch = sd.schedules.edm(steps)
    sig = np.asarray(sch.sigma)
    lam = np.asarray(model.eigenvalues[:n_dirs])
    p = model.eigenvectors[:, :n_dirs]
    mom = linear.reverse_moments(model, sch, sd.samplers.DDIM(), directions=p)
    tr = linear.reverse_sample(
        model, sch, sd.samplers.DDIM(), jax.random.fold_in(key, 1), n_mc, directions=p
    )
    mc_var = np.asarray(tr.x0).var(1, ddof=1)  # (S, r)
    step_mc = first_at_least(mc_var, 0.5)
    step_exact = first_at_least(mom.x0_var, 0.5)
    step_rule = np.asarray(spiked.emergence_step(sig, lam))
    freq = radial_frequency(p, h, w)
    return {
        "source": source,
        "shape": [h, w],
        "n_train": int(len(x)),
        "n_monte_carlo": n_mc,
        "eigenvalues": lam,
        "radial_frequency": freq,
        "sigmas": sig,
        "step_x0_var_half_monte_carlo": step_mc,
        "step_x0_var_half_exact": step_exact,
        "step_rule_s2_le_lambda": step_rule,
        "mc_vs_exact_max_step_diff": int(np.max(np.abs(step_mc - step_exact))),
        "spearman_step_vs_eigenvalue": float(spearmanr(step_mc, lam)[0]),
        "spearman_step_vs_frequency": float(spearmanr(step_mc, freq)[0]),
        "spearman_frequency_vs_eigenvalue": float(spearmanr(freq, lam)[0]),
        "x0_var_monte_carlo": mc_var,
        "x0_var_exact": np.asarray(mom.x0_var),
    }


def main(argv=None):
    p = parser("emergence_order", __doc__)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--dim", type=int, default=400)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--patch-samples", type=int, default=6000)
    p.add_argument("--mc-samples", type=int, default=400)
    p.add_argument("--directions", type=int, default=64)
    p.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.dim, args.rank = 12, 40, 4
        args.patch_samples, args.mc_samples, args.directions = 500, 100, 16
    if args.steps < 2 or args.rank < 1 or args.dim <= args.rank or not args.gamma > 0:
        fail("need steps >= 2, rank >= 1, dim > rank and gamma > 0")
    if args.mc_samples < 2 or args.directions < 2 or args.patch_samples < 2:
        fail("need mc-samples, directions and patch-samples >= 2")
    run = Run("emergence_order", args)
    key = jax.random.key(args.seed)
    lr = low_rank(args.dim, args.rank, args.gamma, args.steps, jax.random.fold_in(key, 0))
    pa = patches(
        args.patch_samples,
        args.mc_samples,
        args.directions,
        args.steps,
        args.quick,
        jax.random.fold_in(key, 1),
    )
    if pa["eigenvalues"].shape[0] < args.directions:
        fail("--directions exceeds the patch dimension")
    lr_rows = [
        [
            i + 1,
            float(lr["eigenvalues"][i]),
            int(lr["step_overlap_half_measured"][i]),
            int(lr["step_overlap_half_theory"][i]),
            int(lr["step_bbp_theory"][i]),
            int(lr["step_wiener_half_infinite_data"][i]),
            int(lr["step_x0_var_half_propagated"][i]),
        ]
        for i in range(args.rank)
    ]
    table = "Low rank (d={}, N={}, γ={}), EDM schedule, S={}\n\n".format(
        args.dim, lr["n"], args.gamma, args.steps
    )
    table += markdown_table(
        [
            "i",
            "λ_i",
            "step overlap≥½ (sim)",
            "(theory)",
            "BBP step",
            "s²≤λ step",
            "x̂0 var ≥ ½ (propagated)",
        ],
        lr_rows,
    )
    table += "\nPatches ({}, {}×{}, N={}): first {} PCA directions\n\n".format(
        pa["source"], *pa["shape"], pa["n_train"], args.directions
    )
    sel = np.unique(np.linspace(0, args.directions - 1, 8).astype(int))
    table += markdown_table(
        ["i", "λ_i", "radial freq", "step MC", "step exact", "s²≤λ step"],
        [
            [
                int(i) + 1,
                float(pa["eigenvalues"][i]),
                float(pa["radial_frequency"][i]),
                int(pa["step_x0_var_half_monte_carlo"][i]),
                int(pa["step_x0_var_half_exact"][i]),
                int(pa["step_rule_s2_le_lambda"][i]),
            ]
            for i in sel
        ],
    )
    table += (
        f"\nSpearman(step, λ) = {pa['spearman_step_vs_eigenvalue']:.3f}, "
        f"Spearman(step, frequency) = {pa['spearman_step_vs_frequency']:.3f}, "
        f"Spearman(frequency, λ) = {pa['spearman_frequency_vs_eigenvalue']:.3f}; "
        f"max |step MC − step exact| = {pa['mc_vs_exact_max_step_diff']}\n"
    )
    _figures(run, lr, pa)
    run.finish({"low_rank": lr, "patches": pa}, table)


def _figures(run, lr, pa):
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    s2 = lr["sigmas"] ** 2
    for i, lam in enumerate(lr["eigenvalues"]):
        (line,) = ax.plot(s2, lr["overlap_sim"][:, i], "o", ms=3)
        ax.plot(
            s2, lr["overlap_theory"][:, i], "-", color=line.get_color(), lw=1, label=f"λ={lam:.2g}"
        )
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("noise variance s_k² (sampling runs left → right)")
    ax.set_ylabel("|⟨û_i(s), u_i⟩|²  (dots: sim, lines: theory)")
    ax.legend(fontsize=6)
    ax = axes[1]
    ax.scatter(
        pa["eigenvalues"],
        pa["step_x0_var_half_monte_carlo"],
        c=pa["radial_frequency"],
        cmap="viridis",
        s=12,
        label="Monte Carlo",
    )
    ax.plot(pa["eigenvalues"], pa["step_rule_s2_le_lambda"], "k.", ms=3, label="s² ≤ λ rule")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue λ_i (colour: radial frequency)")
    ax.set_ylabel("emergence step")
    ax.set_title(pa["source"])
    ax.legend(fontsize=7)
    run.save_figure(fig, "emergence.png")


if __name__ == "__main__":
    main()
