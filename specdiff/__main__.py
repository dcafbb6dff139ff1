"""``python -m specdiff``: the same command line as the ``specdiff`` console script."""

import sys

from specdiff.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
