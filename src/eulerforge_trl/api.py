"""The notebook API: the same functions the CLI calls, one per stage plus the whole pipeline.

`train_stage(name, ...)` trains any stage of the table (`eulerforge_trl.stages.STAGES`);
`train_<name>` is the same for one stage (a stage added to the table gets one without an edit here).

Example:
    >>> from eulerforge_trl import load_preset, train_sft, train_rm, train_ppo
    >>> sft = train_sft("presets/tiny_sft.yml", output_dir="outputs/nb/01_sft")
    >>> rm = train_rm("presets/tiny_rm.yml", [f"model_name={sft.final_dir}"], "outputs/nb/02_rm")
    >>> ppo = train_ppo("presets/tiny_ppo.yml", [f"model_name={sft.final_dir}",
    ...     f"training.reward_model.checkpoint_path={rm.final_dir}"], "outputs/nb/03_ppo")
    >>> ppo.history[-1]["reward_mean"]
"""

from __future__ import annotations

from pathlib import Path

from .config import Preset, load_preset
from .errors import PresetError
from .pipeline.stages import StageResult, run_stage
from .stages import STAGES


def train_stage(
    stage: str, preset: Preset | str | Path, overrides=None, output_dir=None, resume: bool = True
) -> StageResult:
    """Train `stage` from a preset whose `training.type` must be that stage.

    Args:
        stage: a name in `STAGES` ("sft", "rm", "ppo", "dpo").
        preset: a preset path (or shipped preset name) or a `Preset`.
        overrides: `["key=value", ...]` or a dict applied on top.
        output_dir: overrides the preset's `output_dir`.
        resume: continue from the newest checkpoint in `<output_dir>/checkpoints`.

    Example:
        >>> rm = train_stage("rm", "presets/tiny_rm.yml", ["model_name=outputs/nb/01_sft/final"], "outputs/nb/02_rm")
    """
    if stage not in STAGES:
        raise PresetError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    loaded = load_preset(preset, overrides, output_dir)  # a Preset object too: its rules run
    if loaded.training.type != stage:
        raise PresetError(
            f"train_{stage} got a preset with training.type={loaded.training.type}; use train_{loaded.training.type}"
        )
    return run_stage(loaded, resume=resume)


def train_sft(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """Supervised fine-tuning; returns where `final/` (the merged SFT model) is and the metrics."""
    return train_stage("sft", preset, overrides, output_dir, resume)


def train_rm(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """Reward model (LoRA adapter + RewardHead on the SFT model)."""
    return train_stage("rm", preset, overrides, output_dir, resume)


def train_ppo(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """PPO on the shared base (policy LoRA, reference = adapters off, RM adapter + head)."""
    return train_stage("ppo", preset, overrides, output_dir, resume)


def train_dpo(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """DPO on preference rows, reference = the model with adapters disabled."""
    return train_stage("dpo", preset, overrides, output_dir, resume)


def __getattr__(name: str):
    """`train_<stage>` for a stage of the table that has no function of its own above."""
    stage = name.removeprefix("train_")
    if name.startswith("train_") and stage in STAGES:

        def train(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
            return train_stage(stage, preset, overrides, output_dir, resume)

        train.__name__ = train.__qualname__ = name
        train.__doc__ = f"Train the {stage} stage (see `train_stage`)."
        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
