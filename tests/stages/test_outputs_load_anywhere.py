"""Every stage's `final/` loads from any working directory, and after its outputs folder moved.

A stage given its base by a relative path (`model_name=outputs/tiny/01_sft/final`, as the README's
commands do) used to write that relative path into `final/adapter_config.json` (peft records the
model's `name_or_path` as given), so `.../03_ppo/final` loaded only from the directory it was
trained in. Here each stage runs from a working directory with relative paths, and its `final/`
is loaded from another one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from eulerforge_trl.models.loading import load_causal_lm, load_tokenizer
from eulerforge_trl.train import main


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A working directory to train from; the SFT and RM finals are copied into it as outputs/..."""
    directory = tmp_path / "work"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def _copy_inputs(work: Path, sft_final: Path, rm_final: Path | None = None) -> None:
    shutil.copytree(sft_final, work / "outputs" / "01_sft" / "final")
    if rm_final is not None:
        shutil.copytree(rm_final, work / "outputs" / "02_rm" / "final")


def _elsewhere(tmp_path, monkeypatch) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)


def _load_policy(final: Path) -> None:
    """What `evaluate --models` and a next stage do with a final/: its tokenizer and causal LM."""
    load_tokenizer(str(final))
    load_causal_lm(str(final))


def _rl_stage(kind, work, tmp_path, monkeypatch, tiny_argv, tiny_sft_final, tiny_rm_final, *overrides) -> Path:
    _copy_inputs(work, tiny_sft_final, tiny_rm_final)
    argv = tiny_argv(
        f"tiny_{kind}.yml",
        "outputs/03",
        "model_name=outputs/01_sft/final",
        "training.reward_model.checkpoint_path=outputs/02_rm/final",
        "training.max_steps=1",
        "training.save_steps=1",
        "training.batch_size=8",
        *overrides,
    )
    assert main(argv) == 0
    final = work / "outputs" / "03" / "final"
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((work / "outputs" / "01_sft" / "final").resolve())
    _elsewhere(tmp_path, monkeypatch)
    _load_policy(final)
    return final


def test_ppo_final_loads_from_another_directory(work, tmp_path, monkeypatch, tiny_argv, tiny_sft_final, tiny_rm_final):
    final = _rl_stage(
        "ppo",
        work,
        tmp_path,
        monkeypatch,
        tiny_argv,
        tiny_sft_final,
        tiny_rm_final,
        "training.ppo.score_norm_samples=8",
    )
    critic = (
        json.loads((final / "critic_adapter" / "adapter_config.json").read_text())
        if (final / "critic_adapter").is_dir()
        else None
    )
    assert critic is None or Path(critic["base_model_name_or_path"]).is_absolute()


def test_grpo_final_loads_from_another_directory_and_after_a_move(
    work, tmp_path, monkeypatch, tiny_argv, tiny_sft_final, tiny_rm_final
):
    _rl_stage("grpo", work, tmp_path, monkeypatch, tiny_argv, tiny_sft_final, tiny_rm_final)
    # the whole outputs folder moves: the absolute base is gone, the one beside it is found
    moved = tmp_path / "moved"
    shutil.move(str(work / "outputs"), moved)
    _load_policy(moved / "03" / "final")


def test_rm_final_loads_from_another_directory(work, tmp_path, monkeypatch, tiny_argv, tiny_sft_final):
    from eulerforge_trl.models.scorer import load_reward_model, score

    _copy_inputs(work, tiny_sft_final)
    argv = tiny_argv("tiny_rm.yml", "outputs/02_rm", "model_name=outputs/01_sft/final", "training.max_steps=1")
    assert main(argv) == 0
    final = work / "outputs" / "02_rm" / "final"
    config = json.loads((final / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()
    _elsewhere(tmp_path, monkeypatch)
    scorer, tokenizer = load_reward_model(str(final))
    assert len(score(scorer, tokenizer, ["Hi"], ["there"])) == 1


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_merged_finals_load_from_another_directory(kind, work, tmp_path, monkeypatch, tiny_argv, tiny_sft_final):
    """SFT and DPO write the adapter merged into the base: a full model that names no base to find."""
    _copy_inputs(work, tiny_sft_final)
    argv = tiny_argv(f"tiny_{kind}.yml", f"outputs/{kind}", "model_name=outputs/01_sft/final", "training.max_steps=1")
    assert main(argv) == 0
    final = work / "outputs" / kind / "final"
    assert not (final / "adapter_config.json").exists()
    _elsewhere(tmp_path, monkeypatch)
    _load_policy(final)
    assert os.getcwd() != str(work)


# ------------------------------------------------------------------------------------ the pieces, fast


@pytest.fixture
def tiny_base(work) -> str:
    """The tiny model saved as a local directory, named relative to the working directory."""
    from eulerforge_trl.models.tiny import build_tiny_model, load_tiny_tokenizer

    build_tiny_model().save_pretrained(work / "base")
    load_tiny_tokenizer().save_pretrained(work / "base")
    return "base"


def test_an_adapter_records_its_base_absolute(work, tiny_base):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_causal_lm(tiny_base), LoraConfig(r=2, target_modules=["q_proj"]))
    assert model.peft_config["default"].base_model_name_or_path == str(work / "base")


def test_pin_adapter_base_and_the_fallback_after_a_move(work, tmp_path, monkeypatch, tiny_base):
    from peft import LoraConfig, get_peft_model

    from eulerforge_trl.models.loading import pin_adapter_base
    from eulerforge_trl.rundir import atomic_directory, write_final_marker

    model = get_peft_model(load_causal_lm(tiny_base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.peft_config["default"].base_model_name_or_path = tiny_base  # as peft recorded it before
    final = work / "run" / "final"
    with atomic_directory(final) as tmp:
        model.save_pretrained(tmp)
        write_final_marker(tmp, stage="ppo", **pin_adapter_base(tmp, final))
    config = json.loads((final / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(work / "base")
    assert json.loads((final / "eulerforge_final.json").read_text())["base_relative"] == "../../base"
    shutil.move(str(work), tmp_path / "moved")
    _elsewhere(tmp_path, monkeypatch)
    _load_policy(tmp_path / "moved" / "run" / "final")
