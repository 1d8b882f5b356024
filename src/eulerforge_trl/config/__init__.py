"""Preset schema, loading and checks (imports nothing heavy)."""

from .loading import load_preset, preset_to_yaml
from .schema import TINY_MODEL_NAME, Preset
from .shipped import resolve_preset_path

__all__ = ["Preset", "TINY_MODEL_NAME", "load_preset", "preset_to_yaml", "resolve_preset_path"]
