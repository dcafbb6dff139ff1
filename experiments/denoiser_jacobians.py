"""Jacobians of a trained denoiser against the linear theory (SPEC §8, last item).

The denoiser: a shipped ``sd.denoisers`` U-Net for the dataset if one exists
(``sd.denoisers.shipped_denoisers()``), otherwise a small flax NNX MLP trained here
(ε-prediction, VP, conditioned on log-SNR ρ, DDPM linear-β training levels; seconds).
Both are called as ``eps(x, log_snr)`` on VP states. In VE coordinates (x = x_VP/α,
s = σ/α) the denoiser is D_s(x) = (αx − σ ε̂(αx, ρ))/α.

At each noise level s and for several test points x = x0 + s·z, the top-k singular triplets
of J = ∂D_s/∂x are computed matrix-free (``sd.linear.top_singular_vectors``: jvp/vjp and
subspace iteration; one dense SVD at the first point checks them). The linear (Wiener)
theory with the training set's PCA (λ_i, u_i): J = Σ(Σ + s²I)⁻¹, singular values
λ_i/(λ_i + s²), singular vectors u_i. Reported per level: the singular values against
λ_i/(λ_i + s²), the alignment of the top-k right singular subspace with the top-k PCA
subspace (|U_kᵀV_k|²_F / k; 1 = the same subspace, k/d = chance), the mean best squared
overlap of each singular vector with a single PCA vector, and the mean radial frequency of
the singular vectors against that of the PCA vectors.

  python -m experiments.denoiser_jacobians [--dataset digits] [--train-steps 3000]
      [--levels 0.05 0.1 0.2 0.5 1 2] [--points 8] [--k 8] [--quick]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from experiments._common import Run, fail, markdown_table, parser, pyplot
from specdiff import linear


class MLPDenoiser(nnx.Module):
    """ε̂(x, ρ) for flattened VP states: a residual MLP with a Fourier embedding of ρ."""

    def __init__(self, d: int, width: int, rngs: nnx.Rngs):
        self.freqs = jnp.exp(jnp.linspace(jnp.log(0.05), jnp.log(4.0), 16))
        self.inp = nnx.Linear(d + 32, width, rngs=rngs)
        self.h1 = nnx.Linear(width, width, rngs=rngs)
        self.h2 = nnx.Linear(width, width, rngs=rngs)
        self.out = nnx.Linear(width, d, rngs=rngs)

    def __call__(self, x, log_snr):
        n = x.shape[0]
        xf = x.reshape(n, -1)
        rho = jnp.broadcast_to(jnp.asarray(log_snr, xf.dtype), (n,))
        f = rho[:, None] * self.freqs[None, :]
        h = nnx.silu(self.inp(jnp.concatenate([xf, jnp.sin(f), jnp.cos(f)], -1)))
        h = h + nnx.silu(self.h1(h))
        h = h + nnx.silu(self.h2(h))
        return self.out(h).reshape(x.shape)


@nnx.jit
def _train_step(model, opt, x0, key, rho_table):
    k1, k2 = jax.random.split(key)
    rho = jax.random.choice(k1, rho_table, (x0.shape[0],))
    eps = jax.random.normal(k2, x0.shape, x0.dtype)
    b = (slice(None),) + (None,) * (x0.ndim - 1)
    a, s = jnp.sqrt(jax.nn.sigmoid(rho))[b], jnp.sqrt(jax.nn.sigmoid(-rho))[b]

    def loss_fn(m):
        return jnp.mean((m(a * x0 + s * eps, rho) - eps) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss


def train_mlp(x_train, steps, key, width=256, batch=256, lr=2e-3):
    from specdiff.nn.denoisers import training_log_snr

    d = int(np.prod(x_train.shape[1:]))
    model = MLPDenoiser(d, width, nnx.Rngs(int(jax.random.randint(key, (), 0, 2**30))))
    sched = optax.cosine_decay_schedule(lr, max(steps, 1))
    opt = nnx.Optimizer(model, optax.adam(sched), wrt=nnx.Param)
    rho_table = jnp.asarray(training_log_snr(), jnp.float32)
    x = jnp.asarray(x_train, jnp.float32)
    loss = None
    for i in range(steps):  # training steps, not sampler steps: one jitted call each
        ki = jax.random.fold_in(key, i)
        idx = jax.random.randint(jax.random.fold_in(ki, 1), (batch,), 0, x.shape[0])
        loss = _train_step(model, opt, x[idx], ki, rho_table)
    return model, float(loss) if loss is not None else None


def _denoise_ve(graphdef, shape, x, state, s):
    """D_s(x) for one flattened VE state x (d,): x̂0 from the ε-prediction at ρ = −2 log s."""
    model = nnx.merge(graphdef, state)
    a = 1.0 / jnp.sqrt(1.0 + s**2)
    sig = s * a
    xv = (a * x)[None]
    eps = model(xv.reshape((1, *shape)), -2.0 * jnp.log(s)).reshape(1, -1)
    return ((xv - sig * eps) / a)[0]


def radial_frequency(vectors, shape):
    if len(shape) != 2:
        return np.full(vectors.shape[1], np.nan)
    h, w = shape
    v = np.asarray(vectors).T.reshape(-1, h, w)
    p = np.abs(np.fft.fft2(v)) ** 2
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    return (p * f).sum((1, 2)) / p.sum((1, 2))


def main(argv=None):
    p = parser("denoiser_jacobians", __doc__)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--train-steps", type=int, default=3000)
    p.add_argument("--levels", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.5, 1.0, 2.0])
    p.add_argument("--points", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--quick", action="store_true", help="tiny run (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.train_steps, args.levels, args.points, args.k, args.iters = 100, [0.1, 1.0], 2, 4, 15
    if min(args.levels) <= 0 or args.points < 1 or args.k < 1 or args.train_steps < 0:
        fail("need levels > 0, points >= 1, k >= 1, train-steps >= 0")
    from specdiff import datasets, denoisers

    try:
        x_train = np.asarray(datasets.load_dataset(args.dataset, split="train"), np.float32)
        x_test = np.asarray(datasets.load_dataset(args.dataset, split="test"), np.float32)
    except ValueError as e:
        fail(str(e))
    shape = x_train.shape[1:]
    d = int(np.prod(shape))
    if args.k + 4 > d:
        fail(f"--k must be at most d − 4 = {d - 4}")
    run = Run("denoiser_jacobians", args)
    key = jax.random.key(args.seed)
    if args.dataset in denoisers.shipped_denoisers():
        model, source, loss = denoisers.load_denoiser(args.dataset), "shipped U-Net", None
    else:
        model, loss = train_mlp(x_train, args.train_steps, jax.random.fold_in(key, 0))
        source = f"MLP trained here ({args.train_steps} steps)"
    graphdef, state = nnx.split(model)
    fn = functools.partial(_denoise_ve, graphdef, tuple(shape))  # one object: one compilation
    # The network's output and its dense Jacobian compiled once each, not run op by op (the
    # U-Net eagerly took ~10 s of --quick's ~21 s, compiling every operation on first use).
    denoise, jacobian = jax.jit(fn), jax.jit(jax.jacfwd(fn))
    pca = linear.fit(x_train.reshape(len(x_train), -1).astype(np.float64))
    lam = np.asarray(pca.eigenvalues)
    upca = np.asarray(pca.eigenvectors)
    k = args.k
    freq_pca = radial_frequency(upca[:, :k], shape)
    per_level, rows = [], []
    x0s = jnp.asarray(x_test[: args.points].reshape(args.points, -1))
    for li, s in enumerate(args.levels):
        kl = jax.random.fold_in(key, 100 + li)
        sv, align, best, freq, resid, mse_net, mse_lin = [], [], [], [], [], [], []
        for j in range(args.points):
            z = jax.random.normal(jax.random.fold_in(kl, j), (d,))
            x = x0s[j] + s * z
            trip = linear.top_singular_vectors(
                fn,
                x,
                state,
                jnp.float32(s),
                k=k,
                key=jax.random.fold_in(kl, 10_000 + j),
                iters=args.iters,
            )
            v = np.asarray(trip.right, np.float64)
            ov = (upca.T @ v) ** 2  # (d, k)
            sv.append(np.asarray(trip.values))
            align.append(ov[:k].sum() / k)
            best.append(ov.max(0).mean())
            freq.append(np.nanmean(radial_frequency(v, shape)))
            resid.append(float(np.max(np.asarray(trip.residual))))
            mse_net.append(float(jnp.mean((denoise(x, state, jnp.float32(s)) - x0s[j]) ** 2)))
            mse_lin.append(float(np.mean((linear.denoise(pca, x, s) - x0s[j]) ** 2)))
            if li == 0 and j == 0:
                jac = np.asarray(jacobian(x, state, jnp.float32(s)), np.float64)
                dense = np.linalg.svd(jac, compute_uv=False)[:k]
                dense_check = float(np.max(np.abs(np.asarray(trip.values) / dense - 1)))
        theory = lam[:k] / (lam[:k] + s**2)
        sv = np.array(sv).mean(0)
        lvl = {
            "noise": s,
            "singular_values_mean": sv,
            "singular_values_linear_theory": theory,
            "pca_subspace_alignment": float(np.mean(align)),
            "pca_subspace_alignment_chance": k / d,
            "best_single_pca_overlap": float(np.mean(best)),
            "radial_frequency_jacobian": float(np.mean(freq)),
            "radial_frequency_pca_topk": float(np.nanmean(freq_pca)),
            "max_residual": float(np.max(resid)),
            "mse_trained": float(np.mean(mse_net)),
            "mse_wiener": float(np.mean(mse_lin)),
        }
        per_level.append(lvl)
        rows.append(
            [
                s,
                float(sv[0]),
                float(theory[0]),
                float(sv[k - 1]),
                float(theory[k - 1]),
                lvl["pca_subspace_alignment"],
                lvl["best_single_pca_overlap"],
                lvl["radial_frequency_jacobian"],
                lvl["mse_trained"],
                lvl["mse_wiener"],
            ]
        )
    res = {
        "source": source,
        "dataset": args.dataset,
        "d": d,
        "k": k,
        "final_train_loss": loss,
        "pca_eigenvalues_top": lam[:k],
        "radial_frequency_pca_topk": freq_pca,
        "dense_svd_check_max_rel_err": dense_check,
        "levels": per_level,
    }
    table = f"{args.dataset} (d={d}), denoiser: {source}, k={k}, {args.points} points/level\n\n"
    table += markdown_table(
        [
            "s",
            "σ₁(J)",
            "λ₁/(λ₁+s²)",
            f"σ_{k}(J)",
            f"λ_{k}/(λ_{k}+s²)",
            "PCA subspace align",
            "best PCA overlap",
            "radial freq J",
            "MSE net",
            "MSE Wiener",
        ],
        rows,
    )
    table += (
        f"\nchance alignment k/d = {k / d:.3f}; PCA top-{k} radial freq "
        f"{np.nanmean(freq_pca):.3f}; matrix-free vs dense SVD max rel. err "
        f"{dense_check:.1e}\n"
    )
    _figures(run, res, args)
    run.finish(res, table)


def _figures(run, res, args):
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    ax = axes[0]
    for lvl in res["levels"]:
        (ln,) = ax.plot(lvl["singular_values_mean"], "o", ms=4)
        ax.plot(
            lvl["singular_values_linear_theory"],
            "-",
            color=ln.get_color(),
            label=f"s={lvl['noise']:g}",
        )
    ax.set_xlabel("index i")
    ax.set_ylabel("σ_i(∂D/∂x)  (dots) vs λ_i/(λ_i+s²)")
    ax.legend(fontsize=7)
    ax = axes[1]
    s = [lvl["noise"] for lvl in res["levels"]]
    ax.semilogx(
        s,
        [lvl["pca_subspace_alignment"] for lvl in res["levels"]],
        "o-",
        label="top-k subspace vs PCA",
    )
    ax.semilogx(
        s,
        [lvl["best_single_pca_overlap"] for lvl in res["levels"]],
        "s-",
        label="best single PCA overlap",
    )
    ax.axhline(res["k"] / res["d"], color="grey", ls=":", label="chance k/d")
    ax.set_xlabel("noise level s")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    run.save_figure(fig, "jacobians.png")


if __name__ == "__main__":
    main()
