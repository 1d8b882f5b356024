"""The presets shipped inside the package, and how a preset argument finds its file.

`--preset X` (and every function that takes a preset path) means, in order:

1. the file X, if it exists (a local file always wins over a shipped preset of the same name);
2. else, when X is a bare name, the shipped preset X or X.yml (`eulerforge presets` lists them);
3. else a `PresetError` naming the closest shipped presets.

Shipped presets name their example data relative to the working directory
(`examples/data/sft.jsonl`, the layout of a repository checkout). The package ships that data at
the same relative path under `eulerforge_trl/`, so where the working directory lacks the file the
shipped copy is used (`shipped_data_path`): the tiny and SmolLM2 presets run from any directory and
from an installed wheel.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from ..errors import PresetError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DIR = PACKAGE_ROOT / "presets"
SUFFIX = ".yml"


@dataclass(frozen=True)
class ShippedPreset:
    """One preset file shipped in the package."""

    name: str  # file name, e.g. "tiny_sft.yml": what `--preset` takes
    path: Path
    kind: str  # the stage it trains (training.type), or "pipeline"
    purpose: str  # the first line of its header comment


def shipped_presets() -> list[ShippedPreset]:
    """Every shipped preset, sorted by name."""
    import yaml

    found = []
    for path in sorted(SHIPPED_DIR.glob(f"*{SUFFIX}")):
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text) or {}
        if "stages" in raw:
            kind = "pipeline"
        else:
            kind = str((raw.get("training") or {}).get("type", "sft"))
        found.append(ShippedPreset(path.name, path, kind, _purpose(text)))
    return found


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_DIR.glob(f"*{SUFFIX}"))


def resolve_preset_path(preset: str | Path) -> Path:
    """The file a preset argument names: an existing path first, then a shipped preset by name.

    Args:
        preset: a path to a YAML file, or the name of a shipped preset with or without `.yml`
            (`qwen3.5_0.8b_dense_lora_sft.yml`, `tiny_sft`).

    Returns:
        The path as given when it is a file, else the shipped preset's path.

    Raises:
        PresetError: neither exists; one line naming the closest shipped presets.

    Example:
        >>> resolve_preset_path("tiny_sft").name
        'tiny_sft.yml'
    """
    path = Path(preset)
    if path.is_file():
        return path
    if len(path.parts) == 1:
        for candidate in (path.name, path.name + SUFFIX):
            shipped = SHIPPED_DIR / candidate
            if shipped.is_file():
                return shipped
    raise PresetError(f"preset file not found: {preset} ({_suggestion(path.name)})")


def is_shipped(path: str | Path) -> bool:
    """Whether `path` is one of the shipped presets (also through a symlink such as ./presets)."""
    return Path(path).resolve().parent == SHIPPED_DIR


def shipped_data_path(value: str) -> str:
    """A shipped preset's data path: as written if it exists from the working directory, else the
    copy shipped in the package (`examples/data/...`) if there is one, else as written."""
    path = Path(value)
    if not value or path.is_absolute() or path.exists():
        return value
    bundled = PACKAGE_ROOT / path
    return str(bundled) if bundled.is_file() else value


def _purpose(text: str) -> str:
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.lstrip("# ").strip():
            return line.lstrip("# ").strip()
    return ""


def _suggestion(name: str) -> str:
    names = shipped_names()
    stems = {n.removesuffix(SUFFIX): n for n in names}
    close = difflib.get_close_matches(name.removesuffix(SUFFIX), list(stems), n=3, cutoff=0.4)
    if close:
        listed = ", ".join(stems[c] for c in close)
        return f"not a file; closest shipped presets: {listed}; `eulerforge presets` lists them all"
    return "not a file nor a shipped preset; `eulerforge presets` lists the shipped ones"


def presets_table() -> str:
    """What `eulerforge presets` prints: each shipped preset, the stage it trains and its purpose."""
    presets = shipped_presets()
    width = max(len(p.name) for p in presets)
    lines = [f"{'preset':<{width}}  {'stage':<8}  purpose"]
    lines += [f"{p.name:<{width}}  {p.kind:<8}  {p.purpose}" for p in presets]
    lines += [
        "",
        "eulerforge train --preset NAME [--set key=value ...]   (pipelines: eulerforge pipeline NAME)",
        "A local file of the same name wins. Each preset's header shows its full command;",
        "eulerforge presets --explain KEY  prints what a key does (training.ppo.kl_coef) or a section's keys.",
    ]
    return "\n".join(lines)
