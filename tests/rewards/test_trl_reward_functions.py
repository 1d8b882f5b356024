"""TRL's own reward functions named as a preset names them, scored through the same call as ours.

`training.reward_funcs` entries go through `load_functions` and `RewardSources.score` (PPO; GRPO
wraps the same call): `trl.rewards:accuracy_reward` (math-verify, the `[math]` extra) checks a
`\\boxed{}` answer against the `solution` column; `think_format_reward` checks the <think> format.
"""

from __future__ import annotations

import math

import pytest
import torch

from eulerforge_trl.config import load_preset
from eulerforge_trl.errors import UserError
from eulerforge_trl.rewards import functions
from eulerforge_trl.rewards.functions import load_reward_function
from eulerforge_trl.rewards.sources import RewardSources, load_functions

PROMPTS = [[{"role": "user", "content": "What is 6 x 7? Put the answer in \\boxed{}."}]] * 4
COMPLETIONS = [
    "<think>\n6 x 7 = 42\n</think>\nThe answer is \\boxed{42}.",
    "The answer is \\boxed{41}.",
    "<think>\nsix sevens\n</think>\n42",  # right number, not boxed: accuracy_reward does not extract it
    "\\boxed{\\frac{84}{2}}",  # the same value, written otherwise
]


@pytest.mark.parametrize("accuracy", ["trl.rewards:accuracy_reward", "trl.rewards.accuracy_reward"])
def test_trl_accuracy_and_think_format_through_the_preset_call(accuracy):
    specs = [accuracy, "trl.rewards.think_format_reward", "eulerforge_trl.examples.arithmetic:exact_match_reward"]
    sources = RewardSources(None, load_functions(specs, [1.0, 0.5, 1.0]), torch.device("cpu"))
    columns = {"solution": ["42"] * 4, "answer": ["42"] * 4}
    total, parts = sources.score(PROMPTS, COMPLETIONS, columns, completion_ids=[[1]] * 4)
    assert parts["reward/accuracy_reward"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert parts["reward/think_format_reward"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert parts["reward/exact_match_reward"].tolist() == [1.0, 0.0, 1.0, 0.0]  # \frac{84}{2}: last number 2
    assert total.tolist() == [2.5, 0.0, 1.5, 1.0]


def test_an_unparsable_solution_is_no_reward_not_zero():
    sources = RewardSources(None, load_functions(["trl.rewards:accuracy_reward"], None), torch.device("cpu"))
    _, parts = sources.score(PROMPTS[:1], ["\\boxed{42}"], {"solution": ["no number here"]})
    assert math.isnan(parts["reward/accuracy_reward"].item())


def test_a_preset_names_trl_functions_by_either_spelling(repo):
    preset = load_preset(
        repo / "presets" / "smollm2_135m_lora_grpo_math.yml",
        ["training.reward_funcs=[trl.rewards.accuracy_reward,trl.rewards:think_format_reward]"],
    )
    assert [f.name for f in load_functions(list(preset.training.reward_funcs), None)] == [
        "accuracy_reward",
        "think_format_reward",
    ]


def test_accuracy_reward_without_math_verify_is_refused_at_load_with_the_extra(monkeypatch):
    real_find_spec = functions.importlib.util.find_spec
    monkeypatch.setattr(
        functions.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "math_verify" else real_find_spec(name, *a),
    )
    with pytest.raises(UserError) as err:
        load_reward_function("trl.rewards:accuracy_reward", key="training.reward_funcs")
    assert str(err.value) == (
        "training.reward_funcs trl.rewards:accuracy_reward needs the math_verify package: "
        "pip install 'eulerforge-trl[math]' (math-verify)"
    )
    load_reward_function("trl.rewards:think_format_reward")  # needs nothing more


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("trl.rewards.no_such_reward", "trl.rewards has no function 'no_such_reward'"),
        ("no_such_package_xyz.fn", "no module named 'no_such_package_xyz'"),
        ("trl.rewards.", "expected package.module:function"),
    ],
)
def test_dotted_spec_errors_are_one_line(spec, expected):
    with pytest.raises(UserError) as err:
        load_reward_function(spec, key="training.reward_funcs")
    assert str(err.value).startswith(f"training.reward_funcs {spec}") and expected in str(err.value)
