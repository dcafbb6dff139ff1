"""The ``specdiff`` command line (also ``python -m specdiff``): entry point and dispatch.

Commands::

  specdiff design    [--steps S | --nfe N] [--sampler NAME[,NAME...]] [sampler parameters]
                     [--process vp|ve|flow] [--metric w2|kl|reverse_kl] [--out schedule.json]
  specdiff evaluate  SCHEDULE.json [--metric w2] [sampler flags override the file's sampler]
  specdiff compare   [--steps 5,10,20,50 | --nfe 10,20] [--sampler NAME[,NAME...]]
  specdiff export    SCHEDULE.json --format diffusers|k-diffusion|json [--steps N] [--out F]
  specdiff plot      [SCHEDULE.json ...] [--out-dir plots]

Sampler parameters: ``--eta``, ``--s-noise``, ``--s-churn``, ``--s-tmin``, ``--s-tmax``,
``--solver-type midpoint|heun``, ``--order``; a parameter the sampler does not take is an
error naming the ones it does take.

Every command takes a spectrum from one of ``--dataset NAME`` (a built-in dataset, PCA
spectrum), ``--spectrum FILE.npz`` (key ``eigenvalues``, optional ``mean``) or
``--synthetic ata|powerlaw[:alpha]`` with ``--dim D``; by default the synthetic AᵀA
spectrum (d = 50, l = 0.1, μ0 = 0.05), which needs no optional dependency.

``specdiff --devices all|N|IDS COMMAND ...`` runs the command on those devices (the mesh of
``specdiff.core.mesh``; default ``SPECDIFF_DEVICES``, else all).

Output is a human-readable table; ``--json`` prints one JSON document instead. Bad input
gives one line ``specdiff: error: ...`` on stderr and exit code 2, and writes nothing:
every input is checked and every result computed before the first file is written, and
each file is written atomically (a temporary file moved into place).

Modules: ``parser`` (argument parsers), ``common`` (shared helpers), one per command group
(``design``, ``evaluate`` with ``compare``, ``export``, ``plot``), ``figures`` (matplotlib).
"""

from __future__ import annotations

import contextlib
import sys

from specdiff.cli.common import UsageError
from specdiff.cli.design import cmd_design
from specdiff.cli.evaluate import cmd_compare, cmd_evaluate
from specdiff.cli.export import cmd_export
from specdiff.cli.parser import build_parser
from specdiff.cli.plot import cmd_plot

COMMANDS = {
    "design": cmd_design,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "export": cmd_export,
    "plot": cmd_plot,
}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _error(e: BaseException) -> None:
    print(f"specdiff: error: {_one_line(e)}", file=sys.stderr)


def main(argv=None) -> int:
    """Run the ``specdiff`` command line; returns the exit code.

    Args:
      argv: the arguments (default ``sys.argv[1:]``).

    Returns:
      0 on success, 2 for bad input (one line ``specdiff: error: ...`` on stderr, nothing
      written), 1 when a file cannot be written.

    Example:
      >>> from specdiff.cli.main import main
      >>> main(["evaluate", "--help"])  # doctest: +SKIP
    """
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        _error(e)
        return 2
    except SystemExit as e:  # --help, --version
        return int(e.code or 0)
    if args.command is None:
        _error(
            UsageError(
                "give a command: design, evaluate, compare, export or plot (specdiff --help)"
            )
        )
        return 2

    import jax

    from specdiff.core.compile_cache import enable_compilation_cache
    from specdiff.core.mesh import use_devices

    enable_compilation_cache()  # a second run loads its compiled code from disk
    previous = jax.config.jax_enable_x64
    try:
        if args.dtype == "float64" and not previous:
            jax.config.update("jax_enable_x64", True)
        with use_devices(args.devices) if args.devices is not None else contextlib.nullcontext():
            return COMMANDS[args.command](args)
    except (UsageError, ValueError) as e:
        _error(e)
        return 2
    except OSError as e:
        _error(e)
        return 1
    finally:
        if jax.config.jax_enable_x64 != previous:
            jax.config.update("jax_enable_x64", previous)


if __name__ == "__main__":
    sys.exit(main())
