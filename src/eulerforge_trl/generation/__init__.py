"""The rollout engines: one seam through which PPO's rollouts, PPO's held-out evaluation and
`eulerforge evaluate` sample responses (`generation.backend`: hf or vllm).

An engine has three methods and says whether it samples a copy of its own (`own_weights`: then a
sharded training model need not be gathered for it): `sample(prompt_ids, prompt_mask) -> Rollout` on left-padded prompts,
`sync_weights()` after every optimizer step (the policy's current weights reach the engine before
the next rollout), and `close()`. The log-probs PPO trains on are never the engine's: the trainer
computes them on its own weights, so PPO's ratio stays exact whichever engine sampled. An engine that
is not the trainer's weights (vllm, the merged copy) returns its own log-prob of each sampled token
(`Rollout.engine_logprobs`), which PPO compares with its own and weights its loss by.

Example:
    >>> sampler = build_sampler(preset.generation, model, tokenizer, adapter="default",
    ...                         max_new_tokens=64, temperature=1.0, stop_ids=[tokenizer.eos_token_id])
    >>> roll = sampler.sample(prompt_ids, prompt_mask)
"""

from __future__ import annotations

from typing import Protocol

from .rollout import Rollout, build_rollout, completion_ids, mask_after_first_eos, response_texts

__all__ = [
    "Rollout",
    "Sampler",
    "build_rollout",
    "build_sampler",
    "completion_ids",
    "mask_after_first_eos",
    "response_texts",
]


class Sampler(Protocol):
    name: str
    own_weights: bool

    def sample(self, prompt_ids, prompt_mask) -> Rollout: ...

    def sync_weights(self) -> None: ...

    def close(self) -> None: ...


def build_sampler(
    generation,
    model,
    tokenizer,
    *,
    adapter: str | None,
    max_new_tokens: int,
    temperature: float,
    stop_ids,
    seed: int = 0,
    synced_gpus: bool = False,
    max_prompt_length: int = 256,
) -> Sampler:
    """The engine `generation.backend` names (a `GenerationSection`), sampling `model` with `adapter` active.

    Args:
        adapter: the peft adapter whose weights the vllm engine merges into its copy (None: the model
            as it is, e.g. a merged or full model).
        seed: seeds the vllm engine (vLLM's CPU build cannot seed single requests); hf samples from
            torch's global generator, which the caller seeds.
        synced_gpus: several processes sample together (hf: `generate` keeps their forwards in step;
            vllm: one engine per process, over the launcher's process group).
        max_prompt_length: longest prompt the engine must accept (sizes vLLM's context).
    """
    common = dict(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        stop_ids=list(stop_ids),
        pad_token_id=tokenizer.pad_token_id,
    )
    if generation.backend == "vllm":
        from .vllm import VLLMSampler

        return VLLMSampler(
            model,
            tokenizer,
            adapter=adapter,
            seed=seed,
            max_model_len=max_prompt_length + max_new_tokens,
            gpu_memory_utilization=generation.vllm_gpu_memory_utilization,
            dtype=generation.vllm_dtype,
            enforce_eager=generation.vllm_enforce_eager,
            distributed=synced_gpus,
            **common,
        )
    from .hf import HFSampler, MergedCopySampler
    from .merged import merges_by_default

    merged = generation.merged_copy
    if merged is None:
        merged = adapter is not None and merges_by_default(model)
    if merged and adapter is not None:
        return MergedCopySampler(model, adapter=adapter, compile=generation.compile, **common)
    return HFSampler(model, synced_gpus=synced_gpus, compile=generation.compile, **common)
