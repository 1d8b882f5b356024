"""The rewards of the stages that sample groups of completions (GRPO, RLOO) as TRL reward functions,
the samples written beside them, and their metric names.

TRL's GRPOTrainer and RLOOTrainer call reward functions the same way: one after another on the same
(prompts, completions) of this process, with `completion_ids`, `trainer_state` and the data's other
columns as keyword arguments. `rm_reward` makes the RM adapter + head one of them (named "rm"),
`user_reward` each `training.reward_funcs` entry; both hand their values to a `SampleRecorder`,
which writes samples.jsonl once the last source of a batch has scored it. `RewardMetricNames` adds
the names PPO logs (reward_mean, kl_divergence, reward/<name>, ...) beside TRL's own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from transformers import TrainerCallback

from ..rewards.functions import call_reward_function
from ..rewards.sources import FUNCS_KEY, RM_NAME, RewardFunction, RewardModelSource
from ..rundir import RunDir, append_jsonl


class SampleRecorder:
    """Collects each source's rewards for the current batch; the last source writes samples.jsonl.

    TRL calls the reward functions one after another on the same (prompts, completions) of this
    process; after the last one the weighted total is known. Main process only, at step 1 and
    every `sample_every` steps; during TRL's evaluation (the model in eval mode, as TRL tells the
    modes apart) every held-out completion goes to eval_samples.jsonl under the step it follows.
    """

    def __init__(
        self, run: RunDir, names: list[str], weights: list[float], every: int, count: int, is_main: bool, model=None
    ):
        self.run, self.names, self.weights = run, names, weights
        self.every, self.count, self.is_main = every, count, is_main
        self.model = model
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, prompts: list, completions: list, values: list[float], trainer_state=None) -> None:
        self.values[name] = values
        if name != self.names[-1]:
            return
        values_by_source, self.values = self.values, {}
        done = trainer_state.global_step if trainer_state is not None else 0
        evaluating = self.model is not None and not self.model.training
        step = done if evaluating else done + 1  # an evaluation follows `done` steps; training computes the next
        if not self.is_main or not (evaluating or (self.every and (step == 1 or step % self.every == 0))):
            return
        records = []
        for i in range(len(completions) if evaluating else min(self.count, len(completions))):
            per_source = {n: values_by_source[n][i] for n in self.names if n in values_by_source}
            total = sum(w * v for n, w in zip(self.names, self.weights) if not math.isnan(v := per_source[n]))
            records.append(
                {
                    "step": step,
                    "prompt": prompts[i],
                    "response": _text(completions[i]),
                    "reward": total,
                    "rewards": per_source,
                }
            )
        append_jsonl(self.run.eval_samples if evaluating else self.run.samples, records, ensure_ascii=False)


def _text(completion) -> str:
    """A completion as text: TRL gives a string, or [{"role": "assistant", "content": ...}] for conversations."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion)
    return completion


def rm_reward(source: RewardModelSource, batch_size: int, recorder: SampleRecorder, stop_ids) -> Callable:
    """The RM as a TRL reward function named "rm": each (prompt, completion) rendered as the RM was
    trained and scored under no_grad (`RewardModelSource.score`, the same code PPO scores with), a
    completion that does not end in one of `stop_ids` (cut at max_completion_length) rendered as cut;
    on the shared base the policy adapter and the training mode are restored after every batch."""
    stops = set(stop_ids)

    def rm(prompts, completions, trainer_state=None, completion_ids=None, **_columns) -> list[float]:
        finished = [bool(ids) and ids[-1] in stops for ids in completion_ids] if completion_ids is not None else None
        scores = source.score(list(prompts), list(completions), batch_size, finished).tolist()
        recorder.add(RM_NAME, prompts, completions, scores, trainer_state)
        return scores

    rm.__name__ = rm.__qualname__ = RM_NAME
    return rm


def user_reward(function: RewardFunction, recorder: SampleRecorder) -> Callable:
    """A `training.reward_funcs` entry as a TRL reward function under its logging name; whatever goes
    wrong in the user's code is one `UserError` naming the spec (`call_reward_function`)."""

    def reward(prompts, completions, **kwargs) -> list[float]:
        values = call_reward_function(function.fn, f"{FUNCS_KEY} {function.spec}", prompts, completions, **kwargs)
        recorder.add(function.name, prompts, completions, values, kwargs.get("trainer_state"))
        return values

    reward.__name__ = reward.__qualname__ = function.name
    return reward


class RewardMetricNames(TrainerCallback):
    """Adds the EulerForge names to TRL's logs, in place, before metrics.jsonl and TensorBoard see them.

    reward -> reward_mean, kl -> kl_divergence, rewards/<name>/mean -> reward/<name> (and the same
    with TRL's eval_ prefix on evaluation: eval_reward_mean, eval_reward/<name>),
    sampling/sampling_logp_difference/mean (vllm) -> generation/logprob_gap, as PPO names it; plus
    time_step, the wall seconds per optimizer step since the previous log.
    """

    def __init__(self):
        self.last_time: float | None = None
        self.last_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_reward" in logs:
            logs["eval_reward_mean"] = logs["eval_reward"]
            for key, value in list(logs.items()):
                if key.startswith("eval_rewards/") and key.endswith("/mean"):
                    logs["eval_reward/" + key[len("eval_rewards/") : -len("/mean")]] = value
            return
        if not logs or "reward" not in logs:
            return
        extra = {"reward_mean": logs["reward"]}
        if "kl" in logs:
            extra["kl_divergence"] = logs["kl"]
        if "sampling/sampling_logp_difference/mean" in logs:  # vllm: mean |log p trainer - log p engine| per token
            extra["generation/logprob_gap"] = logs["sampling/sampling_logp_difference/mean"]
        for key, value in logs.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                extra["reward/" + key[len("rewards/") : -len("/mean")]] = value
        now = time.perf_counter()
        if self.last_time is not None and state.global_step > self.last_step:
            extra["time_step"] = (now - self.last_time) / (state.global_step - self.last_step)
        self.last_time, self.last_step = now, state.global_step
        logs.update(extra)


__all__ = ["RewardMetricNames", "SampleRecorder", "rm_reward", "user_reward"]
