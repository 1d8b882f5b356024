"""A built wheel carries the presets and their example data: shipped names work from any directory.

The wheel is built from a copy of the sources (the shared checkout stays clean), installed with
`pip install --target`, and used from a fresh directory in subprocesses whose PYTHONPATH puts the
installed copy first (dependencies still come from this environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHECK = """
from pathlib import Path
import eulerforge_trl
from eulerforge_trl.config import load_preset

site = Path({site!r})
assert Path(eulerforge_trl.__file__).resolve().is_relative_to(site), eulerforge_trl.__file__
load_preset("qwen3.5_0.8b_dense_lora_sft.yml")
for name in ("tiny_sft.yml", "tiny_ppo", "smollm2_135m_lora_rm.yml"):
    data = load_preset(name).data
    for path in (data.path, data.eval_path):
        assert path is None or (Path(path).is_file() and Path(path).resolve().is_relative_to(site)), (name, path)
print("ok")
"""


def _run(argv: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_installed_wheel_finds_shipped_presets_and_data_from_any_directory(tmp_path):
    source = tmp_path / "source"
    (source / "src").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "src" / "eulerforge_trl",
        source / "src" / "eulerforge_trl",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source)],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "dist").glob("eulerforge_trl-*.whl")
    site = tmp_path / "site"
    _run([*pip, "install", "--no-deps", "-q", "--target", str(site), str(wheel)], tmp_path, env)
    assert (site / "eulerforge_trl" / "presets" / "qwen3.5_0.8b_dense_lora_sft.yml").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["PYTHONPATH"] = str(site)
    assert _run([sys.executable, "-c", CHECK.format(site=str(site))], elsewhere, env).strip() == "ok"
    listing = _run([sys.executable, "-m", "eulerforge_trl.cli", "presets"], elsewhere, env)
    for name in ("qwen3.5_0.8b_dense_lora_sft.yml", "tiny_sft.yml", "smollm2_pipeline.yml"):
        assert name in listing
    explained = _run(
        [sys.executable, "-m", "eulerforge_trl.cli", "presets", "--explain", "training.ppo.kl_coef"], elsewhere, env
    )
    assert explained.startswith("training.ppo.kl_coef") and "default: 0.05" in explained
