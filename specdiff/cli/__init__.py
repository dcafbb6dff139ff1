"""The ``specdiff`` command line: one module per command group, ``main`` dispatches.

Imports: anything in specdiff (it is the top layer, beside ``experiments``).
"""

from specdiff.cli.main import main

__all__ = ["main"]
