"""Rules that span several preset keys; every broken rule is reported at once, with the fix."""

from __future__ import annotations

import operator
from collections.abc import Iterable

from ..stages import STAGES
from .fields import failed
from .schema import Preset

__all__ = ["SECTION_STAGE", "preset_problems", "readers_text", "unused_stage_keys"]


def _stage_sections() -> dict[str, tuple[str, ...]]:
    """Each stage-specific section (or key) and the stages that read it, from the stage table: a stage's
    `config_section`, its `reads`, and the section of each key a pipeline wires into it."""
    sections: dict[str, list[str]] = {}
    for name, stage in STAGES.items():
        wired = [key.rpartition(".")[0] for key in stage.inputs]
        for section in (stage.config_section, *stage.reads, *wired):
            if (
                section
                and section.startswith(("training.", "generation"))
                and name not in sections.setdefault(section, [])
            ):
                sections[section].append(name)
    return {section: tuple(names) for section, names in sections.items()}


# {"training.ppo": ("ppo",), "training.reward_model": ("ppo", "grpo"), ...}; other stages ignore them
SECTION_STAGE = _stage_sections()


def readers_text(stages: tuple[str, ...]) -> str:
    """("ppo",) -> "the ppo stage"; ("ppo", "grpo") -> "the ppo and grpo stages"."""
    if len(stages) == 1:
        return f"the {stages[0]} stage"
    return f"the {', '.join(stages[:-1])} and {stages[-1]} stages"


def preset_problems(p: Preset) -> list[str]:
    """Every broken rule of `p`, each with its values and the fix: the rules of the keys every stage
    reads, then those of the sections its stage reads (`Stage.config_section` and `Stage.reads`), each
    checked by the section's own `problems(preset)`; other stages' sections are not checked."""
    stage = STAGES[p.training.type]
    problems = failed(
        (bool(p.model_name), "model_name must not be empty"),
        (
            p.data.task == stage.data_task,
            f"data.task ({p.data.task}) does not fit training.type={stage.name}: set data.task={stage.data_task}",
        ),
        (
            p.lora is not None or not stage.needs_lora,
            f"the {stage.name} stage trains a LoRA adapter on the shared base: add a lora: section",
        ),
        (
            p.quantization is None or p.lora is not None,
            f"quantization={p.quantization} freezes the base in bitsandbytes' format, so full fine-tuning cannot "
            "train it: add a lora: section (QLoRA) or set quantization=null",
        ),
    )
    read = [operator.attrgetter(key)(p) for key in (stage.config_section, *stage.reads) if key]
    for section in (p.data, p.training, p.lora, *read):
        check = getattr(section, "problems", None)  # a list (training.reward_funcs) or None (no lora) has none
        if check is not None:
            problems += check(p)
    return problems


def unused_stage_keys(p: Preset, keys: Iterable[str]) -> list[str]:
    """One warning per key in `keys` that lies in another stage's section and differs from its default.

    Args:
        p: the loaded preset.
        keys: the dotted keys the preset file and the overrides set (`training.dpo.beta`).
    """
    defaults = Preset()
    warnings = []
    for key in sorted(keys):
        for section, stages in SECTION_STAGE.items():
            if p.training.type in stages or not (key == section or key.startswith(section + ".")):
                continue
            if operator.attrgetter(key)(p) != operator.attrgetter(key)(defaults):
                reads = "reads" if len(stages) == 1 else "read"
                warnings.append(
                    f"{key} is set but only {readers_text(stages)} {reads} it; this preset trains "
                    f"training.type={p.training.type}, so it has no effect"
                )
    return warnings
