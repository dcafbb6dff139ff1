"""Train the ε-prediction U-Net of ``specdiff.denoisers`` on a built-in dataset.

    python -m experiments.train_denoiser --dataset digits
    python -m experiments.train_denoiser --dataset patches_gray

The training state is checkpointed with orbax in ``--workdir`` (default
``results/train_denoiser/<dataset>``); run the same command again after an interruption and
it resumes from the newest checkpoint. At the end the EMA model is exported to ``--export``
(default ``specdiff/nn/weights/denoisers/<dataset>``, the shipped location) together with
``training.json`` and ``TRAINING.md`` (exact command, seed, steps, wall time, final loss).

    python -m experiments.train_denoiser --dataset digits --classifier

trains the dataset's feature classifier for the FD-classifier/KID metrics instead
(``specdiff.metrics``; exported to ``specdiff/nn/weights/classifiers/<dataset>``).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shlex
import sys
from pathlib import Path

import jax

from experiments._common import fail, parser
from specdiff.core.io import atomic_write, write_json


def main(argv=None) -> None:
    from specdiff import denoisers

    p = parser("train_denoiser", __doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help=f"one of {sorted(denoisers.DEFAULT_CONFIGS)}")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default per dataset)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--workdir", default=None, help="checkpoints (default results/train_denoiser/<dataset>)"
    )
    p.add_argument("--export", default=None, help="export folder (default the shipped location)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--classifier", action="store_true", help="train the feature classifier instead")
    args = p.parse_args(argv)
    if args.classifier:
        return _classifier(args, argv)
    if args.dataset not in denoisers.DEFAULT_CONFIGS:
        fail(
            f"unknown dataset {args.dataset!r}; allowed: "
            f"{', '.join(sorted(denoisers.DEFAULT_CONFIGS))}"
        )
    cfg = denoisers.DEFAULT_CONFIGS[args.dataset]
    changes = {}
    if args.steps is not None:
        if args.steps < 1:
            fail(f"--steps must be >= 1, got {args.steps}")
        changes["steps"] = args.steps
    if args.batch_size is not None:
        if args.batch_size < 1:
            fail(f"--batch-size must be >= 1, got {args.batch_size}")
        changes["batch_size"] = args.batch_size
    cfg = dataclasses.replace(cfg, **changes)
    workdir = Path(args.workdir or Path(args.out or "results/train_denoiser") / args.dataset)
    export = Path(args.export or denoisers.SHIPPED_DIR / args.dataset)

    try:
        model, info = denoisers.train(
            cfg, workdir, jax.random.key(args.seed), progress=not args.no_progress
        )
    except ValueError as e:
        fail(str(e))
    command = "python -m experiments.train_denoiser " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    n_params = sum(x.size for x in jax.tree.leaves(__import__("flax").nnx.state(model)))
    record = {
        "dataset": args.dataset,
        "command": command,
        "seed": args.seed,
        "steps": cfg.steps,
        "final_loss": info["final_loss"],
        "final_loss_definition": "mean ε-MSE of the last 200 optimiser steps (training batches)",
        "wall_time_s": round(info["wall_time_s"], 1),
        "resumed_from_step": info["resumed_from"],
        "parameters": int(n_params),
        "config": cfg.to_dict(),
        "machine": f"{platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s)",
        "jax": jax.__version__,
    }
    denoisers.save_denoiser(model, export, metadata=record)
    write_json(export / "training.json", record)
    md = training_markdown(record)
    with atomic_write(export / "TRAINING.md") as f:
        f.write(md)
    print(json.dumps({k: record[k] for k in ("dataset", "steps", "final_loss", "wall_time_s")}))
    print(f"exported {export}/")


def training_markdown(record: dict) -> str:
    """TRAINING.md for a shipped denoiser, from its training.json record."""
    model = record["config"]["model"]
    h, w = model["shape"]
    p = model["patch"]
    if p == 1:
        layout = (
            f"{h}×{w} processed as is (no padding or upsampling), downsampled once to "
            f"{h // 2}×{w // 2}"
        )
    else:
        layout = (
            f"{h}×{w} folded by space-to-depth {p}×{p} into {h // p}×{w // p}×{p * p} (no "
            "padding or upsampling; unfolded at the output), downsampled once to "
            f"{h // (2 * p)}×{w // (2 * p)}"
        )
    wall = f"{record['wall_time_s']:.0f} s"
    if record.get("resumed_from_step"):
        wall += f" (last call; resumed from step {record['resumed_from_step']})"
    return (
        f"# `{record['dataset']}` denoiser\n\n"
        f"ε-prediction U-Net ({record['parameters']:,} parameters), VP, trained with the DDPM "
        "linear-β schedule (T = 1000) and conditioned on the continuous log-SNR; output "
        "ε̂ = σ·x + α·F (v-parametrised).\n\n"
        f"- command: `{record['command']}`\n"
        f"- seed: {record['seed']}\n"
        f"- steps: {record['steps']} (batch {record['config']['batch_size']}, Adam lr "
        f"{record['config']['lr']}, EMA {record['config']['ema_decay']})\n"
        f"- wall time: {wall} on {record['machine']} (2 shared cores)\n"
        f"- final training loss: {record['final_loss']:.4f} ({record['final_loss_definition']})\n"
        f"- layout: {layout}\n"
        f"- model config: `{json.dumps(model)}`\n\n"
        f"Load with `specdiff.denoisers.load_denoiser({record['dataset']!r})`.\n"
    )


def _classifier(args, argv) -> None:
    import time

    from specdiff import metrics

    if args.dataset not in metrics.CLASSIFIER_CONFIGS:
        fail(
            f"no feature classifier for {args.dataset!r}; allowed: "
            f"{', '.join(sorted(metrics.CLASSIFIER_CONFIGS))}"
        )
    steps = args.steps or 2000
    if steps < 1:
        fail(f"--steps must be >= 1, got {steps}")
    t0 = time.time()
    clf, info = metrics.train_classifier(
        args.dataset, jax.random.key(args.seed), steps=steps, batch_size=args.batch_size or 128
    )
    command = "python -m experiments.train_denoiser " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    record = {
        "dataset": args.dataset,
        "command": command,
        "seed": args.seed,
        **info,
        "wall_time_s": round(time.time() - t0, 1),
        "config": clf.config.to_dict(),
        "jax": jax.__version__,
    }
    export = Path(args.export or metrics.CLASSIFIER_DIR / args.dataset)
    metrics.save_classifier(clf, export, metadata=record)
    write_json(export / "training.json", record)
    print(json.dumps(record))
    print(f"exported {export}/")


if __name__ == "__main__":
    main()
