"""The building blocks of the schema: a field with its doc, and a section's checks.

Every section of the preset tree (`schema.py`, `stage_sections.py`) declares its fields with
`setting` and may check the rules that span its keys in `problems(preset) -> list[str]`, written
with `failed`; `config.rules.preset_problems` calls the checks of the sections the stage reads.
"""

from collections.abc import Callable
from dataclasses import MISSING, field
from typing import Any


def setting(default: Any = MISSING, doc: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A schema field and its doc: what it does and a rule of thumb (`eulerforge presets --explain`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def doc_of(section: type, name: str) -> str:
    """The doc of field `name` of a schema dataclass."""
    return section.__dataclass_fields__[name].metadata.get("doc", "")


def failed(*rules: tuple[bool, str]) -> list[str]:
    """The messages of the rules that do not hold: `failed((x >= 0, f"x ({x}) must be >= 0"), ...)`."""
    return [message for ok, message in rules if not ok]
