"""Read a preset: YAML file + `--set` overrides merged onto the typed schema, then checked."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import PresetError
from .rules import preset_problems
from .schema import Preset


def load_preset(
    preset: str | Path | Preset | None = None,
    overrides: list[str] | dict | None = None,
    output_dir: str | None = None,
) -> Preset:
    """Build a checked `Preset` from a YAML path (or an existing Preset) and overrides.

    Args:
        preset: path to a YAML preset, a `Preset` object, or None for the defaults.
        overrides: `["training.lr=1e-4", ...]` dotlist or a nested dict.
        output_dir: overrides `output_dir`.

    Raises:
        PresetError: one line naming the file (and line), the key and what is wrong; every
            cross-key problem is listed at once.

    Example:
        >>> p = load_preset("presets/tiny_sft.yml", ["training.max_steps=10"])
    """
    overrides = overrides or []
    source, yaml_text = _describe_source(preset)
    schema = OmegaConf.structured(Preset)
    try:
        if isinstance(preset, Preset):
            schema = OmegaConf.merge(schema, OmegaConf.structured(preset))
        elif preset is not None:
            loaded = yaml.safe_load(yaml_text) or {}
            if not isinstance(loaded, dict):
                raise PresetError(f"{source}: a preset must be a mapping of keys, got {type(loaded).__name__}")
            schema = OmegaConf.merge(schema, OmegaConf.create(loaded))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise PresetError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    except OmegaConfBaseException as err:
        raise PresetError(_omegaconf_message(err, source, yaml_text)) from None
    try:
        if isinstance(overrides, dict):
            schema = OmegaConf.merge(schema, OmegaConf.create(overrides))
        else:
            for item in overrides:
                if "=" not in item:
                    raise PresetError(f"--set {item}: expected KEY=VALUE, e.g. --set training.lr=1e-4")
                schema = OmegaConf.merge(schema, OmegaConf.from_dotlist([item]))
    except OmegaConfBaseException as err:
        raise PresetError(_omegaconf_message(err, f"{source} (in --set)", None)) from None
    if output_dir is not None:
        schema.output_dir = str(output_dir)
    try:
        result: Preset = OmegaConf.to_object(schema)
    except OmegaConfBaseException as err:
        raise PresetError(_omegaconf_message(err, source, yaml_text)) from None
    if result.output_dir is None:
        stem = Path(preset).stem if isinstance(preset, (str, Path)) else "run"
        result.output_dir = str(Path("outputs") / stem)
    problems = preset_problems(result)
    if problems:
        raise PresetError(f"{source}: " + "; ".join(problems))
    return result


def preset_to_yaml(preset: Preset) -> str:
    """The fully resolved preset as YAML (what `<output_dir>/preset.yml` holds)."""
    return OmegaConf.to_yaml(OmegaConf.structured(preset))


def _describe_source(preset) -> tuple[str, str | None]:
    if preset is None or isinstance(preset, Preset):
        return "preset", None
    path = Path(preset)
    if not path.is_file():
        raise PresetError(f"preset file not found: {path}")
    return str(path), path.read_text(encoding="utf-8")


def _omegaconf_message(err: OmegaConfBaseException, source: str, yaml_text: str | None) -> str:
    key = getattr(err, "full_key", None) or "?"
    reason = str(err).splitlines()[0]
    if "Key '" in reason and "not in" in reason:
        reason = "unknown key" + (reason[reason.index(". Did you mean") :] if "Did you mean" in reason else "")
    line = _line_of_key(yaml_text, key) if yaml_text else None
    where = f"{source}:{line}" if line else source
    return f"{where}: {key}: {reason}"


def _line_of_key(yaml_text: str, dotted_key: str) -> int | None:
    """1-based line of `a.b.c` in the YAML text, so errors can point at it."""
    try:
        node = yaml.compose(yaml_text)
    except yaml.YAMLError:
        return None
    line = None
    for part in dotted_key.split("."):
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == part:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            break
    return line
