"""Reward functions by name: every way loading or calling one can go wrong is one UserError naming it."""

from __future__ import annotations

import math

import pytest

from eulerforge_trl.errors import UserError
from eulerforge_trl.rewards.functions import call_reward_function, load_reward_function

RULES = """
import numpy as np

def by_length(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]

def strict(prompts, completions):
    return [1.0 for _ in completions]

def with_column(prompts, completions, answer):
    return [float(c == a) for c, a in zip(completions, answer)]

def odd_types(prompts, completions, **kwargs):
    return np.array([1, 2.5, None][: len(completions)], dtype=object)

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "rules.py"
    path.write_text(RULES)
    return path


def test_file_and_module_specs_load(rules):
    assert load_reward_function(f"{rules}:by_length")(["p"], ["abc"]) == [3.0]
    fn = load_reward_function("eulerforge_trl.examples.reviews:review_reward")
    assert fn.__name__ == "review_reward"


def test_keyword_columns_reach_only_the_functions_that_take_them(rules):
    strict = load_reward_function(f"{rules}:strict")
    assert call_reward_function(strict, "x", ["p", "q"], ["a", "b"], answer=["a", "c"], completion_ids=[[1], [2]]) == [
        1.0,
        1.0,
    ]
    with_column = load_reward_function(f"{rules}:with_column")
    assert call_reward_function(with_column, "x", ["p", "q"], ["a", "b"], answer=["a", "c"], other=[0, 0]) == [1.0, 0.0]


def test_numpy_values_and_none(rules):
    values = call_reward_function(load_reward_function(f"{rules}:odd_types"), "x", ["p"] * 3, ["a"] * 3)
    assert values[:2] == [1.0, 2.5] and math.isnan(values[2])


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("rules_without_function", "expected package.module:function"),
        ("{rules}:", "expected package.module:function"),
        ("{rules}:absent", "has no function 'absent'"),
        ("{rules}:NOT_A_FUNCTION", "is a int, not a function"),
        ("{dir}/absent.py:fn", "file not found"),
        ("no_such_package_xyz:fn", "no module named 'no_such_package_xyz'"),
        ("{broken}:fn", "importing"),
    ],
)
def test_load_errors_name_the_key_and_spec(spec, expected, rules, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def fn(:\n")
    spec = spec.format(rules=rules, dir=tmp_path, broken=broken)
    with pytest.raises(UserError) as err:
        load_reward_function(spec, key="training.reward_funcs")
    message = str(err.value)
    assert message.startswith(f"training.reward_funcs {spec}") and expected in message
    assert "\n" not in message


def test_call_errors_name_the_function(rules):
    def raises(prompts, completions, **kwargs):
        raise ValueError("bad input\nsecond line")

    with pytest.raises(
        UserError, match=r"^--judge f: raised ValueError: bad input \(at .*test_reward_functions.py:\d+\)$"
    ):
        call_reward_function(raises, "--judge f", ["p"], ["c"])
    with pytest.raises(UserError, match="returned 1 values for 2 completions"):
        call_reward_function(lambda prompts, completions: [1.0], "f", ["p", "q"], ["a", "b"])
    with pytest.raises(UserError, match="returned float, expected a list of 1 numbers"):
        call_reward_function(lambda prompts, completions: 1.0, "f", ["p"], ["a"])
    with pytest.raises(UserError, match="value 1 is str 'x', not a number"):
        call_reward_function(lambda prompts, completions: [1.0, "x"], "f", ["p", "q"], ["a", "b"])


def test_a_reward_function_calling_sys_exit_is_one_line_not_a_silent_exit():
    import sys

    from eulerforge_trl.errors import UserError
    from eulerforge_trl.rewards.functions import call_reward_function

    with pytest.raises(UserError, match=r"rf.py:quits: called sys.exit\(3\)"):
        call_reward_function(lambda prompts, completions: sys.exit(3), "rf.py:quits", ["p"], ["a"])
