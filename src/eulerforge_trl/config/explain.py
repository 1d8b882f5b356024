"""`eulerforge presets --explain KEY`: a preset key's type, default and doc, read from the schema.

Example:
    >>> print(explain("training.ppo.kl_coef"))  # doctest: +ELLIPSIS
    training.ppo.kl_coef
      type:    float
      default: 0.05
      read by: the ppo stage
      [kl_coef] weight of the per-token KL penalty ...
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import textwrap
import types
import typing
from typing import Any

import yaml

from ..errors import PresetError
from .rules import SECTION_STAGE, readers_text
from .schema import Preset, TrainingSection, doc_of
from .trl_fields import (
    PASSTHROUGH,
    TRL_CONFIGS,
    check_field,
    own_keys,
    owned_fields,
    trl_default,
    trl_fields,
    trl_help,
    trl_hints,
    type_text,
)

_WIDTH = 100


def explain(key: str) -> str:
    """What `key` is: a field's type, default and doc, or a section's doc and each of its fields.

    Raises:
        PresetError: `key` is not in the schema (one line with the closest keys).
    """
    trl = _trl_field(key)
    if trl is not None:
        return _explain_trl_field(key, *trl)
    section, name = _locate(key)
    if name is None:
        return _explain_section(key, section)
    hint = typing.get_type_hints(section)[name]
    sub = _section_type(hint)
    if sub is not None:
        return _explain_section(key, sub, optional=_is_optional(hint), doc=doc_of(section, name))
    lines = [key, f"  type:    {type_text(hint)}", f"  default: {_value_text(_default(section, name))}"]
    stage = _reading_stage(key)
    if stage:
        lines.append(f"  read by: {stage}")
    lines += _wrap(doc_of(section, name), "  ")
    return "\n".join(lines)


def field_doc(key: str) -> str:
    """The doc of one key (a field or a section) as declared in the schema, or TRL's help of a TRL field."""
    trl = _trl_field(key)
    if trl is not None:
        return trl_help(*trl)
    section, name = _locate(key)
    return doc_of(section, name) if name else (section.__doc__ or "")


def all_keys() -> list[str]:
    """Every dotted key of the schema, sections included (`training`, `training.ppo.kl_coef`, ...)."""
    keys: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == PASSTHROUGH:
                continue
            key = f"{prefix}{f.name}"
            keys.append(key)
            sub = _section_type(hints[f.name])
            if sub is not None:
                walk(sub, key + ".")

    walk(Preset, "")
    return keys


def _locate(key: str) -> tuple[type, str | None]:
    """(the dataclass holding the key's last part, that part); (the section, None) for a section."""
    cls: type = Preset
    parts = key.split(".") if key else []
    for i, part in enumerate(parts):
        fields = {f.name for f in dataclasses.fields(cls)}
        if part not in fields:
            raise PresetError(_unknown(key))
        if i == len(parts) - 1:
            return cls, part
        sub = _section_type(typing.get_type_hints(cls)[part])
        if sub is None:
            raise PresetError(_unknown(key))
        cls = sub
    return cls, None


def _unknown(key: str) -> str:
    keys = all_keys()
    leaf = key.rsplit(".", 1)[-1]
    close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf]
    close += [k for k in difflib.get_close_matches(key, keys, n=3, cutoff=0.6) if k not in close]
    hint = f"; did you mean {', '.join(close[:3])}?" if close else ""
    return f"--explain {key}: unknown preset key{hint} (a section such as training.ppo lists its keys)"


def _explain_section(key: str, cls: type, optional: bool = False, doc: str = "") -> str:
    about = " ".join((cls.__doc__ or doc).split())
    title = f"{key or 'a preset'} (section{', may be null' if optional else ''}): {about}".strip()
    lines = _wrap(title, "", "  ")
    stage = _reading_stage(key)
    if stage:
        lines.append(f"  read by: {stage}; other stages ignore it")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == PASSTHROUGH:
            continue
        hint = hints[f.name]
        sub = _section_type(hint)
        if sub is not None:
            lines.append(f"  {f.name}  (section; --explain {key + '.' if key else ''}{f.name})")
        else:
            lines.append(f"  {f.name} = {_value_text(_default(cls, f.name))}  ({type_text(hint)})")
        lines += _wrap(doc_of(cls, f.name), "      ")
    stage = key.removeprefix("training.")
    if key.startswith("training.") and stage in TRL_CONFIGS:
        lines += _trl_fields_text(key, stage, cls)
    return "\n".join(lines)


def _trl_field(key: str) -> tuple[str, str] | None:
    """(stage, name) of a key naming a field of a TRL stage's config class that its section does not
    declare (`training.grpo.loss_type`); None for any other key. An unknown name is refused in one line."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "training" or parts[1] not in TRL_CONFIGS:
        return None
    hint = typing.get_type_hints(TrainingSection).get(parts[1])
    section = _section_type(hint) if hint is not None else None
    if section is None or parts[2] in own_keys(section):
        return None
    if parts[2] not in trl_fields(parts[1]):
        _, problem = check_field(parts[1], section, parts[2], None)
        raise PresetError(f"--explain {key}: {problem}")
    return parts[1], parts[2]


def _explain_trl_field(key: str, stage: str, name: str) -> str:
    lines = [key, *_wrap(f"  type:    {type_text(trl_hints(stage)[name])}", "", "           ")]
    lines += [
        f"  default: {_value_text(trl_default(stage, name))} (TRL's)",
        f"  read by: {_reading_stage(key) or f'the {stage} stage'}",
    ]
    owned = owned_fields(stage).get(name)
    if owned:
        lines += _wrap(f"not set here: {key} {owned}", "  ", "    ")
    lines += _wrap(f"TRL's {TRL_CONFIGS[stage]}.{name}: {trl_help(stage, name)}", "  ", "    ")
    return "\n".join(lines)


def _trl_fields_text(key: str, stage: str, cls: type) -> list[str]:
    """The fields of the stage's TRL config class, each settable in the section unless the wrapper sets it."""
    owned = owned_fields(stage)
    lines = _wrap(
        f"  TRL's {TRL_CONFIGS[stage]} fields, set beside the keys above (--explain {key}.NAME for one); "
        "those the wrapper sets say which key sets them:",
        "",
        "  ",
    )
    for name in trl_fields(stage):
        if name in own_keys(cls):
            continue
        default = _value_text(trl_default(stage, name))
        lines += _wrap(f"  {name} = {default}  ({type_text(trl_hints(stage)[name])})", "", "      ")
        text = f"[{name} {owned[name]}] " if name in owned else ""
        lines += _wrap(text + trl_help(stage, name), "      ")
    return lines


def _wrap(text: str, indent: str, subsequent: str | None = None) -> list[str]:
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=indent,
        subsequent_indent=indent if subsequent is None else subsequent,
        break_on_hyphens=False,
    )


def _reading_stage(key: str) -> str | None:
    for section, stages in SECTION_STAGE.items():
        if key == section or key.startswith(section + "."):
            return readers_text(stages)
    return None


def _default(cls: type, name: str) -> Any:
    f = cls.__dataclass_fields__[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _args_without_none(hint) -> tuple[Any, ...]:
    return tuple(a for a in typing.get_args(hint) if a is not type(None))


def _is_optional(hint) -> bool:
    return _is_union(hint) and type(None) in typing.get_args(hint)


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _section_type(hint) -> type | None:
    """The dataclass a field holds (also `Section | None`), else None."""
    candidates = _args_without_none(hint) if _is_union(hint) else (hint,)
    if len(candidates) == 1 and dataclasses.is_dataclass(candidates[0]):
        return candidates[0]
    return None


def _value_text(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "(section)"
    value = value.value if isinstance(value, enum.Enum) else value
    try:
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()
    except yaml.YAMLError:  # a TRL default of a type YAML does not know
        return str(value)
