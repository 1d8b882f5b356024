"""Chains without an rm stage: sft -> grpo and sft -> ppo, the reward a function of the stage's preset.

The RM input of PPO and GRPO is optional in a chain (`Stage.optional_inputs`): without an rm stage
the preset's own `training.reward_model.checkpoint_path` stands (empty with `training.reward_funcs`),
and a stage with neither a reward function nor an RM is refused before anything trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eulerforge_trl.cli import pipeline_main
from eulerforge_trl.errors import PresetError
from eulerforge_trl.pipeline.full import plan_pipeline, read_pipeline_preset
from eulerforge_trl.rundir import read_metrics
from eulerforge_trl.stages import pipeline_chains

RULE = "def short(completions, **kwargs):\n    return [1.0 / (1 + len(c)) for c in completions]\n"


def test_sft_then_grpo_or_ppo_are_chains():
    assert ("sft", "grpo") in pipeline_chains() and ("sft", "ppo") in pipeline_chains()
    assert ("sft", "rm", "grpo") in pipeline_chains()


def test_the_math_pipeline_wires_the_sft_model_and_keeps_the_reward_function(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)  # the presets name their data relative to the repository root
    stages = read_pipeline_preset("smollm2_math_pipeline.yml")
    assert list(stages) == ["sft", "grpo"]
    plan = plan_pipeline(stages, {"sft": [], "grpo": []}, tmp_path)
    grpo, skip = plan["grpo"]
    assert not skip and grpo.model_name == str(tmp_path / "01_sft" / "final")
    assert grpo.training.reward_model.checkpoint_path == ""
    assert list(grpo.training.reward_funcs) == ["eulerforge_trl.examples.arithmetic:exact_match_reward"]


def test_a_stage_without_rm_and_without_a_reward_function_is_refused(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)
    path = tmp_path / "pipe.yml"
    path.write_text("stages:\n  sft: tiny_sft.yml\n  grpo: tiny_grpo.yml\n", encoding="utf-8")
    stages = read_pipeline_preset(path)
    per_stage = {"sft": [], "grpo": ["training.reward_model.checkpoint_path="]}
    with pytest.raises(PresetError) as err:
        plan_pipeline(stages, per_stage, tmp_path / "out")
    assert "stages.grpo runs without the rm stage, so its preset needs training.reward_funcs" in str(err.value)


@pytest.mark.slow  # two stages through the CLI
def test_sft_then_grpo_trains_on_a_reward_function(repo, tmp_path, monkeypatch):
    monkeypatch.chdir(repo)
    rule = tmp_path / "rule.py"
    rule.write_text(RULE, encoding="utf-8")
    path = tmp_path / "pipe.yml"
    path.write_text("stages:\n  sft: tiny_sft.yml\n  grpo: tiny_grpo.yml\n", encoding="utf-8")
    out = tmp_path / "out"
    sets = [
        "sft.training.max_steps=2",
        "grpo.training.max_steps=1",
        "grpo.training.reward_model.checkpoint_path=",
        f"grpo.training.reward_funcs=[{rule}:short]",
    ]
    argv = [str(path), "--output-dir", str(out)]
    for item in [*sets, "sft.training.report_to=[]", "grpo.training.report_to=[]"]:
        argv += ["--set", item]
    assert pipeline_main(argv) == 0
    record = [r for r in read_metrics(out / "03_grpo" / "metrics.jsonl") if "reward_mean" in r][0]
    assert record["reward_mean"] == record["reward/short"] and "reward/rm" not in record
    preset = json.loads(json.dumps((out / "03_grpo" / "preset.yml").read_text(encoding="utf-8")))
    assert str(out / "01_sft" / "final") in preset and not Path(out / "02_rm").exists()
