"""RLOO stage: TRL `RLOOTrainer` on one shared base, rewarded by the RM adapter and reward functions.

The roles (policy LoRA, reference = adapters off, RM adapter + head, reward functions), the data,
the sampling (`generation:`) and the refusals are those of GRPO (`group_policy`); RLOO differs in
its loss: each completion's advantage is its reward minus the mean reward of the other
`num_generations - 1` completions of its prompt (the leave-one-out baseline), and the KL to the
reference (the sum over the completion of log pi - log pi_ref, weighted by `training.rloo.beta`) is
subtracted from the reward rather than added to the loss.

With `generation.backend: vllm` the completions come from our colocated engine as GRPO's do
(`grpo_vllm`); TRL's RLOO has no importance-sampling correction, so its loss takes the engine's
tokens as the policy's own (the engine's weights are the policy's, merged, after every step).

Logged per step under GRPO's names (`group_rewards.RewardMetricNames`): `reward_mean`,
`reward/<name>`, `kl_divergence` (TRL's `kl`, when beta > 0), `entropy`, `loss`, `time_step`.
`final/` holds the policy adapter only, loadable as `model_name` like PPO's and GRPO's.
"""

from __future__ import annotations

from trl import RLOOConfig, RLOOTrainer

from ..config.schema import Preset
from ..rundir import RunDir
from .group_policy import train_group_policy
from .grpo_generation import grpo_generation_args
from .trl_config import build_trl_config


def to_rloo_config(preset: Preset, run: RunDir, reward_weights: list[float], has_eval: bool = False) -> RLOOConfig:
    """The `RLOOConfig` for a preset (`build_trl_config`): `training.rloo`'s keys and TRL fields, and the
    fields RLOO sets itself, as GRPO sets them.

    `has_eval`: held-out prompts are evaluated before the first step, every `save_steps` and after the
    last, with `num_generations` completions each.
    """
    generation = grpo_generation_args(preset)  # GRPO's generation fields: RLOOConfig has them all but one,
    generation.pop("vllm_importance_sampling_correction", None)  # as RLOO corrects nothing (module docstring)
    return build_trl_config(
        "rloo",
        preset,
        run,
        has_eval,
        eval_on_start=has_eval,  # the SFT policy's held-out reward, as PPO's step-0 evaluation
        num_generations_eval=preset.training.rloo.num_generations,
        reward_weights=reward_weights,
        disable_dropout=True,  # the reference (adapters off) and the policy must see the same network
        sync_ref_model=False,  # the reference is the adapters-off model: no copy to sync
        log_completions=False,  # samples.jsonl instead (group_rewards.SampleRecorder)
        remove_unused_columns=False,  # extra data columns reach the reward functions
        **generation,  # generation.backend: TRL's generate, or its colocated vLLM on our engine
    )


def run_rloo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train and write `final/` (the policy adapter, tokenizer, preset.yml); returns the final metrics."""
    return train_group_policy(preset, run, resume_from, RLOOTrainer, to_rloo_config)


__all__ = ["run_rloo", "to_rloo_config"]
