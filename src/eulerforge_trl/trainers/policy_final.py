"""The `final/` of the RL stages (PPO, GRPO): the policy adapter, loadable as a later `model_name`.

One writer for both: written atomically, the tokenizer right-padded as TRL's trainers expect to
read it, the run's preset beside it, and the adapter's base pinned so that `final/` loads from any
working directory (`pin_adapter_base`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ..config.schema import Preset
from ..models.loading import pin_adapter_base, resolved_model_name
from ..rundir import RunDir, atomic_directory, write_final_marker
from .common import merged_for_final

POLICY = "default"  # peft writes the "default" adapter at the top of a directory: final/ loads as a model


def save_policy_final(
    run: RunDir,
    model,
    tokenizer,
    preset: Preset,
    *,
    stage: str,
    steps: int,
    merged: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Write `run.final`: the `POLICY` adapter of `model`, the tokenizer, preset.yml, the marker.

    Args:
        merged: also write `final/merged`, the adapter merged into a copy of the base (with
            `quantization`, into the full-precision base loaded again).
        extra: writes stage-specific files into the temporary directory (PPO: the critic).
    """
    with atomic_directory(run.final) as tmp:
        model.save_pretrained(tmp, selected_adapters=[POLICY])
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        if run.preset.is_file():
            shutil.copy(run.preset, tmp / "preset.yml")
        if merged:  # out of place: the caller's model stays as it is
            merged_for_final(model, preset, tokenizer, POLICY, keep=True).save_pretrained(tmp / "merged")
            tokenizer.save_pretrained(tmp / "merged")
        write_final_marker(
            tmp,
            stage=stage,
            base=resolved_model_name(preset.model_name),
            steps=steps,
            **pin_adapter_base(tmp, run.final),
        )
