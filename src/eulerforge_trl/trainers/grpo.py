"""GRPO stage: TRL `GRPOTrainer` on one shared base, rewarded by the RM adapter and reward functions.

Roles, all on the same base weights in memory (as in PPO):
  policy    - the SFT model + a trainable LoRA adapter (peft adapter "default"), handed to TRL as a
              `PeftModel` (no `peft_config`, so TRL does not wrap it again);
  reference - the same model with adapters disabled (TRL's PEFT path; `ref_model` stays None);
  reward    - the RM adapter ("reward", never trainable) + RewardHead from the rm stage, called as a
              reward function "rm" that switches to the RM adapter under no_grad and back;
  functions - `training.reward_funcs`, TRL's signature, one reward source each.

Total reward = reward_model.weight x RM score + sum(reward_weights x functions) (TRL's
`reward_weights`), normalised within each group of `num_generations` completions of a prompt.
Without an RM checkpoint (`checkpoint_path: ""`) and with functions, no RM is used at all.

Logged per step beside TRL's own names: `reward_mean` (the weighted total, TRL's `reward`),
`reward/<name>` (each source, unweighted: `reward/rm`, `reward/<function>`), `kl_divergence`
(TRL's `kl`, only when beta > 0), `entropy`, `loss`, `time_step` (seconds per step).
`final/` holds the policy adapter only, loadable as `model_name` like PPO's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import disable_dropout_in_model

from ..config.schema import Preset
from ..data import render
from ..data.jsonl import extra_columns, is_conversational, read_rows
from ..models.loading import load_tokenizer
from ..rewards.functions import call_reward_function
from ..rewards.sources import FUNCS_KEY, RM_NAME, RewardFunction, RewardModelSource, RewardSources
from ..rundir import RunDir, append_jsonl, checkpoint_step, trim_metrics
from .common import common_trainer_args, logging_callbacks, sampling_policy, weights_dtype
from .grpo_generation import grpo_generation_args
from .policy_final import POLICY, save_policy_final

logger = logging.getLogger(__name__)

REWARD = "reward"


def to_grpo_config(preset: Preset, run: RunDir, reward_weights: list[float]) -> GRPOConfig:
    """The `GRPOConfig` for a preset: `training.grpo.*` under the same names, every field we rely on set."""
    g = preset.training.grpo
    return GRPOConfig(
        **common_trainer_args(preset, run, has_eval=False),
        num_generations=g.num_generations,
        beta=g.beta,
        epsilon=g.epsilon,
        epsilon_high=g.epsilon_high,
        loss_type=g.loss_type,
        scale_rewards=g.scale_rewards,
        num_iterations=g.num_iterations,
        max_completion_length=g.max_completion_length,
        mask_truncated_completions=g.mask_truncated_completions,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        min_p=None,
        repetition_penalty=g.repetition_penalty,
        entropy_coef=g.entropy_coef,
        reward_weights=reward_weights,
        multi_objective_aggregation="sum_then_normalize",
        disable_dropout=True,  # the reference (adapters off) and the policy must see the same network
        sync_ref_model=False,  # not supported with PEFT
        **grpo_generation_args(preset),  # generation.backend: TRL's generate, or its colocated vLLM
        log_completions=False,  # samples.jsonl instead (see SampleRecorder)
        remove_unused_columns=False,  # extra data columns reach the reward functions
        shuffle_dataset=True,
    )


# ------------------------------------------------------------------------------------ rewards


class SampleRecorder:
    """Collects each source's rewards for the current batch; the last source writes samples.jsonl.

    TRL calls the reward functions one after another on the same (prompts, completions) of this
    process; after the last one the weighted total is known. Main process only, at step 1 and
    every `sample_every` steps.
    """

    def __init__(self, run: RunDir, names: list[str], weights: list[float], every: int, count: int, is_main: bool):
        self.run, self.names, self.weights = run, names, weights
        self.every, self.count, self.is_main = every, count, is_main
        self.values: dict[str, list[float]] = {}

    def add(self, name: str, prompts: list, completions: list, values: list[float], trainer_state=None) -> None:
        self.values[name] = values
        if name != self.names[-1]:
            return
        values_by_source, self.values = self.values, {}
        step = (trainer_state.global_step if trainer_state is not None else 0) + 1  # the step being computed
        if not (self.is_main and self.every and (step == 1 or step % self.every == 0)):
            return
        records = []
        for i in range(min(self.count, len(completions))):
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
        append_jsonl(self.run.samples, records, ensure_ascii=False)


def _text(completion) -> str:
    """A completion as text: TRL gives a string, or [{"role": "assistant", "content": ...}] for conversations."""
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion)
    return completion


def rm_reward(source: RewardModelSource, batch_size: int, recorder: SampleRecorder) -> Callable:
    """The RM as a TRL reward function named "rm": each (prompt, completion) rendered as the RM was
    trained and scored under no_grad (`RewardModelSource.score`, the same code PPO scores with); on
    the shared base the policy adapter and the training mode are restored after every batch."""

    def rm(prompts, completions, trainer_state=None, **_columns) -> list[float]:
        scores = source.score(list(prompts), list(completions), batch_size).tolist()
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


# ------------------------------------------------------------------------------------ logging


class GRPOMetricNames(TrainerCallback):
    """Adds the EulerForge names to TRL's logs, in place, before metrics.jsonl and TensorBoard see them.

    reward -> reward_mean, kl -> kl_divergence, rewards/<name>/mean -> reward/<name>; plus
    time_step, the wall seconds per optimizer step since the previous log.
    """

    def __init__(self):
        self.last_time: float | None = None
        self.last_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.last_time, self.last_step = time.perf_counter(), state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs:
            return
        extra = {"reward_mean": logs["reward"]}
        if "kl" in logs:
            extra["kl_divergence"] = logs["kl"]
        for key, value in logs.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                extra["reward/" + key[len("rewards/") : -len("/mean")]] = value
        now = time.perf_counter()
        if self.last_time is not None and state.global_step > self.last_step:
            extra["time_step"] = (now - self.last_time) / (state.global_step - self.last_step)
        self.last_time, self.last_step = now, state.global_step
        logs.update(extra)


# ------------------------------------------------------------------------------------ model


def prompt_rows(preset: Preset) -> list[dict]:
    """Every row of `data.path` with its other columns, which TRL hands to reward functions as keyword
    arguments (a `solution` column, say). GRPO holds nothing out: `data.eval_*` are not read."""
    rows = read_rows(preset.data.path, preset.data.task)
    extra = extra_columns(preset.data.path, preset.data.task)
    return [{**row, **{name: values[i] for name, values in extra.items()}} for i, row in enumerate(rows)]


def run_grpo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train and write `final/` (the policy adapter, tokenizer, preset.yml); returns the final metrics."""
    from accelerate import PartialState
    from datasets import Dataset

    grpo_generation_args(preset)  # a generation: setting TRL cannot honour stops here, before any loading
    if preset.generation.backend == "vllm":
        from ..generation.vllm import require_vllm

        require_vllm()
    state = PartialState()
    is_main = state.is_main_process
    tokenizer = load_tokenizer(preset.model_name)
    tokenizer.padding_side = "left"  # prompts are left-padded for generation
    train_rows = prompt_rows(preset)
    if is_conversational(train_rows[0]["prompt"]):
        render.require_chat_template(tokenizer, train_rows, preset.model_name)
    model = sampling_policy(preset, tokenizer, POLICY).to(state.device)  # before the RM's head is placed beside it
    # the RM (its adapter beside the policy's, or `separate`) and the functions, as PPO builds them
    sources = RewardSources.from_preset(preset, model, tokenizer, state.device, REWARD, dtype=weights_dtype(preset))
    names = [name.removeprefix("reward/") for name in sources.names]
    weights = ([sources.rm.weight] if sources.rm else []) + [f.weight for f in sources.functions]
    g = preset.training.grpo
    recorder = SampleRecorder(run, names, weights, g.sample_every, g.num_samples, is_main)
    reward_funcs: list[Callable] = [rm_reward(sources.rm, preset.training.batch_size, recorder)] if sources.rm else []
    reward_funcs += [user_reward(function, recorder) for function in sources.functions]
    disable_dropout_in_model(model)  # the RM adapter brings its own LoRA dropout
    model.set_adapter(POLICY)
    callbacks = [GRPOMetricNames(), *logging_callbacks(preset, run)]
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=to_grpo_config(preset, run, weights),
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if "ref" in model.peft_config:
        # TRL copies a PeftModel's adapter as "ref" for a re-trained adapter; ours starts at zero
        # (LoRA B = 0), so the SFT model with adapters disabled is the same reference without a copy
        model.delete_adapter("ref")
        model.set_adapter(POLICY)
    if resume_from and is_main:
        trim_metrics(run.samples, checkpoint_step(resume_from) or 0)
    result = trainer.train(resume_from_checkpoint=resume_from)
    if trainer.is_world_process_zero():
        save_policy_final(run, model, tokenizer, preset, stage="grpo", steps=trainer.state.global_step)
    trainer.accelerator.wait_for_everyone()
    last = next((h for h in reversed(trainer.state.log_history) if "reward_mean" in h), {})
    return {**dict(result.metrics), **{k: v for k, v in last.items() if isinstance(v, (int, float))}}


__all__ = ["run_grpo", "to_grpo_config"]
