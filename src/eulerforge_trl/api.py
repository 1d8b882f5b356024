"""The notebook API: the same functions the CLI calls, one per stage plus the whole pipeline.

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


def _train(
    stage: str, preset: Preset | str | Path, overrides=None, output_dir=None, resume: bool = True
) -> StageResult:
    loaded = (
        preset
        if isinstance(preset, Preset) and not overrides and not output_dir
        else load_preset(preset, overrides, output_dir)
    )
    if loaded.training.type != stage:
        raise PresetError(
            f"train_{stage} got a preset with training.type={loaded.training.type}; use train_{loaded.training.type}"
        )
    return run_stage(loaded, resume=resume)


def train_sft(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """Supervised fine-tuning; returns where `final/` (the merged SFT model) is and the metrics."""
    return _train("sft", preset, overrides, output_dir, resume)


def train_rm(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """Reward model (LoRA adapter + RewardHead on the SFT model)."""
    return _train("rm", preset, overrides, output_dir, resume)


def train_ppo(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """PPO on the shared base (policy LoRA, reference = adapters off, RM adapter + head)."""
    return _train("ppo", preset, overrides, output_dir, resume)


def train_dpo(preset, overrides=None, output_dir=None, resume: bool = True) -> StageResult:
    """DPO on preference rows, reference = the model with adapters disabled."""
    return _train("dpo", preset, overrides, output_dir, resume)
