"""The `hf` rollout engine: transformers' `generate` on the training model itself (the policy LoRA active).

With `compile` (the default on CUDA) it decodes with a static KV cache, which transformers compiles
with CUDA graphs: eager decoding is launch-bound on a GPU (each token ~70 ms on an H200 for
SmolLM2 + LoRA, FACTS.md), the compiled step several times faster. A static cache recompiles when
its shape changes, so prompts are left-padded to a bucket of `PROMPT_BUCKET` columns (the extra
columns are masked, and removed again from the rollout) and the batch size stays the same.

With `merged_copy` (`MergedCopySampler`) it samples from a plain copy of the model holding the
policy's merged weights (`merged.MergedCopy`): no LoRA hooks while decoding, which made eager
decoding 2.5x slower on an H200 (FACTS.md), at the memory of the weights LoRA touches.
"""

from __future__ import annotations

import torch

from .merged import MergedCopy
from .rollout import Rollout, build_rollout

PROMPT_BUCKET = 64


class HFSampler:
    """Pure sampling (no top-k/top-p) from the model's active adapter, truncated after the first stop token."""

    name = "hf"
    own_weights = False  # samples the training model itself (a sharded one must be gathered for it)

    def __init__(self, model, *, max_new_tokens, temperature, stop_ids, pad_token_id, synced_gpus=False, compile=None):
        self.model, self.max_new_tokens, self.temperature = model, max_new_tokens, temperature
        self.stop_ids, self.pad_token_id, self.synced_gpus = list(stop_ids), pad_token_id, synced_gpus
        device = next(model.parameters()).device
        self.compile = device.type == "cuda" if compile is None else compile

    @torch.no_grad()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> Rollout:
        """[B, P] left-padded prompts -> a `Rollout`.

        Runs in eval mode: with gradient checkpointing on, train-mode `generate` silently drops the
        KV cache and runs about twice as slowly. The caller's train/eval mode is restored.
        """
        was_training = self.model.training
        self.model.eval()
        extra = (-prompt_ids.shape[1]) % PROMPT_BUCKET if self.compile else 0
        ids, mask = _left_pad(prompt_ids, prompt_mask, extra, self.pad_token_id)
        try:
            sequences = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=self.max_new_tokens,
                do_sample=True,
                temperature=self.temperature,
                top_k=0,
                top_p=1.0,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_token_id,
                use_cache=True,
                synced_gpus=self.synced_gpus,
                **({"cache_implementation": "static"} if self.compile else {}),
            )
        finally:
            self.model.train(was_training)
        response = sequences[:, ids.shape[1] :]
        return build_rollout(prompt_ids, prompt_mask, response, self.stop_ids, self.pad_token_id)

    def sync_weights(self) -> None:
        """Nothing to do: this engine samples from the training weights themselves."""

    def close(self) -> None:
        """Nothing to free."""


class MergedCopySampler(HFSampler):
    """`HFSampler` on a `MergedCopy` of the policy (`adapter` merged in), refreshed after every optimizer step."""

    own_weights = True

    def __init__(self, model, *, adapter: str, **settings):
        self.copy = MergedCopy(model, adapter)
        # the copy holds whole weights and no collective: processes need not decode in step
        super().__init__(self.copy.model, **{**settings, "synced_gpus": False})

    def sync_weights(self) -> None:
        """The policy's current LoRA weights merged into the copy, in place."""
        self.copy.refresh()

    def close(self) -> None:
        """Drop the copy (its merged weights are the only memory it holds of its own)."""
        self.copy = self.model = None


def _left_pad(ids: torch.Tensor, mask: torch.Tensor, extra: int, pad_token_id: int):
    if not extra:
        return ids, mask
    return (
        torch.nn.functional.pad(ids, (extra, 0), value=pad_token_id),
        torch.nn.functional.pad(mask, (extra, 0), value=0),
    )
