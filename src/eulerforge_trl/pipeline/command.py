"""The `pipeline` command's arguments and what it runs: `eulerforge pipeline` (in `eulerforge_trl.cli`)
and `python -m eulerforge_trl.pipeline` (`pipeline_main`, this package's `__main__`) share them.

It lives in the pipeline layer so that `python -m eulerforge_trl.pipeline` needs nothing above it:
the CLI imports this module, never the other way round.
"""

from __future__ import annotations

import argparse

from ..errors import guarded
from ..runtime import enable_cpu_huge_pages
from ..stages import STAGES, pipeline_chains


def add_preset_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The preset, positional or behind `--preset` (both commands take both): `preset_given` reads it."""
    parser.add_argument("preset", nargs="?", metavar="PRESET", help=f"{help}; also as --preset PRESET")
    parser.add_argument("--preset", dest="preset_flag", metavar="PRESET", help=argparse.SUPPRESS)
    parser.set_defaults(parser=parser)


def preset_given(args: argparse.Namespace) -> str:
    """The preset of `add_preset_argument`, given once; an argparse error (exit 2) otherwise."""
    given = [p for p in (args.preset, args.preset_flag) if p is not None]
    if not given:
        args.parser.error("give a preset: PRESET or --preset PRESET")
    if len(given) == 2 and given[0] != given[1]:
        args.parser.error(f"two presets given ({given[0]} and --preset {given[1]}): give one")
    return given[0]


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_argument(parser, "pipeline YAML (stages: {sft: ..., rm: ..., ppo: ...})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE")
    parser.add_argument("--output-dir", default="outputs/pipeline")
    parser.add_argument("--no-resume", action="store_true", help="retrain every stage from scratch")


def pipeline_chains_text() -> str:
    """Every stage sequence a pipeline preset may hold and where each stage writes (`--help`'s epilog)."""
    from ..config.shipped import shipped_presets

    lines = ["stages: a pipeline preset lists one of these chains (each stage takes earlier stages' final/):"]
    for chain in pipeline_chains():
        lines.append(f"  {', '.join(chain)}")
    dirs = ", ".join(f"{name} -> OUTPUT_DIR/{stage.pipeline_dir}" for name, stage in STAGES.items())
    shipped = ", ".join(p.name for p in shipped_presets() if p.kind == "pipeline")
    lines += ["", f"where each stage writes: {dirs}", f"shipped pipeline presets: {shipped}"]
    return "\n".join(lines)


def run_pipeline_command(args: argparse.Namespace) -> int:
    from ..runtime import process_state
    from .full import run_pipeline

    result = run_pipeline(preset_given(args), args.output_dir, args.overrides, resume=not args.no_resume)
    if process_state().is_main_process:
        print(result.summary())
    return 0


def pipeline_main(argv: list[str] | None = None) -> int:
    """`python -m eulerforge_trl.pipeline PIPELINE [--set STAGE.key=value ...] [--output-dir DIR] [--no-resume]`."""
    enable_cpu_huge_pages(warn=False)  # before anything imports torch (pipeline.full imports omegaconf, not torch)
    from . import full

    parser = argparse.ArgumentParser(
        prog="python -m eulerforge_trl.pipeline",
        description=full.__doc__.splitlines()[0],
        epilog=pipeline_chains_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_arguments(parser)
    return guarded(run_pipeline_command, parser.parse_args(argv))
