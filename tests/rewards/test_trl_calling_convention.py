"""Reward functions are called exactly as TRL 1.16's GRPOTrainer calls them (`_calculate_rewards`):

    fn(prompts=..., completions=..., completion_ids=..., **columns,
       trainer_state=..., log_extra=..., log_metric=...)

so TRL's own functions, which take `completions` first, work in PPO, GRPO and `evaluate --judge`.
A positional call `fn(prompts, completions, ...)` broke them: `think_format_reward` "takes 1
positional argument but 2 were given", a `(completions, solution, **kw)` function got "multiple
values for argument 'solution'".
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from eulerforge_trl.errors import UserError
from eulerforge_trl.rewards.functions import call_reward_function
from eulerforge_trl.rewards.sources import RewardFunction, RewardSources

CONVERSATIONAL = [
    [{"role": "assistant", "content": "<think>\nreasoning\n</think>\nanswer"}],
    [{"role": "assistant", "content": "no tags at all"}],
]


def solution_first(completions, solution, **kwargs):
    """The shape of `trl.rewards.accuracy_reward` (which needs math_verify, absent here)."""
    return [float(c[0]["content"].endswith(s)) for c, s in zip(completions, solution)]


def test_trl_think_format_reward_takes_completions_first():
    from trl.rewards import think_format_reward

    assert call_reward_function(think_format_reward, "f", ["p", "q"], CONVERSATIONAL) == [1.0, 0.0]


def test_a_completions_first_function_gets_its_column_by_name():
    values = call_reward_function(solution_first, "f", ["p", "q"], CONVERSATIONAL, solution=["answer", "answer"])
    assert values == [1.0, 0.0]


def test_trl_functions_on_completion_ids():
    from trl.rewards import get_repetition_penalty_reward, get_soft_overlong_punishment

    ids = [[5, 6, 7, 5, 6, 7, 5, 6, 7], [1, 2, 3, 4]]
    repetition = call_reward_function(
        get_repetition_penalty_reward(3, -1.0), "f", ["p", "q"], ["a", "b"], completion_ids=ids
    )
    assert repetition[0] < 0 and repetition[1] == 0.0
    overlong = call_reward_function(get_soft_overlong_punishment(8, 4), "f", ["p", "q"], ["a", "b"], completion_ids=ids)
    assert overlong == [-1.0, 0.0]


def test_every_keyword_trl_passes_arrives_and_the_loggers_are_callable():
    seen = {}

    def spy(**kwargs):
        seen.update(kwargs)
        kwargs["log_metric"]("spy/calls", 1.0)  # TRL's functions may call them without checking for None
        kwargs["log_extra"]("spy_column", ["x", "y"])
        return [0.0, 0.0]

    state = SimpleNamespace(global_step=3)
    call_reward_function(spy, "f", ["p", "q"], ["a", "b"], completion_ids=[[1], [2]], trainer_state=state, hint=[1, 2])
    assert set(seen) == {"prompts", "completions", "completion_ids", "hint", "trainer_state", "log_extra", "log_metric"}
    assert seen["trainer_state"] is state and seen["completion_ids"] == [[1], [2]] and seen["hint"] == [1, 2]


def test_a_function_that_cannot_take_trl_keywords_is_one_line():
    def renamed(p, c):
        return [0.0] * len(c)

    with pytest.raises(UserError, match=r"^f: cannot be called as TRL calls reward functions") as err:
        call_reward_function(renamed, "f", ["p"], ["a"])
    assert "\n" not in str(err.value)


def test_reward_sources_pass_completion_ids_and_collect_logged_metrics():
    def counts(completions, completion_ids, log_metric, **kwargs):
        log_metric("tokens", float(sum(len(ids) for ids in completion_ids)))
        return [float(len(ids)) for ids in completion_ids]

    sources = RewardSources(None, [RewardFunction("counts", "rules.py:counts", counts, 2.0)], torch.device("cpu"))
    total, parts = sources.score(["p", "q"], ["a", "b"], completion_ids=[[1, 2, 3], [4]])
    assert parts["reward/counts"].tolist() == [3.0, 1.0] and total.tolist() == [6.0, 2.0]
    sources.score(["p"], ["a"], completion_ids=[[1]])
    assert sources.pop_logged_metrics() == {"tokens": 2.5}
    assert sources.pop_logged_metrics() == {}


def test_grpo_wrapper_forwards_what_trl_passes():
    """grpo.user_reward as TRL's `_calculate_rewards` calls it, with TRL's own function inside."""
    from trl.rewards import think_format_reward

    from eulerforge_trl.trainers.group_rewards import user_reward

    recorded = []
    recorder = SimpleNamespace(add=lambda *args: recorded.append(args))
    wrapped = user_reward(
        RewardFunction("think", "trl.rewards:think_format_reward", think_format_reward, 1.0), recorder
    )
    values = wrapped(
        prompts=["p", "q"],
        completions=CONVERSATIONAL,
        completion_ids=[[1, 2], [3]],
        solution=["answer", "x"],
        trainer_state=SimpleNamespace(global_step=0),
        log_extra=lambda column, values: None,
        log_metric=lambda name, value: None,
    )
    assert values == [1.0, 0.0] and recorded[0][0] == "think"
    first = user_reward(RewardFunction("first", "m:solution_first", solution_first, 1.0), recorder)
    assert first(
        prompts=["p", "q"], completions=CONVERSATIONAL, completion_ids=[[1], [2]], solution=["answer", "x"]
    ) == [
        1.0,
        0.0,
    ]


def test_none_is_still_nan():
    values = call_reward_function(lambda completions, **kw: [None, 1], "f", ["p", "q"], ["a", "b"])
    assert math.isnan(values[0]) and values[1] == 1.0
