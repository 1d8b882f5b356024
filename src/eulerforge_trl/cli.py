"""The command line: every argv is parsed here (the `pipeline` command's arguments in
`eulerforge_trl.pipeline.command`, shared with `python -m eulerforge_trl.pipeline`), and user
errors become exit codes at this edge (`eulerforge_trl.errors.guarded`).

Entry points: the `eulerforge` console script (`eulerforge train P ...`, `eulerforge pipeline P ...`,
the preset also as `--preset P`; `eulerforge export RUN/final --output DIR`) is `main`;
`python -m eulerforge_trl.train P ...` (also under `accelerate launch -m`) is `train_main`;
`python -m eulerforge_trl.pipeline P ...` is `pipeline_main`. Each entry point turns on torch's
huge-page CPU allocations first (`eulerforge_trl.enable_cpu_huge_pages`), before torch loads.
User mistakes print one `error: ...` line and exit 2; anything else is our bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .errors import guarded
from .pipeline.command import (
    add_pipeline_arguments,
    add_preset_argument,
    pipeline_chains_text,
    pipeline_main,
    preset_given,
    run_pipeline_command,
)
from .runtime import enable_cpu_huge_pages
from .stages import STAGES

__all__ = ["build_parser", "main", "pipeline_main", "train_main"]


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    add_preset_argument(parser, "a stage's YAML preset (a path, or a shipped preset's name)")
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


def run_train_command(args: argparse.Namespace) -> int:
    from .pipeline.run_stage import run_stage
    from .runtime import process_state

    # the path, not a loaded Preset: a missing earlier stage's message names that stage's preset beside it
    result = run_stage(preset_given(args), args.overrides, args.output_dir, resume=not args.no_resume)
    if process_state().is_main_process and result.finished_before is None:  # once per launch, not once per process
        print(f"{result.stage} finished: {result.final_dir}")
    return 0


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="MODEL",
        help="anything model_name takes: a stage's final/ (SFT, PPO, DPO ...), a transformers model directory, "
        "a built-in name (smollm2-135m-instruct, tiny-qwen3.5) or a hub id; the first is the baseline for win "
        "rate and KL",
    )
    parser.add_argument(
        "--prompts",
        required=True,
        metavar="FILE",
        help='JSONL prompts ({"prompt": ...}, plain text or messages; an SFT file works too)',
    )
    parser.add_argument("--reward", metavar="RM_DIR", help="the rm stage's final/, trained on the models' base")
    parser.add_argument(
        "--judge",
        metavar="FILE.py:fn | module:fn",
        help="a function fn(prompts, completions, **columns) -> list[float] (TRL's reward-function signature); "
        "win_rate_vs_first compares its scores (the RM's without a judge)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=1, metavar="N", help="responses sampled per prompt (default 1)"
    )
    parser.add_argument("--max-prompts", type=int, metavar="K", help="use only the first K prompts (default all)")
    parser.add_argument(
        "--output",
        default="outputs/evaluate",
        metavar="DIR",
        help="where samples.jsonl, summary.json and summary.png go (default outputs/evaluate)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the same seed for every model (default 0)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, metavar="N", help="tokens per response at most (default 64)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        metavar="T",
        help="pure sampling (no top-k/top-p) at T, also for the KL (default 1.0); 0 decodes greedily",
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="prompts per generate call (default 16)"
    )
    parser.add_argument(
        "--chat-template",
        metavar="FILE",
        help="a Jinja chat template (or the template itself) for every model's tokenizer and the RM's, as a "
        "preset's chat_template (default: each model's own; a stage's final/ keeps the one it trained with)",
    )


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("final_dir", metavar="RUN/final", help="a stage's final/ directory (sft, dpo, ppo, grpo or rm)")
    parser.add_argument(
        "--output", required=True, metavar="DIR", help="the standalone model directory to write: a new or empty one"
    )


def run_export_command(args: argparse.Namespace) -> int:
    from .export import export_model
    from .runtime import library_notes_silenced

    with library_notes_silenced():
        result = export_model(args.final_dir, args.output)
    print(f"exported {result.stage} final/ {args.final_dir} as {result.model_class}: {result.output_dir}")
    return 0


def run_evaluate_command(args: argparse.Namespace) -> int:
    from .evaluation.run import run_evaluate_command as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eulerforge", description="SFT -> RM -> PPO (or DPO) on LoRA adapters.")
    parser.add_argument("--version", action="version", version=f"eulerforge-trl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train one stage from a preset (training.type picks it)")
    add_stage_arguments(train)
    train.set_defaults(handler=run_train_command)
    pipeline = commands.add_parser(
        "pipeline",
        help="run SFT -> RM -> PPO (or GRPO, DPO) from a pipeline preset",
        description="Run every stage of a pipeline preset in order; a rerun skips finished stages.",
        epilog=pipeline_chains_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_pipeline_arguments(pipeline)
    pipeline.set_defaults(handler=run_pipeline_command)
    evaluate = commands.add_parser(
        "evaluate",
        help="sample several models (final/ dirs, built-in or hub names) on the same prompts; RM, judge, win rate, KL",
        description="Sample every model on the same prompts with the same seed, score the samples with the RM "
        "and a judge, estimate each model's KL to the first; print a table and write samples.jsonl, "
        "summary.json and summary.png.",
    )
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=run_evaluate_command)
    export = commands.add_parser(
        "export",
        help="merge a stage's final/ into a standalone model directory (transformers, vLLM; no eulerforge needed)",
        description="Write a directory that AutoModelForCausalLM.from_pretrained loads (sft, dpo, ppo, grpo: the "
        "LoRA merged into its base; tokenizer, chat template and generation config included), or for an rm "
        "final/ one that AutoModelForSequenceClassification loads (num_labels=1, the RewardHead as its score).",
    )
    add_export_arguments(export)
    export.set_defaults(handler=run_export_command)
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
    enable_cpu_huge_pages(warn=False)  # before anything imports torch
    args = build_parser().parse_args(argv)
    return guarded(args.handler, args)


def train_main(argv: list[str] | None = None) -> int:
    """`python -m eulerforge_trl.train PRESET [--set key=value ...] [--output-dir DIR] [--no-resume]`."""
    enable_cpu_huge_pages(warn=False)  # before anything imports torch
    names = list(STAGES)
    parser = argparse.ArgumentParser(
        prog="python -m eulerforge_trl.train",
        description=f"Train one stage ({', '.join(names[:-1])} or {names[-1]}; picked by training.type) from a YAML preset.",
    )
    add_stage_arguments(parser)
    return guarded(run_train_command, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
