"""What every experiment shares: arguments, the results folder and its files.

An experiment is: parse arguments → call the library → ``Run.finish`` writes
``results/<name>/config.json`` (resolved arguments), ``results.json`` (numbers),
``table.md`` (the printed table) and figures, each file written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from specdiff.core.io import atomic_write, write_json


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The experiment's argument parser; also turns on the persistent compilation cache
    (``SPECDIFF_CACHE_DIR``, see ``specdiff.core.compile_cache``)."""
    from specdiff.core.compile_cache import enable_compilation_cache

    enable_compilation_cache()
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=doc)
    p.add_argument("--out", default=None, help="results folder (default results/<name>)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed for jax.random.key")
    return p


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
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.dir / "config.json", to_jsonable(vars(args)))

    def path(self, filename: str) -> Path:
        return self.dir / filename

    def save_figure(self, fig, filename: str) -> Path:
        import matplotlib.pyplot as plt

        p = self.path(filename)
        with atomic_write(p, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return p

    def finish(self, results: dict, table: str | None = None) -> None:
        write_json(self.path("results.json"), to_jsonable(results))
        if table is not None:
            with atomic_write(self.path("table.md")) as f:
                f.write(table)
            print(table)
        print(f"wrote {self.dir}/")
