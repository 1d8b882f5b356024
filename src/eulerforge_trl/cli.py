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
    presets = commands.add_parser("presets", help="list the shipped presets, or explain a preset key")
    presets.add_argument(
        "--explain",
        metavar="KEY",
        help="print a key's type, default and meaning (training.ppo.kl_coef), or a section's keys (training.ppo)",
    )
    presets.set_defaults(handler=run_presets_command)
    return parser


def run_presets_command(args: argparse.Namespace) -> int:
    """`eulerforge presets`: the shipped presets and their purpose; `--explain KEY`: what a key does."""
    if args.explain is not None:
        from .config.explain import explain

        print(explain(args.explain))
    else:
        from .config.shipped import presets_table

        print(presets_table())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
