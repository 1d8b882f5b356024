"""Shared fixtures: paths, argv for tiny runs, and tiny SFT / RM runs trained once per session.

The tiny runs go through `eulerforge_trl.train.main([...])`, the same function the CLI calls, on
the built-in `tiny-qwen3.5` and the shipped example data. Later stages (RM, PPO) reuse their
`final/` directories instead of training their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

# One intra-op thread: on a small machine shared with other training jobs, two OpenMP threads per
# process spin against each other and slow the tiny runs down by 5-20x (measured on 2 cores).
# Set OMP_NUM_THREADS yourself to override; torch reads it when first imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "presets"
EXAMPLE_DATA = REPO / "examples" / "data"

# Step counts for the shared runs: enough that SFT learns the response template and the RM
# separates the held-out pairs, few enough that each run takes seconds on a CPU.
SFT_STEPS = 150
RM_STEPS = 160


@pytest.fixture(scope="session")
def repo() -> Path:
    """The repository root (presets/ and examples/ live here)."""
    return REPO


@pytest.fixture(scope="session")
def example_data() -> Path:
    """examples/data, the shipped JSONL files."""
    return EXAMPLE_DATA


def _tiny_argv(preset: str | Path, output_dir: str | Path, *overrides: str) -> list[str]:
    preset = Path(preset) if Path(preset).is_absolute() else PRESETS / preset
    raw = yaml.safe_load(preset.read_text(encoding="utf-8")) or {}
    argv = [str(preset), "--output-dir", str(output_dir), "--set", "training.report_to=[]"]
    # The presets name data relative to the repository root; the tests may run from anywhere.
    for key in ("path", "eval_path"):
        value = (raw.get("data") or {}).get(key)
        if value and not Path(value).is_absolute():
            argv += ["--set", f"data.{key}={REPO / value}"]
    for item in overrides:
        argv += ["--set", item]
    return argv


@pytest.fixture(scope="session")
def tiny_argv():
    """`tiny_argv("tiny_sft.yml", out_dir, "training.max_steps=5", ...)` -> argv for `train.main`.

    Adds `--output-dir`, turns TensorBoard off and makes the preset's data paths absolute.
    """
    return _tiny_argv


@pytest.fixture(scope="session")
def tiny_sft_overrides() -> list[str]:
    """The `--set` items (besides paths) of the shared tiny SFT run, for tests that repeat it."""
    return [f"training.max_steps={SFT_STEPS}", "training.save_steps=50"]


def _trained_once(tmp_path_factory, worker_id: str, name: str, argv_for) -> Path:
    """The output directory of `train.main(argv_for(out))`, trained once per test run.

    Under xdist every worker would train its own copy of a session fixture (two minutes of the
    suite's wall time each); the first worker to need it trains it under a file lock in the directory
    all workers share, the others wait for it and read the same files. Tests copy a run before
    they write into it."""
    from filelock import FileLock

    from eulerforge_trl.train import main

    if worker_id == "master":  # no xdist: this process is the only one
        out = tmp_path_factory.mktemp(name)
        code = main(argv_for(out))
        assert code == 0, f"tiny {name} run failed with exit code {code}"
        return out
    out = tmp_path_factory.getbasetemp().parent / name
    done = out.with_name(f"{name}.trained")  # beside the run: a run directory holds only its own files
    with FileLock(f"{out}.lock"):
        if not done.is_file():
            shutil.rmtree(out, ignore_errors=True)  # a worker that failed mid-run left it half written
            out.mkdir()
            code = main(argv_for(out))
            assert code == 0, f"tiny {name} run failed with exit code {code}"
            done.touch()
    return out


@pytest.fixture(scope="session")
def tiny_sft_run(tmp_path_factory, worker_id, tiny_sft_overrides) -> Path:
    """Output directory of a tiny SFT run (presets/tiny_sft.yml, SFT_STEPS steps), trained once."""
    return _trained_once(
        tmp_path_factory, worker_id, "tiny_sft", lambda out: _tiny_argv("tiny_sft.yml", out, *tiny_sft_overrides)
    )


@pytest.fixture(scope="session")
def tiny_sft_final(tiny_sft_run) -> Path:
    """`final/` of the shared tiny SFT run: a full model that writes the example template."""
    return tiny_sft_run / "final"


@pytest.fixture(scope="session")
def tiny_rm_run(tmp_path_factory, worker_id, tiny_sft_final) -> Path:
    """Output directory of a tiny RM run (presets/tiny_rm.yml, RM_STEPS steps) on the shared SFT model."""
    return _trained_once(
        tmp_path_factory,
        worker_id,
        "tiny_rm",
        lambda out: _tiny_argv(
            "tiny_rm.yml",
            out,
            f"model_name={tiny_sft_final}",
            f"training.max_steps={RM_STEPS}",
            f"training.save_steps={RM_STEPS}",
        ),
    )


@pytest.fixture(scope="session")
def tiny_rm_final(tiny_rm_run) -> Path:
    """`final/` of the shared tiny RM run: LoRA adapter + reward_head.pt + reward_meta.json."""
    return tiny_rm_run / "final"


@pytest.fixture(scope="session")
def rm_on_another_base(tmp_path_factory, tiny_argv):
    """An RM trained (2 steps) on a tiny base of hidden size 64: the policy's base has 128
    (`training.reward_model.separate`)."""
    from transformers import AutoModelForCausalLM

    from eulerforge_trl.models.loading import load_tokenizer
    from eulerforge_trl.models.tiny import tiny_config
    from eulerforge_trl.train import main

    root = tmp_path_factory.mktemp("other_base")
    tokenizer = load_tokenizer("tiny-qwen3.5")
    config = tiny_config(len(tokenizer))
    config.hidden_size, config.intermediate_size = 64, 192
    AutoModelForCausalLM.from_config(config).save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    argv = tiny_argv("tiny_rm.yml", root / "rm", f"model_name={root / 'base'}", "training.max_steps=2")
    assert main(argv) == 0
    return root / "rm" / "final"


@pytest.hookimpl(tryfirst=True)  # before xdist's hook, which reads the xdist_group marks into the node ids
def pytest_collection_modifyitems(config, items):
    """With `--dist loadgroup` (the Makefile's), a test that uses a module- or class-scoped fixture
    runs on the worker that holds its module's other such tests (grouped by file), so that fixture
    is built once; every other test is scheduled on its own, so one long file does not set the wall
    time of the whole run as it does when every file is one unit."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = any(
            d.scope in ("module", "class", "package") for defs in info.name2fixturedefs.values() for d in defs[-1:]
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
