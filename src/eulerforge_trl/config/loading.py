"""Read a preset: YAML file + `--set` overrides merged onto the typed schema, then checked."""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import PresetError
from .chat_template import resolve_chat_template
from .rules import preset_problems, unused_stage_keys
from .schema import Preset, TrainingSection
from .shipped import is_shipped, resolve_preset_path, shipped_data_path
from .trl_fields import PASSTHROUGH, TRL_CONFIGS, check_field, route_passthrough

logger = logging.getLogger(__name__)


def load_preset(
    preset: str | Path | Preset | None = None,
    overrides: list[str] | dict | None = None,
    output_dir: str | None = None,
) -> Preset:
    """Build a checked `Preset` from a YAML path (or an existing Preset) and overrides.

    A key of another stage's section (`training.dpo.beta` in an SFT preset) set in the file or in
    `overrides` to a value other than its default logs one warning line per key: it has no effect.

    Args:
        preset: path to a YAML preset, the name of a shipped preset (`tiny_sft.yml`, `tiny_sft`;
            an existing file of that name wins, see `eulerforge_trl.config.shipped`), a `Preset`
            object, or None for the defaults.
        overrides: `["training.lr=1e-4", ...]` dotlist or a nested dict.
        output_dir: overrides `output_dir`.

    Raises:
        PresetError: one line naming the file (and line), the key and what is wrong; every
            cross-key problem is listed at once.

    Example:
        >>> p = load_preset("tiny_sft.yml", ["training.max_steps=10"])
    """
    overrides = overrides or []
    path = None if preset is None or isinstance(preset, Preset) else resolve_preset_path(preset)
    source, yaml_text = (str(path), path.read_text(encoding="utf-8")) if path else ("preset", None)
    explicit: set[str] = set()  # dotted keys the file or the overrides set
    set_keys: set[str] = set()  # those the overrides set
    loaded: dict = {}
    schema = OmegaConf.structured(Preset)
    try:
        if isinstance(preset, Preset):
            schema = OmegaConf.merge(schema, OmegaConf.structured(preset))
        elif preset is not None:
            loaded = yaml.load(yaml_text, Loader=UniqueKeyLoader) or {}
            if not isinstance(loaded, dict):
                raise PresetError(f"{source}: a preset must be a mapping of keys, got {type(loaded).__name__}")
            if "stages" in loaded:  # not a schema key: the file is a pipeline preset
                raise PresetError(
                    f"{source}: a pipeline preset (stages: ...), not a stage preset: run it with "
                    f"`eulerforge pipeline {preset}`"
                )
            _check_model_section(loaded, source, yaml_text)
            explicit |= _leaf_keys(loaded)
            schema = OmegaConf.merge(schema, OmegaConf.create(route_passthrough(loaded, TRL_SECTIONS)))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PresetError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except OmegaConfBaseException as err:
        raise PresetError(_omegaconf_message(err, source, yaml_text)) from None
    except (TypeError, ValueError):  # omegaconf: a list or mapping where the schema has the other kind
        raise PresetError(_shape_message(schema, loaded, source, yaml_text)) from None
    item = None
    try:
        if isinstance(overrides, dict):
            _check_model_section(overrides, f"{source} (in --set)", None)
            explicit |= _leaf_keys(overrides)
            set_keys |= _leaf_keys(overrides)
            schema = OmegaConf.merge(schema, OmegaConf.create(route_passthrough(overrides, TRL_SECTIONS)))
        else:
            for item in overrides:
                if "=" not in item or item.startswith("="):
                    raise PresetError(f"--set {item}: expected KEY=VALUE, e.g. --set training.lr=1e-4")
                tree = OmegaConf.to_container(OmegaConf.from_dotlist([item]))
                _check_model_section(tree, f"{source} (in --set)", None)
                explicit |= _leaf_keys(tree)
                set_keys |= _leaf_keys(tree)
                schema = OmegaConf.merge(schema, OmegaConf.create(route_passthrough(tree, TRL_SECTIONS)))
    except yaml.YAMLError as err:
        raise PresetError(f"--set {item}: the value is not valid YAML ({getattr(err, 'problem', err)})") from None
    except OmegaConfBaseException as err:
        raise PresetError(_omegaconf_message(err, f"{source} (in --set)", None)) from None
    except (TypeError, ValueError):
        tree = overrides if isinstance(overrides, dict) else OmegaConf.to_container(OmegaConf.from_dotlist([item]))
        raise PresetError(_shape_message(schema, tree, f"{source} (in --set)", None)) from None
    if output_dir is not None:
        schema.output_dir = str(output_dir)
    try:
        result: Preset = OmegaConf.to_object(schema)
    except OmegaConfBaseException as err:
        raise PresetError(_omegaconf_message(err, source, yaml_text)) from None
    if path is not None and is_shipped(path):
        result.data.path = shipped_data_path(result.data.path)
        if result.data.eval_path:
            result.data.eval_path = shipped_data_path(result.data.eval_path)
    if result.chat_template:  # checked now (a missing file, a Jinja error) and made valid from any directory
        try:
            result.chat_template = resolve_chat_template(result.chat_template, path.parent if path else None)
        except PresetError as err:
            in_file = loaded.get("chat_template") == result.chat_template  # not replaced by --set
            line = _line_of_key(yaml_text, "chat_template") if in_file else None
            raise PresetError(f"{source}:{line}: {err}" if line else f"{source}: {err}") from None
    if result.output_dir is None:
        result.output_dir = str(Path("outputs") / (path.stem if path else "run"))
    _check_passthrough(result, source, yaml_text, set_keys)
    problems = preset_problems(result)
    if problems:
        raise PresetError(f"{source}: " + "; ".join(problems))
    for warning in unused_stage_keys(result, explicit):
        logger.warning("%s: %s", source, warning)
    if result.data.eval_path and result.data.eval_split:
        logger.warning(
            "%s: data.eval_split (%s) is not used: data.eval_path (%s) is the held-out data and all of data.path "
            "trains (set data.eval_split=0 to silence this)",
            source,
            result.data.eval_split,
            result.data.eval_path,
        )
    return result


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key set twice in one mapping (PyYAML keeps the last without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is set twice (also on line {seen[key]}): keep one", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def preset_to_yaml(preset: Preset) -> str:
    """The fully resolved preset as YAML (what `<output_dir>/preset.yml` holds); a TRL stage's
    pass-through fields are written beside its section's own keys, as a preset sets them."""
    tree = OmegaConf.to_container(OmegaConf.structured(preset))
    for stage in TRL_SECTIONS:
        section = tree["training"][stage]
        section.update(section.pop(PASSTHROUGH))
    return OmegaConf.to_yaml(tree)


# the TRL stages' sections of `training` ({"sft": SFTSection, ...}): they take their TRL class's fields
TRL_SECTIONS = {
    stage: hint
    for stage, hint in typing.get_type_hints(TrainingSection).items()
    if stage in TRL_CONFIGS and dataclasses.is_dataclass(hint)
}


def _check_passthrough(preset: Preset, source: str, yaml_text: str | None, set_keys: set[str]) -> None:
    """Refuse a pass-through field of the preset's own stage that its TRL config class lacks, that the
    wrapper sets itself, or whose value the field cannot hold; convert the others in place (one line,
    with the file and line of the key, or `(in --set)`). Other stages' sections only warn, unused."""
    stage = preset.training.type
    if stage not in TRL_SECTIONS:
        return
    section = getattr(preset.training, stage)
    for name, value in list(section.passthrough.items()):
        converted, problem = check_field(stage, TRL_SECTIONS[stage], name, value)
        if problem is None:
            section.passthrough[name] = converted
            continue
        key = f"training.{stage}.{name}"
        ours = did_you_mean(key) if problem.startswith("unknown key") else None
        problem = f"unknown key; did you mean {ours}" if ours else problem
        given = any(k == key or k.startswith(key + ".") for k in set_keys)
        line = _line_of_key(yaml_text, key) if yaml_text and not given else None
        where = f"{source} (in --set)" if given else f"{source}:{line}" if line else source
        raise PresetError(f"{where}: {key}{' ' if problem.startswith('is set by') else ': '}{problem}")


def _leaf_keys(tree, prefix: str = "") -> set[str]:
    """Dotted keys of the leaves of a nested mapping (a list is a leaf)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix} if prefix else set()
    keys: set[str] = set()
    for key, value in tree.items():
        keys |= _leaf_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


# names from TRL / transformers' TrainingArguments and TRL's ModelConfig -> ours (`did you mean`)
KNOWN_NAMES = {
    "learning_rate": "training.lr",
    "per_device_train_batch_size": "training.batch_size",
    "per_device_eval_batch_size": "training.batch_size",
    "train_batch_size": "training.batch_size",
    "gradient_accumulation_steps": "training.grad_accum",
    "num_train_epochs": "training.epochs",
    "bf16": "training.precision=bf16",
    "fp16": "training.precision=fp16",
    "tf32": "training.precision",
    "torch_dtype": "training.precision",
    "dtype": "training.precision",
    "lr_scheduler_type": "training.lr_scheduler",
    "warmup_steps": "training.warmup_ratio (a fraction of the steps, not a count)",
    "eval_steps": "training.save_steps (evaluation runs at every checkpoint)",
    "max_seq_length": "data.max_length",
    "max_length": "data.max_length",
    "max_prompt_length": "data.max_prompt_length",
    "model_name_or_path": "model_name",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules",
    "use_peft": "lora (a lora: section)",
    "dataset_name": "data.path",
    "train_file": "data.path",
    "validation_file": "data.eval_path",
}


# keys of a `model:` section as other tools (and issue texts) spell them -> ours: the model keys are top level
MODEL_SECTION_NAMES = {
    "model.quantization": "quantization",
    "model.attn_implementation": "attn_implementation",
    "model.name": "model_name",
    "model.model_name": "model_name",
    "model.name_or_path": "model_name",
    "model.model_name_or_path": "model_name",
}


def _check_model_section(tree, source: str, yaml_text: str | None) -> None:
    """A `model:` mapping gets "did you mean <top-level key>" for the first key we know under another name.

    OmegaConf would report only `model: unknown key` (and suggest model_name for any child): the
    user's `model.quantization` names the key they meant, so say which one it is.
    """
    section = tree.get("model") if isinstance(tree, dict) else None
    if not isinstance(section, dict):
        return
    for name in section:
        key = f"model.{name}"
        if key in MODEL_SECTION_NAMES:
            line = _line_of_key(yaml_text, key) if yaml_text else None
            where = f"{source}:{line}" if line else source
            ours = MODEL_SECTION_NAMES[key]
            raise PresetError(
                f"{where}: {key}: unknown key; did you mean {ours}? (the model keys are top level: "
                f"model_name, attn_implementation, quantization; --set {ours}=...)"
            )


def schema_keys(section: type = Preset, prefix: str = "") -> list[str]:
    """Every dotted key of the schema (sections and leaves)."""
    import dataclasses
    import typing

    keys = []
    hints = typing.get_type_hints(section)
    for f in dataclasses.fields(section):
        if f.name == PASSTHROUGH:
            continue
        key = f"{prefix}{f.name}"
        keys.append(key)
        nested = [t for t in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(t)]
        if nested:
            keys += schema_keys(nested[0], key + ".")
    return keys


def did_you_mean(key: str) -> str | None:
    """The key a user most likely meant by an unknown `key`: ours for a TRL / transformers name
    (`training.learning_rate` -> `training.lr`), or the same name in another section
    (`training.kl_coef` -> `training.ppo.kl_coef`); None when neither applies."""
    name = key.rpartition(".")[2]
    if name in KNOWN_NAMES:
        return f"{KNOWN_NAMES[name]}? ({name} is the TRL / transformers name)"
    elsewhere = [k for k in schema_keys() if k.rpartition(".")[2] == name and k != key]
    if elsewhere:
        return " or ".join(elsewhere) + "?"
    return None


def _omegaconf_message(err: OmegaConfBaseException, source: str, yaml_text: str | None) -> str:
    key = getattr(err, "full_key", None) or "?"
    reason = str(err).splitlines()[0]
    if "Key '" in reason and "not in" in reason:
        ours = did_you_mean(key)
        if ours:
            reason = f"unknown key; did you mean {ours}"
        else:
            reason = "unknown key" + (reason[reason.index(". Did you mean") :] if "Did you mean" in reason else "")
    line = _line_of_key(yaml_text, key) if yaml_text else None
    where = f"{source}:{line}" if line else source
    return f"{where}: {key}: {reason}"


def _shape_message(schema, tree: dict, source: str, yaml_text: str | None) -> str:
    """One line for a list or mapping given where the schema holds the other kind (or a scalar):
    omegaconf's TypeError names no key, so the first key whose merge fails is looked for."""
    key = _unmergeable_key(schema, tree) or "?"
    node = OmegaConf.select(schema, key) if key != "?" else None
    expected = "a list" if OmegaConf.is_list(node) else "a mapping of keys" if OmegaConf.is_dict(node) else "a value"
    line = _line_of_key(yaml_text, key) if yaml_text else None
    return f"{source}:{line}: {key}: expected {expected}" if line else f"{source}: {key}: expected {expected}"


def _unmergeable_key(schema, tree, prefix: str = "") -> str | None:
    """The dotted key of `tree` deepest in the schema whose value cannot be merged onto it."""
    if not isinstance(tree, dict):
        return None
    for key, value in tree.items():
        try:
            OmegaConf.merge(schema, {key: value})
        except (TypeError, ValueError, OmegaConfBaseException):
            below = schema.get(key) if OmegaConf.is_dict(schema) and key in schema else None
            deeper = _unmergeable_key(below, value, f"{prefix}{key}.") if OmegaConf.is_dict(below) else None
            return deeper or f"{prefix}{key}"
    return None


def _line_of_key(yaml_text: str, dotted_key: str) -> int | None:
    """1-based line of `a.b.c` (or `a.b[2]`) in the YAML text, so errors can point at it."""
    try:
        node = yaml.compose(yaml_text)
    except yaml.YAMLError:
        return None
    line = None
    for part in dotted_key.split("."):
        name, _, index = part.partition("[")
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == name:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            break
        if index and isinstance(node, yaml.SequenceNode) and index.rstrip("]").isdigit():
            position = int(index.rstrip("]"))
            if position < len(node.value):
                node = node.value[position]
                line = node.start_mark.line + 1
    return line
