"""CLI: `python -m eulerforge_trl.train PRESET [--set key=value ...] [--output-dir DIR]`.

Also `eulerforge train --preset PRESET ...` and `accelerate launch -m eulerforge_trl.train ...`.
User mistakes print one `error: ...` line and exit 2; anything else is our bug and keeps its traceback.
This module is only the entry point: the arguments are parsed in `eulerforge_trl.cli`.
"""

from __future__ import annotations

import sys

from .cli import train_main


def main(argv: list[str] | None = None) -> int:
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
