"""GRPO stage: TRL `GRPOTrainer` on one shared base, rewarded by the RM adapter and reward functions.

The roles (policy LoRA, reference = adapters off, RM adapter + head, reward functions), the data and
the refusals are those of every stage that samples a group of completions per prompt
(`group_policy`); GRPO normalises the total reward within each group of `num_generations`
completions of a prompt (`training.grpo.scale_rewards`) and clips the policy ratio as PPO does.

Logged per step beside TRL's own names: `reward_mean` (the weighted total, TRL's `reward`),
`reward/<name>` (each source, unweighted: `reward/rm`, `reward/<function>`), `kl_divergence`
(TRL's `kl`, only when beta > 0), `entropy`, `loss`, `time_step` (seconds per step), and with
`generation.backend: vllm` `generation/logprob_gap` (the engine's per-token log-prob gap to the
trainer's, which TRL's importance sampling corrects; see `grpo_vllm`).
`final/` holds the policy adapter only, loadable as `model_name` like PPO's.
"""

from __future__ import annotations

from trl import GRPOConfig, GRPOTrainer

from ..config.schema import Preset
from ..rundir import RunDir
from .group_policy import train_group_policy
from .grpo_generation import grpo_generation_args
from .trl_config import build_trl_config


def to_grpo_config(preset: Preset, run: RunDir, reward_weights: list[float], has_eval: bool = False) -> GRPOConfig:
    """The `GRPOConfig` for a preset (`build_trl_config`): `training.grpo`'s keys and TRL fields, and
    the fields GRPO sets itself.

    `has_eval`: held-out prompts are evaluated before the first step (the SFT policy's held-out
    reward, as PPO's step-0 evaluation), every `save_steps`, and (by `run_grpo`) after the last, with
    `num_generations` completions each.
    """
    return build_trl_config(
        "grpo",
        preset,
        run,
        has_eval,
        eval_on_start=has_eval,
        num_generations_eval=preset.training.grpo.num_generations,
        reward_weights=reward_weights,
        disable_dropout=True,  # the reference (adapters off) and the policy must see the same network
        sync_ref_model=False,  # the reference is the adapters-off model: no copy to sync
        log_completions=False,  # samples.jsonl instead (see SampleRecorder)
        remove_unused_columns=False,  # extra data columns reach the reward functions
        **grpo_generation_args(preset),  # generation.backend: TRL's generate, or its colocated vLLM
    )


def run_grpo(preset: Preset, run: RunDir, resume_from: str | None) -> dict:
    """Train and write `final/` (the policy adapter, tokenizer, preset.yml); returns the final metrics."""
    return train_group_policy(preset, run, resume_from, GRPOTrainer, to_grpo_config)


__all__ = ["run_grpo", "to_grpo_config"]
