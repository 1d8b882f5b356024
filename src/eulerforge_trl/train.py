"""CLI: `python -m eulerforge_trl.train PRESET [--set key=value ...] [--output-dir DIR]`.

Also `eulerforge train --preset PRESET ...` and `accelerate launch -m eulerforge_trl.train ...`.
User mistakes print one `error: ...` line and exit 2; anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import UserError


def add_stage_arguments(parser: argparse.ArgumentParser, preset_flag: bool) -> None:
    if preset_flag:
        parser.add_argument("--preset", required=True, help="YAML preset file")
    else:
        parser.add_argument("preset", help="YAML preset file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset key, e.g. --set training.lr=1e-4 (repeatable)",
    )
    parser.add_argument("--output-dir", help="where to write (default: the preset's output_dir)")
    parser.add_argument(
        "--no-resume", action="store_true", help="start afresh even if checkpoints exist in the output dir"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eulerforge_trl.train",
        description="Train one stage (sft, rm, ppo or dpo; picked by training.type) from a YAML preset.",
    )
    add_stage_arguments(parser, preset_flag=False)
    return parser


def run_train_command(args: argparse.Namespace) -> int:
    from .config import load_preset
    from .pipeline.stages import run_stage

    preset = load_preset(args.preset, args.overrides, args.output_dir)
    result = run_stage(preset, resume=not args.no_resume)
    print(f"{result.stage} finished: {result.final_dir}")
    return 0


def guarded(command, args) -> int:
    """Run a CLI command; a UserError becomes one line on stderr and its exit code."""
    try:
        return command(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(run_train_command, args)


if __name__ == "__main__":
    sys.exit(main())
