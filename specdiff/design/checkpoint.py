"""Resumable long runs: orbax checkpoints of optimiser states, keyed to the run's arguments.

Holds ``RunCheckpoint`` (one pytree state at integer steps, used by ``design_schedule``) and
``PoolCheckpoint`` (the two tiers of a per-eigenvalue sweep: finished problems and the
in-flight pool). A run's folder holds ``run.json`` (the arguments that define the run) and
orbax step folders. Rerunning with the same arguments restores the newest step and
continues; a folder written by a run with other arguments is refused rather than silently
mixed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from specdiff.core.io import atomic_write, read_npz, write_json


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


class PoolCheckpoint:
    """Checkpoints of a per-eigenvalue sweep, in two tiers.

    Finished problems are written to ``finished.npz`` (atomically) after every segment in
    which one finished, so nothing finished is ever recomputed. The in-flight optimiser
    states of the pool are saved with orbax every ``every`` seconds; on resume the slots
    are restored from there, those whose problem has meanwhile finished are emptied, and
    problems started after that save start again (every problem's iterates depend only on
    its own start, so the result is the same).
    """

    def __init__(self, directory, run_args, every: float):
        self.store = RunCheckpoint(directory, run_args)
        self.path = self.store.dir / "finished.npz"
        self.every = float(every)
        self.last = time.perf_counter()
        self.saves = self.store.latest_step() or 0

    def restore_finished(self, out):
        if not self.path.exists():
            return out
        got = read_npz(self.path, "checkpoint", tuple(out))
        for k in out:
            if got[k].shape != out[k].shape:
                raise ValueError(f"checkpoint file {str(self.path)!r} does not match this run")
        return {k: got[k].astype(out[k].dtype) for k in out}

    def save_finished(self, out):
        with atomic_write(self.path, "wb") as f:
            np.savez(f, **out)

    def maybe_save_pool(self, pool):
        if time.perf_counter() - self.last >= self.every:
            self.saves += 1
            self.store.save(self.saves, jax.tree.map(np.asarray, pool))
            self.last = time.perf_counter()

    def close(self):
        self.store.close()
