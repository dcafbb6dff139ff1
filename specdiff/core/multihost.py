"""Multi-process runs: ``initialize()`` joins the processes with ``jax.distributed`` (issue 14).

A multi-process run is one program started once per host (or N times on one machine); after
``initialize()`` every process sees every process's devices in ``jax.devices()``, so
``specdiff.core.mesh.current_mesh()`` spans them all. What says a run is multi-process, in
order:

1. ``SPECDIFF_COORDINATOR`` (``host:port`` of process 0; else JAX's own
   ``JAX_COORDINATOR_ADDRESS``), ``SPECDIFF_NUM_PROCESSES`` and ``SPECDIFF_PROCESS_ID``:
   explicit, for N local CPU processes or any launcher; all three are needed.
2. ``SPECDIFF_MULTIHOST=1``: call ``jax.distributed.initialize()`` without arguments and let
   JAX 0.10 detect the cluster (Cloud TPU VMs through their metadata server, GKE TPU through
   ``TPU_WORKER_HOSTNAMES``, SLURM through ``SLURM_*``, Open MPI through
   ``OMPI_MCA_orte_hnp_uri``, Kubernetes indexed jobs; ``JAX_COORDINATOR_PORT`` picks the
   port). ``SPECDIFF_MULTIHOST=0`` turns every detection off.
3. Otherwise the same launchers are recognised from their environment when they started more
   than one process (``SLURM_NTASKS``/``OMPI_COMM_WORLD_SIZE`` > 1, several
   ``TPU_WORKER_HOSTNAMES``), and JAX detects the rest.

Nothing of this set: a single-process run, and ``initialize()`` does nothing.

On CPU, processes exchange data through gloo TCP collectives
(``jax_cpu_collectives_implementation``, already JAX 0.10's default; set here so an older
default cannot leave N local processes without collectives).
"""

from __future__ import annotations

import os

import jax

__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "ENV_MULTIHOST",
    "initialize",
    "is_main_process",
    "barrier",
]

ENV_COORDINATOR = "SPECDIFF_COORDINATOR"
ENV_NUM_PROCESSES = "SPECDIFF_NUM_PROCESSES"
ENV_PROCESS_ID = "SPECDIFF_PROCESS_ID"
ENV_MULTIHOST = "SPECDIFF_MULTIHOST"
_EXPLICIT = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)


def _int_env(env, name: str, low: int) -> int:
    text = env.get(name, "")
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {text!r}")
    return value


def _explicit(env) -> tuple[str, int, int] | None:
    """(coordinator, num_processes, process_id) from SPECDIFF_*, or None if none is set."""
    if not any(env.get(n) for n in _EXPLICIT):
        return None
    coord = env.get(ENV_COORDINATOR) or env.get("JAX_COORDINATOR_ADDRESS")
    missing = [n for n in _EXPLICIT[1:] if not env.get(n)]
    if not coord:
        missing.insert(0, f"{ENV_COORDINATOR} (or JAX_COORDINATOR_ADDRESS)")
    if missing:
        raise ValueError(
            f"a multi-process run needs {ENV_COORDINATOR}=host:port, {ENV_NUM_PROCESSES}=N and "
            f"{ENV_PROCESS_ID}=0..N-1; missing: {', '.join(missing)}"
        )
    host, _, port = coord.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{ENV_COORDINATOR} must be host:port (port 1..65535), got {coord!r}")
    n = _int_env(env, ENV_NUM_PROCESSES, 1)
    pid = _int_env(env, ENV_PROCESS_ID, 0)
    if pid >= n:
        raise ValueError(
            f"{ENV_PROCESS_ID} must be in 0..{n - 1} ({ENV_NUM_PROCESSES}={n}), got {pid}"
        )
    return coord, n, pid


def _launcher_detected(env) -> bool:
    """True where a cluster launcher started this process as one of several."""

    def more_than_one(name):
        try:
            return int(env.get(name, "1")) > 1
        except ValueError:
            return False

    slurm = "SLURM_JOB_ID" in env and "SLURM_PROCID" in env and more_than_one("SLURM_NTASKS")
    ompi = "OMPI_MCA_orte_hnp_uri" in env and more_than_one("OMPI_COMM_WORLD_SIZE")
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    return slurm or ompi or len([h for h in hosts.split(",") if h]) > 1


def _mode(env) -> str:
    mode = env.get(ENV_MULTIHOST, "auto").strip().lower() or "auto"
    if mode not in ("auto", "0", "1"):
        raise ValueError(f"{ENV_MULTIHOST} must be 0, 1 or auto, got {env.get(ENV_MULTIHOST)!r}")
    return mode


def initialize(env=None, *, timeout_s: int = 300) -> bool:
    """Join this process to a multi-process run when the environment says there is one.

    Call it first, before anything touches a JAX device (``experiments``' parser and the
    grid runner do). Calling it again is harmless.

    Args:
      env: the environment to read (default ``os.environ``).
      timeout_s: how long to wait for the other processes at start.

    Returns:
      True if this is (now) a multi-process run, False for a single process (nothing done).

    Raises:
      ValueError: the SPECDIFF_* variables are incomplete or malformed (the message names
        them and what is allowed).
    """
    env = os.environ if env is None else env
    if jax.distributed.is_initialized():
        return True
    mode = _mode(env)
    explicit = None if mode == "0" else _explicit(env)
    if mode == "0" or (explicit is None and mode == "auto" and not _launcher_detected(env)):
        return False
    if explicit is not None and explicit[1] == 1:
        return False  # one process: nothing to join
    # gloo is JAX 0.10's default for CPU collectives; set it explicitly (a no-op there).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit is None:
        jax.distributed.initialize(initialization_timeout=timeout_s)
    else:
        coord, n, pid = explicit
        jax.distributed.initialize(coord, n, pid, initialization_timeout=timeout_s)
    return True


def is_main_process() -> bool:
    """True in process 0 (the one that writes shared outputs)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
