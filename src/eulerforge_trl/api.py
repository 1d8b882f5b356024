"""The notebook API: the same functions the CLI calls, one per stage plus the whole pipeline.

`train_stage(name, ...)` trains any stage of the table (`eulerforge_trl.stages.STAGES`);
`train_<name>` (`train_sft`, `train_rm`, `train_ppo`, `train_grpo`, `train_dpo`) is the same for one
stage. They are made here from the table, one per record, so a stage added there gets its function
(in `__all__` and `dir()`) without an edit here.

Example:
    >>> from eulerforge_trl import load_preset, train_sft, train_rm, train_ppo
    >>> sft = train_sft("tiny_sft.yml", output_dir="outputs/nb/01_sft")
    >>> rm = train_rm("tiny_rm.yml", [f"model_name={sft.final_dir}"], "outputs/nb/02_rm")
    >>> ppo = train_ppo("tiny_ppo.yml", [f"model_name={sft.final_dir}",
    ...     f"training.reward_model.checkpoint_path={rm.final_dir}"], "outputs/nb/03_ppo")
    >>> ppo.history[-1]["reward_mean"]
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .config import Preset, load_preset
from .errors import PresetError
from .pipeline.run_stage import StageResult, run_loaded_stage
from .stages import STAGES, Stage

__all__ = ["StageResult", "train_stage", *(f"train_{name}" for name in STAGES)]

_ARGS = """
    Args:
        preset: a preset path (or shipped preset name) or a `Preset`; its `training.type` must be {name}.
        overrides: `["key=value", ...]` or a dict applied on top.
        output_dir: overrides the preset's `output_dir`.
        resume: continue from the newest checkpoint in `<output_dir>/checkpoints`.

    Returns:
        Where the stage wrote (`output_dir`, `final_dir`) and its metrics (`metrics`, `history`).
"""


def train_stage(
    stage: str, preset: Preset | str | Path, overrides=None, output_dir=None, resume: bool = True
) -> StageResult:
    """Train `stage` from a preset whose `training.type` must be that stage.

    Args:
        stage: a name in `STAGES` ("sft", "rm", "ppo", "grpo", "dpo").
        preset: a preset path (or shipped preset name) or a `Preset`.
        overrides: `["key=value", ...]` or a dict applied on top.
        output_dir: overrides the preset's `output_dir`.
        resume: continue from the newest checkpoint in `<output_dir>/checkpoints`.

    Example:
        >>> rm = train_stage("rm", "tiny_rm.yml", ["model_name=outputs/nb/01_sft/final"], "outputs/nb/02_rm")
    """
    if stage not in STAGES:
        raise PresetError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    loaded = load_preset(preset, overrides, output_dir)  # a Preset object too: its rules run
    if loaded.training.type != stage:
        raise PresetError(
            f"train_{stage} got a preset with training.type={loaded.training.type}; use train_{loaded.training.type}"
        )
    return run_loaded_stage(loaded, resume=resume)


def _stage_function(stage: Stage) -> Callable[..., StageResult]:
    """`train_<stage>`: `train_stage` with the stage filled in, documented from its record."""

    def train(preset: Preset | str | Path, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
        return train_stage(stage.name, preset, overrides, output_dir, resume)

    train.__name__ = train.__qualname__ = f"train_{stage.name}"
    train.__module__ = __name__
    train.__doc__ = (stage.doc or f"Train the {stage.name} stage.") + "\n" + _ARGS.format(name=stage.name)
    return train


globals().update({f"train_{name}": _stage_function(stage) for name, stage in STAGES.items()})
