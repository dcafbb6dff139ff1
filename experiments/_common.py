"""What every experiment shares: arguments, the results folder and its files.

An experiment is: parse arguments → call the library → ``Run.finish`` writes
``results/<name>/config.json`` (resolved arguments), ``results.json`` (numbers),
``table.md`` (the printed table) and figures, each file written atomically.

Every experiment takes ``--devices`` (``all``, a count ``n`` or ids ``0,2``): the devices
of ``specdiff.core.mesh`` its sharded computations use (it sets ``SPECDIFF_DEVICES`` for the
rest of the process). A multi-process run (``specdiff.core.multihost``) is joined when the
parser is built, before any device is touched; then only process 0 writes ``Run``'s files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from specdiff.core.io import atomic_write, write_json


class _Devices(argparse.Action):
    """``--devices SPEC``: validated against the visible devices, then made the selection of
    ``specdiff.core.mesh`` (``SPECDIFF_DEVICES``) for this process."""

    def __call__(self, parser, namespace, values, option_string=None):
        from specdiff.core import mesh

        try:
            mesh.select_devices(values)
        except ValueError as e:
            fail(str(e))
        os.environ[mesh.ENV] = values
        setattr(namespace, self.dest, values)


def forced_cpu_devices(n: int, env=None) -> dict:
    """A copy of ``env`` (default: this process's environment) for a subprocess on ``n``
    forced host CPU devices: the device count appended to its ``XLA_FLAGS`` (read when jax
    starts; the caller's own flags are kept), ``JAX_PLATFORMS=cpu``, no ``SPECDIFF_DEVICES``."""
    env = dict(os.environ if env is None else env)
    flags = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    env.update(XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
    env.pop("SPECDIFF_DEVICES", None)
    return env


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The experiment's argument parser; also turns on the persistent compilation cache
    (``SPECDIFF_CACHE_DIR``, see ``specdiff.core.compile_cache``) and joins a multi-process
    run if the environment describes one (``specdiff.core.multihost.initialize``)."""
    from specdiff.core import multihost
    from specdiff.core.compile_cache import enable_compilation_cache

    try:
        multihost.initialize()
    except ValueError as e:
        fail(str(e))
    enable_compilation_cache()
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc)
    p.add_argument("--out", default=None, help="results folder (default results/<name>)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for jax.random.key")
    p.add_argument(
        "--devices",
        action=_Devices,
        default=None,
        metavar="all|N|IDS",
        help="devices to run on: all, the first N, or ids like 0,2 (default: SPECDIFF_DEVICES, "
        "else all)",
    )
    return p


def is_writer() -> bool:
    """True in the process that writes shared files (process 0; the only one normally)."""
    import jax

    return jax.process_index() == 0


def fail(msg: str) -> None:
    """One-line message and exit code 2 for bad command-line input."""
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def to_jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if hasattr(obj, "__array__"):
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def file_field(path: str, *prefixes: str, sep: str = ":") -> str | None:
    """The value after ``sep`` on the first line of ``path`` starting with a prefix."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        if line.lower().startswith(prefixes):
            return line.split(sep, 1)[1].strip().strip('"')
    return None


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend (experiments never open windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class Run:
    """The results folder of one experiment run."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name = name
        self.dir = Path(args.out or Path("results") / name)
        self.writer = is_writer()
        if self.writer:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_json(self.dir / "config.json", to_jsonable(vars(args)))

    def path(self, filename: str) -> Path:
        return self.dir / filename

    def save_figure(self, fig, filename: str) -> Path:
        import matplotlib.pyplot as plt

        p = self.path(filename)
        if self.writer:
            with atomic_write(p, "wb") as f:
                fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return p

    def finish(self, results: dict, table: str | None = None) -> None:
        if not self.writer:
            return
        write_json(self.path("results.json"), to_jsonable(results))
        if table is not None:
            with atomic_write(self.path("table.md")) as f:
                f.write(table)
            print(table)
        print(f"wrote {self.dir}/")
