"""The `eulerforge` console script: `eulerforge train --preset P ...`, `eulerforge pipeline P ...`."""

from __future__ import annotations

import argparse
import sys

from .train import add_stage_arguments, guarded, run_train_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eulerforge", description="SFT -> RM -> PPO (or DPO) on LoRA adapters.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one stage from a preset (training.type picks it)")
    add_stage_arguments(train, preset_flag=True)
    train.set_defaults(handler=run_train_command)
    from .pipeline.full import add_pipeline_arguments, run_pipeline_command

    pipeline = commands.add_parser("pipeline", help="run SFT -> RM -> PPO from a pipeline preset")
    add_pipeline_arguments(pipeline)
    pipeline.set_defaults(handler=run_pipeline_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
