"""Values the schema's types let through but the stages cannot use: each is one PresetError line
naming the key (and the file's line), raised before anything is loaded or written."""

from __future__ import annotations

import logging

import pytest

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import PresetError


@pytest.mark.parametrize(
    "text, message",
    [
        ("data:\n  path: a.jsonl\n  columns: [a, b]\n", r"p.yml:3: data.columns: expected a mapping of keys"),
        ("training:\n  lr: 1.0e-4\n  reward_funcs: {x: 1}\n", r"p.yml:3: training.reward_funcs: expected a list"),
        ("training:\n  lr: 1.0e-4\n  reward_weights: [abc]\n", r"p.yml:3: training.reward_weights\[0\]"),
    ],
)
def test_a_list_or_mapping_of_the_wrong_kind_names_its_key_and_line(tmp_path, text, message):
    path = tmp_path / "p.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PresetError, match=message):
        load_preset(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.lr=[", r"--set training.lr=\[: the value is not valid YAML"),
        ("training.reward_funcs=[f.py:]", "not valid YAML"),
        ("training.reward_funcs={x: 1}", r"\(in --set\): training.reward_funcs: expected a list"),
        ("data.columns=[a]", r"\(in --set\): data.columns: expected a mapping of keys"),
        ("=5", "expected KEY=VALUE"),
    ],
)
def test_a_bad_override_is_one_line_naming_it(override, message):
    with pytest.raises(PresetError, match=message):
        load_preset("tiny_ppo.yml", [override])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["training.reward_model.weight=.nan"], "training.reward_model.weight"),
        (["training.reward_funcs=[m:f]", "training.reward_weights=[.inf]"], r"training.reward_weights\[0\]"),
        (["training.ppo.kl_coef=.inf"], "training.ppo.kl_coef"),
    ],
)
def test_nan_and_infinite_numbers_are_refused(overrides, key):
    with pytest.raises(PresetError, match=f"{key} \\((nan|inf)\\) must be a finite number"):
        load_preset("tiny_ppo.yml", overrides)


@pytest.mark.parametrize("key", ["training.ppo.vf_coef=-1", "training.ppo.sample_every=-1"])
def test_negative_ppo_values_are_refused(key):
    with pytest.raises(PresetError, match=key.split("=")[0].replace(".", r"\.")):
        load_preset("tiny_ppo.yml", [key])


def test_a_logger_that_is_not_installed_is_refused_with_its_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(PresetError, match="training.report_to: wandb is not installed here: pip install wandb"):
        load_preset("tiny_sft.yml", ["training.report_to=[tensorboard,wandb]"])
    assert load_preset("tiny_sft.yml", ["training.report_to=[tensorboard]"])


def test_eval_split_beside_eval_path_is_said_to_be_unused(caplog):
    with caplog.at_level(logging.WARNING):
        load_preset("tiny_sft.yml", ["data.eval_split=0.2"])
    assert "data.eval_split (0.2) is not used" in caplog.text


def test_a_key_set_twice_in_a_preset_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "p.yml"
    path.write_text("training:\n  lr: 1.0e-4\n  batch_size: 2\n  lr: 2.0e-4\n", encoding="utf-8")
    with pytest.raises(PresetError, match=r"p.yml:4: not valid YAML \(key 'lr' is set twice \(also on line 2\)"):
        load_preset(path)
