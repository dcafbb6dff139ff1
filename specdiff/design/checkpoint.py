"""Resumable long runs: orbax checkpoints of an optimiser state, keyed to the run's arguments.

A run's folder holds ``run.json`` (the arguments that define the run) and orbax step
folders. Rerunning with the same arguments restores the newest step and continues; a
folder written by a run with other arguments is refused rather than silently mixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from specdiff.core.io import write_json


class RunCheckpoint:
    """Save/restore a pytree state at integer steps under ``directory``."""

    def __init__(self, directory, run_args: dict, max_to_keep: int = 2):
        self.dir = Path(directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "run.json"
        args = json.loads(json.dumps(run_args))  # normalise (tuples → lists)
        if meta.exists():
            old = json.loads(meta.read_text())
            if old != args:
                diff = sorted(k for k in set(old) | set(args) if old.get(k) != args.get(k))
                raise ValueError(
                    f"checkpoint folder {str(self.dir)!r} belongs to a run with other "
                    f"arguments (differing: {', '.join(diff)}); use another folder or the "
                    "same arguments"
                )
        else:
            write_json(meta, args)
        self.manager = ocp.CheckpointManager(
            self.dir / "steps",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, like):
        """The newest saved state (structure and dtypes of ``like``), or None."""
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def save(self, step: int, state) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
