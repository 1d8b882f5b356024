"""How many rows of the data one optimizer step takes, per stage: what a step cap is measured against.

Stage-specific arithmetic, kept in the config layer beside the rules that already know each stage's
keys (`rules.py`), so the pipeline reads it without spelling stage names.
"""

from __future__ import annotations

from .schema import Preset


def rows_per_step(preset: Preset, processes: int) -> float:
    """Rows of `data.path` one optimizer step consumes, over every process.

    SFT, RM, DPO, KTO: batch_size x grad_accum x processes. PPO: batch_size prompts per process
    (no accumulation). GRPO, RLOO: batch_size counts completions, num_generations per prompt, and each
    generated batch serves num_iterations steps.
    """
    t = preset.training
    if t.type == "ppo":
        return t.batch_size * processes
    rows = t.batch_size * t.grad_accum * processes
    if t.type in ("grpo", "rloo"):
        section = getattr(t, t.type)  # num_iterations: a TRL field there (TRL's default: 1)
        return rows / section.num_generations / section.passthrough.get("num_iterations", 1)
    return rows


def training_rows(preset: Preset, rows: int) -> int:
    """Rows of `data.path` left for training once `data.eval_split` is held out (as `data.jsonl.split_rows`
    does for every stage)."""
    data = preset.data
    if data.eval_path or data.eval_split <= 0:
        return rows
    return rows - max(1, int(rows * data.eval_split))
