"""The TRL config a TRL stage trains with, built in one place and written to `trl_config.json`."""

from __future__ import annotations

from typing import Any

from ..config.schema import Preset
from ..config.trl_fields import owned_fields, trl_config_class, trl_fields
from ..errors import PresetError
from ..rundir import RunDir
from .common import common_trainer_args


def build_trl_config(stage: str, preset: Preset, run: RunDir, has_eval: bool, config_class=None, **owned: Any):
    """The TRL config of `stage` (`trl.SFTConfig`, `trl.GRPOConfig`, ...: `config.trl_fields.TRL_CONFIGS`)
    for `preset`. The trainer's copy of it is written to `<output_dir>/trl_config.json` as training
    begins (`common.MetricsFileCallback`), so a run records every setting it trained with.

    Each field comes from one place:
      1. `common_trainer_args`: the `TrainingArguments` fields every TRL stage maps from a preset key
         (training.lr -> learning_rate, training.batch_size -> per_device_train_batch_size, ...);
      2. `owned`: the fields the stage's runner sets itself (max_length from data.max_length, the
         reward weights, ...), which take precedence over 1;
      3. `training.<stage>`: the section's own keys that are fields of the TRL class (same name) and
         the TRL fields set there (pass-through), as `load_preset` checked them.
    Every field of 1 and 2 must be listed in `config.trl_fields.owned_fields(stage)`, the table that
    refuses them in a preset (so nothing is set two ways); a field missing there is our bug.

    Args:
        stage: `training.type` of a TRL stage ("sft", "rm", "dpo", "grpo", "rloo", "kto").
        preset: the loaded preset.
        run: the run's output directory (checkpoints go to `run.checkpoints`).
        has_eval: the stage has held-out data: evaluate at every checkpoint.
        config_class: a subclass of the stage's TRL config class to build instead, with fields of ours
            (`trainers.dpo.RPOConfig`); None = TRL's class.
        **owned: the stage's own fields, e.g. `max_length=preset.data.max_length`.

    Returns:
        The TRL config instance, ready for the stage's trainer.

    Raises:
        PresetError: TRL's own checks of the config (its `__post_init__`) refuse the combination of
            fields the preset set; one line naming the section.

    Example:
        >>> args = build_trl_config("sft", preset, run, has_eval=False, max_length=64, eos_token="<eos>")
    """
    table = owned_fields(stage)
    common = common_trainer_args(preset, run, has_eval)
    unlisted = sorted(name for name in (*common, *owned) if name not in table)
    if unlisted:
        raise RuntimeError(f"{stage}: the stage sets {unlisted} without listing them in config.trl_fields")
    section = getattr(preset.training, stage)
    twice = sorted(name for name in section.passthrough if name in table)
    if twice:  # `load_preset` refuses these; a Preset that did not go through it
        raise PresetError(f"training.{stage}.{twice[0]} {table[twice[0]]}")
    chosen = section.trl_args(trl_fields(stage))
    both = sorted(name for name in chosen if name in owned)
    if both:
        raise RuntimeError(f"{stage}: {both} set by the stage and by its section training.{stage}")
    config_class = config_class or trl_config_class(stage)
    try:
        config = config_class(**{**common, **owned, **chosen})
    except ValueError as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PresetError(f"training.{stage}: TRL's {config_class.__name__} refuses these settings: {reason}") from None
    return config


__all__ = ["build_trl_config"]
