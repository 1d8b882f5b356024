"""Rules that span several preset keys; every broken rule is reported at once, with the fix."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Iterable

from ..stages import STAGES
from .fields import failed
from .schema import Preset
from .trl_fields import PASSTHROUGH, TRL_CONFIGS

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
    for name in STAGES:  # a TRL stage reads its section of TRL config fields
        if name in TRL_CONFIGS and name not in sections.setdefault(f"training.{name}", []):
            sections[f"training.{name}"].append(name)
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
    problems += [f"{key} ({value}) must be a finite number" for key, value in non_finite_numbers(p)]
    problems += missing_trackers(p.training.report_to)
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
            if preset_value(p, key) != preset_value(defaults, key):
                reads = "reads" if len(stages) == 1 else "read"
                warnings.append(
                    f"{key} is set but only {readers_text(stages)} {reads} it; this preset trains "
                    f"training.type={p.training.type}, so it has no effect"
                )
    return warnings


def preset_value(p: Preset, key: str):
    """The value of a dotted key, a TRL stage's pass-through field (`training.sft.packing`) included;
    None where it is not set."""
    node = p
    for part in key.split("."):
        if dataclasses.is_dataclass(node) and hasattr(node, part):
            node = getattr(node, part)
        elif dataclasses.is_dataclass(node) and hasattr(node, PASSTHROUGH):
            node = getattr(node, PASSTHROUGH).get(part)
        elif isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


def non_finite_numbers(node, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every NaN or infinite float in a preset (YAML's .nan and .inf parse as
    floats, and a NaN passes no comparison a rule could make)."""
    if dataclasses.is_dataclass(node):
        return [
            found
            for field in dataclasses.fields(node)
            for found in non_finite_numbers(getattr(node, field.name), f"{prefix}.{field.name}".lstrip("."))
        ]
    if isinstance(node, (list, tuple)):
        return [found for i, item in enumerate(node) for found in non_finite_numbers(item, f"{prefix}[{i}]")]
    if isinstance(node, float) and not math.isfinite(node):
        return [(prefix, node)]
    return []


# transformers' `report_to` names (and accelerate's `aim`, which PPO logs through) -> the module each needs
# (transformers' integration_utils checks the same)
TRACKER_MODULES = {
    "aim": "aim",
    "wandb": "wandb",
    "tensorboard": "tensorboard",
    "mlflow": "mlflow",
    "comet_ml": "comet_ml",
    "clearml": "clearml",
    "neptune": "neptune",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
    "codecarbon": "codecarbon",
    "dagshub": "dagshub",
    "azure_ml": "azureml",
    "flyte": "flytekit",
}


def missing_trackers(report_to) -> list[str]:
    """One problem per logger of `training.report_to` whose package this machine lacks: the stage
    would fail at its first step (transformers) or not log there (accelerate)."""
    import importlib.util

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    return [
        f"training.report_to: {name} is not installed here: pip install {TRACKER_MODULES[name].replace('_', '-')}, "
        "or drop it from training.report_to"
        for name in names
        if name in TRACKER_MODULES and importlib.util.find_spec(TRACKER_MODULES[name]) is None
    ]
