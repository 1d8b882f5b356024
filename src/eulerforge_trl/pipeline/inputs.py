"""What a stage checks about its inputs before it loads anything: earlier stages' `final/`, step caps.

Both read the stage table (`STAGES[...].inputs`: which preset key takes which earlier stage's
`final/`), so a stage added there is covered without an edit here. Imports nothing heavy.
"""

from __future__ import annotations

import math
import operator
import re
from pathlib import Path

from ..config.schema import TINY_MODEL_NAME, Preset
from ..config.shipped import is_shipped
from ..config.steps import rows_per_step, training_rows
from ..errors import PresetError
from ..stages import STAGES


def looks_local(value: str) -> bool:
    """Whether a `model_name`-like value can only mean a local path (not a hub id, not a built-in name).

    `outputs/smollm2/01_sft/final`, `./sft`, `/abs/dir`, `~/m` are paths; `owner/name` is a hub
    id unless `owner` is a directory here; a bare name is left to the loader's own check.
    """
    from ..models.builtin import is_builtin

    if not value or value == TINY_MODEL_NAME or is_builtin(value):
        return False
    if value.startswith((".", "/", "~")) or "\\" in value:
        return True
    parts = Path(value).parts
    if len(parts) == 2:
        return Path(parts[0]).is_dir()
    return len(parts) > 2


def check_earlier_stages(preset: Preset, preset_path: Path | None = None) -> None:
    """One line naming the stage to run first, for each earlier stage's `final/` that is not there.

    For every key the stage takes from an earlier stage (`model_name` from sft,
    `training.reward_model.checkpoint_path` from rm) whose value is a local path that does not
    exist. Runs before any model, tokenizer or torch is loaded.

    Args:
        preset: the loaded preset.
        preset_path: the file it came from; the earlier stage's preset is looked for beside it
            (`smollm2_135m_lora_ppo.yml` -> `smollm2_135m_lora_sft.yml`).

    Raises:
        PresetError: e.g. "model_name outputs/smollm2/01_sft/final does not exist: run the sft stage
            first (eulerforge train --preset smollm2_135m_lora_sft.yml --output-dir
            outputs/smollm2/01_sft), or --set model_name=DIR pointing at an existing sft final/".

    Example:
        >>> check_earlier_stages(load_preset("smollm2_135m_lora_ppo.yml"))  # in a fresh directory: raises
    """
    stage = STAGES[preset.training.type]
    problems = []
    for key, source in stage.inputs.items():
        value = operator.attrgetter(key)(preset)
        if not value or not looks_local(value) or Path(value).expanduser().exists():
            continue
        command = _command_for(source, value, preset, preset_path)
        problems.append(
            f"{key} {value} does not exist: run the {source} stage first ({command}), "
            f"or --set {key}=DIR pointing at an existing {source} final/"
        )
    if problems:
        raise PresetError("; ".join(problems))


def _command_for(source: str, missing: str, preset: Preset, preset_path: Path | None) -> str:
    """The command that writes `missing`: the source stage's preset, its own inputs, its output directory."""
    own = STAGES[preset.training.type]
    parts = ["eulerforge train --preset", _sibling_preset(source, preset.training.type, preset_path)]
    for key, earlier in STAGES[source].inputs.items():
        # the source stage takes its inputs from stages this preset names too (rm's model_name = the sft final/)
        given = next((operator.attrgetter(k)(preset) for k, s in own.inputs.items() if s == earlier), None)
        if given:
            parts.append(f"--set {key}={given}")
    if Path(missing).name == "final":
        parts.append(f"--output-dir {Path(missing).parent}")
    return " ".join(parts)


def _sibling_preset(source: str, stage: str, preset_path: Path | None) -> str:
    """The source stage's preset beside this one (the stage's name swapped in the file name), if it exists."""
    if preset_path is not None:
        pattern = rf"(?<![a-z]){re.escape(stage)}(?![a-z])"
        name = re.sub(pattern, source, preset_path.name)
        sibling = preset_path.with_name(name)
        if name != preset_path.name and sibling.is_file():
            return sibling.name if is_shipped(sibling) else str(sibling)
    return f"YOUR_{source.upper()}_PRESET.yml"


def step_cap_note(preset: Preset, rows: int, processes: int = 1) -> str | None:
    """One line when `training.max_steps` stops before one pass over the training rows, else None.

    Args:
        preset: the loaded preset.
        rows: rows in `data.path`.
        processes: data-parallel processes (each takes its own batch).

    Example:
        >>> step_cap_note(load_preset("smollm2_135m_lora_sft.yml"), rows=50_000)
        'training.max_steps=40 covers 320 of the 47500 training rows ... (0.7% of one epoch) ...'
    """
    t = preset.training
    if t.max_steps <= 0 or rows <= 0:
        return None
    train = training_rows(preset, rows)
    per_step = rows_per_step(preset, processes)
    seen = t.max_steps * per_step
    if train <= 0 or seen >= train:
        return None
    epoch = math.ceil(train / per_step)
    return (
        f"training.max_steps={t.max_steps} covers {seen:g} of the {train} training rows of {preset.data.path} "
        f"({100 * seen / train:.1f}% of one epoch, {per_step:g} rows a step): to train on all of them raise "
        f"training.max_steps (one epoch = {epoch} steps), or set training.max_steps=-1 and training.epochs=N"
    )
