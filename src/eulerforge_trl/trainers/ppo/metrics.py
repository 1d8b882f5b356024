"""PPO's per-step numbers (phase 7) and the sample generations it writes: names as documented
(`reward_mean`, `kl_divergence`, `ppo_loss`, ...), so dashboards and docs agree."""

from __future__ import annotations

import torch

from ...generation import Rollout
from ...rundir import append_jsonl
from . import losses
from .targets import Targets


def step_numbers(
    roll: Rollout, targets: Targets, scores: torch.Tensor, parts: dict[str, torch.Tensor], update_stats: dict
) -> dict[str, torch.Tensor]:
    """This process's numbers for one step, each a scalar tensor (the caller averages them over
    processes). `reward_mean` is the raw total, `reward/<name>` each source's raw (unweighted) mean."""
    mask = roll.response_mask
    local = {
        "reward_mean": scores.mean(),
        "reward_std": scores.std(unbiased=False),
        **{name: values.nanmean() for name, values in parts.items()},
        "kl_divergence": targets.kl.sum(dim=1).mean(),
        "response_length": mask.sum(dim=1).float().mean(),
        "no_eos_fraction": (~roll.contains_eos).float().mean(),
        "advantage_mean": losses.masked_mean(targets.advantages, mask),
        "value_mean": losses.masked_mean(targets.values, mask),
        **update_stats,
    }
    if roll.engine_logprobs is not None:
        # how far the engine's sampling distribution is from the trainer's (dtype, kernels): 0 = the same
        local["generation/logprob_gap"] = losses.masked_mean((roll.engine_logprobs - targets.logprobs).abs(), mask)
    if targets.is_weights is not None:  # the importance weights of that gap (training.ppo.importance_sampling_*)
        local["generation/is_weight_mean"] = losses.masked_mean(targets.is_weights, mask)
        local["generation/is_capped_fraction"] = losses.masked_mean(targets.is_capped.float(), mask)
    return local


def write_samples(path, step: int, prompts: list, texts: list[str], scores: torch.Tensor, count: int) -> None:
    """Append the first `count` generations to samples.jsonl: the prompt as written in the data
    file, the response as text, its raw total reward."""
    records = [
        {"step": step, "prompt": prompt, "response": text, "reward": score}
        for prompt, text, score in list(zip(prompts, texts, scores.tolist()))[:count]
    ]
    append_jsonl(path, records, ensure_ascii=False)
