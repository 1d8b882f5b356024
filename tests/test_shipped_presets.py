"""Every shipped stage preset loads, and the data it names is there.

Pipeline presets (`stages:`) have their own schema and are tested in tests/config/test_presets.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from eulerforge_trl.config import load_preset
from eulerforge_trl.config.shipped import PACKAGE_ROOT, SHIPPED_DIR
from eulerforge_trl.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
ALL_PRESETS = sorted(SHIPPED_DIR.glob("*.yml"))
STAGE_PRESETS = [p for p in ALL_PRESETS if "stages" not in (yaml.safe_load(p.read_text(encoding="utf-8")) or {})]


def test_presets_directory_is_not_empty():
    assert len(STAGE_PRESETS) >= 2 and len(STAGE_PRESETS) < len(ALL_PRESETS)


def test_repository_presets_folder_is_the_shipped_one():
    """presets/ at the repository root is a link to the package's presets, so old paths keep working."""
    assert (REPO / "presets").resolve() == SHIPPED_DIR
    assert (REPO / "examples" / "data").resolve() == PACKAGE_ROOT / "examples" / "data"


@pytest.mark.parametrize("path", STAGE_PRESETS, ids=lambda p: p.name)
def test_preset_loads(path):
    preset = load_preset(path)
    assert preset.training.type in STAGES


@pytest.mark.parametrize("path", STAGE_PRESETS, ids=lambda p: p.name)
def test_preset_data_files_exist(path):
    """Shipped example data must exist; tiny presets run out of the box, so they use only that.

    Real-model presets may name the user's own data (e.g. data/sft.jsonl), documented in the header.
    """
    data = load_preset(path).data
    named = [p for p in (data.path, data.eval_path) if p]
    assert named, "a preset must name its training data"
    for name in named:
        if path.name.startswith("tiny_") or Path(name).parts[0] == "examples":
            # shipped in the package too, where a shipped preset finds it from any directory
            assert (PACKAGE_ROOT / name).is_file(), f"{path.name}: data file {name} is not in the package"


@pytest.mark.parametrize("path", STAGE_PRESETS, ids=lambda p: p.name)
def test_preset_is_headed_by_its_purpose_and_command(path):
    """Each preset opens with a comment saying what it is for (one line, shown by `eulerforge presets`) and
    the command that runs it by its shipped name."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    assert header, f"{path.name} has no header comment"
    assert len(header[0]) <= 100 and header[0].rstrip().endswith("."), f"{path.name}: a one-line purpose first"
    assert any(f"eulerforge train --preset {path.name}" in line for line in header), (
        f"{path.name}: the header should show the command that runs it"
    )
