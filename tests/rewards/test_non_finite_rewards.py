"""Non-finite rewards stop the run before an optimizer step uses them; None / NaN keep their meaning.

A function's `None` (or NaN) is documented as "no reward for this completion" (it adds nothing,
TRL's nansum), even for a whole batch; +-inf, a number beyond float32's range, an RM score that is
not finite and a weighted total that overflows are one UserError naming the source.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from eulerforge_trl.errors import UserError
from eulerforge_trl.rewards import sources
from eulerforge_trl.rewards.functions import call_reward_function
from eulerforge_trl.rewards.sources import RewardFunction, RewardModelSource, RewardSources


@pytest.mark.parametrize(
    "value, shown",
    [
        (math.inf, "inf, not a finite number"),
        (-math.inf, "-inf, not a finite number"),
        (torch.tensor(float("inf")), "inf, not a finite number"),
        (1e39, "1e+39, beyond float32's range"),
        (10**400, "inf, not a finite number"),  # an int float() cannot hold
    ],
)
def test_infinite_values_are_one_line_naming_the_function(value, shown):
    with pytest.raises(UserError) as err:
        call_reward_function(lambda prompts, completions: [0.0, value], "rf.py:fn", ["p", "q"], ["a", "b"])
    message = str(err.value)
    assert message.startswith(f"rf.py:fn: value 1 is {shown}") and "\n" not in message
    assert "None for no reward" in message


def test_none_and_nan_still_mean_no_reward_and_a_batch_of_them_warns_once(caplog):
    values = call_reward_function(lambda prompts, completions: [None, math.nan, 2.0], "f", ["p"] * 3, ["a"] * 3)
    assert math.isnan(values[0]) and math.isnan(values[1]) and values[2] == 2.0
    with caplog.at_level(logging.WARNING, logger="eulerforge_trl.rewards.functions"):
        for _ in range(3):
            values = call_reward_function(
                lambda prompts, completions: [None, None], "all_none_fn", ["p"] * 2, ["a"] * 2
            )
            assert all(math.isnan(v) for v in values)
    warned = [r for r in caplog.records if "all_none_fn" in r.getMessage()]
    assert len(warned) == 1 and "adds nothing" in warned[0].getMessage()
    total, _ = RewardSources(None, [_function(lambda prompts, completions: [None, None])], "cpu").score(
        ["p", "q"], ["a", "b"]
    )
    assert total.tolist() == [0.0, 0.0]  # documented: None adds nothing, so the total is 0


def _function(fn, weight: float = 1.0, name: str = "fn") -> RewardFunction:
    return RewardFunction(name=name, spec=f"rules.py:{name}", fn=fn, weight=weight)


def test_an_infinite_function_value_stops_reward_sources_naming_the_spec():
    infinite = _function(lambda prompts, completions: [math.inf for _ in completions], name="some_inf")
    with pytest.raises(UserError, match=r"^training.reward_funcs rules.py:some_inf: value 0 is inf"):
        RewardSources(None, [infinite], "cpu").score(["p"], ["a"])


def test_an_rm_scoring_nan_or_inf_is_refused(monkeypatch):
    monkeypatch.setattr(sources, "score_pairs", lambda *args: torch.tensor([1.0, math.nan, math.inf]))
    rm = RewardModelSource(scorer=None, tokenizer=None, weight=1.0, checkpoint="/runs/rm/final")
    with pytest.raises(UserError) as err:
        RewardSources(rm, [], "cpu").score(["p"] * 3, ["a"] * 3)
    message = str(err.value)
    assert message.startswith("training.reward_model.checkpoint_path /runs/rm/final: scored 2 of 3 completions nan")
    assert "\n" not in message
    monkeypatch.setattr(sources, "score_pairs", lambda *args: torch.tensor([1.0, -2.0]))
    total, _ = RewardSources(rm, [], "cpu").score(["p"] * 2, ["a"] * 2)
    assert total.tolist() == [1.0, -2.0]


def test_a_weighted_total_that_overflows_float32_is_refused():
    big = _function(lambda prompts, completions: [1e38 for _ in completions], weight=10.0, name="big")
    with pytest.raises(UserError, match=r"weighted total reward overflows float32 \(reward/big=10\)"):
        RewardSources(None, [big], "cpu").score(["p"], ["a"])
